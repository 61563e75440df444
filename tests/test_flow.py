"""Flow matching: noising, time sampling, loss, condition dropout, samplers and guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vbanana import flow


def test_interpolation_endpoints_and_velocity():
  x0 = jnp.full((2, 4, 4, 3), 0.5)
  noise = jnp.full((2, 4, 4, 3), -1.0)
  x_t, v = flow.interpolate(x0, noise, jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(x_t[0], x0[0])
  np.testing.assert_allclose(x_t[1], noise[1])
  np.testing.assert_allclose(v, noise - x0)


def test_time_sampling():
  key = jax.random.key(0)
  t = flow.sample_time(key, 20000, flow.FlowConfig(pure_noise_share=0.0))
  assert 0 < float(t.min()) and float(t.max()) < 1
  assert abs(float(jnp.median(t)) - 0.5) < 0.02        # logit-normal(0, 1): median 0.5
  shifted = flow.sample_time(key, 20000, flow.FlowConfig(logit_mean=1.0, pure_noise_share=0.0))
  assert float(jnp.median(shifted)) > 0.7               # sigmoid(1) = 0.73
  u = flow.sample_time(key, 20000, flow.FlowConfig(time_sampling="uniform", pure_noise_share=0.0))
  assert abs(float(jnp.mean(u < 0.25)) - 0.25) < 0.02
  # The default puts a tenth of the examples at t = 1 (the sampler's first step), the rest logit-normal.
  mixed = flow.sample_time(key, 20000, flow.FlowConfig())
  assert abs(float(jnp.mean(mixed == 1.0)) - 0.1) < 0.01
  assert abs(float(jnp.median(mixed[mixed < 1])) - 0.5) < 0.02


def test_flow_config_errors_name_the_key():
  with pytest.raises(ValueError, match="config.flow.*tim_sampling"):
    flow.FlowConfig.create(dict(tim_sampling="uniform"))
  with pytest.raises(ValueError, match="text_dropout=1.5"):
    flow.FlowConfig.create(dict(text_dropout=1.5))


def _null(cond):
  """The DiT family's 'no instruction': all padding, zero embeddings."""
  return jax.tree.map(jnp.zeros_like, cond)


def test_condition_dropout():
  b = 4000
  text = jnp.ones((b, 5), jnp.int32)
  mask = jnp.ones((b, 2), bool)
  emb = jnp.ones((b, 5, 3))
  cfg = flow.FlowConfig(text_dropout=0.3, image_dropout=0.1)
  cond = {"text": text, "text_embeddings": emb}
  c2, m2 = flow.drop_conditions(jax.random.key(0), cond, _null(cond), mask, cfg)
  t2, e2 = c2["text"], c2["text_embeddings"]
  dropped_text = np.asarray((t2 == 0).all(1))
  assert abs(dropped_text.mean() - 0.3) < 0.03
  np.testing.assert_array_equal(dropped_text, np.asarray((e2 == 0).all((1, 2))))  # tokens and embeddings together
  assert set(np.asarray(t2).ravel()) <= {0, 1}
  dropped_images = np.asarray(~m2.any(1))
  assert abs(dropped_images.mean() - 0.1) < 0.02 and np.asarray(m2.all(1) | ~m2.any(1)).all()
  c3, m3 = flow.drop_conditions(jax.random.key(0), {"text": text}, {"text": 0 * text}, mask,
                                flow.FlowConfig(text_dropout=0.0, image_dropout=0.0))
  assert (c3["text"] == text).all() and m3.all()


