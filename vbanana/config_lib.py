"""Config helpers: `:key=value` arguments, override checks, and writing the resolved config.

A config file is an ml-collections module with `get_config(arg)`; `arg` is the text after the colon in
`--config=configs/x.py:size=tiny,steps=100`. `parse_arg` turns it into a ConfigDict and rejects keys the
config does not know, so a typo never silently runs the default.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections
from ml_collections import config_dict
from etils import epath


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'a=1,b=x,c' into a ConfigDict over `defaults`; a bare key means True; unknown keys raise.

  Values are Python literals when they parse as one (1, 0.5, True, (2,2)) and strings otherwise.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(","):
    if not item.strip():
      continue
    key, eq, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(f"Unknown config argument '{key}' in ':{arg}'; known arguments: "
                       f"{', '.join(sorted(defaults)) or '(none)'}")
    if not eq:
      result[key] = True
      continue
    value = _literal(value.strip())
    default = defaults[key]
    if isinstance(default, bool) and isinstance(value, str):
      raise ValueError(f"Config argument '{key}' expects True or False, got '{value}'")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if default is not None and not isinstance(value, type(default)) and not (
        isinstance(default, (int, float)) and isinstance(value, (int, float))):
      raise ValueError(f"Config argument '{key}' expects {type(default).__name__} "
                       f"(default {default!r}), got {value!r}")
    result[key] = value
  return result


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:args]' outside absl flags (sweeps, tests, notebooks)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config: no config file at {path}")
  module = load_module(path)
  return module.get_config(arg or None) if arg else _call_get_config(module)


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _call_get_config(module):
  try:
    return module.get_config(None)
  except TypeError:
    return module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets dotted keys ('optim.lr': 1e-3); an unknown key raises naming the key and its section's keys."""
  config = ml_collections.ConfigDict(config.to_dict()) if not isinstance(config, ml_collections.ConfigDict) \
      else config.copy_and_resolve_references()
  for dotted, value in overrides.items():
    message = unknown_key_message(config, dotted)
    if message:
      raise KeyError(message)
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[last] = value
  return config


