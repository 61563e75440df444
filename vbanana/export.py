r"""Export: a run's EMA parameters and model config in one standalone safetensors file.

  python -m vbanana.export --workdir=runs/quickstart --out=quickstart.safetensors

The file holds one tensor per parameter, named by its path ('blocks/attn/qkv/kernel'), the model config as
JSON and what the network predicts (`prediction`: 'v' or 'x', the run's config.flow.prediction, read from
the workdir's config.json; files without it predict 'v') in the safetensors metadata (no pickle). It loads
on any host without the training mesh: `load_exported(path) -> (ModelConfig, params)`, `build_model(path)`
-> a ready `vbanana.model.DiT`, `read_prediction(path)`; and a training config can start from it with
`init_from=<file>` (`load_params`, which also takes workdirs and checkpoint directories).

This module builds on vbanana.checkpoint (Orbax reads); checkpoint does not import it.
"""

from __future__ import annotations

import json
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from safetensors import numpy as safetensors_np

from vbanana import checkpoint
from vbanana import flow

FORMAT = "vbanana-export-v1"
SEP = "/"


def key_of(path) -> str:
  """'a/b/0/c' from a jax tree path; the same string for nested dicts, lists and nnx.State."""
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return SEP.join(parts)


def flatten(tree: Any) -> dict[str, Any]:
  return {key_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def export_workdir(workdir: str, out: str, key: str = "ema_params", step: int | None = None) -> str:
  """Writes `key` of the workdir's latest (or given) checkpoint and its model config to `out`."""
  model_cfg_path = checkpoint.checkpoint_dir(workdir) / checkpoint.MODEL_CONFIG_FILE
  if not model_cfg_path.exists():
    raise FileNotFoundError(f"{model_cfg_path} not found: {workdir} has no vbanana checkpoints")
  root = checkpoint.checkpoint_dir(workdir)
  steps = sorted(int(c.name) for c in root.iterdir() if c.name.isdigit())
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {root}")
  step = steps[-1] if step is None else step
  params = read_params_to_host(root / str(step) / checkpoint.STATE, key)
  write(out, params, json.loads(model_cfg_path.read_text()), extra={"workdir": str(workdir), "step": step},
        prediction=workdir_prediction(workdir))
  logging.info("Exported %s of %s step %d to %s", key, workdir, step, out)
  return out


def workdir_prediction(workdir: str) -> str:
  """config.flow.prediction of the run in `workdir` (its config.json, which the trainer writes); 'v' when
  the workdir has no config.json or the config does not set it."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    return "v"
  value = (json.loads(path.read_text()).get("flow") or {}).get("prediction", "v")
  return flow.check_prediction(value, f"{path}: flow.prediction")


def read_params_to_host(state_dir: epath.Path, key: str) -> dict[str, np.ndarray]:
  """Reads one entry of a saved train state as host numpy arrays: no mesh, any device count."""
  def host_target(meta):
    target = jax.tree.map(lambda m: np.zeros((), m.dtype), meta)
    return target, jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = checkpoint.restore_entry(state_dir, key, host_target)
  return {k: np.asarray(v) for k, v in flatten(restored).items()}


def write(out: str, flat_params: dict[str, np.ndarray], model_config: dict, extra: dict | None = None,
          prediction: str = "v") -> None:
  metadata = {"format": FORMAT, "model_config": json.dumps(model_config, sort_keys=True),
              "prediction": flow.check_prediction(prediction)}
  for k, v in (extra or {}).items():
    metadata[k] = str(v)
  out_path = epath.Path(out)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.parent / (out_path.name + ".tmp")
  safetensors_np.save_file({k: np.ascontiguousarray(v) for k, v in flat_params.items()}, str(tmp),
                           metadata=metadata)
  tmp.rename(out_path)


def read(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(model config dict, {name: array}) from an exported file."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(path, framework="numpy") as f:
    metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
      raise ValueError(f"{path} is not a vbanana export (metadata format={metadata.get('format')!r}, "
                       f"expected {FORMAT!r})")
    params = {k: f.get_tensor(k) for k in f.keys()}
  return json.loads(metadata["model_config"]), params


def read_prediction(path: str) -> str:
  """What the exported network predicts ('v' or 'x'): what samplers need besides the model config."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(path, framework="numpy") as f:
    metadata = f.metadata() or {}
  return flow.check_prediction(metadata.get("prediction", "v"), f"{path}: metadata prediction")


def load_exported(path: str):
  """(ModelConfig, params as a nested dict of numpy arrays); needs no mesh and no accelerator."""
  from vbanana import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg_dict, flat = read(path)
  return model_config_from_dict(model_lib, cfg_dict), unflatten(flat)


def model_config_from_dict(model_lib, cfg_dict: dict):
  cls = model_lib.ModelConfig
  fields = getattr(cls, "__dataclass_fields__", {})
  kwargs = {}
  for k, v in cfg_dict.items():
    if k in fields and isinstance(v, list):
      v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    kwargs[k] = v
  return cls(**kwargs)


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for k, v in flat.items():
    node = tree
    parts = k.split(SEP)
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return tree


def build_model(path: str):
  """A `vbanana.model.DiT` on the default device with the exported parameters."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg_dict, flat = read(path)
  cfg = model_config_from_dict(model_lib, cfg_dict)
  with nnx.use_eager_sharding(False):
    model = model_lib.DiT(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  params = assign(params, flat, path)
  return nnx.merge(graphdef, params, rest)


def assign(tree: Any, flat: dict[str, np.ndarray], source: str) -> Any:
  """Replaces every leaf of `tree` by the array of the same name in `flat`; every name must match."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)
  names = [key_of(p) for p, _ in leaves[0]]
  missing = [n for n in names if n not in flat]
  if missing:
    # nnx.State flattens with a trailing 'value'; accept names without it.
    stripped = {n: n.rsplit(SEP, 1)[0] for n in names if n.endswith(SEP + "value")}
    names = [stripped.get(n, n) for n in names]
    missing = [n for n in names if n not in flat]
  extra = sorted(set(flat) - set(names))
  if missing or extra:
    raise ValueError(f"{source}: parameters do not match the model (missing {missing[:5]}, "
                     f"unexpected {extra[:5]})")
  for (_, x), n in zip(leaves[0], names):
    if tuple(np.shape(x)) != tuple(flat[n].shape):
      raise ValueError(f"{source}: parameter {n} has shape {flat[n].shape}, the model expects {np.shape(x)}")
  return jax.tree_util.tree_unflatten(leaves[1], [flat[n].astype(x.dtype) for (_, x), n in zip(leaves[0], names)])


def load_params(path: str, abstract_params: Any, key: str = "ema_params") -> Any:
  """init_from: parameters from an exported file, a workdir or a checkpoint directory, placed with the
  shardings of `abstract_params` (`key` picks params or ema_params of a train state)."""
  p = epath.Path(path)
  if p.is_file() or p.suffix == ".safetensors":
    return load_params_onto(str(p), abstract_params)
  return checkpoint.load_params(path, abstract_params, key)


def load_params_onto(path: str, abstract_params: Any) -> Any:
  """Exported parameters placed with the shardings of `abstract_params` (for init_from)."""
  _, flat = read(path)
  host = assign(abstract_params, flat, path)
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding) if getattr(a, "sharding", None) is not None
                      else jax.device_put(x), host, abstract_params)


def _define_flags() -> None:
  """The command's flags, defined only when it runs: importing this module (the trainer does, for
  init_from) must not claim flag names such as --workdir."""
  flags.DEFINE_string("workdir", None, "Training workdir to export from.")
  flags.DEFINE_string("out", None, "Output .safetensors file.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_enum("key", "ema_params", ["ema_params", "params"], "Which parameters to export.")
  flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  f = flags.FLAGS
  export_workdir(f.workdir, f.out, key=f.key, step=f.step)
  print(f.out)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
