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
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/NAME.py[:key=value,...].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, samples (local or gs://).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval"],
                          "train: train (evaluating every config.train.eval_every steps and at the end); "
                          "eval: follow the workdir's checkpoints and evaluate each; train_and_eval: same as "
                          "train with evals forced on at the end.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


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


def parse_flags(argv):
  """absl flag parsing, with a clear message (and exit status 2) for an unknown --config.KEY override."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    raise SystemExit(f"FATAL Flags parsing error: {e}") from None
  except (AttributeError, KeyError) as e:
    from vbanana import config_lib  # pylint: disable=g-import-not-at-top
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec:
      try:
        config = config_lib.load_config(spec)
      except Exception:  # pylint: disable=broad-except
        raise e from None
      for key in config_lib.override_keys(argv):
        message = config_lib.unknown_key_message(config, key)
        if message:
          print(f"FATAL {message}", file=sys.stderr)
          raise SystemExit(2) from None
    raise


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config_file = (config_flags.get_config_filename(flags.FLAGS["config"]) or "").partition(":")[0]
  if not config_file or not os.path.exists(config_file):
    raise app.UsageError(f"--config: no config file at {config_file!r} (expected configs/NAME.py[:ARGS])")
  if "bench" in _CONFIG.value:  # configs/eval_paper.py: the paper's benchmarks, not a training workdir
    if _MODE.value != "eval":
      raise app.UsageError(f"--config={config_file} runs benchmarks: use --mode=eval")
    from vbanana.bench import runner  # pylint: disable=g-import-not-at-top
    raise SystemExit(runner.main_from_config(_CONFIG.value, _WORKDIR.value))
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)

  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # only process 0 logs progress
  logging.info("JAX process %d of %d, %d local devices of %d: %s", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)

  from vbanana import train  # pylint: disable=g-import-not-at-top
  from vbanana.data import sources  # pylint: disable=g-import-not-at-top
  try:
    if _MODE.value == "eval":
      from vbanana import evaluate  # pylint: disable=g-import-not-at-top
      evaluate.follow_checkpoints(_CONFIG.value, _WORKDIR.value)
    else:
      train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, final_eval=_MODE.value == "train_and_eval" or None)
  except sources.ScenesNotBuiltError as e:  # a pod-size dataset is built by its own command: say which, in one line
    print(f"FATAL {e}", file=sys.stderr)
    raise SystemExit(1) from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
