"""Building blocks of the DiT and the text encoder: dense layers with logical axis names, RMSNorm, rotary
positions, attention with a key padding mask, the SwiGLU MLP, the adaLN transformer block, and stacking
blocks so that the forward is one `lax.scan` (compile time flat in depth).

Every parameter carries logical axis names in its `out_sharding` metadata; `vbanana.parallel` maps them to
the mesh. Parameters are created without eager sharding: `vbanana.step` places them with jit out-shardings.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel

Shape = Sequence[int]
Names = Sequence[str | None]

xavier = jax.nn.initializers.xavier_uniform()
zeros = jax.nn.initializers.zeros


class Dense(nnx.Module):
  """x[..., *in_shape] @ W[*in_shape, *out_shape] (+ b); a fused multi-axis linear (qkv, heads, ...)."""

  def __init__(self, in_shape: Shape, out_shape: Shape, names: Names, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32, init=xavier, use_bias: bool = True):
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    self.num_in, self.dtype = len(in_shape), dtype
    flat = (math.prod(in_shape), math.prod(out_shape))  # fan-in/out of the flattened matrix
    key = rngs.params()
    kernel = init(key, flat, param_dtype).reshape(in_shape + out_shape)
    self.kernel = nnx.Param(kernel, out_sharding=tuple(names))
    self.bias = (nnx.Param(jnp.zeros(out_shape, param_dtype), out_sharding=tuple(names[len(in_shape):]))
                 if use_bias else None)

  def __call__(self, x):
    k = self.kernel[...].astype(self.dtype)
    axes = (tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in)))
    y = jax.lax.dot_general(x.astype(self.dtype), k, (axes, ((), ())))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, names: Names = ("embed",), *, eps: float = 1e-6, param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=tuple(names))
    self.eps = eps

  def __call__(self, x):
    dtype = x.dtype
    x = x.astype(jnp.float32)  # statistics in float32 also under bf16 activations
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...]).astype(dtype)


def layer_norm(x, eps: float = 1e-6):
  """Parameter-free LayerNorm: adaLN supplies the scale and shift."""
  dtype = x.dtype
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return ((x - mean) * jax.lax.rsqrt(var + eps)).astype(dtype)


# ----------------------------------------------------------------------------------------------------------
# Rotary positions. `positions` is (S, P): P = 1 for text (1D), P = 2 for images (row, col), 4 for FLUX.2's
# (time, row, col, text index). The head dim is split in P parts (equal by default, or `axes_dims`), each
# rotated by one coordinate, so tokens see relative offsets along every axis.
# ----------------------------------------------------------------------------------------------------------
def rope_angles(positions, head_dim: int | None = None, theta: float | Sequence[float] = 10000.0, *,
                axes_dims: Sequence[int] | None = None):
  """Angles (S, sum(axes_dims) // 2) for integer/float positions (S, P): axis a's pairs rotate by
  positions[:, a] * theta_a ** (-2j / axes_dims[a]). `axes_dims` defaults to head_dim split equally over the
  P axes; `theta` is one base for all axes or one per axis.

  A NumPy `positions` array gives a NumPy table computed on the host in float64 and wrapped into
  [-pi, pi), so its float32 cosines match float64 ones also at large positions (a 512-token text: float32
  products lose 3e-5 there); a JAX array gives float32 angles computed in the program."""
  num_axes = positions.shape[-1]
  if axes_dims is None:
    axes_dims = (head_dim // num_axes,) * num_axes
  thetas = tuple(theta) if isinstance(theta, Sequence) else (theta,) * num_axes
  if len(axes_dims) != num_axes or len(thetas) != num_axes:
    raise ValueError(f"rope_angles: positions have {num_axes} axes, axes_dims={tuple(axes_dims)} and "
                     f"theta={theta} do not give one per axis")
  host = isinstance(positions, np.ndarray)
  xp, ftype = (np, np.float64) if host else (jnp, jnp.float32)
  parts = []
  for a, (dim, base) in enumerate(zip(axes_dims, thetas)):
    freqs = 1.0 / base ** (xp.arange(0, dim, 2, dtype=ftype) / dim)
    parts.append(positions[..., a:a + 1].astype(ftype) * freqs)
  angles = xp.concatenate(parts, axis=-1)
  if host:
    angles = (np.remainder(angles + np.pi, 2 * np.pi) - np.pi).astype(np.float32)
  return angles


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
  """Rotates channel pairs (i, i + D/2) of x (B, S, N, D) by angles (S, D/2) (or (B, S, D/2))."""
  angles = angles[..., None, :] if angles.ndim == 3 else angles[None, :, None, :]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Attention and MLP.
# ----------------------------------------------------------------------------------------------------------
def attention(q, k, v, mask):
  """Softmax attention of q, k, v (B, N, S, D) (heads first) over the keys that exist (mask bool (B, S);
  None: every key, as FLUX.2 attends).

  Written out rather than `jax.nn.dot_product_attention(implementation='xla')`, for XLA:CPU: heads first,
  so both products are plain batched matmuls over (B, N) with no transposes of the (B, N, S, S) scores;
  padding as an additive bias; and the softmax's normalisation deferred to the output,
  softmax(s) @ v = (exp(s - max) @ v) / sum(exp(s - max)), so the backward pass makes fewer passes over
  the scores (forward + backward 2.4x faster than jax.nn's on a 2-core CPU; docs/performance.md, log).
  The same function up to float rounding.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bnqd,bnkd->bnqk", q * jnp.asarray(scale, q.dtype), k, preferred_element_type=jnp.float32)
  if mask is not None:
    logits = logits + jnp.where(mask, 0.0, -0.7 * jnp.finfo(jnp.float32).max)[:, None, None, :]  # as jax.nn's
  # Subtracting the row maximum keeps exp in range; it cancels in the ratio, so it carries no gradient.
  weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
  out = jnp.einsum("bnqk,bnkd->bnqd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return (out / jnp.sum(weights, axis=-1, keepdims=True)).astype(v.dtype)


def resolve_attention(implementation: str | None, dtype=None, platform: str | None = None) -> str:
  """The attention kernel to trace: the config's, or by the platform the program is built for (`platform`:
  vbanana.setup passes its mesh's, so an ahead-of-time compile for a TPU or GPU picks that kernel on a CPU
  machine; default: this process's backend): the written-out one on CPU ('xla'), splash on TPU, cuDNN's
  fused kernel on a GPU for bf16/fp16 activations (the only dtypes it takes; `dtype` is theirs), jax.nn's
  own choice elsewhere ('jax'). So one config names no kernel and runs on all three."""
  if implementation is not None:
    return implementation
  platform = platform or jax.default_backend()
  if platform in ("gpu", "cuda"):
    return "cudnn" if dtype is not None and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "jax"
  return {"cpu": "xla", "tpu": "splash"}.get(platform, "jax")


def multi_head_attention(q, k, v, mask=None, implementation: str | None = None):
  """Softmax attention of q, k, v (B, S, N, D) (heads last) -> (B, S, N, D) through the kernel
  `resolve_attention` picks; mask bool (B, S) of the keys that exist, or None for all of them."""
  implementation = resolve_attention(implementation, q.dtype)
  heads_last = ("act_batch", "act_seq", "act_heads", "act_head_dim")
  if implementation == "splash":
    from vbanana.model import splash  # pylint: disable=g-import-not-at-top  (Pallas: imported when used)
    if mask is None:  # the kernel pads the sequence to its block size with absent keys: it needs a mask
      mask = jnp.ones(q.shape[:2], bool)
    y = splash.attention(*(parallel.constrain(a, heads_last) for a in (q, k, v)), mask)
  elif implementation in ("cudnn", "jax"):
    # jax.nn's fused kernels (cuDNN flash attention on a GPU) take (B, S, N, D). cuDNN takes a mask only
    # as a bias of the full (query, key) shape (a (B, 1, 1, S) one is refused: "Bias must have same seq
    # length as QKV"), and its padding masks only a suffix, which the joint sequence's gaps are not.
    q, k, v = (parallel.constrain(a, heads_last) for a in (q, k, v))
    keys = None if mask is None else mask[:, None, None, :]
    if implementation == "cudnn" and mask is not None:
      keys = jnp.broadcast_to(keys, (mask.shape[0], 1, mask.shape[1], mask.shape[1]))
    y = jax.nn.dot_product_attention(q, k, v, mask=keys,
                                     implementation="cudnn" if implementation == "cudnn" else None)
  else:
    heads_first = ("act_batch", "act_heads", "act_seq", "act_head_dim")
    q, k, v = (parallel.constrain(jnp.swapaxes(a, 1, 2), heads_first) for a in (q, k, v))
    y = jnp.swapaxes(attention(q, k, v, mask), 1, 2)
  return parallel.constrain(y, heads_last)


class Attention(nnx.Module):
  """Multi-head self-attention: fused QKV, optional QK RMSNorm, rotary positions, key padding mask."""

  def __init__(self, width: int, num_heads: int, *, qk_norm: bool, rngs: nnx.Rngs, dtype, param_dtype,
               implementation: str | None = None):
    head_dim = width // num_heads
    self.implementation = implementation
    self.qkv = Dense((width,), (3, num_heads, head_dim), ("embed", None, "heads", "head_dim"), rngs=rngs,
                     dtype=dtype, param_dtype=param_dtype)
    self.out = Dense((num_heads, head_dim), (width,), ("heads", "head_dim", "embed"), rngs=rngs,
                     dtype=dtype, param_dtype=param_dtype)
    # QK-norm keeps attention logits bounded (stable training at scale, also in bf16).
    self.q_norm = RMSNorm(head_dim, ("head_dim",), param_dtype=param_dtype) if qk_norm else None
    self.k_norm = RMSNorm(head_dim, ("head_dim",), param_dtype=param_dtype) if qk_norm else None

  def __call__(self, x, angles, mask):
    """x (B, S, W); angles (S, D/2); mask bool (B, S): which keys exist."""
    qkv = self.qkv(x)
    q, k, v = (qkv[:, :, i] for i in range(3))  # (B, S, N, D) each
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, angles), apply_rope(k, angles)
    y = multi_head_attention(q, k, v, mask, self.implementation)
    return self.out(y)


class SwiGLU(nnx.Module):
  """Gated MLP: (silu(x W_gate) * x W_up) W_down."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.gate = Dense((width,), (hidden,), ("embed", "mlp"), **kw)
    self.up = Dense((width,), (hidden,), ("embed", "mlp"), **kw)
    self.down = Dense((hidden,), (width,), ("mlp", "embed"), **kw)

  def __call__(self, x):
    h = jax.nn.silu(self.gate(x)) * self.up(x)
    h = parallel.constrain(h, ("act_batch", "act_seq", "act_mlp"))
    return self.down(h)


class Block(nnx.Module):
  """Pre-norm transformer block. With `modulated`, adaLN: the conditioning vector c gives per-channel
  shift/scale of each norm and a gate on each residual branch; the gates start at zero, so a fresh block
  is the identity and a deep stack trains from the first step."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, *, modulated: bool, qk_norm: bool,
               rngs: nnx.Rngs, dtype, param_dtype, attention: str | None = None):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.attn = Attention(width, num_heads, qk_norm=qk_norm, implementation=attention, **kw)
    self.mlp = SwiGLU(width, mlp_dim, **kw)
    if modulated:
      self.modulation = Dense((width,), (6, width), ("embed", None, "embed_out"), init=zeros, **kw)
      self.norm1 = self.norm2 = None
    else:
      self.modulation = None
      self.norm1 = RMSNorm(width, param_dtype=param_dtype)
      self.norm2 = RMSNorm(width, param_dtype=param_dtype)

  def __call__(self, x, c, angles, mask):
    """x (B, S, W); c (B, W) conditioning (already through SiLU) or None; angles (S, D/2); mask (B, S)."""
    if self.modulation is None:
      x = x + self.attn(self.norm1(x), angles, mask)
      x = x + self.mlp(self.norm2(x))
    else:
      mod = self.modulation(c)[:, :, None, :]  # (B, 6, 1, W): broadcast over the sequence
      shift1, scale1, gate1, shift2, scale2, gate2 = (mod[:, i] for i in range(6))
      x = x + gate1 * self.attn(layer_norm(x) * (1 + scale1) + shift1, angles, mask)
      x = x + gate2 * self.mlp(layer_norm(x) * (1 + scale2) + shift2)
    return parallel.constrain(x, ("act_batch", "act_seq", "act_embed"))


# ----------------------------------------------------------------------------------------------------------
# Stacks: `depth` blocks built at once with a leading 'layers' axis on every parameter (nnx.vmap), run with
# `lax.scan` (one compiled block, whatever the depth) or unrolled, optionally rematerialised.
# ----------------------------------------------------------------------------------------------------------
def make_stack(factory: Callable[[nnx.Rngs], nnx.Module], depth: int, rngs: nnx.Rngs) -> nnx.Module:
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def create(key):
    return factory(nnx.Rngs(params=key))
  return create(jax.random.split(rngs.params(), depth))


def run_stack(stack: nnx.Module, x, layer_fn: Callable[[nnx.Module, Any], Any], *, scan: bool,
              remat_policy: str | None) -> Any:
  """x -> layer_fn(block_depth-1, ... layer_fn(block_0, x)). `remat_policy` is a key of REMAT_POLICIES."""
  from vbanana.model.config import REMAT_POLICIES  # pylint: disable=g-import-not-at-top
  graphdef, params = nnx.split(stack)

  def body(carry, layer_params):
    return layer_fn(nnx.merge(graphdef, layer_params), carry), None

  if remat_policy not in (None, "none"):
    body = jax.checkpoint(body, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
  if scan:
    x, _ = jax.lax.scan(body, x, params)
    return x
  depth = jax.tree.leaves(params)[0].shape[0]
  for i in range(depth):
    x, _ = body(x, jax.tree.map(lambda a: a[i], params))  # pylint: disable=cell-var-from-loop
  return x
