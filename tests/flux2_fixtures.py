"""Tiny random diffusers models for the FLUX.2 tests, built from constructor arguments (nothing downloaded).

`tiny_transformer(folder, **kwargs)` builds a `Flux2Transformer2DModel` with every tensor random (the QK-norm
weights too, so a permutation cannot hide behind ones) and saves it with `save_pretrained`.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

# diffusers' own test size (tests/models/transformers/test_models_transformer_flux2.py: guidance_embeds keeps
# its default, True) and a second one with uneven rotary axes, a different theta, out_channels != in_channels,
# no guidance embedder and more blocks of each kind.
DIFFUSERS_TEST = dict(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                      num_attention_heads=2, joint_attention_dim=32, timestep_guidance_channels=256,
                      axes_dims_rope=(4, 4, 4, 4))
SECOND = dict(patch_size=1, in_channels=8, out_channels=6, num_layers=2, num_single_layers=3, attention_head_dim=24,
              num_attention_heads=3, joint_attention_dim=40, timestep_guidance_channels=64, mlp_ratio=2.5,
              axes_dims_rope=(4, 8, 8, 4), rope_theta=1000, eps=1e-6, guidance_embeds=False)


def tiny_transformer(folder: str | None = None, seed: int = 0, max_shard_size: str | int = "10GB", **kwargs):
  """(torch model in eval mode, folder it was saved to or None)."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import Flux2Transformer2DModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = Flux2Transformer2DModel(**kwargs).eval()
  with torch.no_grad():  # Linear weights keep PyTorch's random init; QK-norm weights (ones) become random
    for p in model.parameters():
      if p.ndim == 1:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
  if folder is not None:
    model.save_pretrained(folder, max_shard_size=max_shard_size)
  return model, folder


def torch_inputs(cfg: dict, batch: int, grid: tuple[int, int], reference_grids=(), text_length: int = 13,
                 seed: int = 0):
  """Random diffusers inputs: (hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids) as NumPy
  float32 / int64 arrays, target tokens first, then each reference's, ids as the klein pipeline builds them."""
  from vbanana.flux2 import transformer  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  img_ids, txt_ids = transformer.position_ids(grid, reference_grids, text_length)
  n = img_ids.shape[0]
  hidden = rng.standard_normal((batch, n, cfg["in_channels"])).astype(np.float32)
  text = rng.standard_normal((batch, text_length, cfg["joint_attention_dim"])).astype(np.float32)
  timestep = rng.uniform(0.05, 1.0, size=(batch,)).astype(np.float32)  # a different t per example
  return hidden, text, timestep, img_ids, txt_ids


