"""A fine-tuned klein in and out of diffusers' layout: the trainer's parameters <-> a pipeline folder.

  load_params(folder, abstract_params)        klein's transformer weights, each placed with the sharding of
                                              its entry in `abstract_params` (the trainer's init, predict)
  write_pipeline(out, flat, model_cfg, ...)   a run's parameters as a diffusers pipeline folder: out/transformer
                                              (LoRA adapters merged into the pretrained kernels: W + (alpha /
                                              rank) A B), the pretrained folder's other parts (VAE, Qwen3,
                                              tokenizer, scheduler, model_index.json) linked or copied, and
                                              out/vbanana_klein.json recording the run's model config

Both stream: tensors are read from the memory-mapped safetensors one layer at a time and written (or placed)
one layer at a time, so the host never holds the 4B model twice (transformer_io does the mapping).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
import numpy as np

from vbanana import trees
from vbanana.flux2 import lora, transformer_io, weights
from vbanana.flux2.transformer import Flux2Config

RECORD = "vbanana_klein.json"
FORMAT = "vbanana-klein-finetune-v1"
PARTS = ("text_encoder", "tokenizer", "vae", "scheduler")


def read_sources(path: str, dtype="float32") -> tuple[Flux2Config, dict]:
  """(the transformer's config, our parameter path -> transformer_io.Source) of a diffusers folder (a
  pipeline folder or its transformer/) or of the layout `python -m vbanana.flux2.convert` writes."""
  folder, kind = transformer_io.resolve_folder(path)
  if kind == "native":
    cfg = Flux2Config.from_dict(transformer_io.read_native_config(folder))
    ckpt = weights.open_checkpoint(folder, transformer_io.NATIVE_PREFIX)
    return cfg, transformer_io.sources_from_native(ckpt, cfg, dtype)
  cfg = Flux2Config.from_diffusers_config(transformer_io.read_diffusers_config(folder))
  ckpt = weights.open_checkpoint(folder, transformer_io.DIFFUSERS_PREFIX)
  return cfg, transformer_io.sources_from_diffusers(ckpt, cfg, dtype)


def load_params(path: str, abstract_params: Any) -> Any:
  """The folder's transformer weights as a tree like `abstract_params` (ShapeDtypeStructs carrying
  shardings: each array is placed with its entry's sharding and dtype). Every entry must be filled by a
  tensor of the same shape and every tensor must fill one: else a CheckpointError naming it."""
  _, sources = read_sources(path)
  flat = trees.flatten(abstract_params)
  missing = [k for k in flat if k not in sources]
  if missing:
    raise weights.CheckpointError(f"{path}: no tensor of the checkpoint fills parameter {missing[0]!r} of the "
                                  f"model ({len(missing)} unfilled)")
  unused = [k for k in sources if k not in flat]
  if unused:
    raise weights.CheckpointError(f"{path}: parameter {unused[0]!r} of the checkpoint is not one of the model's")
  out = {}
  for key, spec in flat.items():
    if tuple(sources[key].shape) != tuple(spec.shape):
      raise weights.CheckpointError(f"{path}: parameter {key!r} has shape {tuple(sources[key].shape)}, the model "
                                    f"expects {tuple(spec.shape)}")
    sharding = getattr(spec, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    out[key] = transformer_io.place(sources[key], spec.dtype, sharding)
  return trees.unflatten(out)


# ----------------------------------------------------------------------------------------------------------
# Export.
# ----------------------------------------------------------------------------------------------------------
def transformer_getter(flat: Mapping[str, np.ndarray], cfg: Flux2Config, *, pretrained: str, lora_scale: float):
  """`get(path, i)` (our parameter, layer i of a stacked one) for diffusers_tensors: the trained arrays, or
  with LoRA adapters in `flat` the pretrained kernels of `pretrained` plus scale * A B."""
  pairs = lora.adapted(flat)
  if not pairs:
    return lambda path, i: flat[path] if i is None else flat[path][i]
  if not pretrained:
    raise ValueError("a LoRA run merges its adapters into the pretrained weights: its model config names no "
                     "pretrained folder (config.model.pretrained)")
  base_cfg, sources = read_sources(pretrained, cfg.param_dtype)
  if base_cfg.to_diffusers_config() != cfg.to_diffusers_config():
    raise ValueError(f"{pretrained}: its transformer is not the one the adapters were trained on")

  def get(path, i):
    base = sources[path].layer(0 if i is None else i)
    if path not in pairs:
      return base
    a, b = (flat[k] if i is None else flat[k][i] for k in pairs[path])
    return lora.merged_kernel(base, a, b, lora_scale)
  return get


def _link_or_copy(src: str, dst: str) -> None:
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


def write_pipeline(out: str, flat: Mapping[str, np.ndarray], cfg: Flux2Config, *, pretrained: str = "",
                   lora_scale: float = 1.0, dtype: str | None = None, record: Mapping[str, Any] | None = None,
                   max_shard_size: str = "10GB") -> list[str]:
  """Writes `out` as diffusers lays out a klein pipeline (see the module docstring); returns the files
  written into out/transformer. Without a pretrained pipeline folder only out/transformer is written."""
  os.makedirs(out, exist_ok=True)
  get = transformer_getter(flat, cfg, pretrained=pretrained, lora_scale=lora_scale)
  host = lambda path, i: np.asarray(get(path, i))
  tensors = transformer_io.diffusers_tensors(host, cfg, dtype or cfg.param_dtype)
  folder = os.path.join(out, "transformer")
  os.makedirs(folder, exist_ok=True)
  files = weights.write_checkpoint(folder, tensors, prefix=transformer_io.DIFFUSERS_PREFIX,
                                   max_shard_size=max_shard_size)
  transformer_io._write_diffusers_config(cfg, folder)  # pylint: disable=protected-access
  if pretrained and os.path.isfile(os.path.join(pretrained, "model_index.json")):
    for part in PARTS:
      src = os.path.join(pretrained, part)
      if os.path.isdir(src):
        if os.path.exists(os.path.join(out, part)):
          shutil.rmtree(os.path.join(out, part))
        shutil.copytree(src, os.path.join(out, part), copy_function=_link_or_copy)
    shutil.copy2(os.path.join(pretrained, "model_index.json"), os.path.join(out, "model_index.json"))
  with open(os.path.join(out, RECORD), "w") as f:
    json.dump({"format": FORMAT, **(record or {})}, f, indent=2, sort_keys=True, default=str)
  return files + ["config.json"]


def read_record(folder: str) -> dict | None:
  """What `write_pipeline` recorded in a folder (the run's model config, prediction, ...), or None."""
  path = os.path.join(folder, RECORD)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    d = json.load(f)
  if d.get("format") != FORMAT:
    raise ValueError(f"{path}: format {d.get('format')!r}, expected {FORMAT!r}")
  return d


def is_klein_folder(path: str) -> bool:
  """Whether `path` is a folder holding a FLUX.2 transformer (a pipeline folder, transformer/ or converted)."""
  if not os.path.isdir(path):
    return False
  try:
    folder, kind = transformer_io.resolve_folder(path)
  except (ValueError, OSError):
    return False
  if kind == "native":
    return True
  try:
    return transformer_io.read_diffusers_config(folder).get("_class_name") == "Flux2Transformer2DModel"
  except (ValueError, OSError):
    return False


__all__ = ["load_params", "write_pipeline", "read_record", "read_sources", "is_klein_folder", "RECORD"]
