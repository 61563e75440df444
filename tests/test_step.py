"""The train state and step: structure, per-task metrics, skipped non-finite updates, and overfitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vbanana import config_lib
from vbanana import model as model_lib
from vbanana import optim
from vbanana import setup as setup_lib

pytestmark = pytest.mark.slow  # train steps compiled and run

MODEL = dict(size="tiny", patch_size=2, width=64, depth=2, num_heads=4, text_width=32, text_heads=2, text_depth=1)


def tiny_config():
  """8x8 images, 8-byte instructions; cosine to a tenth over the 400 steps of the overfitting test (the end
  of the run is not dominated by the step size's noise: the constant-rate end loss varied 3x between seeds)."""
  c = config_lib.base_config()
  c.model.update(MODEL)
  c.data.update(dict(resolution=8, text_length=8, max_inputs=1, global_batch=4))
  c.optim.update(dict(lr=1e-2, schedule="cosine", end_lr_fraction=0.1, warmup_steps=10, clip_norm=1.0))
  c.flow.update(dict(text_dropout=0.0, image_dropout=0.0))
  c.train.steps = 400
  return c


@pytest.fixture(scope="module")
def setup():
  run = setup_lib.create(tiny_config(), jax.devices()[:1])
  state = run.init_state()
  rng = np.random.default_rng(0)
  inputs = rng.integers(0, 256, (4, 1, 8, 8, 3), dtype=np.uint8)
  target = np.ascontiguousarray(inputs[:, 0, ::-1])  # the task: flip the input upside down
  host = dict(text=model_lib.tokenize(["flip it", "turn over", "upside down", "mirror"], 8), inputs=inputs,
              input_mask=np.ones((4, 1), bool), target=target, task=np.array([0, 0, 2, 5], np.int32))
  return run, state, host


def test_state_is_a_plain_tree(setup):
  run, state, _ = setup
  assert run.optim_cfg.total_steps == 400  # train.steps: the schedule spans the run
  assert set(state) == {"params", "opt_state", "ema_params", "step", "rng", "skipped"}
  assert isinstance(state["params"], dict) and isinstance(state["params"]["blocks"], dict)
  assert state["rng"].dtype == jnp.uint32 and int(state["step"]) == 0 and int(state["skipped"]) == 0
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))


def test_weight_decay_mask():
  mask = optim.decay_mask(dict(blocks=dict(mlp=dict(kernel=jnp.ones((2, 3, 4)), bias=jnp.ones((2, 4))),
                                           norm=dict(scale=jnp.ones((2, 3)))),
                               embed=jnp.ones((5, 3)), segment=jnp.ones((3, 3))))
  assert mask["blocks"]["mlp"]["kernel"] and not mask["blocks"]["mlp"]["bias"]
  assert not mask["blocks"]["norm"]["scale"] and not mask["embed"] and not mask["segment"]
  with pytest.raises(ValueError, match="config.optim.*lrr"):
    optim.OptimConfig.create(dict(lrr=1.0))


def test_non_finite_update_is_skipped_and_counted(setup):
  run, state, host = setup
  state = jax.tree.map(jnp.copy, state)  # the step donates its input
  poisoned = dict(state, params=jax.tree.map(lambda x: x, state["params"]))
  poisoned["params"]["patch_embed"]["bias"] = poisoned["params"]["patch_embed"]["bias"].at[0].set(jnp.nan)
  nan_before = jax.device_get(poisoned["params"])
  new, metrics = run.train_step(poisoned, run.shard_batch(host), run.frozen)
  assert float(metrics["nonfinite"]) == 1.0 and int(new["skipped"]) == 1 and int(new["step"]) == 1
  after = jax.device_get(new["params"])
  for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(nan_before)):
    np.testing.assert_array_equal(a, b)  # nothing written (the NaN we planted stays, nothing else moved)
  assert not any(np.isnan(x).any() for x in jax.tree.leaves(jax.device_get(new["ema_params"])))


def test_overfits_four_triples_and_samples_them_back(setup):
  """Loss falls > 10x in 400 steps; 20 Euler steps then reproduce the targets: mean abs error < 0.15 on the
  [-1, 1] scale (under 20 of 255 levels), at most 1/3 of the error against the other examples' targets."""
  run, state, host = setup
  state = jax.tree.map(jnp.copy, state)
  batch = run.shard_batch(host)
  losses = []
  for _ in range(400):
    state, metrics = run.train_step(state, batch, run.frozen)
    losses.append(float(metrics["loss"]))
  first, last = np.mean(losses[:10]), np.mean(losses[-10:])
  print(f"loss {first:.3f} -> {last:.3f}")
  assert last < first / 10
  # Per-task metrics: tasks 0 (x2), 2, 5 present; the others NaN with count 0.
  assert float(metrics["count/generation"]) == 2 and float(metrics["count/depth"]) == 1
  assert np.isnan(float(metrics["loss/editing"])) and float(metrics["count/editing"]) == 0
  assert float(metrics["lr"]) == pytest.approx(1e-3, rel=1e-3)  # the last step's rate: the end of the cosine
  assert int(state["step"]) == 400 and int(state["skipped"]) == 0

  sample = run.sampler(steps=20)
  noise = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  x = np.asarray(sample(state["params"], run.frozen, noise, {k: batch[k] for k in ("text", "inputs", "input_mask")}))
  targets = host["target"] / 127.5 - 1
  own = np.abs(x - targets).mean()
  others = np.mean([np.abs(x - np.roll(targets, s, axis=0)).mean() for s in (1, 2, 3)])
  print(f"sample error {own:.3f} (other targets {others:.3f})")
  assert own < 0.15 and own < others / 3
