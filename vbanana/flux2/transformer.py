r"""The FLUX.2 [klein] transformer in Flax NNX: the same function as diffusers' `Flux2Transformer2DModel`.

    text (B, L, joint_dim) ─ txt_in ─┐                 ┌─ double block x num_layers ─┐   ┌ single block x N ┐
                                     ├─ two streams ──>│ own q/k/v, norms, MLPs;     │──>│ one stream       │─ drop text
    image tokens (B, N, C) ─ img_in ─┘                 │ joint attention [txt; img]  │   │ [txt; img]       │─ adaLN out
                                                       └─────────────────────────────┘   └──────────────────┘─ (B, N, C_out)
    t ─ sinusoidal(1000 t) ─ MLP ─ temb ─ SiLU ─ three shared modulations (img 6W, txt 6W, single 3W), computed
                                                 once for all blocks; and adaLN of the output (shift, scale)

The pieces, as diffusers has them (read in diffusers 0.42.1 `transformer_flux2.py`), in vbanana's style:
  * Blocks are stacked (a leading 'layers' axis) and run with `lax.scan` (optionally rematerialised), so the
    compile time does not grow with depth; the modulation vectors are computed once, outside the scans,
    because klein shares them across blocks.
  * Double block: per stream a parameter-free LayerNorm with adaLN (shift, scale, gate), q/k/v, per-head
    RMSNorm of q and k, one attention over [text; image] with no mask (padding tokens are attended, as in
    diffusers), an output projection and a SwiGLU MLP ([gate | up] -> down) per stream.
  * Single block: LayerNorm + adaLN, then attention and a SwiGLU MLP in parallel from the same input (diffusers
    fuses them into one `to_qkv_mlp_proj` and one `to_out`; here they are separate matmuls of the same
    function), one gated residual.
  * Rotary positions: 4 axes (T, H, W, L) with per-axis dims and theta. diffusers rotates interleaved pairs
    (2i, 2i+1); vbanana's `layers.apply_rope` rotates (i, i + D/2). They are the same attention once the
    q/k projection rows and QK-norm weights are stored in the permuted order new[j] = old[2j],
    new[j + D/2] = old[2j + 1] (q.k is invariant under one permutation of both; RMSNorm too):
    `transformer_io` permutes on import and back on export, so this module holds no interleaving.
  * Position ids: text (0, 0, 0, l), target (0, h, w, 0), reference image i (10 + 10 i, h, w, 0), references
    after the target (`position_ids`). Ids are taken from batch element 0, as diffusers does. Concrete (NumPy)
    ids get a float64 angle table (diffusers computes in float64); traced ids get float32 angles.
  * Every parameter and activation carries logical axis names (vbanana.parallel maps them to the mesh);
    parameters in `param_dtype` (float32), activations in `dtype` (bfloat16 at scale); the timestep MLP and
    the modulations are computed in float32.

Call: `model(hidden_states (B, N, C_in), encoder_hidden_states (B, L, joint_dim), timestep (B,) in [0, 1],
img_ids (N, 4), txt_ids (L, 4), guidance=None) -> (B, N, C_out)` float32, diffusers' signature and shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel
from vbanana.model import layers
from vbanana.model.config import ATTENTION, DTYPES, REMAT_POLICIES
from vbanana.model.dit import timestep_embedding

# diffusers' constructor defaults (FLUX.2 [dev]); a config.json that omits a field means these.
DIFFUSERS_DEFAULTS: dict[str, Any] = dict(
    patch_size=1, in_channels=128, out_channels=None, num_layers=8, num_single_layers=48, attention_head_dim=128,
    num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=True)
DIFFUSERS_FIELDS = tuple(DIFFUSERS_DEFAULTS)
CLASS_NAME = "Flux2Transformer2DModel"
REFERENCE_TIME_SCALE = 10  # reference image i sits at time coordinate 10 + 10 i (diffusers' `scale`)


@dataclasses.dataclass(frozen=True)
class Flux2Config:
  """diffusers' constructor arguments (same names; defaults: klein base 4B) and vbanana's numerics."""
  patch_size: int = 1
  in_channels: int = 128
  out_channels: int | None = None
  num_layers: int = 5                 # double-stream blocks
  num_single_layers: int = 20         # single-stream blocks
  attention_head_dim: int = 128
  num_attention_heads: int = 24       # width 3072
  joint_attention_dim: int = 7680     # Qwen3-4B layers 9, 18, 27 stacked: 3 x 2560
  timestep_guidance_channels: int = 256
  mlp_ratio: float = 3.0
  axes_dims_rope: tuple = (32, 32, 32, 32)
  rope_theta: int = 2000
  eps: float = 1e-6
  guidance_embeds: bool = False
  # vbanana's, not diffusers': how the function is computed.
  dtype: str = "float32"              # activations / matmul inputs
  param_dtype: str = "float32"
  remat: str = "none"                 # a key of vbanana.model.config.REMAT_POLICIES
  scan: bool = True
  attention: str | None = None        # None: by platform (layers.resolve_attention)

  def __post_init__(self):
    object.__setattr__(self, "axes_dims_rope", tuple(int(d) for d in self.axes_dims_rope))

    def fail(field, message):
      raise ValueError(f"Flux2Config.{field}: {message}")
    for name in ("patch_size", "in_channels", "num_layers", "attention_head_dim", "num_attention_heads",
                 "joint_attention_dim", "timestep_guidance_channels"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(name, f"expected a positive int, got {value!r}")
    if not isinstance(self.num_single_layers, int) or self.num_single_layers < 0:
      fail("num_single_layers", f"expected an int >= 0, got {self.num_single_layers!r}")
    if self.out_channels is not None and (not isinstance(self.out_channels, int) or self.out_channels < 1):
      fail("out_channels", f"expected None or a positive int, got {self.out_channels!r}")
    if sum(self.axes_dims_rope) != self.attention_head_dim or any(d % 2 for d in self.axes_dims_rope):
      fail("axes_dims_rope", f"{self.axes_dims_rope}: expected even dims that add up to attention_head_dim="
           f"{self.attention_head_dim}")
    if self.timestep_guidance_channels % 2:
      fail("timestep_guidance_channels", f"expected an even number, got {self.timestep_guidance_channels}")
    if not self.mlp_ratio > 0:
      fail("mlp_ratio", f"expected > 0, got {self.mlp_ratio!r}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        fail(name, f"expected one of {DTYPES}, got {getattr(self, name)!r}")
    if self.remat not in REMAT_POLICIES:
      fail("remat", f"expected one of {tuple(REMAT_POLICIES)}, got {self.remat!r}")
    if self.attention not in ATTENTION:
      fail("attention", f"expected one of {ATTENTION}, got {self.attention!r}")

  # Derived sizes, named once (diffusers' own formulas).
  @property
  def width(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def mlp_dim(self) -> int:
    return int(self.width * self.mlp_ratio)

  @property
  def output_channels(self) -> int:
    return self.out_channels or self.in_channels

  @property
  def patch_dim_out(self) -> int:
    return self.patch_size ** 2 * self.output_channels

  def replace(self, **overrides) -> "Flux2Config":
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Flux2Config":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"Flux2Config.from_dict: unknown fields {unknown}; known: {sorted(known)}")
    return cls(**d)

  @classmethod
  def from_diffusers_config(cls, d: Mapping[str, Any], **overrides) -> "Flux2Config":
    """From a diffusers `config.json` (a dict); `overrides` set vbanana's fields (dtype, remat, ...)."""
    name = d.get("_class_name", CLASS_NAME)
    if name != CLASS_NAME:
      raise ValueError(f"config.json: _class_name is {name!r}, expected {CLASS_NAME!r}")
    unknown = sorted(k for k in d if not k.startswith("_") and k not in DIFFUSERS_DEFAULTS)
    if unknown:
      raise ValueError(f"config.json: unknown {CLASS_NAME} fields {unknown}; known: {sorted(DIFFUSERS_DEFAULTS)}")
    fields = {k: d.get(k, v) for k, v in DIFFUSERS_DEFAULTS.items()}
    return cls(**fields, **overrides)

  def to_diffusers_config(self) -> dict[str, Any]:
    """diffusers' `config.json` of this model (what `save_pretrained` writes, less its version stamp)."""
    d = {"_class_name": CLASS_NAME}
    d.update({k: getattr(self, k) for k in DIFFUSERS_FIELDS})
    d["axes_dims_rope"] = list(self.axes_dims_rope)
    return d


