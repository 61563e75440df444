"""`load_transformer` / `save_transformer`: the FLUX.2 transformer's public entry points."""

from __future__ import annotations

import os

from vbanana.flux2 import transformer_io
from vbanana.flux2.transformer import Flux2Config, Flux2Transformer


def load_transformer(path: str, *, dtype: str = "float32", param_dtype: str = "float32", mesh=None, rules=None,
                     **overrides) -> Flux2Transformer:
  """The FLUX.2 transformer of a diffusers folder (`transformer/` with config.json and its single or sharded
  safetensors, or the pipeline folder holding it) or of a folder `python -m vbanana.flux2.convert` wrote.

  `dtype` is the activations' (the matmul inputs'), `param_dtype` the parameters' (the checkpoint's values are
  cast to it); `overrides` set vbanana's other fields (remat, scan, attention). With a `mesh`, each
  parameter is placed with the sharding its logical names get under `rules` (over parallel.DEFAULT_RULES),
  tensor by tensor; without one, on the default device. Raises `weights.CheckpointError` naming the tensor
  when one is missing, misshaped or not a parameter of the model.
  """
  folder, kind = transformer_io.resolve_folder(path)
  numerics = dict(dtype=dtype, param_dtype=param_dtype, **overrides)
  if kind == "native":
    cfg = Flux2Config.from_dict({**transformer_io.read_native_config(folder), **numerics})
    return transformer_io.load_native(folder, cfg, mesh=mesh, rules_=rules)
  cfg = Flux2Config.from_diffusers_config(transformer_io.read_diffusers_config(folder), **numerics)
  return transformer_io.load_diffusers(folder, cfg, mesh=mesh, rules_=rules)


def save_transformer(model: Flux2Transformer, path: str, *, dtype: str | None = None,
                     max_shard_size: int | str = "10GB", layout: str = "diffusers") -> list[str]:
  """Writes `model` to the folder `path`: diffusers' layout (config.json + diffusion_pytorch_model
  safetensors, sharded past `max_shard_size` as `save_pretrained` does; `dtype` of the tensors, default the
  parameters': pass "bfloat16" for klein's own 8 GB file) or, with layout="vbanana", the module's own
  (stacked parameters by path). Returns the file names written."""
  if layout == "diffusers":
    return transformer_io.save_diffusers(model, os.fspath(path), dtype=dtype, max_shard_size=max_shard_size)
  if layout == "vbanana":
    if dtype is not None:
      raise ValueError("save_transformer(layout='vbanana') keeps the parameters' dtype; dtype must be None")
    return transformer_io.save_native(model, os.fspath(path), max_shard_size=max_shard_size)
  raise ValueError(f"save_transformer: layout={layout!r}, expected 'diffusers' or 'vbanana'")
