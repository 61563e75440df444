"""Evaluators on a tiny model over the built-in scenes: keys and finiteness, mesh independence, follow()."""

import json
import math
import os

import jax
import numpy as np
import pytest

from vbanana import checkpoint
from vbanana import config_lib
from vbanana import evaluate
from vbanana import setup as setup_lib
from vbanana import tasks
from vbanana.data import scenes_tfds
from vbanana.tasks import depth as depth_task

pytestmark = pytest.mark.slow  # every test compiles samplers over meshes

RES = 32
TASKS = tasks.TASKS


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("scenes"))
  scenes_tfds.build(path, RES, num_train=4, num_validation=8, num_test=4)
  return path


def make_config(data_dir, mesh=(8, 1, 1), evals=None, steps=2):
  c = config_lib.base_config()
  c.model.size = "tiny"
  c.model.image_size = RES
  c.model.patch_size = 8
  c.model.width = 32
  c.model.depth = 1
  c.model.text_width = 32
  c.model.text_len = 32
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  c.sharding_rules = ()  # vbanana.parallel's defaults
  c.data.resolution = RES
  c.data.text_length = 32
  c.data.global_batch = 8
  c.data.components = config_lib.scenes_components(data_dir, RES, {t: 1.0 for t in TASKS}, num_train=4,
                                                   num_validation=8, num_test=4)
  c.train.steps = steps
  c.evals = evals if evals is not None else {
      t: dict(type=t, split="validation", limit=3, steps=1, batch_size=8, num_images=2) for t in TASKS}
  return c


def init(config):
  run = setup_lib.create(config)
  return run, run.init_state()


def on_mesh(params, run):
  """The same parameter values placed with another setup's shardings."""
  return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params, run.param_shardings)


def test_every_evaluator_gives_finite_metrics_and_a_grid(data_dir):
  config = make_config(data_dir)
  run, state = init(config)
  evaluators = evaluate.build_evaluators(run)
  scalars, images = evaluate.run_evaluators(evaluators, state["ema_params"], step=1)
  cell = 4 * RES  # tiles drawn at 128 px or more (nearest neighbour): 4 x at 32 px
  for task in TASKS:
    assert scalars[f"{task}/num_examples"] == 3, task
    mine = {k.split("/", 1)[1] for k in scalars if k.startswith(task + "/")}
    assert len(mine - {"num_examples", "seconds"}) >= 1, (task, mine)
    assert images[task].shape == (2 * (cell + 1) + 1, 3 * (cell + 1) + 1, 3) and images[task].dtype == np.uint8
  for key in ("generation/quality/fd", "generation/quality/attr_balanced", "generation/quality/attr_recall_real",
              "editing/quality/fd"):
    assert key in scalars, sorted(scalars)
  bad = {k: v for k, v in scalars.items() if not math.isfinite(v)}
  assert not bad, bad
  # Sampling noise is seeded by example: the same params give the same numbers.
  again, _ = evaluate.run_evaluators([e for e in evaluators if e.spec.name == "depth"], state["ema_params"], step=1)
  assert {k: v for k, v in again.items() if not k.endswith("seconds")} == {
      k: v for k, v in scalars.items() if k.startswith("depth/") and not k.endswith("seconds")}


def test_metrics_do_not_depend_on_the_mesh(data_dir):
  results = []
  params = None
  # Also another batch size: 8 rows over 8 batch shards, then 4 rows (two batches, one padded) over 4.
  for mesh_shape, batch_size in (((8, 1, 1), 8), ((2, 2, 2), 4)):
    evals = {"depth": dict(type="depth", split="validation", limit=6, steps=2, batch_size=batch_size),
             "gen": dict(type="generation", component="generation", split="validation", limit=6, steps=2,
                         batch_size=batch_size, text_scale=2.0)}
    config = make_config(data_dir, mesh=mesh_shape, evals=evals)
    run, state = init(config)
    params = state["ema_params"] if params is None else on_mesh(params, run)
    with jax.set_mesh(run.mesh):  # as inside the training loop
      scalars, _ = evaluate.run_evaluators(evaluate.build_evaluators(run), params, step=1)
    results.append({k: v for k, v in scalars.items() if not k.endswith("seconds")})
  a, b = results
  assert set(a) == set(b)
  for key in a:
    assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), (key, a[key], b[key])


