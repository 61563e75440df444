"""FLUX.2 transformer weights: diffusers' layout <-> the NNX module, both ways, strictly.

Every diffusers tensor has one rule (`rules(cfg)`): which parameters of `Flux2Transformer` it becomes and how
(PyTorch's (out, in) Linear weights transposed into (in, *out) kernels; q/k rows and QK-norm weights permuted
from interleaved rotary pairs to half-split ones; the single blocks' fused `to_qkv_mlp_proj` / `to_out` split
into attention and MLP parts; `norm_out`'s (scale, shift) swapped into (shift, scale); per-block tensors
stacked on a leading 'layers' axis for the scans). The checkpoint's names and shapes are checked against
`diffusers_shapes(cfg)` before any data is read: a missing, misshaped or unexpected tensor raises
`CheckpointError` naming it (never a silent random or zero fill).

Both directions go through host-side, per-layer producers: `sources_from_diffusers` (our parameters, each a
`Source` that makes layer i on demand) and `diffusers_tensors` (diffusers' tensors as `weights.Pending`).

Memory: tensors are read one at a time from the memory-mapped safetensors files. `build` allocates a stacked
parameter once on its devices with its final sharding and fills it layer by layer (each layer placed with
the sharding of one slice by `make_array_from_callback`, then written in by a donated
`dynamic_update_slice`), so the host holds one layer of one tensor at a time and each device only ever
receives its shard. Export reads one layer of one parameter back to the host at a time and streams it into
the safetensors files; `convert_to_native` / `convert_to_diffusers` (the command line) do the same with no
devices and no module at all.

vbanana's own layout (`save_native` / `load_native`, what `python -m vbanana.flux2.convert` writes): the
module's parameters by path ('double_blocks/img_attn/qkv/kernel', stacked), with the config in
`vbanana_flux2.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel
from vbanana.flux2 import weights
from vbanana.flux2.transformer import CLASS_NAME, Flux2Config, Flux2Transformer, abstract_model
from vbanana.flux2.weights import CheckpointError

DIFFUSERS_PREFIX = "diffusion_pytorch_model"
NATIVE_PREFIX = "params"
NATIVE_CONFIG = "vbanana_flux2.json"
NATIVE_FORMAT = "vbanana-flux2-transformer-v1"
STACKS = {"double_blocks": "transformer_blocks", "single_blocks": "single_transformer_blocks"}


# ----------------------------------------------------------------------------------------------------------
# The rules.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
  """diffusers tensors `theirs` (one block's, '{i}' = block index, when `stack` names our stacked module)
  <-> our parameters `ours` (paths below the stack). `load(*theirs) -> ours`, `save(*ours) -> theirs`."""
  theirs: tuple[str, ...]
  ours: tuple[str, ...]
  load: Callable[..., tuple]
  save: Callable[..., tuple]
  stack: str | None = None


def _interleaved_to_halves(d: int) -> np.ndarray:
  """perm with new[j] = old[perm[j]]: (0, 2, 4, ..., 1, 3, 5, ...)."""
  return np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])


def _linear(in_shape: tuple, out_shape: tuple) -> tuple[Callable, Callable]:
  """A torch Linear weight (out, in) <-> a kernel in_shape + out_shape."""
  n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
  return (lambda w: (w.T.reshape(in_shape + out_shape),),
          lambda k: (k.reshape(n_in, n_out).T,))


def rules(cfg: Flux2Config) -> list[Rule]:
  w, f, h, d = cfg.width, cfg.mlp_dim, cfg.num_attention_heads, cfg.attention_head_dim
  perm = _interleaved_to_halves(d)
  unperm = np.argsort(perm)
  out: list[Rule] = []

  def linear(theirs, ours, in_shape, out_shape, stack=None):
    out.append(Rule((theirs,), (ours,), *_linear(in_shape, out_shape), stack=stack))

  def norm(theirs, ours, stack):
    out.append(Rule((theirs,), (ours,), lambda g: (g[perm],), lambda s: (s[unperm],), stack=stack))

  def qkv_load(q, k, v):  # three (W, W) weights -> (W, 3, H, D), q and k in half-split order
    heads = lambda x: x.T.reshape(w, h, d)
    return (np.stack([heads(q)[..., perm], heads(k)[..., perm], heads(v)], axis=1),)

  def qkv_save(kernel):
    flat = lambda x: x.reshape(w, w).T
    return flat(kernel[:, 0][..., unperm]), flat(kernel[:, 1][..., unperm]), flat(kernel[:, 2])

  def fused_in_load(weight):  # (3W + 2F, W) -> qkv (W, 3, H, D), mlp (W, 2, F)
    t = weight.T
    qkv = t[:, :3 * w].reshape(w, 3, h, d)
    qkv = np.concatenate([qkv[:, :2][..., perm], qkv[:, 2:]], axis=1)
    return qkv, t[:, 3 * w:].reshape(w, 2, f)

  def fused_in_save(qkv, mlp):
    qkv = np.concatenate([qkv[:, :2][..., unperm], qkv[:, 2:]], axis=1)
    return (np.concatenate([qkv.reshape(w, 3 * w), mlp.reshape(w, 2 * f)], axis=1).T,)

  def fused_out_load(weight):  # (W, W + F) -> attn (H, D, W), mlp (F, W)
    t = weight.T
    return t[:w].reshape(h, d, w), t[w:]

  def fused_out_save(attn, mlp):
    return (np.concatenate([attn.reshape(w, w), mlp], axis=0).T,)

  # Embeddings and the shared modulations.
  tg = "time_guidance_embed"
  linear(f"{tg}.timestep_embedder.linear_1.weight", "time_in/kernel", (cfg.timestep_guidance_channels,), (w,))
  linear(f"{tg}.timestep_embedder.linear_2.weight", "time_out/kernel", (w,), (w,))
  if cfg.guidance_embeds:
    linear(f"{tg}.guidance_embedder.linear_1.weight", "guidance_in/kernel", (cfg.timestep_guidance_channels,),
           (w,))
    linear(f"{tg}.guidance_embedder.linear_2.weight", "guidance_out/kernel", (w,), (w,))
  linear("double_stream_modulation_img.linear.weight", "double_mod_img/kernel", (w,), (6, w))
  linear("double_stream_modulation_txt.linear.weight", "double_mod_txt/kernel", (w,), (6, w))
  linear("single_stream_modulation.linear.weight", "single_mod/kernel", (w,), (3, w))
  linear("x_embedder.weight", "img_in/kernel", (cfg.in_channels,), (w,))
  linear("context_embedder.weight", "txt_in/kernel", (cfg.joint_attention_dim,), (w,))

  # Double-stream blocks (diffusers' order within a block).
  b, s = "double_blocks", f"{STACKS['double_blocks']}.{{i}}"
  out.append(Rule(tuple(f"{s}.attn.to_{x}.weight" for x in "qkv"), ("img_attn/qkv/kernel",), qkv_load, qkv_save,
                  stack=b))
  norm(f"{s}.attn.norm_q.weight", "img_attn/q_norm/scale", b)
  norm(f"{s}.attn.norm_k.weight", "img_attn/k_norm/scale", b)
  linear(f"{s}.attn.to_out.0.weight", "img_out/kernel", (h, d), (w,), b)
  norm(f"{s}.attn.norm_added_q.weight", "txt_attn/q_norm/scale", b)
  norm(f"{s}.attn.norm_added_k.weight", "txt_attn/k_norm/scale", b)
  out.append(Rule(tuple(f"{s}.attn.add_{x}_proj.weight" for x in "qkv"), ("txt_attn/qkv/kernel",), qkv_load,
                  qkv_save, stack=b))
  linear(f"{s}.attn.to_add_out.weight", "txt_out/kernel", (h, d), (w,), b)
  for theirs, ours in (("ff", "img_mlp"), ("ff_context", "txt_mlp")):
    linear(f"{s}.{theirs}.linear_in.weight", f"{ours}/up/kernel", (w,), (2, f), b)
    linear(f"{s}.{theirs}.linear_out.weight", f"{ours}/down/kernel", (f,), (w,), b)

  # Single-stream blocks.
  if cfg.num_single_layers:
    b, s = "single_blocks", f"{STACKS['single_blocks']}.{{i}}"
    out.append(Rule((f"{s}.attn.to_qkv_mlp_proj.weight",), ("attn/qkv/kernel", "mlp_in/kernel"), fused_in_load,
                    fused_in_save, stack=b))
    norm(f"{s}.attn.norm_q.weight", "attn/q_norm/scale", b)
    norm(f"{s}.attn.norm_k.weight", "attn/k_norm/scale", b)
    out.append(Rule((f"{s}.attn.to_out.weight",), ("attn_out/kernel", "mlp_out/kernel"), fused_out_load,
                    fused_out_save, stack=b))

  # Output: diffusers' norm_out chunks (scale, shift); ours is (shift, scale).
  out.append(Rule(("norm_out.linear.weight",), ("final_mod/kernel",),
                  lambda wt: (wt.T.reshape(w, 2, w)[:, ::-1],),
                  lambda k: (k[:, ::-1].reshape(w, 2 * w).T,)))
  linear("proj_out.weight", "final/kernel", (w,), (cfg.patch_dim_out,))
  return out


def diffusers_shapes(cfg: Flux2Config) -> dict[str, tuple]:
  """Every tensor of diffusers' state dict for `cfg`: name -> shape, in diffusers' order."""
  w, f, h, d, c = cfg.width, cfg.mlp_dim, cfg.num_attention_heads, cfg.attention_head_dim, \
      cfg.timestep_guidance_channels
  tg = "time_guidance_embed"
  shapes = {f"{tg}.timestep_embedder.linear_1.weight": (w, c), f"{tg}.timestep_embedder.linear_2.weight": (w, w)}
  if cfg.guidance_embeds:
    shapes.update({f"{tg}.guidance_embedder.linear_1.weight": (w, c),
                   f"{tg}.guidance_embedder.linear_2.weight": (w, w)})
  shapes.update({"double_stream_modulation_img.linear.weight": (6 * w, w),
                 "double_stream_modulation_txt.linear.weight": (6 * w, w),
                 "single_stream_modulation.linear.weight": (3 * w, w),
                 "x_embedder.weight": (w, cfg.in_channels), "context_embedder.weight": (w, cfg.joint_attention_dim)})
  for i in range(cfg.num_layers):
    s = f"transformer_blocks.{i}"
    shapes.update({f"{s}.attn.to_q.weight": (w, w), f"{s}.attn.to_k.weight": (w, w), f"{s}.attn.to_v.weight": (w, w),
                   f"{s}.attn.norm_q.weight": (d,), f"{s}.attn.norm_k.weight": (d,),
                   f"{s}.attn.to_out.0.weight": (w, w),
                   f"{s}.attn.norm_added_q.weight": (d,), f"{s}.attn.norm_added_k.weight": (d,),
                   f"{s}.attn.add_q_proj.weight": (w, w), f"{s}.attn.add_k_proj.weight": (w, w),
                   f"{s}.attn.add_v_proj.weight": (w, w), f"{s}.attn.to_add_out.weight": (w, w),
                   f"{s}.ff.linear_in.weight": (2 * f, w), f"{s}.ff.linear_out.weight": (w, f),
                   f"{s}.ff_context.linear_in.weight": (2 * f, w), f"{s}.ff_context.linear_out.weight": (w, f)})
  for i in range(cfg.num_single_layers):
    s = f"single_transformer_blocks.{i}"
    shapes.update({f"{s}.attn.to_qkv_mlp_proj.weight": (3 * w + 2 * f, w), f"{s}.attn.norm_q.weight": (d,),
                   f"{s}.attn.norm_k.weight": (d,), f"{s}.attn.to_out.weight": (w, w + f)})
  shapes.update({"norm_out.linear.weight": (2 * w, w), "proj_out.weight": (cfg.patch_dim_out, w)})
  return shapes


# ----------------------------------------------------------------------------------------------------------
# Host-side sources: our parameters from a diffusers checkpoint, diffusers' tensors from our parameters, one
# layer at a time.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Source:
  """One of our parameters: its full shape, its depth (None: not stacked) and `layer(i)` (the whole
  parameter when not stacked), a host array made on demand."""
  shape: tuple
  depth: int | None
  layer: Callable[[int], np.ndarray]

  def parts(self):
    """The parameter's layers in order (the stacked array's bytes, one layer on the host at a time)."""
    return (self.layer(i) for i in range(self.depth or 1))


def _one_read(rule: Rule, fn: Callable[[int], list]) -> Callable[[int, int], np.ndarray]:
  """part j of layer i, computing a rule's parts once per layer (its parameters are asked for in turn)."""
  cache: dict = {}

  def part(j, i):
    if cache.get("i") != i:
      cache.clear()
      cache.update(i=i, parts=fn(i))
    return cache["parts"][j]
  return part


