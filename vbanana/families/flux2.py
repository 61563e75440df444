r"""The `flux2` family: FLUX.2 [klein] (vbanana/flux2/), instruction-tuned from its pretrained weights.

    config.model.family = "flux2"; config.model.pretrained = "FLUX.2-klein-base-4B"   # a diffusers folder

What runs where:
  * The transformer is the trainable module: every parameter (full fine-tuning), or LoRA adapters on the
    blocks' linear layers with every pretrained weight frozen (`lora_rank` > 0; vbanana/flux2/lora.py).
  * Image codec: the frozen FLUX.2 VAE, inside the jitted programs (`frozen['vae']`): targets and input
    images are encoded to klein's tokens (latents patchified 2x2 and normalised by the BatchNorm statistics,
    (H/16, W/16, 128)) in the train step, and samples decoded back to pixels in the sampler.
  * Text conditioner: the frozen Qwen3 on the host side, through a prompt cache (vbanana/flux2/conditioner.py):
    the batch's byte-token instructions become `text_embeddings` (prompt_len, 3 x hidden) before the step,
    each distinct prompt encoded once. No instruction ('' : text dropout, guidance) is the encoding of '',
    as klein's own negative prompt, computed once (`frozen['null_text']`), never zeros.
  * Forward: the target's tokens then each input image's (a reference image at time 10 + 10 i, as klein
    edits), the instruction as klein's text tokens; a reference slot the row does not use is masked out of
    attention, so the row computes what klein computes without one. Output: the target's tokens.
  * Flow: klein's convention is vbanana's (x_t = (1 - t) x0 + t noise, target noise - x0). Training times
    are config.flow's, optionally shifted by FLUX's resolution-dependent mu (`time_shift`: the logit-normal's
    mean + mu(target tokens), which is exactly the exponential shift t -> e^mu / (e^mu + 1/t - 1)). Sampling
    follows the folder's scheduler_config.json (klein's shifted sigmas), or the uniform grid.
  * Weights: `pretrained` is read for the transformer (full fine-tuning: config.init_from names the same
    folder; LoRA: the frozen base), the VAE, Qwen3, its tokenizer and the scheduler. Export writes a diffusers
    pipeline folder (`save`: the transformer, adapters merged, next to the pretrained folder's other parts).

Sizes: 'klein-4b' (black-forest-labs/FLUX.2-klein-base-4B). With `pretrained` set, the architecture fields
come from its transformer/config.json and the image codec's token size from its vae/config.json; a set
config.model field that disagrees with the folder is an error naming both.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vbanana.model.config import ATTENTION, DTYPES, REMAT_POLICIES

# Model fields that are the data's layout (config.data decides them), as the DiT family has them.
LAYOUT_FIELDS = (("image_size", "resolution"), ("text_len", "text_length"), ("max_inputs", "max_inputs"),
                 ("image_shapes", "shapes"))
# The transformer's architecture: diffusers' constructor arguments (vbanana.flux2.transformer.Flux2Config).
ARCH_FIELDS = ("in_channels", "out_channels", "num_layers", "num_single_layers", "attention_head_dim",
               "num_attention_heads", "joint_attention_dim", "timestep_guidance_channels", "mlp_ratio",
               "axes_dims_rope", "rope_theta", "eps", "guidance_embeds")
SCHEDULES = ("klein", "uniform")
# FLUX's resolution-dependent shift (diffusers' calculate_shift): mu linear in the image's token count.
BASE_SEQ, MAX_SEQ, BASE_SHIFT, MAX_SHIFT = 256, 4096, 0.5, 1.15
# klein's scheduler_config.json, for a model without a folder (random init, ahead-of-time compiles).
DEFAULT_SCHEDULE = dict(shift=3.0, use_dynamic_shifting=True)


@dataclasses.dataclass(frozen=True)
class KleinConfig:
  """klein as the trainer sees it (defaults: klein base 4B, trained at 512 px with one reference image)."""
  pretrained: str = ""                 # a klein pipeline folder (diffusers' layout); "" = random init
  # The transformer: diffusers' Flux2Transformer2DModel arguments (its patch_size is 1).
  in_channels: int = 128
  out_channels: int | None = None
  num_layers: int = 5
  num_single_layers: int = 20
  attention_head_dim: int = 128
  num_attention_heads: int = 24
  joint_attention_dim: int = 7680
  timestep_guidance_channels: int = 256
  mlp_ratio: float = 3.0
  axes_dims_rope: tuple = (32, 32, 32, 32)
  rope_theta: int = 2000
  eps: float = 1e-6
  guidance_embeds: bool = False
  # Numerics: activations (the frozen VAE and Qwen3 run and are stored in this dtype too), parameters.
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  remat: str = "full"
  scan: bool = True
  attention: str | None = None
  # The data's layout (config.data decides it).
  image_size: int = 512                # pixels, the square at the token budget
  image_shapes: tuple = ()             # aspect-ratio buckets (H, W); () = the square only
  max_inputs: int = 1                  # reference-image slots
  text_len: int = 1024                 # the instruction's bytes in a batch (data.text_length)
  # Image codec and text conditioner.
  patch_size: int = 16                 # pixels per token side: the VAE's factor 8 x the 2x2 patches
  prompt_len: int = 512                # Qwen3 tokens per instruction
  text_layers: tuple = (9, 18, 27)     # Qwen3 hidden states stacked per token
  # Training.
  lora_rank: int = 0                   # 0: full fine-tuning; > 0: LoRA adapters of this rank
  lora_alpha: float = 0.0              # the adapters' scale is alpha / rank (0: alpha = rank)
  time_shift: bool = False             # FLUX's resolution-dependent shift of the training times
  sample_schedule: str = "klein"       # 'klein' (the scheduler config's shifted sigmas) or 'uniform'

  def __post_init__(self):
    for name in ("axes_dims_rope", "text_layers"):
      object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
    object.__setattr__(self, "image_shapes", tuple(tuple(int(v) for v in s) for s in self.image_shapes))

    def fail(field, message):
      raise ValueError(f"config.model.{field}: {message}")
    self.flux2_config()  # checks the architecture and numerics, naming the field
    for name in ("image_size", "patch_size", "prompt_len", "text_len"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        fail(name, f"expected a positive int, got {getattr(self, name)!r}")
    for h, w in self.shapes:
      if h % self.patch_size or w % self.patch_size:
        fail("image_size" if not self.image_shapes else "image_shapes",
             f"{h}x{w} px: klein's tokens cover {self.patch_size} px, so both sides must be multiples of it")
    if self.max_inputs < 0:
      fail("max_inputs", f"expected >= 0, got {self.max_inputs}")
    if self.lora_rank < 0 or self.lora_alpha < 0:
      fail("lora_rank", f"rank {self.lora_rank} and alpha {self.lora_alpha} must be >= 0")
    if self.sample_schedule not in SCHEDULES:
      fail("sample_schedule", f"expected one of {SCHEDULES}, got {self.sample_schedule!r}")
    if not self.text_layers:
      fail("text_layers", "expected the Qwen3 hidden states to stack, e.g. (9, 18, 27)")
    for name, allowed in (("dtype", DTYPES), ("param_dtype", DTYPES), ("remat", tuple(REMAT_POLICIES)),
                          ("attention", ATTENTION)):
      if getattr(self, name) not in allowed:
        fail(name, f"expected one of {allowed}, got {getattr(self, name)!r}")

  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    return self.image_shapes or ((self.image_size, self.image_size),)

  @property
  def tokens_per_image(self) -> int:
    """Tokens of one image at the token budget (the square)."""
    return (self.image_size // self.patch_size) ** 2

  @property
  def lora_scale(self) -> float:
    return (self.lora_alpha or self.lora_rank) / self.lora_rank if self.lora_rank else 0.0

  def flux2_config(self, attention: str | None = None):
    from vbanana.flux2.transformer import Flux2Config  # pylint: disable=g-import-not-at-top
    try:
      return Flux2Config(patch_size=1, **{k: getattr(self, k) for k in ARCH_FIELDS}, dtype=self.dtype,
                         param_dtype=self.param_dtype, remat=self.remat, scan=self.scan,
                         attention=attention if attention is not None else self.attention)
    except ValueError as e:
      raise ValueError(f"config.model: {str(e).replace('Flux2Config.', '')}") from None

  def replace(self, **overrides) -> "KleinConfig":
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "KleinConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"klein model config: unknown fields {unknown}; known: {sorted(known)}")
    return cls(**d)


SIZES: dict[str, dict[str, Any]] = {"klein-4b": {}}  # black-forest-labs/FLUX.2-klein-base-4B


def _as_dict(section) -> dict:
  return section.to_dict() if hasattr(section, "to_dict") else dict(section or {})


def _same(a, b) -> bool:
  norm = lambda v: tuple(norm(x) for x in v) if isinstance(v, (list, tuple)) else v
  return norm(a) == norm(b)


def folder_fields(path: str) -> dict[str, Any]:
  """The model fields a klein folder decides: the transformer's architecture (transformer/config.json or the
  converted layout) and the image codec's token size (vae/config.json, when the folder has one)."""
  from vbanana.flux2 import finetuned, vae as vae_lib  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.model.pretrained={path!r}: not a folder (expected a klein pipeline folder "
                            "as `huggingface-cli download black-forest-labs/FLUX.2-klein-base-4B` writes it)")
  cfg, _ = finetuned.read_sources(path)
  if cfg.patch_size != 1:
    raise ValueError(f"{path}: transformer patch_size {cfg.patch_size}; klein's is 1 (the VAE patchifies)")
  fields = {k: getattr(cfg, k) for k in ARCH_FIELDS}
  if os.path.isdir(os.path.join(path, "vae")):
    vae_cfg = vae_lib.read_config(vae_lib.vae_dir(path))
    fields["patch_size"] = vae_cfg.scale * vae_cfg.patch_size[0]
    if vae_cfg.token_channels != cfg.in_channels:
      raise ValueError(f"{path}: the VAE's tokens have {vae_cfg.token_channels} channels, the transformer reads "
                       f"{cfg.in_channels}")
  return fields