# Named sizes (diffusers' fields; vbanana's numerics come from the caller).
SIZES: dict[str, dict[str, Any]] = {
    "klein-4b": {},  # FLUX.2 [klein] base 4B: black-forest-labs/FLUX.2-klein-base-4B, transformer/config.json
}


def config_for(name: str, **overrides) -> Flux2Config:
  """The named size with `overrides` (e.g. `config_for("klein-4b", dtype="bfloat16")`)."""
  if name.lower() not in SIZES:
    raise ValueError(f"FLUX.2 size {name!r} is not known; known: {sorted(SIZES)}")
  return Flux2Config(**{**SIZES[name.lower()], **overrides})


# ----------------------------------------------------------------------------------------------------------
# Position ids (diffusers' pipelines build the same).
# ----------------------------------------------------------------------------------------------------------
def text_ids(length: int) -> np.ndarray:
  """(L, 4) ids of L text tokens: (0, 0, 0, l)."""
  ids = np.zeros((length, 4), np.int64)
  ids[:, 3] = np.arange(length)
  return ids


def image_ids(rows: int, cols: int, time: int = 0) -> np.ndarray:
  """(rows * cols, 4) ids of a token grid in row-major order: (time, h, w, 0)."""
  h, w = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  return np.stack([np.full(rows * cols, time), h.reshape(-1), w.reshape(-1), np.zeros(rows * cols, int)],
                  axis=-1).astype(np.int64)


