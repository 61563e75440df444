"""klein's text side against transformers: the Qwen3 encoder's hidden states, the tokenizer's ids, the
stacked prompt embeddings of Flux2KleinPipeline, the prompt cache, and the real sizes' parameter counts."""

import os

import flux2_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vbanana.flux2 import prompt_cache as pc
from vbanana.flux2 import text_encoder as te
from vbanana.flux2 import weights
from vbanana.flux2.tokenizer import KleinTokenizer, format_prompt

# Two configs: klein's shape in small (GQA 4 -> 2, tied embeddings; asks for the embeddings, a raw layer and
# the final-normed last one) and one with everything else (biases, one KV head, untied head, another theta;
# asks for raw layers only, 3 of 4, one by a negative index, so the loop stops before the last layer).
CONFIGS = {
    "gqa_tied": (dict(), (0, 2, 3)),
    "bias_untied": (dict(num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         attention_bias=True, tie_word_embeddings=False, rope_theta=5000.0), (3, 1, -3)),
}
LENGTHS = (11, 5, 17)  # a right-padded batch: three prompts of different lengths in 17 positions
PROMPTS = ["a red cube on the ground", "Une sphère rouge à côté d'un cône — 深度", "", "segment every sphere",
           "hello\nworld  123 !"]


def _padded_batch(vocab):
  rng = np.random.default_rng(0)
  ids = rng.integers(0, vocab, (len(LENGTHS), max(LENGTHS)))
  mask = np.zeros_like(ids)
  for row, n in enumerate(LENGTHS):
    mask[row, :n] = 1
    ids[row, n:] = 0
  return ids, mask


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hidden_states_match_transformers(name, tmp_path_factory):
  import torch  # pylint: disable=g-import-not-at-top
  folder = str(tmp_path_factory.mktemp(name))
  model = fx.tiny_qwen3(folder, **CONFIGS[name][0])
  layers = CONFIGS[name][1]
  ids, mask = _padded_batch(model.config.vocab_size)
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True,
                use_cache=False)
  want = torch.stack([out.hidden_states[k] for k in layers], 1).numpy()
  encoder = te.load_text_encoder(folder)  # every layer kept; the loop runs to the deepest one asked
  got = np.asarray(nnx.jit(lambda m, i, a: m.hidden_states(i, a, layers))(encoder, jnp.asarray(ids),
                                                                           jnp.asarray(mask)))
  diff = np.abs(got - want).max()
  print(f"{name}: max |hidden states - transformers| over all positions (pads too) = {diff:.2e}")
  assert np.abs(want).max() > 0.5  # the states are not near zero, so the tolerance means something
  assert diff <= 2e-5


def test_tokenizer_ids_match_transformers(tmp_path):
  tok = fx.tiny_tokenizer(str(tmp_path))
  mine = KleinTokenizer(str(tmp_path))
  for length in (40, 12):  # 12 cuts most prompts
    ids, mask = mine(PROMPTS, length)
    for row, prompt in enumerate(PROMPTS):
      text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                     add_generation_prompt=True, enable_thinking=False)
      assert text == format_prompt(prompt)
      want = tok(text, padding="max_length", truncation=True, max_length=length)
      assert ids[row].tolist() == want["input_ids"], prompt
      assert mask[row].tolist() == want["attention_mask"], prompt
  assert ids.dtype == np.int32 and (ids[2][mask[2] == 0] == tok.pad_token_id).all()


@pytest.fixture(scope="module")
def klein_text(tmp_path_factory):
  """A pipeline folder's text side (tokenizer/, text_encoder/) and the torch parts."""
  root = tmp_path_factory.mktemp("klein_text")
  tok = fx.tiny_tokenizer(str(root / "tokenizer"))
  model = fx.tiny_qwen3(str(root / "text_encoder"))
  return str(root), tok, model