def check_folder(model_cfg: KleinConfig) -> None:
  """A set `pretrained` must be a klein pipeline folder (never a silent random init in its place)."""
  folder = model_cfg.pretrained
  if folder and not os.path.isdir(os.path.join(folder, "vae")):
    raise FileNotFoundError(f"config.model.pretrained={folder!r}: no klein pipeline folder there (expected vae/, "
                            "text_encoder/, tokenizer/, transformer/ and scheduler/, as `huggingface-cli download "
                            "black-forest-labs/FLUX.2-klein-base-4B --local-dir FOLDER` writes them)")


def flux_mu(tokens: int) -> float:
  """FLUX's shift for an image of `tokens` tokens: 0.5 at 256, 1.15 at 4096, linear between and beyond."""
  slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ - BASE_SEQ)
  return float(tokens * slope + BASE_SHIFT - slope * BASE_SEQ)


def _abstract_on(module, mesh, rules):
  """The module's variables as ShapeDtypeStructs carrying the shardings their logical names give."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import parallel  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(module)
  flat = []
  for path, var in nnx.to_flat_state(state):
    x = var.get_value()
    names = tuple(var.get_metadata().get("out_sharding") or (None,) * len(x.shape))
    sharding = parallel.named_sharding(mesh, names, rules, x.shape)
    flat.append((path, var.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding))))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


class KleinFamily:
  """See vbanana/families/__init__.py for what each method promises."""

  name = "flux2"
  config_class = KleinConfig
  default_size = "klein-4b"
  host_conditioned = True  # `prepare_batch` adds what the programs read (the prompt embeddings)

  # --------------------------------------------------------------------------------------------------------
  # Config.
  # --------------------------------------------------------------------------------------------------------
  def model_config(self, config) -> KleinConfig:
    """config.model.size, the pretrained folder's architecture, the set config.model fields and the
    layout from config.data; klein predicts the velocity, so config.flow.prediction must be 'v'."""
    model = _as_dict(config.model)
    size = (model.get("size") or self.default_size).lower()
    if size not in SIZES:
      raise ValueError(f"config.model.size={size!r}: klein sizes are {sorted(SIZES)}")
    fields = {k: v for k, v in model.items() if k not in ("size", "family") and v is not None}
    data = _as_dict(config.get("data"))
    for model_field, data_field in LAYOUT_FIELDS:
      if data.get(data_field) is None:
        continue
      if model_field in fields and not _same(fields[model_field], data[data_field]):
        raise ValueError(f"config.model.{model_field}={fields[model_field]!r} disagrees with "
                         f"config.data.{data_field}={data[data_field]!r}; set one (config.data decides the layout)")
      fields[model_field] = data[data_field]
    if fields.get("pretrained") and os.path.exists(fields["pretrained"]):  # a missing one: the setup says so
      for key, value in folder_fields(fields["pretrained"]).items():
        if key in fields and not _same(fields[key], value):
          raise ValueError(f"config.model.{key}={fields[key]!r} disagrees with {fields['pretrained']}: {value!r}")
        fields[key] = value
    prediction = _as_dict(config.get("flow")).get("prediction") or "v"
    if prediction != "v":
      raise ValueError(f"config.flow.prediction={prediction!r}: klein predicts the velocity; expected 'v'")
    return KleinConfig(**{**SIZES[size], **fields})

  def set_model(self, config, model_cfg: KleinConfig) -> None:
    for key, value in model_cfg.to_dict().items():
      config.model[key] = value
    config.data.resolution = model_cfg.image_size
    config.data.text_length = model_cfg.text_len
    config.data.max_inputs = model_cfg.max_inputs
    config.data.shapes = [list(s) for s in model_cfg.image_shapes] or None

  def config_from_dict(self, d: Mapping[str, Any]) -> KleinConfig:
    return KleinConfig.from_dict(d)

  def config_for_folder(self, path: str, **overrides) -> KleinConfig:
    """A klein folder as a model: a run exported by `save` (its recorded config, the adapters merged) or a
    downloaded klein (the defaults, with the folder's architecture)."""
    from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
    record = finetuned.read_record(path) or {}
    fields = dict(record.get("model_config") or {})
    fields.update(pretrained=path, lora_rank=0, lora_alpha=0.0)
    fields.update(folder_fields(path))
    fields.update(overrides)
    return KleinConfig.from_dict(fields)

  # --------------------------------------------------------------------------------------------------------
  # Module.
  # --------------------------------------------------------------------------------------------------------
  def build(self, model_cfg: KleinConfig, rngs, *, attention: str | None = None):
    from vbanana.flux2 import lora, transformer  # pylint: disable=g-import-not-at-top
    model = transformer.Flux2Transformer(model_cfg.flux2_config(attention), rngs=rngs)
    if model_cfg.lora_rank:
      model = lora.apply(model, rank=model_cfg.lora_rank, alpha=model_cfg.lora_alpha or model_cfg.lora_rank,
                         rngs=rngs)
    return model

  # --------------------------------------------------------------------------------------------------------
  # Image codec: the frozen VAE (in frozen['vae']) between pixels and klein's tokens.
  # --------------------------------------------------------------------------------------------------------
  def encode_images(self, frozen, images):
    return frozen["vae"].encode_images(images)

  def decode_images(self, frozen, x):
    return frozen["vae"].decode_images(x)

  def denoised_shape(self, model_cfg: KleinConfig, image_shape) -> tuple[int, ...]:
    h, w, p = int(image_shape[0]), int(image_shape[1]), model_cfg.patch_size
    if h % p or w % p:
      raise ValueError(f"images of {h}x{w} px: klein's tokens cover {p} px, so both sides must be multiples of "
                       f"{p} (config.data.resolution / shapes)")
    return (h // p, w // p, model_cfg.in_channels)

  # --------------------------------------------------------------------------------------------------------
  # Text conditioner: Qwen3 on the host (conditioner.PromptConditioner); the programs read the embeddings.
  # --------------------------------------------------------------------------------------------------------
  def text_conditioner(self, model_cfg: KleinConfig, mesh=None, rules=None):
    """The host-side prompt encoder of the pretrained folder, or None (no folder: batches must carry
    `text_embeddings`)."""
    del mesh
    from vbanana.flux2 import conditioner  # pylint: disable=g-import-not-at-top
    check_folder(model_cfg)
    if not conditioner.has_text_encoder(model_cfg.pretrained):
      return None
    return conditioner.PromptConditioner(model_cfg.pretrained, prompt_len=model_cfg.prompt_len,
                                         layers=model_cfg.text_layers, dtype=model_cfg.dtype, rules=rules)

  def prepare_batch(self, model_cfg: KleinConfig, conditioner, batch, sharding=None) -> dict:
    """The batch with `text_embeddings` (its instructions through Qwen3) added, unless it has them: numpy
    rows, global arrays (with `sharding`), or ShapeDtypeStructs (ahead-of-time compiles)."""
    batch = dict(batch)
    if "text_embeddings" in batch:
      return batch
    text = batch["text"]
    if isinstance(text, jax.ShapeDtypeStruct):
      batch["text_embeddings"] = jax.ShapeDtypeStruct(
          (text.shape[0], model_cfg.prompt_len, model_cfg.joint_attention_dim), model_cfg.dtype,
          sharding=sharding or text.sharding)
      return batch
    if conditioner is None:
      raise ValueError("klein reads instructions through its Qwen3: set config.model.pretrained to a klein "
                       "folder with text_encoder/ and tokenizer/, or give the batches text_embeddings")
    return conditioner.prepare(batch, sharding)

  def condition(self, frozen, batch) -> dict:
    del frozen
    if batch.get("text_embeddings") is None:
      raise ValueError("klein's batch has no text_embeddings: batches go through setup.shard_batch (or the "
                       "setup's sampler), which adds them from config.model.pretrained's Qwen3")
    return {"txt": batch["text_embeddings"]}

  def null_condition(self, frozen, cond) -> dict:
    """Every row's instruction replaced by the encoding of '' (klein's negative prompt)."""
    txt = cond["txt"]
    return {"txt": jnp.broadcast_to(frozen["null_text"].astype(txt.dtype)[None], txt.shape)}

  # --------------------------------------------------------------------------------------------------------
  # Forward and schedule.
  # --------------------------------------------------------------------------------------------------------
  def apply(self, model, x_t, t, cond, inputs, input_mask):
    """x_t (B, h, w, C) tokens, inputs (B, K, h, w, C) -> the velocity of the target's tokens (B, h, w, C)."""
    from vbanana.flux2 import transformer  # pylint: disable=g-import-not-at-top
    b, h, w, c = x_t.shape
    k, n = inputs.shape[1], h * w
    txt = cond["txt"]
    hidden = jnp.concatenate([x_t.reshape(b, n, c), inputs.reshape(b, k * n, c).astype(x_t.dtype)], axis=1)
    img_ids, txt_ids = transformer.position_ids((h, w), [(h, w)] * k, txt.shape[1])
    mask = None
    if k:  # [text; target] always attended; a reference slot only when the row has that image
      mask = jnp.concatenate([jnp.ones((b, txt.shape[1] + n), bool), jnp.repeat(input_mask, n, axis=1)], axis=1)
    out = model(hidden, txt, t, img_ids, txt_ids, attention_mask=mask)
    return out[:, :n].reshape(b, h, w, -1)

  def schedule(self, model_cfg: KleinConfig):
    from vbanana.flux2 import scheduler  # pylint: disable=g-import-not-at-top
    folder = model_cfg.pretrained
    if folder and os.path.isfile(os.path.join(folder, "scheduler", scheduler.CONFIG_NAME)):
      return scheduler.FlowMatchSchedule.from_folder(folder)
    return scheduler.FlowMatchSchedule(**DEFAULT_SCHEDULE)

  def sample_times(self, model_cfg: KleinConfig, steps: int, x_shape) -> jax.Array:
    """klein's sigmas for this many target tokens (its scheduler config), or the uniform grid."""
    if model_cfg.sample_schedule == "uniform":
      return jnp.linspace(1.0, 0.0, steps + 1)
    return jnp.asarray(self.schedule(model_cfg).sigmas(int(steps), int(x_shape[0]) * int(x_shape[1])))

  def train_flow(self, model_cfg: KleinConfig, flow_cfg, x_shape):
    """config.flow for a batch of this denoised shape: with `time_shift`, the logit-normal's mean moved by
    FLUX's mu(target tokens) (the exponential time shift, exactly)."""
    if not model_cfg.time_shift:
      return flow_cfg
    if flow_cfg.time_sampling != "logit_normal":
      raise ValueError("config.model.time_shift shifts the logit-normal training times; config.flow."
                       f"time_sampling is {flow_cfg.time_sampling!r}")
    mu = flux_mu(int(x_shape[0]) * int(x_shape[1]))
    return dataclasses.replace(flow_cfg, logit_mean=flow_cfg.logit_mean + mu)

  # --------------------------------------------------------------------------------------------------------
  # Weights.
  # --------------------------------------------------------------------------------------------------------
  def vae_config(self, model_cfg: KleinConfig):
    from vbanana.flux2 import vae as vae_lib  # pylint: disable=g-import-not-at-top
    if model_cfg.pretrained and os.path.isdir(os.path.join(model_cfg.pretrained, "vae")):
      return vae_lib.read_config(vae_lib.vae_dir(model_cfg.pretrained))
    return vae_lib.VAEConfig()

  def frozen_params(self, model_cfg: KleinConfig, mesh=None, rules=None, *, abstract: bool = False,
                    module=None, conditioner=None) -> dict:
    """{'vae': the VAE module, 'null_text': the encoding of '' (prompt_len, joint_dim), and with LoRA
    'module': the transformer's frozen weights, a tree like `module`}, placed on `mesh` by their logical
    names; ShapeDtypeStructs carrying shardings when the devices are `abstract`. Without a pretrained
    folder: a random VAE, a zero null text and random frozen weights (benchmarks, compiles)."""
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from vbanana import parallel  # pylint: disable=g-import-not-at-top
    from vbanana.flux2 import finetuned, vae as vae_lib  # pylint: disable=g-import-not-at-top
    dtype = jnp.dtype(model_cfg.dtype)
    if not abstract:
      check_folder(model_cfg)
    vae_cfg, folder = self.vae_config(model_cfg), model_cfg.pretrained
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    null_shape = (model_cfg.prompt_len, model_cfg.joint_attention_dim)
    if abstract:
      vae = _abstract_on(nnx.eval_shape(lambda: vae_lib.Flux2VAE(vae_cfg, rngs=nnx.Rngs(0), dtype=dtype,
                                                                   param_dtype=dtype)), mesh, rules)
      out = {"vae": vae, "null_text": jax.ShapeDtypeStruct(null_shape, dtype, sharding=replicated)}
      if module is not None:
        out["module"] = module
      return out
    if folder and os.path.isdir(os.path.join(folder, "vae")):
      vae = vae_lib.load_vae(folder, dtype=model_cfg.dtype, mesh=mesh, rules=rules)
    else:
      from vbanana.flux2 import placement  # pylint: disable=g-import-not-at-top
      random = vae_lib.Flux2VAE(vae_cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype)
      values = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(random))}
      vae = placement.materialize(nnx.eval_shape(lambda: random), lambda p, s, d: values[p], mesh=mesh, rules=rules)
    null = conditioner.embed([""])[0] if conditioner is not None else np.zeros(null_shape, dtype)
    out = {"vae": vae, "null_text": jax.device_put(np.asarray(null).astype(dtype), replicated)}
    if module is not None:
      if folder:
        out["module"] = finetuned.load_params(folder, module)
      else:
        shardings = jax.tree.map(lambda s: s.sharding, module)

        def init():
          built = self.build(model_cfg, nnx.Rngs(0))
          return nnx.to_pure_dict(nnx.split(built, nnx.Param, ...)[2])
        with parallel.sharding_context(mesh, rules):
          out["module"] = jax.jit(init, out_shardings=shardings)()
    return out

  def resident_bytes(self, model_cfg: KleinConfig, mesh, rules=None) -> int:
    """Bytes per device that stay on the devices beside every program: the text conditioner's Qwen3 (cut at
    the deepest layer klein reads, in the activations' dtype, sharded over each process's own devices, as
    `text_conditioner` places it). `vbanana.aot` adds them to each program's total."""
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from vbanana import parallel  # pylint: disable=g-import-not-at-top
    from vbanana.flux2 import text_encoder as te  # pylint: disable=g-import-not-at-top
    folder = model_cfg.pretrained
    if folder and not os.path.isdir(os.path.join(folder, "text_encoder")):
      return 0  # no Qwen3 in the folder: the batches carry their embeddings
    cfg = te.Qwen3Config.from_json(os.path.join(te.text_encoder_dir(folder), "config.json")) if folder else \
        te.Qwen3Config()
    dtype = jnp.dtype(model_cfg.dtype)
    encoder = nnx.eval_shape(lambda: te.Qwen3Encoder(cfg, depth=te.depth_for(cfg, model_cfg.text_layers),
                                                     rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype))
    first = mesh.devices.flat[0].process_index
    local = [d for d in mesh.devices.flat if d.process_index == first]
    local_mesh = parallel.make_mesh(dict(data=1, fsdp=len(local), tensor=1), devices=local)
    total = 0
    for _, var in nnx.to_flat_state(nnx.state(encoder)):
      value = var.get_value()
      names = tuple(var.get_metadata().get("out_sharding") or (None,) * len(value.shape))
      sharding = parallel.named_sharding(local_mesh, names, parallel.resolve_rules(rules), value.shape)
      total += int(np.prod(sharding.shard_shape(value.shape))) * value.dtype.itemsize
    return total

  def load_params(self, path: str, abstract_params):
    """init_from a klein folder: its transformer weights placed like `abstract_params` (full fine-tuning)."""
    from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
    return finetuned.load_params(path, abstract_params)

  def save(self, path: str, flat_params: Mapping[str, Any], model_cfg: KleinConfig, metadata: Mapping[str, str]):
    """A diffusers pipeline folder (vbanana/flux2/finetuned.py): `metadata` may name the tensors' `dtype`."""
    from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
    metadata = dict(metadata)
    dtype = metadata.pop("dtype", None)
    finetuned.write_pipeline(path, {k: np.asarray(v) for k, v in flat_params.items()}, model_cfg.flux2_config(),
                             pretrained=model_cfg.pretrained, lora_scale=model_cfg.lora_scale, dtype=dtype,
                             record={"model_config": model_cfg.to_dict(), "family": self.name, **metadata})

  def load(self, path: str):
    """(KleinConfig, flat params, metadata) of a klein folder (whole on the host: for small models)."""
    from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
    model_cfg = self.config_for_folder(path)
    _, sources = finetuned.read_sources(path, model_cfg.param_dtype)
    flat = {k: np.stack(list(s.parts())) if s.depth is not None else s.layer(0) for k, s in sources.items()}
    return model_cfg, flat, {"prediction": "v"}

  # --------------------------------------------------------------------------------------------------------
  # Cost and batches.
  # --------------------------------------------------------------------------------------------------------
  def forward_flops(self, model_cfg: KleinConfig, **kw) -> float:
    """The transformer's matmul FLOPs for one example at the token budget: target + every reference slot
    + prompt_len text tokens (the frozen VAE and Qwen3 are not counted)."""
    del kw
    from vbanana.flux2 import transformer  # pylint: disable=g-import-not-at-top
    n = model_cfg.tokens_per_image
    return transformer.forward_flops(model_cfg.flux2_config(), (1 + model_cfg.max_inputs) * n,
                                     model_cfg.prompt_len)

  def train_flops_per_example(self, model_cfg: KleinConfig, **kw) -> float:
    """Forward + backward: 3x the forward; with LoRA 2x (no gradients of the frozen weights)."""
    return (2.0 if model_cfg.lora_rank else 3.0) * self.forward_flops(model_cfg, **kw)

  def hardware_train_flops(self, model_cfg: KleinConfig, **kw) -> float:
    """+ the forward again under remat 'full' (the blocks are recomputed in the backward)."""
    extra = self.forward_flops(model_cfg, **kw) if model_cfg.remat == "full" else 0.0
    return self.train_flops_per_example(model_cfg, **kw) + extra

  def sample_flops(self, model_cfg: KleinConfig, steps: int, method: str = "euler", passes: int = 1) -> float:
    evaluations = steps if method == "euler" else 2 * steps - 1
    return evaluations * passes * self.forward_flops(model_cfg)

  def batch_layout(self, model_cfg: KleinConfig, batch_size: int, shape=None) -> dict:
    """The DiT's batch (docs/interfaces.md, 'Batch') plus the prompt embeddings the conditioner adds."""
    (h, w), k = shape or model_cfg.shapes[0], model_cfg.max_inputs
    return dict(text=((batch_size, model_cfg.text_len), "int32"),
                text_embeddings=((batch_size, model_cfg.prompt_len, model_cfg.joint_attention_dim),
                                 model_cfg.dtype),
                inputs=((batch_size, k, h, w, 3), "uint8"),
                input_mask=((batch_size, k), "bool"),
                target=((batch_size, h, w, 3), "uint8"),
                task=((batch_size,), "int32"))

  def describe(self, model_cfg: KleinConfig) -> str:
    cfg = model_cfg.flux2_config()
    how = (f"LoRA rank {model_cfg.lora_rank} (alpha {model_cfg.lora_alpha or model_cfg.lora_rank:g})"
           if model_cfg.lora_rank else "full fine-tuning")
    return (f"FLUX.2 [klein] {cfg.num_layers}+{cfg.num_single_layers} blocks width {cfg.width}, "
            f"{model_cfg.image_size} px -> {model_cfg.tokens_per_image} tokens per image (+ {model_cfg.max_inputs} "
            f"reference), {model_cfg.prompt_len} text tokens, {model_cfg.dtype} activations, remat "
            f"{model_cfg.remat}, {how}, from {model_cfg.pretrained or 'random init'}")


FAMILY = KleinFamily()