def position_ids(grid: tuple[int, int], reference_grids: Sequence[tuple[int, int]] = (), text_length: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(img_ids, txt_ids): the target's grid at time 0, then reference image i's at 10 + 10 i (each its own
  grid), and the text's."""
  parts = [image_ids(*grid)]
  parts += [image_ids(*g, time=REFERENCE_TIME_SCALE * (i + 1)) for i, g in enumerate(reference_grids)]
  return np.concatenate(parts, axis=0), text_ids(text_length)


def rope_table(cfg: Flux2Config, txt_ids, img_ids):
  """Rotation angles (L + N, head_dim / 2) of the joint sequence [text; image]; ids of batch element 0."""
  txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
  img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
  if isinstance(txt_ids, jax.core.Tracer) or isinstance(img_ids, jax.core.Tracer):
    ids = jnp.concatenate([jnp.asarray(txt_ids), jnp.asarray(img_ids)], axis=0)
  else:  # concrete: an exact table on the host (diffusers computes its angles in float64)
    ids = np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)], axis=0).astype(np.float32)
  return layers.rope_angles(ids, theta=cfg.rope_theta, axes_dims=cfg.axes_dims_rope)


# ----------------------------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------------------------
TOKENS = ("act_batch", "act_seq", "act_embed")
HEADS = ("act_batch", "act_seq", "act_heads", "act_head_dim")


def _modulate(x, shift, scale, eps):
  return layers.layer_norm(x, eps) * (1 + scale) + shift


class QKV(nnx.Module):
  """q, k, v (B, S, N, D) of one stream, with per-head RMSNorm of q and k."""

  def __init__(self, cfg: Flux2Config, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), use_bias=False)
    n, d = cfg.num_attention_heads, cfg.attention_head_dim
    self.qkv = layers.Dense((cfg.width,), (3, n, d), ("embed", None, "heads", "head_dim"), **kw)
    self.q_norm = layers.RMSNorm(d, ("head_dim",), eps=cfg.eps, param_dtype=jnp.dtype(cfg.param_dtype))
    self.k_norm = layers.RMSNorm(d, ("head_dim",), eps=cfg.eps, param_dtype=jnp.dtype(cfg.param_dtype))

  def __call__(self, x):
    qkv = self.qkv(x)
    q, k, v = (parallel.constrain(qkv[:, :, i], HEADS) for i in range(3))
    return self.q_norm(q), self.k_norm(k), v