def unknown_key_message(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """A message naming the first part of `dotted` that the config lacks, or None when the key exists."""
  node = config
  parts = dotted.split(".")
  for i, part in enumerate(parts):
    known = list(node.keys()) if hasattr(node, "keys") else []
    if part not in known:
      where = "config." + ".".join(parts[:i]) if i else "the config"
      return (f"Unknown config key '{dotted}': '{part}' is not in {where} "
              f"(known: {', '.join(sorted(map(str, known))) or 'none: it is not a section'})")
    node = node[part]
  return None


def override_keys(argv: list[str], flag: str = "config") -> list[str]:
  """The dotted keys of `--config.a.b=value` / `--config.a.b value` arguments."""
  prefix = f"--{flag}."
  return [a[len(prefix):].split("=", 1)[0] for a in argv if a.startswith(prefix)]


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> epath.Path:
  """Writes workdir/config.json; an earlier, different config.json is kept as config.<n>.json."""
  wd = epath.Path(workdir)
  wd.mkdir(parents=True, exist_ok=True)
  path = wd / "config.json"
  text = to_json(config)
  if path.exists():
    old = path.read_text()
    if old == text:
      return path
    n = 1
    while (wd / f"config.{n}.json").exists():
      n += 1
    path.rename(wd / f"config.{n}.json")
  tmp = wd / "config.json.tmp"
  tmp.write_text(text)
  tmp.rename(path)
  return path


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the resolved config a run wrote (export, eval jobs following a workdir)."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir} a vbanana workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


# ----------------------------------------------------------------------------------------------------------
# The sections every config has, with defaults; configs/*.py start from this and change what they need.
# ----------------------------------------------------------------------------------------------------------
# Logical axis -> mesh axes: vbanana.parallel's table (data parallel + FSDP + tensor parallel). A config may
# write out its own (configs/pretrain_tpu.py does).
def default_rules() -> tuple:
  from vbanana import parallel  # pylint: disable=g-import-not-at-top
  return tuple(parallel.DEFAULT_RULES)


def scenes_components(data_dir: str, resolution: int, weights: dict[str, float], *, num_train: int = 2048,
                      num_validation: int = 128, num_test: int = 128) -> dict:
  """Mixture components that all read the built-in scenes dataset, one per task with a positive weight."""
  source = dict(kind="scenes", data_dir=data_dir, resolution=resolution, num_train=num_train,
                num_validation=num_validation, num_test=num_test)
  return {task: dict(source=dict(source), task=task, weight=float(w)) for task, w in weights.items()}


def set_aspect_ratios(c: ml_collections.ConfigDict, ratios: str) -> None:
  """Trains `c` at aspect-ratio buckets: `ratios` names them ('3:4+1:1+4:3', width:height, '+' between),
  each at the token budget of the square data.resolution (vbanana.aspect). Sets data.shapes (the model
  follows it) and renders the built-in scenes with cameras of those shapes. An empty string: squares."""
  from vbanana import aspect  # pylint: disable=g-import-not-at-top
  if not ratios:
    return
  patch_size = c.model.get("patch_size") or model_config(c).patch_size  # set, or the size's default
  try:
    shapes = aspect.shapes_at_budget(c.data.resolution, patch_size, [r for r in ratios.split("+") if r.strip()])
  except (ValueError, ZeroDivisionError) as e:
    raise ValueError(f"Config argument 'aspect'={ratios!r}: expected width:height ratios joined by '+', such "
                     f"as 3:4+1:1+4:3 ({e})") from None
  c.data.shapes = [list(s) for s in shapes]
  for comp in c.data.components.values():
    if comp.source.get("kind") == "scenes":
      comp.source.shapes = [list(s) for s in shapes]


def model_config(config: ml_collections.ConfigDict):
  """The model family's config dataclass of an experiment config (`config.model.family`, default 'dit'):
  for the DiT, `config.model.size` with the set `config.model` fields as overrides and the sequence layout
  from `config.data` (vbanana/families/dit.py)."""
  from vbanana import families  # pylint: disable=g-import-not-at-top
  return families.get(config.model.get("family") or "dit").model_config(config)


# The pod configs' table (configs/*_tpu.py), written out as MaxText does: activations' batch over data and
# fsdp, heads and MLP hidden over tensor; parameters' embedding dim over fsdp (ZeRO-3), heads and MLP hidden
# over tensor. Equal to DEFAULT_RULES today; a pod config changes its own copy, never the model.
TPU_RULES = (
    ("act_batch", ("data", "fsdp")), ("act_seq", None), ("act_embed", None), ("act_heads", "tensor"),
    ("act_mlp", "tensor"), ("act_head_dim", None),
    ("embed", "fsdp"), ("embed_out", None), ("mlp", "tensor"), ("heads", "tensor"), ("head_dim", None),
    ("vocab", None), ("layers", None), ("patch", None), ("segment", None),
)


# The arguments every pod config takes. `slice` names the Cloud TPU slice the run is for: it sets the chip's
# bf16 peak (the MFU denominator) and, where `remat` is left empty, the config's remat policy for that slice
# (the one its docstring shows fitting). `scenes`, `workers` and `evals` (examples per evaluator) size the
# data to the machine: the tests run the pod configs on a CPU with a small dataset and one worker.
POD_ARGS = dict(slice="v5p-64", size="xl", res=256, patch=16, remat="", steps=200000, batch=1024,
                scenes=1_000_000, workers=8, evals=1024, data_dir="gs://BUCKET/scenes", data=1, fsdp=-1, tensor=1,
                peak=0.0)


def pod_config(arg, weights: dict[str, float], remat_by_slice: dict[str, str]) -> ml_collections.ConfigDict:
  """What every pod config shares: the model fields of `arg` (size, res, patch, remat), bf16 activations
  with float32 parameters and optimizer state, the (data, fsdp, tensor) mesh, the TPU rules table, scenes
  data at `res` with the `weights` mixture, and the trainer's cadence. The config file sets the rest."""
  from vbanana import accelerators  # pylint: disable=g-import-not-at-top
  if arg.slice not in remat_by_slice:
    raise ValueError(f"Config argument 'slice'={arg.slice!r}: this config is sized for {sorted(remat_by_slice)}")
  c = base_config()
  c.model.size = arg.size
  c.model.image_size = arg.res
  c.model.patch_size = arg.patch
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.remat = arg.remat or remat_by_slice[arg.slice]
  # Patches of 16 x 16 x 3 = 768 values: the network predicts the clean image (docs/results.md, v against x).
  c.flow.prediction = "x"
  c.mesh = dict(data=arg.data, fsdp=arg.fsdp, tensor=arg.tensor)
  c.sharding_rules = TPU_RULES
  c.data.resolution = arg.res
  c.data.global_batch = arg.batch
  c.data.num_workers = arg.workers
  c.data.components = scenes_components(arg.data_dir, arg.res, weights, num_train=arg.scenes,
                                        num_validation=min(1024, arg.scenes), num_test=min(1024, arg.scenes))
  c.train.steps = arg.steps
  c.train.log_every = 100
  c.train.peak_flops_per_device = arg.peak or accelerators.CHIPS[arg.slice.split("-")[0]].bf16_flops
  c.checkpoint.every = 2000
  c.checkpoint.keep = 3
  return c


# ----------------------------------------------------------------------------------------------------------
# Every default in one place: base_config holds every field of every section, taken from the dataclasses that
# check them (flow.FlowConfig, optim.OptimConfig, the family's model config) and the data pipeline's
# DEFAULTS, so `--config.optim.lr=3e-4` overrides a field that exists, and config.json (the resolved config,
# `resolve`) records every value a run used.
# ----------------------------------------------------------------------------------------------------------
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "tuple": tuple}


