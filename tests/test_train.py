"""Training through the command line: metrics and checkpoints of a real run, resume after SIGKILL with the
same losses, a save on SIGTERM, refusals that change nothing, and a corrupt checkpoint that falls back."""
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vbanana import config_lib, metrics_writer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-m", "vbanana.main", *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env)
RES = 32


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
  """The scenes dataset at 32x32, built once per test session (every split the runs read)."""
  from vbanana.data import sources
  data_dir = str(tmp_path_factory.mktemp("scenes"))
  spec = config_lib.scenes_components(data_dir, RES, {"generation": 1.0}, num_train=64, num_validation=8,
                                      num_test=8)["generation"]["source"]
  for split in ("train", "validation"):
    sources.make_source(spec, split)
  return data_dir


def tiny_args(workdir, scenes_dir, steps=8, extra=()):
  return [f"--config=configs/quickstart.py:steps={steps},batch=8,res={RES},data_dir={scenes_dir}",
          f"--workdir={workdir}", "--config.train.log_every=1", "--config.checkpoint.every=2",
          "--config.checkpoint.keep=10", "--config.train.eval_at_end=False", "--config.train.tensorboard=False",
          "--config.train.peak_flops_per_device=1e11", *extra]


def start_main(args):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  return subprocess.Popen([sys.executable, "-m", "vbanana.main", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


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


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, scenes_dir):
  workdir = tmp_path_factory.mktemp("reference")
  r = run_main(*tiny_args(workdir, scenes_dir), timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def test_reference_run_writes_metrics_checkpoints_config(reference_run):
  rows = metrics_writer.read_metrics(str(reference_run))
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == list(range(1, 9))
  for key in ("grad_norm", "steps_per_sec", "examples_per_sec", "mfu", "data_wait_fraction"):
    assert key in train_rows[-1], key
  assert all(np.isfinite(r["loss"]) for r in train_rows)
  assert checkpoints(reference_run) == [2, 4, 6, 8]
  assert config_lib.read_config(str(reference_run)).train.steps == 8
  assert (reference_run / "checkpoints" / "model_config.json").exists()


def test_sigkill_then_rerun_resumes_with_identical_losses(reference_run, scenes_dir, tmp_path):
  workdir = tmp_path / "killed"
  kill_after = random.Random().randint(3, 6)  # a random step after the first checkpoint (step 2)
  proc = start_main(tiny_args(workdir, scenes_dir))
  # Checkpoints are saved asynchronously: wait until one has committed, then kill at a random later step.
  reached = wait_for(lambda: checkpoints(workdir) and max(losses(workdir), default=0) >= kill_after, proc)
  proc.kill()  # SIGKILL: no handler, no cleanup
  proc.wait()
  assert reached, proc.stdout.read()[-3000:]
  killed_at = max(losses(workdir))
  assert killed_at < 8 and checkpoints(workdir), (killed_at, checkpoints(workdir))
  r = run_main(*tiny_args(workdir, scenes_dir), timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Resumed from" in r.stderr
  want, got = losses(reference_run), losses(workdir)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)], rtol=1e-6)


def test_sigterm_saves_a_checkpoint_at_that_step(scenes_dir, tmp_path):
  workdir = tmp_path / "term"
  proc = start_main(tiny_args(workdir, scenes_dir, steps=200, extra=["--config.checkpoint.every=1000"]))
  assert wait_for(lambda: max(losses(workdir), default=0) >= 3, proc), proc.stdout.read()[-3000:]
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  saved = checkpoints(workdir)
  assert len(saved) == 1 and saved[0] >= 3 and saved[0] < 200
  assert saved[0] == max(losses(workdir))
  assert f"Preempted: saved step {saved[0]}" in out


def test_other_models_workdir_is_refused_and_untouched(reference_run, scenes_dir):
  before = {p: p.stat().st_mtime_ns for p in reference_run.rglob("*")}
  r = run_main(*tiny_args(reference_run, scenes_dir, extra=["--config.model.size=small"]))
  assert r.returncode != 0
  # The error names the workdir and the resolved field that differs (small is wider than tiny).
  assert str(reference_run) in r.stderr and "model.width" in r.stderr and "another model" in r.stderr
  assert {p: p.stat().st_mtime_ns for p in reference_run.rglob("*")} == before


def test_mesh_that_does_not_fit_is_refused(scenes_dir, tmp_path):
  workdir = tmp_path / "mesh"
  r = run_main(*tiny_args(workdir, scenes_dir, extra=["--config.mesh.data=3"]))
  assert r.returncode != 0
  assert "config.mesh" in r.stderr and "8 devices" in r.stderr
  assert not (workdir / "checkpoints").exists()


def test_corrupt_latest_checkpoint_falls_back(reference_run, scenes_dir, tmp_path):
  import shutil
  workdir = tmp_path / "corrupt"
  shutil.copytree(reference_run, workdir)
  for f in (workdir / "checkpoints" / "8" / "state").rglob("*"):
    if f.is_file() and not f.name.startswith("_") and f.suffix != ".json":
      f.write_bytes(b"garbage")
  r = run_main(*tiny_args(workdir, scenes_dir, steps=8))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "failed to restore" in r.stderr and "falling back" in r.stderr and "Resumed" in r.stderr
  assert any((workdir / "checkpoints" / "corrupt").iterdir())  # kept for inspection
  assert 8 in checkpoints(workdir)  # retrained from 6 and saved 8 again
  want, got = losses(reference_run), losses(workdir)
  np.testing.assert_allclose(got[7], want[7], rtol=1e-6)