class FeedForward(nnx.Module):
  """SwiGLU: down(silu(gate) * up), with [gate | up] from one matmul (diffusers' `linear_in`)."""

  def __init__(self, cfg: Flux2Config, *, rngs: nnx.Rngs):
    kw = dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), use_bias=False)
    self.up = layers.Dense((cfg.width,), (2, cfg.mlp_dim), ("embed", None, "mlp"), **kw)
    self.down = layers.Dense((cfg.mlp_dim,), (cfg.width,), ("mlp", "embed"), **kw)

  def __call__(self, x):
    return self.down(_swiglu(self.up(x)))


def _swiglu(h):
  """(B, S, 2, F) [gate, up] -> (B, S, F)."""
  return parallel.constrain(jax.nn.silu(h[:, :, 0]) * h[:, :, 1], ("act_batch", "act_seq", "act_mlp"))


def _joint_attention(cfg: Flux2Config, q, k, v, angles, mask=None):
  q, k = layers.apply_rope(q, angles), layers.apply_rope(k, angles)
  return layers.multi_head_attention(q, k, v, mask, cfg.attention)


class DoubleBlock(nnx.Module):
  """Two streams (image, text) with their own weights and one joint attention."""

  def __init__(self, cfg: Flux2Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), use_bias=False)
    out_names = ("heads", "head_dim", "embed")
    n, d = cfg.num_attention_heads, cfg.attention_head_dim
    self.img_attn = QKV(cfg, rngs=rngs)
    self.txt_attn = QKV(cfg, rngs=rngs)
    self.img_out = layers.Dense((n, d), (cfg.width,), out_names, **kw)
    self.txt_out = layers.Dense((n, d), (cfg.width,), out_names, **kw)
    self.img_mlp = FeedForward(cfg, rngs=rngs)
    self.txt_mlp = FeedForward(cfg, rngs=rngs)

  def __call__(self, carry, mod_img, mod_txt, angles, mask=None):
    """carry (txt (B, L, W), img (B, N, W)); mod_* (B, 6, 1, W): shift, scale, gate of attention and MLP;
    mask bool (B, L + N) of the keys attended, or None (all)."""
    txt, img = carry
    eps, length = self.cfg.eps, txt.shape[1]
    qi, ki, vi = self.img_attn(_modulate(img, mod_img[:, 0], mod_img[:, 1], eps))
    qt, kt, vt = self.txt_attn(_modulate(txt, mod_txt[:, 0], mod_txt[:, 1], eps))
    joint = lambda t, i: jnp.concatenate([t, i], axis=1)
    y = _joint_attention(self.cfg, joint(qt, qi), joint(kt, ki), joint(vt, vi), angles, mask)
    img = img + mod_img[:, 2] * self.img_out(y[:, length:])
    img = img + mod_img[:, 5] * self.img_mlp(_modulate(img, mod_img[:, 3], mod_img[:, 4], eps))
    txt = txt + mod_txt[:, 2] * self.txt_out(y[:, :length])
    txt = txt + mod_txt[:, 5] * self.txt_mlp(_modulate(txt, mod_txt[:, 3], mod_txt[:, 4], eps))
    return parallel.constrain(txt, TOKENS), parallel.constrain(img, TOKENS)


class SingleBlock(nnx.Module):
  """One stream: attention and a SwiGLU MLP in parallel from one adaLN-normalised input, one gated residual."""

  def __init__(self, cfg: Flux2Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(rngs=rngs, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), use_bias=False)
    n, d = cfg.num_attention_heads, cfg.attention_head_dim
    self.attn = QKV(cfg, rngs=rngs)
    self.mlp_in = layers.Dense((cfg.width,), (2, cfg.mlp_dim), ("embed", None, "mlp"), **kw)
    self.attn_out = layers.Dense((n, d), (cfg.width,), ("heads", "head_dim", "embed"), **kw)
    self.mlp_out = layers.Dense((cfg.mlp_dim,), (cfg.width,), ("mlp", "embed"), **kw)

  def __call__(self, x, mod, angles, mask=None):
    """x (B, L + N, W); mod (B, 3, 1, W): shift, scale, gate; mask as DoubleBlock's."""
    h = _modulate(x, mod[:, 0], mod[:, 1], self.cfg.eps)
    y = _joint_attention(self.cfg, *self.attn(h), angles, mask)
    x = x + mod[:, 2] * (self.attn_out(y) + self.mlp_out(_swiglu(self.mlp_in(h))))
    return parallel.constrain(x, TOKENS)