def _field_type(field: dataclasses.Field) -> type:
  """The type of a dataclass field for a typed placeholder ('int | None' -> int)."""
  annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
  name = annotation.split("|")[0].split("[")[0].strip()
  if name not in _TYPES:
    raise TypeError(f"{field.name}: no config placeholder type for annotation {annotation!r}")
  return _TYPES[name]


def dataclass_section(cls, unset: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """A config section with one entry per field of the frozen dataclass `cls`: its default, or (for the
  fields in `unset` and those whose default is None) a typed placeholder, None until set, that the command
  line can still override (`--config.model.width=128`)."""
  entries = {}
  for f in dataclasses.fields(cls):
    default = f.default if f.default is not dataclasses.MISSING else None
    if f.name in unset or default is None:
      entries[f.name] = config_dict.placeholder(_field_type(f))
    else:
      entries[f.name] = default
  return ml_collections.ConfigDict(entries)


def model_section(family: str = "dit") -> ml_collections.ConfigDict:
  """config.model: the family, its default size and every field of its config, unset (None = the size's
  value, or for the layout fields, config.data's)."""
  from vbanana import families  # pylint: disable=g-import-not-at-top
  fam = families.get(family)
  section = dataclass_section(fam.config_class, unset=[f.name for f in dataclasses.fields(fam.config_class)])
  section.family = family
  section.size = fam.default_size
  return section


def data_section() -> ml_collections.ConfigDict:
  from vbanana.data import pipeline  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict({**pipeline.DEFAULTS, "components": {}})


def base_config(family: str = "dit") -> ml_collections.ConfigDict:
  from vbanana import flow, optim  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ""  # a workdir, checkpoint dir or exported .safetensors: params only, fresh optimizer

  c.model = model_section(family)
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding_rules = default_rules()
  c.flow = dataclass_section(flow.FlowConfig)
  # total_steps unset = train.steps: the learning-rate schedule spans the run.
  c.optim = dataclass_section(optim.OptimConfig, unset=("total_steps",))
  # shapes: aspect-ratio buckets [[H, W], ...] (set_aspect_ratios); None = square images of data.resolution.
  c.data = data_section()
  c.train = ml_collections.ConfigDict(dict(
      steps=1000, log_every=50, eval_every=0, eval_at_end=True, tensorboard=True,
      peak_flops_per_device=0.0))  # 0: measured by a matmul at start
  c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, keep_every=0, async_save=True))
  c.evals = ml_collections.ConfigDict()
  return c


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` with every unset value filled in (the model's from its size and the data layout,
  optim.total_steps from train.steps): what a run uses and what its config.json records. Checks the flow
  and optim sections (unknown keys or bad values name the field)."""
  from vbanana import flow, optim  # pylint: disable=g-import-not-at-top
  resolved = ml_collections.ConfigDict(config.to_dict())
  model_cfg = model_config(config)
  for key, value in model_cfg.to_dict().items():
    resolved.model[key] = tuple(tuple(v) for v in value) if key == "image_shapes" else value
  if resolved.optim.get("total_steps") is None:
    resolved.optim.total_steps = int(config.train.steps)
  flow.FlowConfig.create(resolved.flow)
  optim.OptimConfig.create(resolved.optim)
  return resolved