def test_loss_per_example_and_weights():
  def constant(x, t, cond, inputs, mask):  # predicts v = 0: the loss is E[(noise - x0)^2]
    return jnp.zeros_like(x)
  x0 = -np.ones((3, 16, 16, 3), np.float32)
  x0[0] = 1.0  # x0 = 1 for example 0, -1 for the others
  args = (x0, np.zeros((3, 1, 16, 16, 3), np.float32), np.ones((3, 1), bool), {"text": np.ones((3, 2), np.int32)})
  null = {"text": np.zeros((3, 2), np.int32)}
  total, aux = flow.loss(constant, *args, jax.random.key(0), dict(time_sampling="uniform"), null_cond=null)
  per = np.asarray(aux["per_example"])
  assert per.shape == (3,) and np.all((per > 1.5) & (per < 2.6))  # E[(n -+ 1)^2] = 2
  np.testing.assert_allclose(total, per.mean(), rtol=1e-6)
  weighted, _ = flow.loss(constant, *args, jax.random.key(0), None, null_cond=null,
                          weights=jnp.array([1.0, 0.0, 0.0]))
  np.testing.assert_allclose(weighted, per[0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Samplers on velocities known in closed form.
# ----------------------------------------------------------------------------------------------------------
class PointMass(nnx.Module):
  """The exact velocity of rectified flow when all data is the point c: v(x, t) = (x - c) / t."""
  def __init__(self, c):
    self.c = nnx.Param(jnp.asarray(c))

  def __call__(self, x, t, cond, inputs, mask):
    return (x - self.c[...]) / jnp.maximum(t, 1e-6)[:, None, None, None]


class Linear(nnx.Module):
  """v(x, t) = x: dx/dt = x, so integrating from t = 1 to 0 gives x(0) = x(1) / e."""
  def __call__(self, x, t, cond, inputs, mask):
    return x


def _sample(model, noise, steps, method, **kw):
  b = noise.shape[0]
  cond = {"text": jnp.ones((b, 2), jnp.int32)}
  return flow.sample(model, noise, cond, jnp.zeros((b, 1) + noise.shape[1:]), jnp.ones((b, 1), bool),
                     steps=steps, method=method, null_cond=_null(cond), **kw)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_straight_paths_are_exact_in_any_number_of_steps(method, steps):
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  x0 = _sample(PointMass(0.3), noise, steps, method)
  np.testing.assert_allclose(x0, 0.3, atol=1e-5)


@pytest.mark.slow
def test_euler_first_order_heun_second_order():
  noise = jnp.ones((1, 2, 2, 3))
  exact = np.exp(-1.0)
  err = {(m, n): abs(float(_sample(Linear(), noise, n, m)[0, 0, 0, 0]) - exact)
         for m in ("euler", "heun") for n in (10, 20)}
  assert 1.7 < err["euler", 10] / err["euler", 20] < 2.3   # O(1/N)
  assert err["heun", 20] < err["euler", 20] / 5             # much better per step
  assert err["heun", 10] / err["heun", 20] > 2.5            # faster than first order


@pytest.mark.slow
def test_sampling_is_jittable_and_one_program():
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  model = PointMass(-0.2)
  jitted = nnx.jit(lambda m, n: _sample(m, n, 16, "heun"))
  np.testing.assert_allclose(jitted(model, noise), -0.2, atol=1e-5)
  text = str(jax.jit(lambda n: _sample(Linear(), n, 50, "euler")).lower(noise).as_text())
  assert "while" in text  # the step loop is a loop inside the program, not 50 unrolled steps


class Conditional(nnx.Module):
  """A toy velocity that depends on the instruction and on the input images."""
  def __call__(self, x, t, cond, inputs, mask):
    has_text = (cond["text"] != 0).any(1).astype(jnp.float32)[:, None, None, None]
    image = jnp.sum(inputs * mask[:, :, None, None, None], axis=1)
    return x * 0.5 + 2.0 * has_text + 3.0 * image + t[:, None, None, None]


def test_guidance_combines_three_predictions():
  model = Conditional()
  b = 2
  x = jax.random.normal(jax.random.key(0), (b, 4, 4, 3))
  t = jnp.array([0.3, 0.8])
  text = {"text": jnp.ones((b, 3), jnp.int32)}
  null = _null(text)
  inputs = jnp.full((b, 1, 4, 4, 3), 0.25)
  mask = jnp.ones((b, 1), bool)
  v_full = model(x, t, text, inputs, mask)
  v_image = model(x, t, null, inputs, mask)
  v_none = model(x, t, null, inputs, jnp.zeros_like(mask))
  for st, si in ((1.0, 1.0), (4.0, 1.0), (1.0, 2.0), (5.0, 1.5)):
    got = flow.guided_velocity(model, x, t, text, inputs, mask, null_cond=null, text_scale=st, image_scale=si)
    want = v_none + si * (v_image - v_none) + st * (v_full - v_image)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Scales given as arrays take the three-pass path; at 1 they still equal the unguided prediction.
  got = flow.guided_velocity(model, x, t, text, inputs, mask, null_cond=null, text_scale=jnp.float32(1),
                             image_scale=jnp.float32(1))
  np.testing.assert_allclose(got, v_full, rtol=1e-6)
  # And through the sampler: guided sampling with scales 1 equals unguided sampling.
  a = _sample(model, x, 4, "euler")
  b_ = _sample(model, x, 4, "euler", text_scale=jnp.float32(1.0), image_scale=jnp.float32(1.0))
  np.testing.assert_allclose(a, b_, rtol=1e-6)


def test_guidance_is_one_batched_forward():
  calls = []

  class Counting(Conditional):
    def __call__(self, x, *args, **kw):
      calls.append(x.shape[0])
      return super().__call__(x, *args, **kw)
  b = 2
  text = {"text": jnp.ones((b, 3), jnp.int32)}
  args = (jnp.zeros((b, 4, 4, 3)), jnp.full((b,), 0.5), text, jnp.zeros((b, 1, 4, 4, 3)), jnp.ones((b, 1), bool))
  for (st, si), rows in (((1.0, 1.0), 2), ((3.0, 1.0), 4), ((3.0, 2.0), 6)):
    calls.clear()
    flow.guided_velocity(Counting(), *args, null_cond=_null(text), text_scale=st, image_scale=si)
    assert calls == [rows]


# ----------------------------------------------------------------------------------------------------------
# config.flow.prediction: 'v' (velocity, the default) or 'x' (the clean image, turned into a velocity).
# ----------------------------------------------------------------------------------------------------------
class CleanImage(nnx.Module):
  """An x-predicting oracle: returns the given clean images whatever x_t and t are (tiled over the rows
  that guidance stacks)."""
  def __init__(self, x0):
    self.x0 = nnx.Param(jnp.asarray(x0))

  def __call__(self, x, t, cond, inputs, mask):
    x0 = self.x0[...]
    return jnp.tile(x0, (x.shape[0] // x0.shape[0],) + (1,) * (x0.ndim - 1))


def test_x_prediction_velocity_is_exact_above_the_clamp():
  x0 = jax.random.normal(jax.random.key(0), (4, 4, 4, 3))
  noise = jax.random.normal(jax.random.key(1), (4, 4, 4, 3))
  t = jnp.array([flow.X_PREDICTION_MIN_T, 0.3, 0.9, 1.0])
  x_t, v = flow.interpolate(x0, noise, t)
  np.testing.assert_allclose(flow.x_to_velocity(x_t, t, x0), v, rtol=1e-5, atol=1e-5)  # = noise - x0
  # Through the wrapper, with the model's signature (what loss, sample and guidance call).
  velocity = flow.as_velocity(CleanImage(x0), "x")
  np.testing.assert_allclose(velocity(x_t, t, None, None, None), v, rtol=1e-5, atol=1e-5)
  # Below the clamp the denominator is X_PREDICTION_MIN_T: finite at t = 0.
  t0 = jnp.array([0.0, 0.01, 0.02, 0.04])
  x_t0, _ = flow.interpolate(x0, noise, t0)
  got = flow.x_to_velocity(x_t0, t0, jnp.zeros_like(x0))
  np.testing.assert_allclose(got, x_t0 / flow.X_PREDICTION_MIN_T, rtol=1e-6)
  assert np.isfinite(np.asarray(got)).all()


def test_v_prediction_is_unchanged():
  model = Conditional()
  assert flow.as_velocity(model, "v") is model and flow.FlowConfig().prediction == "v"
  # The loss of the default config is the velocity MSE of the model's raw output, bit for bit.
  x0 = flow.to_float(np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
  inputs, input_mask = flow.to_float(np.full((3, 1, 4, 4, 3), 60, np.uint8)), np.ones((3, 1), bool)
  cond = {"text": np.ones((3, 2), np.int32)}
  key = jax.random.key(3)
  total, aux = flow.loss(model, x0, inputs, input_mask, cond, key, None, null_cond=_null(cond))
  k_t, k_noise, k_drop = jax.random.split(key, 3)
  cfg = flow.FlowConfig()
  t = flow.sample_time(k_t, 3, cfg)
  x_t, v = flow.interpolate(x0, jax.random.normal(k_noise, x0.shape, jnp.float32), t)
  text, mask = flow.drop_conditions(k_drop, cond, _null(cond), input_mask, cfg)
  want = jnp.mean(jnp.square(model(x_t, t, text, inputs, mask) - v), axis=(1, 2, 3))
  np.testing.assert_array_equal(aux["per_example"], want)
  np.testing.assert_array_equal(total, jnp.sum(want) / 3)
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  np.testing.assert_array_equal(_sample(model, noise, 4, "heun"), _sample(model, noise, 4, "heun", prediction="v"))


def test_x_prediction_loss_is_the_velocity_mse_of_the_x0_error():
  """v-loss of an x-prediction: ||v_hat - v||^2 = ||x0_hat - x0||^2 / max(t, t_min)^2; zero for the truth."""
  x0 = flow.to_float(np.random.default_rng(0).integers(0, 256, (64, 4, 4, 3), dtype=np.uint8))
  cond = {"text": np.ones((64, 2), np.int32)}
  rest = (np.zeros((64, 1, 4, 4, 3), np.float32), np.ones((64, 1), bool), cond, jax.random.key(0))
  cfg = dict(prediction="x", time_sampling="uniform")
  _, aux = flow.loss(CleanImage(x0), x0, *rest, cfg, null_cond=_null(cond))
  np.testing.assert_allclose(aux["per_example"], 0.0, atol=1e-9)
  _, aux = flow.loss(CleanImage(x0 + 0.1), x0, *rest, cfg, null_cond=_null(cond))
  want = 0.01 / np.maximum(np.asarray(aux["t"]), flow.X_PREDICTION_MIN_T) ** 2
  np.testing.assert_allclose(aux["per_example"], want, rtol=1e-4)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_sampler_with_an_x_oracle_reaches_x0(method, steps):
  """Every evaluated t is >= 1/8 > X_PREDICTION_MIN_T, so the oracle's velocities are exact: any sampler
  lands on x_0, also with guidance (all three predictions agree, so guidance changes nothing)."""
  x0 = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
  oracle = CleanImage(x0)
  np.testing.assert_allclose(_sample(oracle, noise, steps, method, prediction="x"), x0, atol=1e-5)
  np.testing.assert_allclose(_sample(oracle, noise, steps, method, prediction="x", text_scale=3.0,
                                     image_scale=1.5), x0, atol=1e-5)
  # Read as a velocity, the same output is wrong: the prediction type matters.
  assert np.abs(np.asarray(_sample(oracle, noise, steps, method)) - np.asarray(x0)).mean() > 0.1


def test_bad_prediction_is_a_one_line_error():
  for make in (lambda: flow.FlowConfig.create(dict(prediction="eps")),
               lambda: flow.as_velocity(Linear(), "eps")):
    with pytest.raises(ValueError, match=r"config\.flow\.prediction='eps'; expected 'v'.* or 'x'") as e:
      make()
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="prediction='noise'"):
    _sample(Linear(), jnp.ones((1, 2, 2, 3)), 2, "euler", prediction="noise")


def _tiny_setup(devices, **flow_cfg):
  """A DiT at 8x8 with 8-byte instructions on `devices`, through the run setup (vbanana.setup)."""
  from vbanana import config_lib, setup as setup_lib
  c = config_lib.base_config()
  c.model.update(dict(size="tiny", patch_size=2))
  c.data.update(dict(resolution=8, text_length=8, max_inputs=1, global_batch=len(devices) * 2))
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.flow.update(flow_cfg)
  c.optim.update(dict(lr=3e-3, warmup_steps=1))
  c.train.steps = 20
  return setup_lib.create(c, devices)


@pytest.mark.slow
def test_sample_fn_on_the_mesh_uses_the_prediction():
  """The setup's sampler with a real (untrained) DiT, whose output is exactly 0 (zero-initialised final
  layer): as a velocity it leaves the noise as it is; as a clean image it is the point x_0 = 0, which the
  sampler reaches."""
  noise = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  batch = dict(text=jnp.ones((2, 8), jnp.int32), inputs=jnp.zeros((2, 1, 8, 8, 3), jnp.uint8),
               input_mask=jnp.ones((2, 1), bool))
  out = {}
  for p in ("v", "x"):
    run = _tiny_setup(jax.devices()[:2], prediction=p)
    out[p] = np.asarray(run.sampler(steps=4)(run.init_state()["params"], run.frozen, noise, batch))
  np.testing.assert_allclose(out["v"], noise, atol=1e-6)
  np.testing.assert_allclose(out["x"], 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="config.flow.prediction='eps'"):
    _tiny_setup(jax.devices()[:2], prediction="eps")


@pytest.mark.slow
def test_tiny_model_learns_with_x_prediction():
  """A few steps of the real train step with prediction='x' lower the loss (same t and noise before and
  after: the loss at a fixed key)."""
  from vbanana import model as model_lib
  from vbanana import step as step_lib
  run = _tiny_setup(jax.devices()[:1], prediction="x", text_dropout=0.0, image_dropout=0.0)
  state = run.init_state()
  rng = np.random.default_rng(0)
  inputs = rng.integers(0, 256, (8, 1, 8, 8, 3), dtype=np.uint8)
  host = dict(text=model_lib.tokenize(["flip it"] * 8, 8), inputs=inputs, input_mask=np.ones((8, 1), bool),
              target=np.ascontiguousarray(inputs[:, 0, ::-1]), task=np.zeros((8,), np.int32))
  cond = {"text": host["text"]}

  fixed_loss = jax.jit(lambda params: flow.loss(step_lib.network(run, params), flow.to_float(host["target"]),
                                                flow.to_float(host["inputs"]), host["input_mask"], cond,
                                                jax.random.key(7), run.flow_cfg, train=False)[0])
  before = float(fixed_loss(state["params"]))
  batch = run.shard_batch(host)
  for _ in range(20):
    state, metrics = run.train_step(state, batch, run.frozen)
  after = float(fixed_loss(state["params"]))
  print(f"x-prediction loss {before:.3f} -> {after:.3f}")
  assert np.isfinite(float(metrics["loss"])) and after < 0.7 * before