def sources_from_diffusers(ckpt: weights.Checkpoint, cfg: Flux2Config, dtype) -> dict[str, Source]:
  """Our parameter path -> its Source, read from a diffusers checkpoint (checked first: names and shapes)."""
  ckpt.check(diffusers_shapes(cfg), where=ckpt.where)
  dtype = np.dtype(jnp.dtype(dtype))
  shapes = _flat(nnx.state(abstract_model(cfg), nnx.Param))
  out = {}
  for rule in rules(cfg):
    def layer(i, rule=rule):
      theirs = [ckpt.read(name.format(i=i)) for name in rule.theirs]
      return [np.ascontiguousarray(np.asarray(a, dtype)) for a in rule.load(*theirs)]
    part = _one_read(rule, layer)
    prefix = "" if rule.stack is None else rule.stack + "/"
    for j, path in enumerate(rule.ours):
      out[prefix + path] = Source(tuple(shapes[prefix + path].shape),
                                  None if rule.stack is None else _depth(cfg, rule.stack), functools.partial(part, j))
  return out


def diffusers_tensors(get: Callable[[str, int | None], np.ndarray], cfg: Flux2Config, dtype
                      ) -> dict[str, weights.Pending]:
  """diffusers' state dict (name -> Pending, in diffusers' order) from our parameters: `get(path, i)` gives
  layer i of a stacked parameter (i None: an unstacked one) as a host array. Each tensor is made when written."""
  shapes = diffusers_shapes(cfg)
  dtype = np.dtype(jnp.dtype(dtype))
  entries: dict[str, weights.Pending] = {}
  for rule in rules(cfg):
    prefix = "" if rule.stack is None else rule.stack + "/"

    def theirs(i, rule=rule, prefix=prefix):
      ours = [np.asarray(get(prefix + o, None if rule.stack is None else i)) for o in rule.ours]
      return [np.ascontiguousarray(np.asarray(a, dtype)) for a in rule.save(*ours)]
    part = _one_read(rule, theirs)
    for i in range(_depth(cfg, rule.stack)):
      for j, name in enumerate(rule.theirs):
        name = name.format(i=i)
        entries[name] = weights.Pending(shapes[name], dtype, functools.partial(part, j, i))
  return {name: entries[name] for name in shapes}


