"""Training through the command line: metrics and checkpoints of a real run, resume after SIGKILL with the
same losses and no process of the killed run left, a save on SIGTERM, refusals that change nothing, and a
corrupt checkpoint that falls back."""
import pytest
import random
import signal

import numpy as np

from vbanana import config_lib, metrics_writer, procs

from cli_helpers import checkpoints, losses, run_main, start_main, tiny_args, wait_for

pytestmark = pytest.mark.slow  # every test trains through `python -m vbanana.main` (subprocesses)


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
  seed = random.randrange(2 ** 32)
  kill_after = random.Random(seed).randint(3, 6)  # a random step after the first checkpoint (step 2)
  print(f"kill after step {kill_after} (random.Random({seed}))")  # shown when the test fails
  proc = start_main(tiny_args(workdir, scenes_dir), start_new_session=True)  # its own session: all it starts
  # Checkpoints are saved asynchronously: wait until one has committed, then kill at a random later step.
  reached = wait_for(lambda: checkpoints(workdir) and max(losses(workdir), default=0) >= kill_after, proc)
  started = procs.descendants(proc.pid)  # its Grain worker (quickstart: data.num_workers=1), resource tracker
  proc.kill()  # SIGKILL: no handler, no cleanup
  proc.wait()
  assert reached, proc.stdout.read()[-3000:]
  # Nothing it started outlives it: not its children, nor anything else in its session.
  assert started, "the trainer had no worker process running"
  left = procs.wait_gone(started + procs.in_session(proc.pid), timeout_s=10)
  assert not left, f"still running 10 s after the trainer was killed: {procs.describe(left)}"
  killed_at = max(losses(workdir))
  assert killed_at < 8 and checkpoints(workdir), (killed_at, checkpoints(workdir))
  r = run_main(*tiny_args(workdir, scenes_dir), timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Resumed from" in r.stdout
  want, got = losses(reference_run), losses(workdir)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)], rtol=1e-6)


def test_sigterm_saves_a_checkpoint_at_that_step(scenes_dir, tmp_path):
  workdir = tmp_path / "term"
  proc = start_main(tiny_args(workdir, scenes_dir, steps=200, extra=["--config.checkpoint.every=1000"]))
  assert wait_for(lambda: max(losses(workdir), default=0) >= 3, proc), proc.stdout.read()[-3000:]
  started = procs.descendants(proc.pid)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert started and not procs.wait_gone(started, timeout_s=10), procs.describe(procs.alive(started))
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
  assert "failed to restore" in r.stderr and "falling back" in r.stderr and "Resumed" in r.stdout
  assert any((workdir / "checkpoints" / "corrupt").iterdir())  # kept for inspection
  assert 8 in checkpoints(workdir)  # retrained from 6 and saved 8 again
  want, got = losses(reference_run), losses(workdir)
  np.testing.assert_allclose(got[7], want[7], rtol=1e-6)


def test_an_evaluation_cut_short_after_its_checkpoint_is_run_on_resume(reference_run, scenes_dir, tmp_path):
  """A run killed during the evaluation of step 4, after checkpoint 4 committed: its metrics have step 4's
  train row but no evaluation row, and the latest checkpoint is 4. Started again, it evaluates step 4 first,
  once, then trains on (no other evaluation is due: eval_every=4 and no final one)."""
  import json
  import shutil
  from vbanana import train
  workdir = tmp_path / "cut_eval"
  shutil.copytree(reference_run, workdir)
  for step in (6, 8):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  rows = [r for r in metrics_writer.read_metrics(str(workdir)) if r["step"] <= 4]
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  config = config_lib.read_config(str(reference_run))
  config.train.eval_every = 4
  config.evals = {"depth": dict(type="depth", split="validation", limit=4, steps=2)}
  train.train_and_evaluate(config, str(workdir))
  evals = [row for row in metrics_writer.read_metrics(str(workdir)) if "depth/num_examples" in row]
  assert [row["step"] for row in evals] == [4]
  np.testing.assert_allclose(losses(workdir)[8], losses(reference_run)[8], rtol=1e-6)
  # Started once more, the finished run neither trains nor evaluates again.
  config.train.eval_at_end = True
  config.evals = {"depth": dict(type="depth", split="validation", limit=4, steps=2)}
  before = len(metrics_writer.read_metrics(str(workdir)))
  train.train_and_evaluate(config, str(workdir))
  after = metrics_writer.read_metrics(str(workdir))
  assert [r["step"] for r in after[before:] if "depth/num_examples" in r] == [8]  # its final one, not logged yet
  train.train_and_evaluate(config, str(workdir))
  assert len(metrics_writer.read_metrics(str(workdir))) == len(after)
