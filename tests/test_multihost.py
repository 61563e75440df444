"""Multi-host through launch/local_cluster.sh: 2 real JAX processes x 4 CPU devices, joined by jax.distributed."""
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from vbanana import checkpoint, metrics_writer, procs

from cli_helpers import checkpoints, cluster_env, losses, run_cluster, tiny_args, wait_for
from test_checkpoint import abstract_on, assert_trees_equal, make_state, mesh_of

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # every test starts several JAX processes

# Each process builds the same global state on a (2, 2, 2) mesh spanning both processes and saves it; every
# process writes its own shards and its own data-iterator state into the same Orbax checkpoint.
SAVE_PROBE = """
import sys
sys.path.insert(0, {tests!r})
from absl import app, flags

flags.DEFINE_string("coordinator_address", None, "")
flags.DEFINE_integer("num_processes", 1, "")
flags.DEFINE_integer("process_id", 0, "")
flags.DEFINE_string("workdir", None, "")
F = flags.FLAGS
def main(_):
  import jax, numpy as np, grain
  jax.distributed.initialize(F.coordinator_address, F.num_processes, F.process_id)
  from jax.sharding import Mesh
  from vbanana import checkpoint
  import test_checkpoint as tc
  mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), tc.AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  host = tc.make_state(mesh_of_one(), 6)
  state = jax.tree.map(lambda x, a: jax.make_array_from_callback(x.shape, a.sharding, lambda i: np.asarray(x)[i]),
                       host, tc.abstract_on(host, mesh))
  it = iter(grain.MapDataset.range(100)[jax.process_index()::2].to_iter_dataset().batch(2))
  for _ in range(3):
    next(it)
  ckpt = checkpoint.Checkpointer(F.workdir)
  ckpt.save(6, state, it)
  ckpt.close()
  restored, step = checkpoint.Checkpointer(F.workdir).restore(tc.abstract_on(host, mesh), it)
  ok = all(np.array_equal(np.asarray(a.addressable_data(0)), np.asarray(b.addressable_data(0)))
           for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)))
  print(f"SAVED process={{jax.process_index()}} step={{step}} ok={{ok}} next={{next(it).tolist()}}", flush=True)
def mesh_of_one():
  from jax.sharding import Mesh
  import jax, numpy as np
  import test_checkpoint as tc
  return Mesh(np.array(jax.local_devices()[:1]).reshape(1, 1, 1), tc.AXES)
app.run(main)
"""


@pytest.mark.slow
def test_two_process_checkpoint_restores_in_one_process(tmp_path):
  probe = tmp_path / "save_probe.py"
  probe.write_text(SAVE_PROBE.format(tests=str(ROOT / "tests")))
  env = {**os.environ, "VBANANA_MAIN": str(probe), "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
         "PYTHONPATH": str(ROOT)}
  r = subprocess.run(["bash", str(ROOT / "launch" / "local_cluster.sh"), "2", f"--workdir={tmp_path / 'run'}"],
                     capture_output=True, text=True, timeout=180, env=env)
  logs = [(tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2)]
  assert r.returncode == 0, r.stderr[-3000:]
  # Each process resumed its own part of the data stream (process 0 reads 0, 2, 4...; process 1 reads 1, 3...).
  assert "SAVED process=0 step=6 ok=True next=[12, 14]" in logs[0]
  assert "SAVED process=1 step=6 ok=True next=[13, 15]" in logs[1]
  step_dir = tmp_path / "run" / "checkpoints" / "6"
  assert sorted(p.name for p in (step_dir / "data").glob("process_*")) == ["process_0-of-2.json", "process_1-of-2.json"]

  # One process with 8 devices (this one) restores the state the two processes wrote.
  mesh = mesh_of((1, 8, 1))
  restored, step = checkpoint.Checkpointer(str(tmp_path / "run")).restore(abstract_on(make_state(mesh), mesh))
  assert step == 6
  assert_trees_equal(restored, make_state(mesh, 6))
  assert np.asarray(restored["step"]) == 6


@pytest.mark.slow
def test_two_process_training_matches_one_process_and_resumes(reference_run, scenes_dir, tmp_path):
  """The trainer on 2 processes x 4 devices: the same global batches, so the same losses as the 1-process
  run on 8 devices; after losing its last checkpoints it resumes from step 4 and reproduces them again."""
  workdir = tmp_path / "two_hosts"
  args = tiny_args(workdir, scenes_dir)
  cache = tmp_path / "jax_cache"  # the resumed cluster loads what the first one compiled
  r = run_cluster(2, *args, log_dir=tmp_path / "logs", cache_dir=cache)
  assert r.returncode == 0, r.stderr[-3000:]
  log0 = (tmp_path / "logs" / "process_0.log").read_text()
  assert "JAX process 0 of 2, 4 local devices of 8" in log0
  want, got = losses(reference_run), losses(workdir)
  assert sorted(got) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)], rtol=1e-5)
  assert checkpoints(workdir) == [2, 4, 6, 8]
  # Both processes wrote their data-iterator state into each checkpoint.
  assert len(list((workdir / "checkpoints" / "8" / "data").glob("process_*"))) == 2

  # A crash after step 4's checkpoint: the later ones are gone; the same command resumes from 4.
  for step in (6, 8):
    shutil.rmtree(workdir / "checkpoints" / str(step))
  r = run_cluster(2, *args, log_dir=tmp_path / "logs_resumed", cache_dir=cache)
  assert r.returncode == 0, r.stderr[-3000:]
  log0 = (tmp_path / "logs_resumed" / "process_0.log").read_text()
  assert "Resumed from" in log0 and "at step 4" in log0
  rows = [row["step"] for row in metrics_writer.read_metrics(str(workdir)) if "loss" in row]
  assert rows == list(range(1, 9)) + list(range(5, 9))  # steps 5-8 trained again, only by process 0's log
  got = losses(workdir)
  np.testing.assert_allclose([got[s] for s in range(5, 9)], [want[s] for s in range(5, 9)], rtol=1e-5)


@pytest.mark.slow
def test_sigterm_to_one_process_saves_every_process_at_the_same_step(scenes_dir, tmp_path):
  """A SIGTERM to process 1 alone (a preempted host): through JAX's preemption sync point, what Orbax's
  `reached_preemption` uses, both processes save the same step, the current one, and stop cleanly; no
  collective runs per step for it. The same command then resumes from that step."""
  workdir = tmp_path / "term"
  args = tiny_args(workdir, scenes_dir, steps=400, extra=["--config.checkpoint.every=1000"])
  cluster = subprocess.Popen(["bash", str(ROOT / "launch" / "local_cluster.sh"), "2", *args],
                             env=cluster_env(tmp_path / "logs"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  assert wait_for(lambda: max(losses(workdir), default=0) >= 3, cluster, timeout=600), cluster.stdout.read()[-3000:]
  [second] = [p for p in procs.descendants(cluster.pid) if "vbanana.main" in p.cmdline
              and "--process_id=1" in p.cmdline and "spawn_main" not in p.cmdline]
  os.kill(second.pid, signal.SIGTERM)
  out, _ = cluster.communicate(timeout=600)
  assert cluster.returncode == 0, out[-3000:]
  [saved] = checkpoints(workdir)
  assert 3 <= saved < 400 and saved == max(losses(workdir))  # the step it stopped at, nothing after
  for log in (workdir / "log.txt", workdir / "log.1.txt"):  # every process's own record
    assert f"Preempted: saved step {saved}" in log.read_text(), log
  assert len(list((workdir / "checkpoints" / str(saved) / "data").glob("process_*"))) == 2