def _depth(cfg: Flux2Config, stack: str | None) -> int:
  return {None: 1, "double_blocks": cfg.num_layers, "single_blocks": cfg.num_single_layers}[stack]


# ----------------------------------------------------------------------------------------------------------
# Placing arrays on devices: one tensor (or one layer of a stack) at a time, each device its shard.
# ----------------------------------------------------------------------------------------------------------
def _place(host: np.ndarray, sharding) -> jax.Array:
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _slice_sharding(sharding):
  """The sharding of one layer of a stacked parameter (the leading 'layers' dim dropped)."""
  if isinstance(sharding, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*tuple(sharding.spec)[1:]))
  return sharding


@functools.lru_cache(maxsize=None)
def _stack_ops(shape: tuple, dtype: str, sharding):
  """(allocate, write layer i) for a stacked parameter with its final sharding; the buffer is donated."""
  allocate = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)
  write = jax.jit(lambda buf, layer, i: jax.lax.dynamic_update_index_in_dim(buf, layer, i, 0),
                  out_shardings=sharding, donate_argnums=0)
  return allocate, write


def place(source: Source, dtype, sharding) -> jax.Array:
  """The parameter on its devices with `sharding`; a stacked one is filled layer by layer in place."""
  if source.depth is None:
    return _place(source.layer(0), sharding)
  allocate, write = _stack_ops(tuple(source.shape), jnp.dtype(dtype).name, sharding)
  buf, layer_sharding = allocate(), _slice_sharding(sharding)
  for i in range(source.depth):
    buf = write(buf, _place(source.layer(i), layer_sharding), i)
  return buf