@pytest.mark.slow
def test_encode_prompts_and_cache_match_the_pipeline(klein_text):
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import Flux2KleinPipeline  # pylint: disable=g-import-not-at-top
  root, tok, model = klein_text
  layers, length = fx.KLEIN_TEXT_LAYERS, 24
  with torch.no_grad():
    want = Flux2KleinPipeline._get_qwen3_prompt_embeds(model, tok, PROMPTS[:4], max_sequence_length=length,
                                                       hidden_states_layers=layers).numpy()
  encoder = te.load_text_encoder(root)  # the pipeline folder; all 3 layers (the last one final-normed)
  # 4 prompts (a non-ASCII one, the empty one): the cache below runs batches of 4 too (one compiled shape).
  got = np.asarray(pc.encode_prompts(encoder, root, PROMPTS[:4], max_length=length, layers=layers))
  assert got.shape == (4, length, 3 * model.config.hidden_size)
  diff = np.abs(got - want).max()
  print(f"encode_prompts vs Flux2KleinPipeline._get_qwen3_prompt_embeds: max diff {diff:.2e}")
  assert diff <= 2e-5

  cache = pc.PromptCache(encoder, root, max_length=length, layers=layers, max_entries=4, batch_size=4)
  batch = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2]]
  out = cache(batch)
  assert (cache.misses, cache.hits) == (3, 1)
  np.testing.assert_allclose(out, got[[0, 1, 0, 2]], atol=2e-5)
  again = cache([PROMPTS[2], PROMPTS[0]])  # seen: no encoder run, the same arrays
  assert (cache.misses, cache.hits) == (3, 3)
  np.testing.assert_array_equal(again, out[[3, 0]])
  cache(PROMPTS[3:])  # two more: the least recently used (PROMPTS[1]) is dropped at max_entries=4
  assert len(cache) == 4 and PROMPTS[1] not in cache and PROMPTS[0] in cache


def test_real_sizes_parameter_counts():
  cfg = te.Qwen3Config()  # Qwen/Qwen3-4B
  count = lambda depth: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(
      nnx.eval_shape(lambda: te.Qwen3Encoder(cfg, depth=depth, rngs=nnx.Rngs(0))), nnx.Param)))
  assert count(None) == 4_022_468_096
  assert count(te.depth_for(cfg, pc.KLEIN_LAYERS)) == 3_114_088_192  # cut at layer 27, no final norm


def test_bad_inputs_name_the_problem(klein_text, tmp_path):
  root, _, model = klein_text
  encoder = te.load_text_encoder(root, layers_asked=(1,))
  ids = jnp.zeros((1, 4), jnp.int32)
  with pytest.raises(ValueError, match="hidden state 2 asked, but this encoder keeps 1"):
    encoder.hidden_states(ids, jnp.ones_like(ids), (2,))
  with pytest.raises(ValueError, match="hidden state 9 asked of a Qwen3 with 3 layers"):
    encoder.hidden_states(ids, jnp.ones_like(ids), (9,))
  # A checkpoint with a tensor missing, or one of the wrong shape: the error names it.
  src = weights.open_checkpoint(os.path.join(root, "text_encoder"), prefix=None)
  tensors = {n: np.array(src.read(n)) for n in src.names}
  bad = tmp_path / "bad"
  bad.mkdir()
  with open(os.path.join(root, "text_encoder", "config.json")) as f:
    (bad / "config.json").write_text(f.read())
  weights.write_checkpoint(str(bad), {n: t for n, t in tensors.items() if n != "model.layers.1.mlp.up_proj.weight"},
                           prefix="model")
  with pytest.raises(weights.CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight' is missing"):
    te.load_text_encoder(str(bad))
  tensors["model.norm.weight"] = tensors["model.norm.weight"][:-1]
  weights.write_checkpoint(str(bad), tensors, prefix="model")
  with pytest.raises(weights.CheckpointError, match=r"model\.norm\.weight' has shape \(31,\), expected \(32,\)"):
    te.load_text_encoder(str(bad))
  (bad / "config.json").write_text('{"model_type": "qwen3", "use_sliding_window": true}')
  with pytest.raises(ValueError, match="use_sliding_window"):
    te.load_text_encoder(str(bad))
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    KleinTokenizer(str(tmp_path))
