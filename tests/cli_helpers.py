"""Running `python -m vbanana.main` as users do, for the tests that train through the command line."""
import os
import pathlib
import subprocess
import sys
import time

from vbanana import metrics_writer

ROOT = pathlib.Path(__file__).resolve().parents[1]
RES = 32


def one_device_xla_flags() -> str:
  """XLA_FLAGS for a subprocess on one CPU device: the test run's compile flags (conftest), without the 8
  simulated devices."""
  return os.environ.get("VBANANA_TEST_XLA_FLAGS", "")


def run_main(*args, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-m", "vbanana.main", *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env)


def start_main(args, **popen_kwargs):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}  # conftest's XLA_FLAGS: 8 devices
  return subprocess.Popen([sys.executable, "-m", "vbanana.main", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen_kwargs)


# The processes of a cluster compile for themselves: the test run's persistent compilation cache (conftest) is
# off for them. A process that loads a program from the cache while its peer compiles it runs ahead, and the
# first collective of a program waits at most 30 s for the peer (gloo's context set-up): under the load of a
# shared CI machine the peer can be later than that. A cluster may share a cache of its own (`cache_dir`, new
# and empty) with a later run of the same cluster: the first run's processes both compile (only a process that
# is behind can find a program there), the second's both load every program, so neither runs ahead.
def cluster_env(log_dir, cache_dir=None):
  """The environment of launch/local_cluster.sh for a training cluster (process logs under `log_dir`)."""
  cache = {"JAX_COMPILATION_CACHE_DIR": str(cache_dir)} if cache_dir else {"JAX_ENABLE_COMPILATION_CACHE": "false"}
  return {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "LOG_DIR": str(log_dir),
          "XLA_EXTRA_FLAGS": one_device_xla_flags(), **cache}


def run_cluster(num_processes, *args, log_dir, cache_dir=None, timeout=300):
  """launch/local_cluster.sh: `num_processes` processes of vbanana.main sharing 8 CPU devices."""
  return subprocess.run(["bash", str(ROOT / "launch" / "local_cluster.sh"), str(num_processes), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env=cluster_env(log_dir, cache_dir))


def tiny_args(workdir, scenes_dir, steps=8, extra=()):
  return [f"--config=configs/quickstart.py:steps={steps},batch=8,res={RES},data_dir={scenes_dir}",
          f"--workdir={workdir}", "--config.train.log_every=1", "--config.checkpoint.every=2",
          "--config.checkpoint.keep=10", "--config.train.eval_at_end=False", "--config.train.tensorboard=False",
          "--config.train.peak_flops_per_device=1e11", *extra]


def losses(workdir):
  """step -> loss, the last logged value for each step (a resumed run re-logs the steps after its checkpoint)."""
  return {row["step"]: row["loss"] for row in metrics_writer.read_metrics(str(workdir)) if "loss" in row}


def wait_for(predicate, proc, timeout=240):
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.2)
  return False


def checkpoints(workdir):
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []
