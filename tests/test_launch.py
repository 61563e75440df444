"""Launch scripts: local_cluster.sh starts and joins N real JAX processes; Cloud TPU scripts' dry runs."""
import os
import pathlib
import subprocess
import sys

import pytest

from cli_helpers import one_device_xla_flags

pytestmark = pytest.mark.slow  # subprocesses of the launch scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"

PROBE = """
import sys
from absl import app, flags

flags.DEFINE_string("coordinator_address", None, "")
flags.DEFINE_integer("num_processes", 1, "")
flags.DEFINE_integer("process_id", 0, "")
flags.DEFINE_integer("fail", -1, "")
flags.DEFINE_string("extra", "", "")
F = flags.FLAGS
def main(_):
  import jax, numpy as np
  from jax.experimental import multihost_utils
  jax.distributed.initialize(F.coordinator_address, F.num_processes, F.process_id)
  ids = multihost_utils.process_allgather(np.array([jax.process_index()])).ravel().tolist()
  print(f"PROBE process={jax.process_index()} count={jax.process_count()} local={jax.local_device_count()} "
        f"global={jax.device_count()} ids={ids} extra={F.extra}", flush=True)
  if F.process_id == F.fail:
    sys.exit(3)
app.run(main)
"""


def run_script(name, *args, env=None, timeout=60):
  return subprocess.run(["bash", str(LAUNCH / name), *args], capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


@pytest.fixture
def probe(tmp_path):
  path = tmp_path / "probe.py"
  path.write_text(PROBE)
  env = {"VBANANA_MAIN": str(path), "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
         "XLA_FLAGS": one_device_xla_flags()}
  return env, tmp_path / "logs"


def test_local_cluster_joins_processes(probe):
  env, logs = probe
  r = run_script("local_cluster.sh", "2", "--extra=hello", env=env)
  assert r.returncode == 0, r.stderr
  for i in range(2):
    text = (logs / f"process_{i}.log").read_text()
    assert f"PROBE process={i} count=2 local=4 global=8 ids=[0, 1] extra=hello" in text


def test_local_cluster_fails_when_one_process_fails(probe):
  env, _ = probe
  r = run_script("local_cluster.sh", "2", "--fail=1", env=env)
  assert r.returncode == 3
  assert "process 1 exited with status 3" in r.stderr


def test_local_cluster_rejects_bad_counts():
  assert run_script("local_cluster.sh", "3").returncode == 2  # 8 devices do not split over 3
  assert run_script("local_cluster.sh", "x").returncode == 2


def commands_of(result):
  assert result.returncode == 0, result.stderr
  return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_tpu_create_dry_run():
  cmds = commands_of(run_script("tpu_create.sh", "--name=vb", "--zone=us-east5-a", "--project=proj",
                                "--accelerator=v5p-32", "--spot", "--dry-run"))
  create = cmds[0]
  assert create.startswith("gcloud compute tpus queued-resources create vb ")
  for flag in ["--node-id=vb", "--zone=us-east5-a", "--project=proj", "--accelerator-type=v5p-32",
               "--runtime-version=v2-alpha-tpuv5", "--spot"]:
    assert flag in create.split(), flag
  best = commands_of(run_script("tpu_create.sh", "--zone=z", "--accelerator=v6e-64", "--best-effort",
                                "--dry-run"))[0]
  assert best.startswith("gcloud alpha compute tpus queued-resources create")
  assert "--runtime-version=v2-alpha-tpuv6e" in best and "--best-effort" in best


def test_tpu_install_run_logs_delete_dry_runs():
  install = commands_of(run_script("tpu_install.sh", "--name=vb", "--zone=z", "--dry-run"))
  assert any("tpu-vm scp" in c and "--worker=all" in c for c in install)
  assert "--worker=all" in install[-1] and "pip\\ install" in install[-1]

  run = commands_of(run_script("tpu_run.sh", "--name=vb", "--zone=z", "--config=configs/pretrain_tpu.py:size=xl",
                               "--workdir=gs://bucket/run", "--config.optim.lr=0.001", "--dry-run"))
  assert len(run) == 1 and "tpu-vm ssh vb" in run[0] and "--worker=all" in run[0]
  for part in ["vbanana.main", "--config=configs/pretrain_tpu.py:size=xl", "--workdir=gs://bucket/run",
               "--config.optim.lr=0.001"]:
    assert part in run[0], part
  assert "coordinator_address" not in run[0]  # the hosts find each other on Cloud TPU

  logs = commands_of(run_script("tpu_logs.sh", "--name=vb", "--zone=z", "--worker=2", "--dry-run"))
  assert "--worker=2" in logs[0] and "tail" in logs[0]
  delete = commands_of(run_script("tpu_delete.sh", "--name=vb", "--zone=z", "--dry-run"))
  assert delete == ["gcloud compute tpus queued-resources delete vb --zone=z --force --quiet"]


def test_tpu_scripts_refuse_bad_flags():
  r = run_script("tpu_run.sh", "--zone=z", "--config=c.py", "--workdir=/local/dir", "--dry-run")
  assert r.returncode == 2 and "gs://" in r.stderr
  r = run_script("tpu_create.sh", "--dry-run")
  assert r.returncode == 2 and "--zone" in r.stderr
  r = run_script("tpu_delete.sh", "--zone=z", "--bogus", "--dry-run")
  assert r.returncode == 2 and "--bogus" in r.stderr