def _flat(state) -> dict[str, Any]:
  """'a/b/c' -> leaf value (arrays, abstract arrays or shardings) of an nnx.State."""
  flat = {}
  for path, leaf in nnx.to_flat_state(state):
    flat["/".join(str(p) for p in path)] = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
  return flat


def _shardings(abstract: Flux2Transformer, mesh, rules_) -> dict[str, Any]:
  """Our parameter path -> the sharding it is placed with (the default device when there is no mesh)."""
  state = nnx.state(abstract, nnx.Param)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return {path: device for path in _flat(state)}
  table = parallel.resolve_rules(rules_)
  out = {}
  for path, var in nnx.to_flat_state(state):
    shape = var.get_value().shape
    names = tuple(var.get_metadata().get("out_sharding") or (None,) * len(shape))
    out["/".join(str(p) for p in path)] = parallel.named_sharding(mesh, names, table, shape)
  return out


def _merge(abstract: Flux2Transformer, arrays: Mapping[str, jax.Array]) -> Flux2Transformer:
  graphdef, state = nnx.split(abstract)
  flat = []
  for path, var in nnx.to_flat_state(state):
    key = "/".join(str(p) for p in path)
    if key not in arrays:  # a parameter no rule fills: a bug here, never a silent random init
      raise CheckpointError(f"no tensor fills parameter {key!r} of the module")
    flat.append((path, var.replace(arrays[key])))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def build(sources: Mapping[str, Source], cfg: Flux2Config, *, mesh=None, rules_=None) -> Flux2Transformer:
  """The module with every parameter placed from its Source (cast to cfg.param_dtype)."""
  abstract = abstract_model(cfg)
  shapes, shardings = _flat(nnx.state(abstract, nnx.Param)), _shardings(abstract, mesh, rules_)
  unknown = sorted(set(sources) - set(shapes))
  if unknown:
    raise CheckpointError(f"tensor {unknown[0]!r} is not a parameter of the module")
  arrays = {}
  for path, spec in shapes.items():
    if path in sources and tuple(sources[path].shape) != tuple(spec.shape):
      raise CheckpointError(f"parameter {path!r}: the checkpoint gives shape {tuple(sources[path].shape)}, the "
                            f"module expects {tuple(spec.shape)}")
    if path in sources:
      arrays[path] = place(sources[path], spec.dtype, shardings[path])
  return _merge(abstract, arrays)


# ----------------------------------------------------------------------------------------------------------
# Folders.
# ----------------------------------------------------------------------------------------------------------
def read_diffusers_config(folder: str) -> dict:
  path = os.path.join(folder, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(f"{folder}: no config.json (expected a diffusers {CLASS_NAME} folder)")
  with open(path) as f:
    return json.load(f)


def resolve_folder(path: str) -> tuple[str, str]:
  """(folder, 'diffusers' | 'native') for a transformer folder, a pipeline folder holding `transformer/`, or a
  folder `save_native` wrote."""
  path = os.fspath(path)
  if os.path.exists(os.path.join(path, NATIVE_CONFIG)):
    return path, "native"
  if not os.path.exists(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "transformer")):
    path = os.path.join(path, "transformer")
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: not a folder")
  if not os.path.exists(os.path.join(path, "config.json")):
    raise CheckpointError(f"{path}: neither a diffusers transformer folder (config.json), a pipeline folder "
                          f"(transformer/config.json) nor a vbanana one ({NATIVE_CONFIG})")
  return path, "diffusers"


def load_diffusers(folder: str, cfg: Flux2Config, *, mesh=None, rules_=None) -> Flux2Transformer:
  """The module with the weights of the diffusers checkpoint in `folder` (its config already read into cfg)."""
  ckpt = weights.open_checkpoint(folder, DIFFUSERS_PREFIX)
  return build(sources_from_diffusers(ckpt, cfg, cfg.param_dtype), cfg, mesh=mesh, rules_=rules_)


def _write_diffusers_config(cfg: Flux2Config, folder: str) -> None:
  config = cfg.to_diffusers_config()
  config["_diffusers_version"] = "0.42.1"  # the version whose layout this writes
  with open(os.path.join(folder, "config.json"), "w") as f:
    f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _host(x: jax.Array) -> np.ndarray:
  """A (possibly sharded) array on this host; across processes, gathered first."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def save_diffusers(model: Flux2Transformer, folder: str, *, dtype=None, max_shard_size="10GB") -> list[str]:
  """diffusers' layout: config.json + diffusion_pytorch_model(.safetensors | shards + index); one layer of
  one parameter comes back to the host at a time."""
  params = _flat(nnx.state(model, nnx.Param))
  get = lambda path, i: _host(params[path] if i is None else params[path][i])
  os.makedirs(folder, exist_ok=True)
  files = weights.write_checkpoint(folder, diffusers_tensors(get, model.cfg, dtype or model.cfg.param_dtype),
                                   prefix=DIFFUSERS_PREFIX, max_shard_size=max_shard_size)
  _write_diffusers_config(model.cfg, folder)
  return files + ["config.json"]


# ----------------------------------------------------------------------------------------------------------
# vbanana's layout: the module's parameters by path, stacked, and its config.
# ----------------------------------------------------------------------------------------------------------
def _write_native(folder: str, cfg: Flux2Config, tensors: Mapping[str, Any], max_shard_size) -> list[str]:
  os.makedirs(folder, exist_ok=True)
  files = weights.write_checkpoint(folder, tensors, prefix=NATIVE_PREFIX, max_shard_size=max_shard_size,
                                   metadata={"format": NATIVE_FORMAT})
  with open(os.path.join(folder, NATIVE_CONFIG), "w") as f:
    f.write(json.dumps({"format": NATIVE_FORMAT, "config": cfg.to_dict()}, indent=2) + "\n")
  return files + [NATIVE_CONFIG]


def save_native(model: Flux2Transformer, folder: str, *, max_shard_size="10GB") -> list[str]:
  params = _flat(nnx.state(model, nnx.Param))
  return _write_native(folder, model.cfg, {k: weights.Pending(v.shape, v.dtype, functools.partial(_host, v))
                                           for k, v in params.items()}, max_shard_size)


def read_native_config(folder: str) -> dict:
  with open(os.path.join(folder, NATIVE_CONFIG)) as f:
    d = json.load(f)
  if d.get("format") != NATIVE_FORMAT:
    raise CheckpointError(f"{folder}/{NATIVE_CONFIG}: format {d.get('format')!r}, expected {NATIVE_FORMAT!r}")
  return d["config"]


def sources_from_native(ckpt: weights.Checkpoint, cfg: Flux2Config, dtype) -> dict[str, Source]:
  """Our parameters from vbanana's layout (memory-mapped; checked against the module's names and shapes)."""
  shapes = _flat(nnx.state(abstract_model(cfg), nnx.Param))
  ckpt.check({k: v.shape for k, v in shapes.items()})
  dtype = np.dtype(jnp.dtype(dtype))
  out = {}
  for path, spec in shapes.items():
    depth = spec.shape[0] if path.split("/")[0] in STACKS else None
    read = lambda i, path=path, depth=depth: np.asarray(ckpt.read(path) if depth is None else ckpt.read(path)[i],
                                                        dtype)
    out[path] = Source(tuple(spec.shape), depth, read)
  return out


def load_native(folder: str, cfg: Flux2Config, *, mesh=None, rules_=None) -> Flux2Transformer:
  ckpt = weights.open_checkpoint(folder, NATIVE_PREFIX)
  return build(sources_from_native(ckpt, cfg, cfg.param_dtype), cfg, mesh=mesh, rules_=rules_)


# ----------------------------------------------------------------------------------------------------------
# Conversion on the host (no devices, no model): what `python -m vbanana.flux2.convert` runs.
# ----------------------------------------------------------------------------------------------------------
def convert_to_native(src: str, dst: str, *, dtype="float32", max_shard_size="10GB") -> list[str]:
  """A diffusers folder -> vbanana's layout, streamed: one layer of one tensor on the host at a time."""
  folder, kind = resolve_folder(src)
  if kind != "diffusers":
    raise CheckpointError(f"{src}: already vbanana's layout (it holds {NATIVE_CONFIG})")
  cfg = Flux2Config.from_diffusers_config(read_diffusers_config(folder), param_dtype=jnp.dtype(dtype).name)
  sources = sources_from_diffusers(weights.open_checkpoint(folder, DIFFUSERS_PREFIX), cfg, dtype)
  tensors = {path: weights.Pending(s.shape, np.dtype(jnp.dtype(dtype)), s.parts) for path, s in sources.items()}
  return _write_native(dst, cfg, tensors, max_shard_size)


