"""Fill an abstract NNX module with real arrays, one tensor at a time, each straight onto its devices.

The loaders (text encoder, VAE) build the module with `nnx.eval_shape` (no memory), then ask for each
variable's array in turn and `device_put` it with the sharding its logical names give on the mesh. So the
host holds one converted tensor at a time (checkpoint tensors themselves are memory-mapped), and every
device receives only its shard.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx

from vbanana import parallel

Path = tuple  # a flat-state path: attribute names and list indices, e.g. ('encoder', 'down_blocks', 0, ...)


def path_name(path: Path) -> str:
  return ".".join(str(p) for p in path)


def materialize(abstract: nnx.Module, produce: Callable[[Path, tuple, np.dtype], np.ndarray], *,
                mesh=None, rules=None) -> nnx.Module:
  """The module with every variable set to `produce(path, shape, dtype)` (cast to the variable's dtype),
  placed on `mesh` by its logical names (`rules` over parallel.DEFAULT_RULES), or on the default device."""
  graphdef, state = nnx.split(abstract)
  table = parallel.resolve_rules(rules) if mesh is not None else None
  out = []
  for path, var in nnx.to_flat_state(state):
    spec = var.get_value()
    array = np.asarray(produce(path, tuple(spec.shape), np.dtype(spec.dtype)))
    if array.shape != tuple(spec.shape):
      raise ValueError(f"{path_name(path)}: made an array of shape {array.shape}, the module needs {spec.shape}")
    array = array.astype(spec.dtype, copy=False)
    if mesh is None:  # committed to the default device: jitted calls see the same placement every time
      value = jax.device_put(array, jax.devices()[0])
    else:
      names = var.get_metadata().get("out_sharding") or (None,) * array.ndim
      value = jax.device_put(array, parallel.named_sharding(mesh, tuple(names), table, array.shape))
    out.append((path, var.replace(value)))
    del array
  return nnx.merge(graphdef, nnx.from_flat_state(out))
