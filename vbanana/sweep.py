r"""Runs a config's sweep: `sweep()` in the config file returns a list of override dicts.

  python -m vbanana.sweep --config=configs/quickstart.py --workdir_root=runs/sweep          # one after another
  python -m vbanana.sweep --config=configs/quickstart.py --workdir_root=gs://b/sweep --print  # commands only

Each run gets its own workdir, named after its overrides, and the command `vbanana.main` would take, so a
launcher (launch/tpu_run.sh, a cluster scheduler) can run the printed lines as they are.
"""

from __future__ import annotations

import shlex
import sys

from absl import app
from absl import flags

from vbanana import config_lib
from vbanana import procs


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("config", None, "configs/NAME.py[:ARGS] that defines sweep().", required=True,
                      flag_values=fv)
  flags.DEFINE_string("workdir_root", None, "Each run writes to <workdir_root>/<run name>.", required=True,
                      flag_values=fv)
  flags.DEFINE_bool("print", False, "Print the commands instead of running them.", flag_values=fv)


def run_name(overrides: dict) -> str:
  parts = [f"{k.split('.')[-1]}={v}" for k, v in sorted(overrides.items())]
  name = ",".join(parts) or "base"
  return "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in name)


def commands(config_spec: str, workdir_root: str) -> list[list[str]]:
  """One `python -m vbanana.main ...` argv per sweep entry; unknown override keys fail here, before any run."""
  path = config_spec.partition(":")[0]
  module = config_lib.load_module(path)
  if not hasattr(module, "sweep"):
    raise ValueError(f"{path} defines no sweep()")
  base = config_lib.load_config(config_spec)
  argvs = []
  for overrides in module.sweep():
    config_lib.apply_overrides(base, overrides)  # raises on an unknown key, naming it
    argv = [sys.executable, "-m", "vbanana.main", f"--config={config_spec}",
            f"--workdir={workdir_root.rstrip('/')}/{run_name(overrides)}"]
    argv += [f"--config.{k}={v}" for k, v in overrides.items()]
    argvs.append(argv)
  return argvs


def main(argv):
  del argv
  f = flags.FLAGS
  argvs = commands(f.config, f.workdir_root)
  for i, cmd in enumerate(argvs):
    if f.print:
      print(shlex.join(cmd))
      continue
    print(f"[sweep {i + 1}/{len(argvs)}] {shlex.join(cmd)}", flush=True)
    procs.run(cmd)  # the run dies with the sweep, however it ends; a SIGTERM is passed on


if __name__ == "__main__":
  define_flags()
  app.run(main)
