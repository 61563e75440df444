"""The device mesh and the one table that maps logical axis names to mesh axes.

Parameters and activations are annotated with *logical* names ('embed', 'mlp', 'act_batch', ...). A rules
table — a tuple of (logical name, mesh axes) pairs, one per config — decides where each lands on the mesh
axes ('data', 'fsdp', 'tensor'). Switching between data parallelism, FSDP and tensor parallelism changes the
table, never the model. This is the only module that names mesh axes.

Axis types: the mesh is built with `AxisType.Auto` on purpose. The model states where activations should be
(`constrain`) and jit gets explicit in/out shardings; XLA's partitioner propagates the rest. `Explicit` axes
(JAX's default since 0.8) would put shardings into the types and demand an `out_sharding` on every matmul
whose contracting dimension is sharded (the FSDP/tensor-parallel row matmuls), and make
`with_sharding_constraint` on those axes an error.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Parameters: 'embed' is the FSDP axis, 'heads'/'mlp' the tensor-parallel axes.
# Activations ('act_*'): the batch is split over data and fsdp (FSDP is data parallelism with sharded
# weights), heads and the MLP hidden over tensor; sequence and embedding stay whole.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_head_dim", None),
    ("embed", "fsdp"),
    ("embed_out", None),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("head_dim", None),
    ("vocab", None),
    ("layers", None),
    ("patch", None),
    ("segment", None),
    ("lora", None),  # a LoRA adapter's rank dimension (vbanana/flux2/lora.py): small, never split
)
LOGICAL_AXES = frozenset(name for name, _ in DEFAULT_RULES)


# ----------------------------------------------------------------------------------------------------------
# Mesh.
# ----------------------------------------------------------------------------------------------------------
def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) from a config dict; one entry may be -1 (= the rest of the devices)."""
  unknown = sorted(set(mesh_cfg) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"config.mesh: unknown axes {unknown}; expected keys {MESH_AXES}")
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  bad = [f"{a}={s}" for a, s in zip(MESH_AXES, sizes) if s == 0 or s < -1]
  if bad or sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: sizes must be positive, with at most one -1 (= the rest); got "
                     f"{dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: the fixed axes multiply to {known}, which "
                       f"does not divide the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh={dict(zip(MESH_AXES, sizes))}: data*fsdp*tensor={math.prod(sizes)} does not "
                     f"match the {num_devices} devices")
  return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(dict(mesh_cfg), len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


# ----------------------------------------------------------------------------------------------------------
# Rules: logical names -> PartitionSpec.
# ----------------------------------------------------------------------------------------------------------
def resolve_rules(rules: Iterable[Sequence[Any]] | Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The config's table over DEFAULT_RULES as a dict; names the model does not use are an error. A dict is
  a table resolved already (vbanana.setup's) and is returned as is."""
  if isinstance(rules, Mapping):
    return dict(rules)
  table = dict(DEFAULT_RULES)
  for rule in (rules or ()):
    if len(rule) != 2:
      raise ValueError(f"config.sharding_rules: each rule is (logical name, mesh axes); got {rule!r}")
    name, axes = rule
    if name not in LOGICAL_AXES:
      raise ValueError(f"config.sharding_rules: unknown logical axis {name!r}; known: {sorted(LOGICAL_AXES)}")
    for a in (axes,) if isinstance(axes, str) or axes is None else axes:
      if a is not None and a not in MESH_AXES:
        raise ValueError(f"config.sharding_rules: rule {name!r} names mesh axis {a!r}; mesh axes are {MESH_AXES}")
    table[name] = tuple(axes) if isinstance(axes, list) else axes
  return table


def logical_to_spec(names: Sequence[str | None], rules=None) -> PartitionSpec:
  """PartitionSpec for a tuple of logical names; a mesh axis already used by an earlier dim is dropped."""
  table = resolve_rules(rules) if not isinstance(rules, dict) else rules
  used, spec = set(), []
  for name in names:
    if name is not None and name not in table:
      raise ValueError(f"logical axis {name!r} has no sharding rule; known: {sorted(table)}")
    axes = None if name is None else table[name]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def _fits(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dims they do not divide (e.g. 4 heads on 8 tensor devices), keeping it valid."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    kept = []
    for a in axes:
      if dim % (math.prod(mesh.shape[k] for k in kept) * mesh.shape[a]) == 0:
        kept.append(a)
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return PartitionSpec(*out)


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules=None, shape=None) -> NamedSharding:
  spec = logical_to_spec(names, rules)
  return NamedSharding(mesh, spec if shape is None else _fits(spec, shape, mesh))


# ----------------------------------------------------------------------------------------------------------
# Activations: the model calls `constrain(x, names)`; it is a no-op outside a `sharding_context`.
# ----------------------------------------------------------------------------------------------------------
_CONTEXT = threading.local()


@contextlib.contextmanager
def sharding_context(mesh: Mesh | None, rules=None):
  """Within this block (at trace time), `constrain` places activations on `mesh` by `rules`."""
  previous = getattr(_CONTEXT, "value", None)
  _CONTEXT.value = None if mesh is None else (mesh, resolve_rules(rules))
  try:
    yield
  finally:
    _CONTEXT.value = previous


def current() -> tuple[Mesh, dict] | None:
  """(mesh, rules table) of the active `sharding_context`, or None outside one."""
  return getattr(_CONTEXT, "value", None)


def current_platform() -> str:
  """The platform of the active mesh's devices ('tpu' also for the abstract devices of an ahead-of-time
  compile on a CPU machine), else the default backend: where a kernel traced now will run (splash runs in
  Pallas' interpreter on a CPU mesh)."""
  context = current()
  return context[0].devices.flat[0].platform if context else jax.default_backend()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical names, when a sharding context is active."""
  context = getattr(_CONTEXT, "value", None)
  if context is None:
    return x
  if len(names) != x.ndim:
    raise ValueError(f"constrain: {len(names)} logical names {tuple(names)} for an array of shape {x.shape}")
  mesh, table = context
  return jax.lax.with_sharding_constraint(x, named_sharding(mesh, names, table, x.shape))


# ----------------------------------------------------------------------------------------------------------
# Data: batches are split over the batch axes (leading dim), everything else whole.
# ----------------------------------------------------------------------------------------------------------
def batch_spec(rules=None) -> PartitionSpec:
  return logical_to_spec(("act_batch",), rules)


def batch_sharding(mesh: Mesh, rules=None) -> NamedSharding:
  """The sharding of every batch array: the leading (example) dim over the batch axes."""
  return NamedSharding(mesh, batch_spec(rules))


def shard_batch(local_batch: Mapping[str, Any], mesh: Mesh, rules=None) -> dict[str, jax.Array]:
  """Per-process numpy batch -> global arrays sharded over the batch axes (works on one or many hosts)."""
  sharding = batch_sharding(mesh, rules)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f"shard_batch: batch[{key!r}] is a scalar; every batch entry needs a leading batch dim")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
