r"""Export: a run's EMA parameters and model config in one standalone safetensors file.

  python -m vbanana.export --workdir=runs/quickstart --out=quickstart.safetensors

The file holds one tensor per parameter, named by its path ('blocks/attn/qkv/kernel'), and in the safetensors
metadata (no pickle) the model config as JSON, the model family (`family`, config.model.family; files
without it are DiTs) and what the network predicts (`prediction`: 'v' or 'x', the run's
config.flow.prediction; files without it predict 'v'), both read from the workdir's config.json. It loads on
any host without the training mesh: `read(path) -> (config dict, flat params)`, and `vbanana.predict.load`
builds the model's setup on one device from it; a training config can start from it with
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
from vbanana import trees

FORMAT = "vbanana-export-v1"


def export_workdir(workdir: str, out: str, key: str = "ema_params", step: int | None = None,
                   dtype: str | None = None) -> str:
  """Writes `key` of the workdir's latest (or given) checkpoint and its model config to `out`: this
  module's file for the DiT, the family's own format for another (`family.save`; klein: a diffusers
  pipeline folder whose tensors have `dtype`, default the parameters')."""
  model_cfg_path = checkpoint.checkpoint_dir(workdir) / checkpoint.MODEL_CONFIG_FILE
  if not model_cfg_path.exists():
    raise FileNotFoundError(f"{model_cfg_path} not found: {workdir} has no vbanana checkpoints")
  root = checkpoint.checkpoint_dir(workdir)
  steps = checkpoint.complete_steps(root)
  if not steps:
    raise FileNotFoundError(f"no checkpoint in {root}")
  step = steps[-1] if step is None else step
  params = read_params_to_host(root / str(step) / checkpoint.STATE, key)
  run = workdir_run(workdir)
  if run["family"] != "dit":
    from vbanana import families  # pylint: disable=g-import-not-at-top
    family = families.get(run["family"])
    model_cfg = family.config_from_dict(json.loads(model_cfg_path.read_text()))
    metadata = {"workdir": str(workdir), "step": step, "prediction": run["prediction"]}
    family.save(out, params, model_cfg, {**metadata, **({"dtype": dtype} if dtype else {})})
    logging.info("Exported %s of %s step %d to %s", key, workdir, step, out)
    return out
  write(out, params, json.loads(model_cfg_path.read_text()), extra={"workdir": str(workdir), "step": step},
        prediction=run["prediction"], family=run["family"])
  logging.info("Exported %s of %s step %d to %s", key, workdir, step, out)
  return out


def workdir_run(workdir: str) -> dict[str, str]:
  """{'family', 'prediction'} of the run in `workdir`, from its config.json (which the trainer writes): the
  model family (config.model.family) and what its network outputs (config.flow.prediction). A workdir
  without config.json, or a config that does not set them, means the DiT predicting 'v'."""
  path = epath.Path(workdir) / "config.json"
  config = json.loads(path.read_text()) if path.exists() else {}
  prediction = flow.check_prediction((config.get("flow") or {}).get("prediction", "v"), f"{path}: flow.prediction")
  return {"family": (config.get("model") or {}).get("family") or "dit", "prediction": prediction}


def read_params_to_host(state_dir: epath.Path, key: str) -> dict[str, np.ndarray]:
  """Reads one entry of a saved train state as host numpy arrays: no mesh, any device count."""
  def host_target(meta):
    target = jax.tree.map(lambda m: np.zeros((), m.dtype), meta)
    return target, jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = checkpoint.restore_entry(state_dir, key, host_target)
  return {k: np.asarray(v) for k, v in trees.flatten(restored).items()}


def write(out: str, flat_params: dict[str, np.ndarray], model_config: dict, extra: dict | None = None,
          prediction: str = "v", family: str = "dit") -> None:
  """One safetensors file (written to a temporary name, then renamed into place): the tensors, the model
  config as JSON, the model family and what the network predicts."""
  metadata = {"format": FORMAT, "model_config": json.dumps(model_config, sort_keys=True),
              "prediction": flow.check_prediction(prediction), "family": family}
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


def _metadata(path: str) -> dict:
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(path, framework="numpy") as f:
    return f.metadata() or {}


def read_prediction(path: str) -> str:
  """What the exported network predicts ('v' or 'x'): what samplers need besides the model config."""
  return flow.check_prediction(_metadata(path).get("prediction", "v"), f"{path}: metadata prediction")


def read_family(path: str) -> str:
  """The exported model's family (vbanana.families); files written before families existed are DiTs."""
  return _metadata(path).get("family", "dit")


def assign(tree: Any, flat: dict[str, np.ndarray], source: str) -> Any:
  """Replaces every leaf of `tree` by the array of the same name in `flat`; every name must match."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)
  names = [trees.key_of(p) for p, _ in leaves[0]]
  missing = [n for n in names if n not in flat]
  if missing:
    # nnx.State flattens with a trailing 'value'; accept names without it.
    stripped = {n: n.rsplit(trees.SEP, 1)[0] for n in names if n.endswith(trees.SEP + "value")}
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
  from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
  if finetuned.is_klein_folder(str(p)):  # a downloaded (or exported) FLUX.2 klein: its transformer
    return finetuned.load_params(str(p), abstract_params)
  return checkpoint.load_params(path, abstract_params, key)


def load_params_onto(path: str, abstract_params: Any) -> Any:
  """Exported parameters placed with the shardings of `abstract_params` (for init_from)."""
  _, flat = read(path)
  host = assign(abstract_params, flat, path)
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding) if getattr(a, "sharding", None) is not None
                      else jax.device_put(x), host, abstract_params)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """The command's flags, defined only when it runs: importing this module (the trainer does, for
  init_from) must not claim flag names such as --workdir."""
  flags.DEFINE_string("workdir", None, "Training workdir to export from.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "Output .safetensors file.", required=True, flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
  flags.DEFINE_enum("key", "ema_params", ["ema_params", "params"], "Which parameters to export.", flag_values=fv)
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "klein: the dtype of the diffusers tensors "
                    "(default the parameters'; bfloat16 halves the folder, as klein's own).", flag_values=fv)


def main(argv):
  del argv
  f = flags.FLAGS
  export_workdir(f.workdir, f.out, key=f.key, step=f.step, dtype=f.dtype)
  print(f.out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