def torch_forward(model, hidden, text, timestep, img_ids, txt_ids, dtype=None, guidance=None):
  """diffusers' forward (native attention) on NumPy inputs -> float32 NumPy (B, N, C_out)."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import attention_backend  # pylint: disable=g-import-not-at-top
  dtype = dtype or torch.float32
  if dtype != torch.float32:
    model = copy.deepcopy(model).to(dtype)  # the caller's float32 model stays as it is
  t = lambda a: torch.from_numpy(np.asarray(a))
  with torch.no_grad(), attention_backend("native"):
    out = model(hidden_states=t(hidden).to(dtype), encoder_hidden_states=t(text).to(dtype),
                          timestep=t(timestep).to(dtype), img_ids=t(img_ids), txt_ids=t(txt_ids),
                          guidance=None if guidance is None else t(guidance).to(dtype), return_dict=False)[0]
  return out.float().numpy()


# ----------------------------------------------------------------------------------------------------------
# Issue 21: klein's other parts, tiny and offline: a byte-level BPE tokenizer with Qwen3's specials and a chat
# template that writes klein's prompt string, a Qwen3, an AutoencoderKLFlux2 with non-trivial BatchNorm
# statistics, and a whole Flux2KleinPipeline folder made of them.
# ----------------------------------------------------------------------------------------------------------
QWEN3_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
TOKENIZER_CORPUS = ["a red cube on the ground", "the depth of the scene as colours", "segment every sphere",
                    "user assistant think", "Une sphère rouge à côté d'un cône", "make the cube blue",
                    "hello world 123"]
# Qwen3's template reduced to what klein uses: user turns, and the empty thinking block when thinking is off.
KLEIN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
    "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
TINY_QWEN3 = dict(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, rope_theta=1e6, tie_word_embeddings=True)
TINY_VAE = dict(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4)


def tiny_tokenizer(folder: str | None = None, vocab_size: int = 300):
  """A transformers Qwen2Tokenizer over a byte-level BPE trained here on a few sentences (saved to `folder`)."""
  import json  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from transformers import Qwen2Tokenizer  # pylint: disable=g-import-not-at-top
  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=QWEN3_SPECIALS, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  bpe.train_from_iterator(TOKENIZER_CORPUS, trainer)
  model = json.loads(bpe.to_str())["model"]
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]  # tuples, or it fails
  tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
  tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
  tok.add_tokens(["<think>", "</think>"])
  tok.chat_template = KLEIN_CHAT_TEMPLATE
  if folder is not None:
    tok.save_pretrained(folder)
  return tok


def tiny_qwen3(folder: str | None = None, seed: int = 0, **kwargs):
  """A Qwen3ForCausalLM (TINY_QWEN3 updated by kwargs) with O(1) activations: embeddings and matrices at
  std 0.2, norm weights around one, biases random; saved with save_pretrained to `folder`."""
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import Qwen3Config, Qwen3ForCausalLM  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = Qwen3ForCausalLM(Qwen3Config(**{**TINY_QWEN3, "initializer_range": 0.2, **kwargs})).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.copy_(1.0 + 0.3 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
  if folder is not None:
    model.save_pretrained(folder)
  return model


def tiny_vae(folder: str | None = None, seed: int = 0, **kwargs):
  """An AutoencoderKLFlux2 (TINY_VAE updated by kwargs) with random BatchNorm running statistics (and a
  non-zero batch counter) and perturbed GroupNorm weights; saved with save_pretrained to `folder`."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import AutoencoderKLFlux2  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  args = {**TINY_VAE, **kwargs}
  n = len(args["block_out_channels"])
  args.setdefault("down_block_types", ("DownEncoderBlock2D",) * n)
  args.setdefault("up_block_types", ("UpDecoderBlock2D",) * n)
  model = AutoencoderKLFlux2(sample_size=32, **args).eval()
  with torch.no_grad():
    c = model.bn.running_mean.shape[0]
    model.bn.running_mean.copy_(0.5 * torch.randn(c))
    model.bn.running_var.copy_(0.1 + 2.0 * torch.rand(c))
    model.bn.num_batches_tracked.fill_(7)
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.2 * torch.randn_like(p))
  if folder is not None:
    model.save_pretrained(folder)
  return model


KLEIN_TEXT_LAYERS = (1, 2, 3)  # the tiny Qwen3's layers the tiny pipeline stacks (klein: 9, 18, 27)


def tiny_klein_pipeline(folder: str, seed: int = 0, dynamic_shifting: bool = True, qwen3_layers: int = 3,
                        vae_channels: tuple = (8, 16, 16)):
  """A whole Flux2KleinPipeline (tokenizer, 3-layer Qwen3, 3-block VAE: 8 px per token, transformer reading
  3 stacked layers: KLEIN_TEXT_LAYERS, or klein's own (9, 18, 27) with qwen3_layers >= 27,
  FlowMatchEulerDiscreteScheduler) saved to `folder`; returns it."""
  from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline  # pylint: disable=g-import-not-at-top
  vae = tiny_vae(seed=seed, block_out_channels=tuple(vae_channels))
  width = TINY_QWEN3["hidden_size"]
  transformer, _ = tiny_transformer(None, seed=seed, patch_size=1, in_channels=4 * TINY_VAE["latent_channels"],
                                    num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                    joint_attention_dim=len(KLEIN_TEXT_LAYERS) * width,
                                    timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False)
  scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=dynamic_shifting)
  text_encoder = tiny_qwen3(seed=seed, num_hidden_layers=qwen3_layers)
  pipe = Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                            tokenizer=tiny_tokenizer(), transformer=transformer, is_distilled=False)
  pipe.save_pretrained(folder)
  return pipe
