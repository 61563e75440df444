"""LoRA for the FLUX.2 transformer: low-rank adapters on the blocks' linear layers, every pretrained weight frozen.

    model = lora.apply(Flux2Transformer(cfg, rngs=...), rank=16, alpha=16.0, rngs=rngs)

`apply` rewrites a built module in place (shapes only under `nnx.eval_shape`):
  * every `layers.Dense` inside the stacked blocks (`double_blocks`, `single_blocks`: attention q/k/v and
    output projections, the SwiGLU MLPs) becomes a `LoraDense`: y = x W + (alpha / rank) (x A) B, with A
    (in, rank) and B (rank, out) trainable `nnx.Param`s, B zero at the start (the model starts exactly
    as the pretrained one) and W the pretrained kernel, never formed into W + A B during training; A and B
    are float32 even when the frozen weights are stored in bfloat16 (config.model.param_dtype);
  * every other `nnx.Param` of the module becomes `Frozen`: a variable that is not a parameter, so the
    trainer's state (params, optimizer moments, EMA, checkpoints) holds only the adapters, and vbanana.setup
    keeps the frozen weights in `setup.frozen` (placed once, sharded by the same logical names).
The blocks are stacked on a leading 'layers' axis and run with `lax.scan`; A and B get the same leading
axis (logical name 'layers'), so each scanned step reads its layer's adapters. The rank dimension's logical
name is 'lora' (vbanana.parallel: never sharded).

Why not the qwix library's `LoraProvider`: it is not installed here, and vbanana's Dense is a plain
`lax.dot_general` over named multi-axis kernels (qkv is (W, 3, heads, head_dim)); a LoRA-aware layer for
that is the 40 lines below.

Export merges the adapters into the kernels on the host, one layer at a time (`merged_kernel`).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana.model import layers

STACKS = ("double_blocks", "single_blocks")
LORA_A, LORA_B = "lora_a", "lora_b"


class Frozen(nnx.Variable):
  """A pretrained weight that LoRA training leaves as it is (not an nnx.Param: outside the train state)."""


def _names(var: nnx.Variable) -> tuple:
  return tuple(var.get_metadata().get("out_sharding") or (None,) * var.get_value().ndim)


def _frozen(var: nnx.Variable) -> Frozen:
  return Frozen(var.get_value(), out_sharding=_names(var))


class LoraDense(nnx.Module):
  """`layers.Dense` with a frozen kernel plus a trainable low-rank update (alpha / rank) A B."""

  def __init__(self, dense: layers.Dense, rank: int, alpha: float, key: jax.Array):
    names = _names(dense.kernel)
    shape = tuple(dense.kernel.get_value().shape)
    lead = 1 if names and names[0] == "layers" else 0  # a stacked block's leading layer axis
    n_in = dense.num_in
    in_shape, out_shape = shape[lead:lead + n_in], shape[lead + n_in:]
    dtype = jnp.float32  # the adapters train in float32 whatever the frozen kernels are stored in
    self.num_in, self.dtype, self.scale = n_in, dense.dtype, float(alpha) / rank
    self.kernel = _frozen(dense.kernel)
    self.bias = None if dense.bias is None else _frozen(dense.bias)
    bound = 1.0 / math.sqrt(math.prod(in_shape))  # PyTorch's Linear init for A (as PEFT), B zero
    a = jax.random.uniform(key, shape[:lead] + in_shape + (rank,), dtype, -bound, bound)
    self.lora_a = nnx.Param(a, out_sharding=names[:lead + n_in] + ("lora",))
    self.lora_b = nnx.Param(jnp.zeros(shape[:lead] + (rank,) + out_shape, dtype),
                            out_sharding=names[:lead] + ("lora",) + names[lead + n_in:])

  def __call__(self, x):
    dims = ((tuple(range(x.ndim - self.num_in, x.ndim)), tuple(range(self.num_in))), ((), ()))
    x = x.astype(self.dtype)
    y = jax.lax.dot_general(x, self.kernel[...].astype(self.dtype), dims)
    h = jax.lax.dot_general(x, self.lora_a[...].astype(self.dtype), dims) * jnp.asarray(self.scale, self.dtype)
    y = y + jax.lax.dot_general(h, self.lora_b[...].astype(self.dtype), (((h.ndim - 1,), (0,)), ((), ())))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


def apply(model: nnx.Module, *, rank: int, alpha: float, rngs: nnx.Rngs,
          stacks: Sequence[str] = STACKS) -> nnx.Module:
  """The module with LoRA on every Dense under `stacks` and every other parameter frozen (in place)."""
  if rank < 1:
    raise ValueError(f"LoRA rank {rank}: must be at least 1")
  with nnx.use_eager_sharding(False):  # placed by the caller (jit out-shardings), as the module's own
    return _apply(model, rank, alpha, rngs, stacks)


def _apply(model, rank, alpha, rngs, stacks):
  targets = []
  for path, module in nnx.iter_modules(model):
    if path and path[0] in stacks and isinstance(module, layers.Dense):
      targets.append(path)
  if not targets:
    raise ValueError(f"LoRA: no Dense layer under {tuple(stacks)} in {type(model).__name__}")
  for path in targets:
    parent = model
    for name in path[:-1]:
      parent = getattr(parent, name)
    setattr(parent, path[-1], LoraDense(getattr(parent, path[-1]), rank, alpha, rngs.params()))
  for _, module in nnx.iter_modules(model):  # everything still a Param is pretrained: freeze it
    if isinstance(module, LoraDense):
      continue
    for name, value in list(vars(module).items()):
      if isinstance(value, nnx.Param):
        setattr(module, name, _frozen(value))
  return model


def adapted(flat_params) -> dict[str, tuple[str, str]]:
  """kernel path -> (its A path, its B path) for the adapters in a flat {'a/b/lora_a': ...} dict."""
  out = {}
  for key in flat_params:
    if key.endswith("/" + LORA_A):
      module = key[:-len(LORA_A) - 1]
      out[module + "/kernel"] = (key, module + "/" + LORA_B)
  return out


def merged_kernel(kernel: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
  """W + scale A B for one layer's kernel (in..., out...), A (in..., r), B (r, out...), in float32."""
  delta = np.tensordot(np.asarray(a, np.float32), np.asarray(b, np.float32), axes=([a.ndim - 1], [0]))
  return (np.asarray(kernel, np.float32) + np.float32(scale) * delta).astype(kernel.dtype)


__all__ = ["Frozen", "LoraDense", "apply", "adapted", "merged_kernel", "STACKS"]