def convert_to_diffusers(src: str, dst: str, *, dtype=None, max_shard_size="10GB") -> list[str]:
  """vbanana's layout -> a diffusers folder, streamed the same way."""
  folder, kind = resolve_folder(src)
  if kind != "native":
    raise CheckpointError(f"{src}: not vbanana's layout (no {NATIVE_CONFIG}); --export reads what the import wrote")
  cfg = Flux2Config.from_dict(read_native_config(folder))
  ckpt = weights.open_checkpoint(folder, NATIVE_PREFIX)
  sources = sources_from_native(ckpt, cfg, cfg.param_dtype)
  get = lambda path, i: sources[path].layer(0 if i is None else i)
  os.makedirs(dst, exist_ok=True)
  files = weights.write_checkpoint(dst, diffusers_tensors(get, cfg, dtype or cfg.param_dtype),
                                   prefix=DIFFUSERS_PREFIX, max_shard_size=max_shard_size)
  _write_diffusers_config(cfg, dst)
  return files + ["config.json"]


__all__ = ["rules", "diffusers_shapes", "load_diffusers", "save_diffusers", "load_native", "save_native",
           "resolve_folder", "read_diffusers_config", "read_native_config", "diffusers_tensors",
           "sources_from_diffusers", "sources_from_native", "convert_to_native", "convert_to_diffusers", "build"]