# ----------------------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------------------
class Flux2Transformer(nnx.Module):
  """`model(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, guidance=None)`: diffusers'
  `Flux2Transformer2DModel.forward` (without its KV-cache and LoRA options).

  `attention_mask` (vbanana's, not diffusers'): bool (B, L + N), the keys of the joint sequence [text; image]
  that attention reads; None (the default, diffusers' function) reads all. The trainer masks the tokens of
  absent reference images with it, so a row without a reference computes what klein computes with none."""

  def __init__(self, cfg: Flux2Config, *, rngs: nnx.Rngs):
    # Never sharded at creation: callers place parameters (jit out-shardings, or per-tensor on import).
    with nnx.use_eager_sharding(False):
      self._build(cfg, rngs)

  def _build(self, cfg: Flux2Config, rngs: nnx.Rngs):
    self.cfg = cfg
    w = cfg.width
    f32 = dict(rngs=rngs, dtype=jnp.float32, param_dtype=jnp.dtype(cfg.param_dtype), use_bias=False)
    kw = dict(f32, dtype=jnp.dtype(cfg.dtype))
    # Timestep (and guidance) embedding and the shared modulations: small, computed in float32.
    self.time_in = layers.Dense((cfg.timestep_guidance_channels,), (w,), (None, "embed"), **f32)
    self.time_out = layers.Dense((w,), (w,), ("embed", "embed_out"), **f32)
    if cfg.guidance_embeds:
      self.guidance_in = layers.Dense((cfg.timestep_guidance_channels,), (w,), (None, "embed"), **f32)
      self.guidance_out = layers.Dense((w,), (w,), ("embed", "embed_out"), **f32)
    else:
      self.guidance_in = self.guidance_out = None
    mod_names = ("embed", None, "embed_out")
    self.double_mod_img = layers.Dense((w,), (6, w), mod_names, **f32)
    self.double_mod_txt = layers.Dense((w,), (6, w), mod_names, **f32)
    self.single_mod = layers.Dense((w,), (3, w), mod_names, **f32)
    self.img_in = layers.Dense((cfg.in_channels,), (w,), ("patch", "embed"), **kw)
    self.txt_in = layers.Dense((cfg.joint_attention_dim,), (w,), (None, "embed"), **kw)
    self.double_blocks = layers.make_stack(lambda r: DoubleBlock(cfg, rngs=r), cfg.num_layers, rngs)
    self.single_blocks = (layers.make_stack(lambda r: SingleBlock(cfg, rngs=r), cfg.num_single_layers, rngs)
                          if cfg.num_single_layers else None)
    # Output adaLN, (shift, scale) as vbanana's DiT orders them (diffusers' norm_out chunks (scale, shift)).
    self.final_mod = layers.Dense((w,), (2, w), mod_names, **f32)
    self.final = layers.Dense((w,), (cfg.patch_dim_out,), ("embed", "patch"), **kw)

  def conditioning(self, timestep, guidance=None):
    """temb (B, W) float32 from sigma in [0, 1] (and the guidance scale of guidance-distilled models)."""
    emb = lambda lin, lout, s: lout(jax.nn.silu(lin(timestep_embedding(
        jnp.asarray(s, jnp.float32), self.cfg.timestep_guidance_channels))))
    temb = emb(self.time_in, self.time_out, timestep)
    if guidance is not None and self.guidance_in is not None:
      temb = temb + emb(self.guidance_in, self.guidance_out, guidance)
    return temb

  def __call__(self, hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, guidance=None,
               attention_mask=None):
    cfg = self.cfg
    _check_shapes(cfg, hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids)
    dtype = jnp.dtype(cfg.dtype)
    length = encoder_hidden_states.shape[1]

    # Modulations from the timestep, once for all blocks: (B, sets, 1, W), broadcast over the sequence.
    temb = self.conditioning(timestep, guidance)
    c = jax.nn.silu(temb)
    mod = lambda dense: dense(c)[:, :, None, :].astype(dtype)
    mod_img, mod_txt, mod_single = mod(self.double_mod_img), mod(self.double_mod_txt), mod(self.single_mod)

    img = parallel.constrain(self.img_in(hidden_states), TOKENS)
    txt = parallel.constrain(self.txt_in(encoder_hidden_states), TOKENS)
    angles = rope_table(cfg, txt_ids, img_ids)

    txt, img = layers.run_stack(self.double_blocks, (txt, img),
                                lambda block, h: block(h, mod_img, mod_txt, angles, attention_mask),
                                scan=cfg.scan, remat_policy=cfg.remat)
    x = parallel.constrain(jnp.concatenate([txt, img], axis=1), TOKENS)
    if self.single_blocks is not None:
      x = layers.run_stack(self.single_blocks, x,
                           lambda block, h: block(h, mod_single, angles, attention_mask),
                           scan=cfg.scan, remat_policy=cfg.remat)

    x = x[:, length:]  # the image tokens (target and references) are read out
    shift, scale = (a[:, None, :].astype(dtype) for a in jnp.moveaxis(self.final_mod(c), 1, 0))
    return self.final(_modulate(x, shift, scale, cfg.eps)).astype(jnp.float32)


