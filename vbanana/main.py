r"""Trains and/or evaluates a vbanana model.

  python -m vbanana.main --config=configs/quickstart.py --workdir=runs/quickstart
  python -m vbanana.main --config=configs/pretrain.py:size=small --workdir=runs/p --config.optim.lr=3e-4

Running the same command on the same workdir resumes from its latest checkpoint. Multi-host: pass
--coordinator_address/--num_processes/--process_id (see launch/local_cluster.sh), or nothing on a Cloud TPU
slice, where the hosts find each other by themselves.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from vbanana import cli



def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """The command's flags (into `fv`: the global FLAGS when it runs, a fresh FlagValues when a test parses a
  documented command line)."""
  cli.define_config_flag(flag_values=fv)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples (local or gs://).",
                      flag_values=fv)
  flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval"],
                    "train: train (evaluating every config.train.eval_every steps and at the end); eval: follow "
                    "the workdir's checkpoints and evaluate each; train_and_eval: same as train with evals "
                    "forced on at the end.", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).", flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).", flag_values=fv)


def _on_multihost_cloud_tpu() -> bool:
  """A Cloud TPU VM slice with more than one host (its metadata names several workers)."""
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return "," in hosts or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def initialize_distributed(coordinator_address, num_processes, process_id) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise app.UsageError("--coordinator_address, --num_processes and --process_id go together "
                           f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r})")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif _on_multihost_cloud_tpu():
    jax.distributed.initialize()  # addresses come from the TPU metadata


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config_file = cli.config_file()
  if "bench" in f.config:  # configs/eval_paper.py: the paper's benchmarks, not a training workdir
    if f.mode != "eval":
      raise app.UsageError(f"--config={config_file} runs benchmarks: use --mode=eval")
    from vbanana.bench import runner  # pylint: disable=g-import-not-at-top
    raise SystemExit(runner.main_from_config(f.config, f.workdir))
  if not f.workdir:
    raise app.UsageError("--workdir is required")
  initialize_distributed(f.coordinator_address, f.num_processes, f.process_id)

  import jax  # pylint: disable=g-import-not-at-top
  from vbanana import console  # pylint: disable=g-import-not-at-top
  console.configure(verbose=flags.FLAGS["verbosity"].present > 0)
  where = (f"JAX process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local devices "
           f"of {jax.device_count()}: {jax.devices()[0].platform}")
  if jax.process_count() > 1:  # several hosts: say so on the console (process 0's line), not only in the log
    console.say(where)
  else:
    logging.info(where)

  from vbanana import train  # pylint: disable=g-import-not-at-top
  from vbanana.data import sources  # pylint: disable=g-import-not-at-top
  try:
    if f.mode == "eval":
      from vbanana import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.follow_checkpoints(f.config, f.workdir)
    else:
      train.train_and_evaluate(f.config, f.workdir, final_eval=f.mode == "train_and_eval" or None)
  except sources.ScenesNotBuiltError as e:  # a pod-size dataset is built by its own command: say which, in one line
    print(f"FATAL {e}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