def test_the_evaluators_sample_with_the_runs_prediction(data_dir):
  """config.flow.prediction reaches the sampler, also for a second run in the same process. An untrained
  DiT outputs exactly 0: as a clean image that is mid-grey after one Euler step; as a velocity the sample is
  the noise itself."""
  evals = {"gen": dict(type="generation", component="generation", split="validation", limit=2, steps=1,
                       batch_size=8, quality=False, num_images=2)}
  grids = {}
  for prediction in ("v", "x"):
    config = make_config(data_dir, evals=evals)
    config.flow.prediction = prediction
    run, state = init(config)
    with jax.set_mesh(run.mesh):
      _, images = evaluate.run_evaluators(evaluate.build_evaluators(run), state["ema_params"], step=1)
    grids[prediction] = images["gen"]
  cell = 4 * RES
  def first_prediction(grid):  # row 0, middle tile of the (input | prediction | target) grid, 1-pixel gaps
    return grid[1:1 + cell, 2 + cell:2 + 2 * cell]
  assert np.isin(first_prediction(grids["x"]), (127, 128)).all()
  assert first_prediction(grids["v"]).std() > 50


def test_follow_evaluates_each_checkpoint_once_and_stops_at_the_final_step(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  evals = {"depth": dict(type="depth", split="validation", limit=2, steps=1, batch_size=8)}
  config = make_config(data_dir, evals=evals, steps=2)
  _, state = init(config)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  ckpt.save(1, state)
  ckpt.wait()
  # Only step 1 exists: it is evaluated, then no new checkpoint comes and the job gives up waiting.
  assert evaluate.follow(config, workdir, poll_seconds=0.05, timeout_seconds=0.5, tensorboard=False) == [1]
  ckpt.save(2, state)
  ckpt.wait()
  ckpt.close()
  # A restarted job skips step 1 (recorded in the workdir), evaluates 2 and stops: 2 is the final step.
  assert evaluate.follow(config, workdir, poll_seconds=0.05, tensorboard=False) == [2]
  assert evaluate.follow(config, workdir, poll_seconds=0.05, tensorboard=False) == []
  with open(os.path.join(workdir, evaluate.EVAL_METRICS_FILE)) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[0]["depth/num_examples"] == 2 and "depth/seconds" in rows[0]
  same = lambda r: {k: v for k, v in r.items() if k not in ("step", "depth/seconds")}
  assert same(rows[0]) == same(rows[1])  # the same EMA params in both checkpoints
  assert os.path.exists(os.path.join(workdir, evaluate.EVAL_DIR, "metrics.jsonl"))


def test_an_oracle_sampler_scores_the_quantisation_bound(data_dir):
  """Every evaluator with a sampler that returns each example's own encoded target: the scores are what the
  encodings alone lose (depth AbsRel within its 8-bit quantisation bound, normals under half a degree) and
  exactly 1 for the mask tasks (mIoU, AP, gIoU)."""
  evals = {t: dict(type=t, split="validation", limit=8, steps=1, batch_size=8, quality=False)
           for t in ("depth", "normals", "semantic", "instance", "referring")}
  run, state = init(make_config(data_dir, evals=evals))
  evaluators = evaluate.build_evaluators(run)
  for ev in evaluators:
    ev.sample = lambda params, batch, start: batch["target"]  # the oracle: the encoded ground truth
  scalars, _ = evaluate.run_evaluators(evaluators, state["ema_params"], step=1)
  # The largest relative error 8-bit rounding can cause at the scenes' depths (half a metre to 30 m).
  bound = float(np.max(depth_task.quantisation_bound(np.linspace(0.5, 30.0, 1000))))
  assert 0 < scalars["depth/abs_rel"] <= bound, (scalars["depth/abs_rel"], bound)
  assert scalars["normals/mean_angle"] < 0.5
  assert scalars["semantic/miou"] == 1.0
  assert scalars["instance/ap"] == 1.0
  assert scalars["referring/giou"] == 1.0


def test_bad_eval_config_names_the_entry(data_dir):
  for evals, message in ((dict(d=dict(type="depth", stpes=2)), r"config.evals.d: unknown field"),
                         (dict(d=dict(type="colour")), r"config.evals.d.type='colour'"),
                         (dict(d=dict(type="depth", component="nope")), r"config.evals.d.component='nope'"),
                         (dict(d=dict(type="depth", sampler="rk4")), r"config.evals.d.sampler='rk4'")):
    with pytest.raises(ValueError, match=message):
      evaluate.parse_specs(make_config(data_dir, evals=evals))


def test_predictions_are_brought_to_the_ground_truth_size_without_blending():
  rgb = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
  big = evaluate.resize_nearest(rgb, 4, 6)
  assert big.shape == (4, 6, 3)
  np.testing.assert_array_equal(big[:2, :3], np.broadcast_to(rgb[0, 0], (2, 3, 3)))
  np.testing.assert_array_equal(big[2:, 3:], np.broadcast_to(rgb[1, 1], (2, 3, 3)))