def _check_shapes(cfg: Flux2Config, hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids):
  def fail(message):
    raise ValueError(f"Flux2Transformer: {message}")
  if hidden_states.ndim != 3 or hidden_states.shape[-1] != cfg.in_channels:
    fail(f"hidden_states has shape {tuple(hidden_states.shape)}, expected (B, N, in_channels={cfg.in_channels})")
  b, n = hidden_states.shape[:2]
  if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != b or \
      encoder_hidden_states.shape[-1] != cfg.joint_attention_dim:
    fail(f"encoder_hidden_states has shape {tuple(encoder_hidden_states.shape)}, expected (B={b}, L, "
         f"joint_attention_dim={cfg.joint_attention_dim})")
  if tuple(np.shape(timestep)) != (b,):
    fail(f"timestep has shape {tuple(np.shape(timestep))}, expected (B={b},)")
  axes = len(cfg.axes_dims_rope)
  for name, ids, count in (("img_ids", img_ids, n), ("txt_ids", txt_ids, encoder_hidden_states.shape[1])):
    shape = tuple(np.shape(ids))
    if shape[-2:] != (count, axes) or len(shape) not in (2, 3):
      fail(f"{name} has shape {shape}, expected ({count}, {axes}) (or (B, {count}, {axes}))")


def forward_flops(cfg: Flux2Config, image_tokens: int, text_tokens: int) -> float:
  """Matmul FLOPs of one example's forward (2 per multiply-add): every linear layer and both attention
  products; norms, RoPE and the softmax are left out (a few per cent)."""
  w, f, s, n = cfg.width, cfg.mlp_dim, image_tokens + text_tokens, image_tokens
  per_token_block = 2 * (4 * w * w + 3 * w * f)  # q, k, v, out; [gate | up], down (both block kinds)
  blocks = (cfg.num_layers + cfg.num_single_layers) * (s * per_token_block + 4 * s * s * w)
  embed = 2 * (n * cfg.in_channels * w + text_tokens * cfg.joint_attention_dim * w + n * w * cfg.patch_dim_out)
  conditioning = 2 * (cfg.timestep_guidance_channels * w + w * w + 17 * w * w)  # time MLP, 6 + 6 + 3 + 2 mods
  return float(blocks + embed + conditioning)


def abstract_model(cfg: Flux2Config) -> Flux2Transformer:
  """The module with abstract parameters (shapes, dtypes, logical names): nothing is allocated."""
  return nnx.eval_shape(lambda: Flux2Transformer(cfg, rngs=nnx.Rngs(0)))


def count_params(model: nnx.Module) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = ["Flux2Config", "Flux2Transformer", "config_for", "SIZES", "position_ids", "text_ids", "image_ids",
           "rope_table", "abstract_model", "count_params", "forward_flops", "DIFFUSERS_DEFAULTS", "CLASS_NAME"]
