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


def test_condition_dropout():
  b = 4000
  text = jnp.ones((b, 5), jnp.int32)
  mask = jnp.ones((b, 2), bool)
  emb = jnp.ones((b, 5, 3))
  cfg = flow.FlowConfig(text_dropout=0.3, image_dropout=0.1)
  t2, m2, e2 = flow.drop_conditions(jax.random.key(0), text, mask, emb, cfg)
  dropped_text = np.asarray((t2 == 0).all(1))
  assert abs(dropped_text.mean() - 0.3) < 0.03
  np.testing.assert_array_equal(dropped_text, np.asarray((e2 == 0).all((1, 2))))  # tokens and embeddings together
  assert set(np.asarray(t2).ravel()) <= {0, 1}
  dropped_images = np.asarray(~m2.any(1))
  assert abs(dropped_images.mean() - 0.1) < 0.02 and np.asarray(m2.all(1) | ~m2.any(1)).all()
  t3, m3, _ = flow.drop_conditions(jax.random.key(0), text, mask, None, flow.FlowConfig(text_dropout=0.0, image_dropout=0.0))
  assert (t3 == text).all() and m3.all()


def test_loss_per_example_and_weights():
  class Constant(nnx.Module):  # predicts v = 0: the loss is E[(noise - x0)^2]
    def __call__(self, x, t, text, inputs, mask, text_embeddings=None):
      return jnp.zeros_like(x)
  batch = dict(target=np.zeros((3, 16, 16, 3), np.uint8), inputs=np.zeros((3, 1, 16, 16, 3), np.uint8),
               input_mask=np.ones((3, 1), bool), text=np.ones((3, 2), np.int32))
  batch["target"][0] = 255  # x0 = 1 for example 0, -1 for the others (uint8 -> [-1, 1] inside)
  total, aux = flow.loss(Constant(), batch, jax.random.key(0), dict(time_sampling="uniform"))
  per = np.asarray(aux["per_example"])
  assert per.shape == (3,) and np.all((per > 1.5) & (per < 2.6))  # E[(n -+ 1)^2] = 2
  np.testing.assert_allclose(total, per.mean(), rtol=1e-6)
  weighted, _ = flow.loss(Constant(), batch, jax.random.key(0), None, weights=jnp.array([1.0, 0.0, 0.0]))
  np.testing.assert_allclose(weighted, per[0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Samplers on velocities known in closed form.
# ----------------------------------------------------------------------------------------------------------
class PointMass(nnx.Module):
  """The exact velocity of rectified flow when all data is the point c: v(x, t) = (x - c) / t."""
  def __init__(self, c):
    self.c = nnx.Param(jnp.asarray(c))

  def __call__(self, x, t, text, inputs, mask, text_embeddings=None):
    return (x - self.c[...]) / jnp.maximum(t, 1e-6)[:, None, None, None]


class Linear(nnx.Module):
  """v(x, t) = x: dx/dt = x, so integrating from t = 1 to 0 gives x(0) = x(1) / e."""
  def __call__(self, x, t, text, inputs, mask, text_embeddings=None):
    return x


def _sample(model, noise, steps, method, **kw):
  b = noise.shape[0]
  return flow.sample(model, noise, jnp.ones((b, 2), jnp.int32), jnp.zeros((b, 1) + noise.shape[1:]),
                     jnp.ones((b, 1), bool), steps=steps, method=method, **kw)


@pytest.mark.parametrize("method", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_straight_paths_are_exact_in_any_number_of_steps(method, steps):
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  x0 = _sample(PointMass(0.3), noise, steps, method)
  np.testing.assert_allclose(x0, 0.3, atol=1e-5)


def test_euler_first_order_heun_second_order():
  noise = jnp.ones((1, 2, 2, 3))
  exact = np.exp(-1.0)
  err = {(m, n): abs(float(_sample(Linear(), noise, n, m)[0, 0, 0, 0]) - exact)
         for m in ("euler", "heun") for n in (10, 20)}
  assert 1.7 < err["euler", 10] / err["euler", 20] < 2.3   # O(1/N)
  assert err["heun", 20] < err["euler", 20] / 5             # much better per step
  assert err["heun", 10] / err["heun", 20] > 2.5            # faster than first order


def test_sampling_is_jittable_and_one_program():
  noise = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  model = PointMass(-0.2)
  jitted = nnx.jit(lambda m, n: _sample(m, n, 16, "heun"))
  np.testing.assert_allclose(jitted(model, noise), -0.2, atol=1e-5)
  text = str(jax.jit(lambda n: _sample(Linear(), n, 50, "euler")).lower(noise).as_text())
  assert "while" in text  # the step loop is a loop inside the program, not 50 unrolled steps


class Conditional(nnx.Module):
  """A toy velocity that depends on the instruction and on the input images."""
  def __call__(self, x, t, text, inputs, mask, text_embeddings=None):
    has_text = (text != 0).any(1).astype(jnp.float32)[:, None, None, None]
    image = jnp.sum(inputs * mask[:, :, None, None, None], axis=1)
    return x * 0.5 + 2.0 * has_text + 3.0 * image + t[:, None, None, None]


def test_guidance_combines_three_predictions():
  model = Conditional()
  b = 2
  x = jax.random.normal(jax.random.key(0), (b, 4, 4, 3))
  t = jnp.array([0.3, 0.8])
  text = jnp.ones((b, 3), jnp.int32)
  inputs = jnp.full((b, 1, 4, 4, 3), 0.25)
  mask = jnp.ones((b, 1), bool)
  v_full = model(x, t, text, inputs, mask)
  v_image = model(x, t, jnp.zeros_like(text), inputs, mask)
  v_none = model(x, t, jnp.zeros_like(text), inputs, jnp.zeros_like(mask))
  for st, si in ((1.0, 1.0), (4.0, 1.0), (1.0, 2.0), (5.0, 1.5)):
    got = flow.guided_velocity(model, x, t, text, inputs, mask, text_scale=st, image_scale=si)
    want = v_none + si * (v_image - v_none) + st * (v_full - v_image)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Scales given as arrays take the three-pass path; at 1 they still equal the unguided prediction.
  got = flow.guided_velocity(model, x, t, text, inputs, mask, text_scale=jnp.float32(1), image_scale=jnp.float32(1))
  np.testing.assert_allclose(got, v_full, rtol=1e-6)
  # And through the sampler: guided sampling with scales 1 equals unguided sampling.
  a = _sample(model, x, 4, "euler")
  b_ = flow.sample(model, x, jnp.ones((b, 2), jnp.int32), jnp.zeros((b, 1, 4, 4, 3)), jnp.ones((b, 1), bool),
                   steps=4, method="euler", text_scale=jnp.float32(1.0), image_scale=jnp.float32(1.0))
  np.testing.assert_allclose(a, b_, rtol=1e-6)


def test_guidance_is_one_batched_forward():
  calls = []

  class Counting(Conditional):
    def __call__(self, x, *args, **kw):
      calls.append(x.shape[0])
      return super().__call__(x, *args, **kw)
  b = 2
  args = (jnp.zeros((b, 4, 4, 3)), jnp.full((b,), 0.5), jnp.ones((b, 3), jnp.int32), jnp.zeros((b, 1, 4, 4, 3)),
          jnp.ones((b, 1), bool))
  for (st, si), rows in (((1.0, 1.0), 2), ((3.0, 1.0), 4), ((3.0, 2.0), 6)):
    calls.clear()
    flow.guided_velocity(Counting(), *args, text_scale=st, image_scale=si)
    assert calls == [rows]
