"""Rectified flow: noising, time sampling, the velocity loss, condition dropout, and samplers with guidance.

Conventions (docs/interfaces.md): x_t = (1 - t) x_0 + t * noise, the velocity is v = noise - x_0;
t = 1 is pure noise, sampling integrates dx/dt = v from t = 1 down to t = 0.

What the network outputs is `config.flow.prediction`: 'v' (the velocity itself, the default) or 'x' (the clean
image x_0, as JiT does for large pixel patches: Li & He 2025, "Back to Basics: Let Denoising Generative
Models Denoise"). An x-predicting network is turned into a velocity by `as_velocity`, in one place, so the
loss stays the velocity MSE and the samplers and guidance consume velocities whatever the network predicts.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import jax
import jax.numpy as jnp


PREDICTIONS = ("v", "x")
# x-prediction divides by t: v = (x_t - x_0) / t. Below this t the division uses it instead (JiT's t_eps),
# in training and in sampling alike, so the loss and the last sampler steps stay finite near t = 0.
X_PREDICTION_MIN_T = 0.05


def check_prediction(prediction, where: str = "config.flow.prediction") -> str:
  if prediction not in PREDICTIONS:
    raise ValueError(f"{where}={prediction!r}; expected 'v' (the network predicts the velocity noise - x_0) "
                     "or 'x' (it predicts the clean image x_0)")
  return prediction


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  time_sampling: str = "logit_normal"  # 'logit_normal' (SD3: more weight on mid t) or 'uniform'
  logit_mean: float = 0.0
  logit_std: float = 1.0
  # Share of examples trained at exactly t = 1, pure noise: the target from the conditions alone. Every
  # sampler's first step asks for this, and a 1-4 step perception sample is mostly that step, but
  # logit-normal times almost never come near 1 (P(t > 0.95) = 0.2%), so without it the model answers
  # from the signal in x_t and, at t = 1, falls back on copying the input image.
  pure_noise_share: float = 0.1
  text_dropout: float = 0.1            # P(instruction -> all padding / zero embeddings) in training
  image_dropout: float = 0.1           # P(all input images -> absent) in training
  # What the network outputs: 'v' (the velocity) or 'x' (the clean image; for large pixel patches, JiT).
  prediction: str = "v"

  def __post_init__(self):
    check_prediction(self.prediction)
    if self.time_sampling not in ("logit_normal", "uniform"):
      raise ValueError(f"config.flow.time_sampling={self.time_sampling!r}; expected 'logit_normal' or 'uniform'")
    for name in ("text_dropout", "image_dropout", "pure_noise_share"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"config.flow.{name}={getattr(self, name)} must be in [0, 1]")
    if self.logit_std <= 0:
      raise ValueError(f"config.flow.logit_std={self.logit_std} must be > 0")

  @classmethod
  def create(cls, cfg: Any = None) -> "FlowConfig":
    """From None, a dict, a ConfigDict or a FlowConfig; unknown keys are an error naming them."""
    if isinstance(cfg, cls):
      return cfg
    d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {}))
    known = {f.name for f in dataclasses.fields(cls)}
    if set(d) - known:
      raise ValueError(f"config.flow: unknown keys {sorted(set(d) - known)}; known: {sorted(known)}")
    return cls(**d)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] -> float32 [-1, 1]; float images pass through."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


def to_uint8(images: jax.Array) -> jax.Array:
  return jnp.round(jnp.clip((images + 1.0) * 127.5, 0, 255)).astype(jnp.uint8)


def sample_time(rng: jax.Array, batch: int, cfg: FlowConfig) -> jax.Array:
  """Training times (B,): logit-normal or uniform, and t = 1 for a `pure_noise_share` of the examples."""
  k_time, k_end = jax.random.split(rng)
  if cfg.time_sampling == "uniform":
    t = jax.random.uniform(k_time, (batch,))
  else:
    t = jax.nn.sigmoid(cfg.logit_mean + cfg.logit_std * jax.random.normal(k_time, (batch,)))
  return jnp.where(jax.random.bernoulli(k_end, cfg.pure_noise_share, (batch,)), 1.0, t)


def interpolate(x0: jax.Array, noise: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(x_t, target velocity) for images (B, ...) and times (B,)."""
  tb = t.reshape((-1,) + (1,) * (x0.ndim - 1))
  return (1 - tb) * x0 + tb * noise, noise - x0


def x_to_velocity(x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
  """The velocity (x_t - x_0) / max(t, X_PREDICTION_MIN_T) of an image x_0 (B, ...) at x_t, times t (B,).

  For t >= X_PREDICTION_MIN_T this is exactly noise - x_0 on the path through x_0 (the velocity definition);
  below it the clamped denominator keeps it finite."""
  tb = jnp.maximum(t, X_PREDICTION_MIN_T).reshape((-1,) + (1,) * (x_t.ndim - 1))
  return (x_t.astype(jnp.float32) - x0.astype(jnp.float32)) / tb


def as_velocity(model, prediction: str = "v"):
  """A callable with the model's signature that returns the velocity: the model itself for 'v', and for
  'x' the model's clean-image output turned into a velocity by `x_to_velocity`."""
  check_prediction(prediction)
  if prediction == "v":
    return model

  def velocity(x_t, t, *args, **kwargs):
    return x_to_velocity(x_t, t, model(x_t, t, *args, **kwargs))
  return velocity


def _rows(mask: jax.Array, like: jax.Array) -> jax.Array:
  """A (B,) mask shaped to broadcast over the rows of `like` (B, ...)."""
  return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def drop_conditions(rng: jax.Array, cond: Any, null_cond: Any, input_mask: jax.Array, cfg: FlowConfig):
  """Classifier-free-guidance dropout, per example: the instruction (its rows of `cond` replaced by those
  of `null_cond`, the family's 'no instruction') with probability text_dropout, the input images
  (mask -> False) with probability image_dropout. Returns (cond, input_mask)."""
  k_text, k_image = jax.random.split(rng)
  b = input_mask.shape[0]
  drop_text = jax.random.bernoulli(k_text, cfg.text_dropout, (b,))
  drop_image = jax.random.bernoulli(k_image, cfg.image_dropout, (b,))
  cond = jax.tree.map(lambda c, n: jnp.where(_rows(drop_text, c), n, c), cond, null_cond)
  input_mask = input_mask & ~drop_image[:, None]
  return cond, input_mask


def loss(net, x0: jax.Array, inputs: jax.Array, input_mask: jax.Array, cond: Any, rng: jax.Array,
         cfg: FlowConfig | Any = None, *, null_cond: Any = None, weights: jax.Array | None = None,
         train: bool = True):
  """Velocity MSE. Returns (weighted mean loss, aux) with aux['per_example'] (B,) and aux['t'] (B,).

  `net(x_t, t, cond, inputs, input_mask)` is the network (a model family's `apply` on its module); x0, the
  clean targets, and inputs (B, K, ...) are in the space the family denoises (`encode_images`); `cond` is
  the instruction as the family reads it, `null_cond` the same without it (needed with `train`, when
  conditions are dropped for classifier-free guidance); `weights` (B,) optional. With cfg.prediction = 'x'
  the network's x_0 becomes a velocity (`as_velocity`) and the target is the velocity of the same clamped
  formula, (x_t - x_0) / max(t, X_PREDICTION_MIN_T) (= noise - x_0 above the clamp): JiT's "x-prediction,
  v-loss", which is the x_0 error weighted by 1 / max(t, X_PREDICTION_MIN_T)^2.
  """
  cfg = FlowConfig.create(cfg)
  b = x0.shape[0]
  k_t, k_noise, k_drop = jax.random.split(rng, 3)
  t = sample_time(k_t, b, cfg)
  noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
  x_t, v_target = interpolate(x0, noise, t)
  if cfg.prediction == "x":
    v_target = x_to_velocity(x_t, t, x0)
  if train:
    if null_cond is None:
      raise ValueError("flow.loss: train=True drops instructions: pass null_cond (the family's null_condition)")
    cond, input_mask = drop_conditions(k_drop, cond, null_cond, input_mask, cfg)
  v = as_velocity(net, cfg.prediction)(x_t, t, cond, inputs, input_mask)
  per_example = jnp.mean(jnp.square(v - v_target), axis=tuple(range(1, x0.ndim)))
  w = jnp.ones((b,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  total = jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1e-8)
  return total, {"per_example": per_example, "t": t}


# ----------------------------------------------------------------------------------------------------------
# Guidance and sampling.
# ----------------------------------------------------------------------------------------------------------
def _is_one(scale) -> bool:
  return isinstance(scale, numbers.Number) and float(scale) == 1.0


def guided_velocity(net, x, t, cond, inputs, input_mask, *, null_cond=None, text_scale=1.0, image_scale=1.0):
  """InstructPix2Pix-style guidance over three predictions, evaluated in ONE batched forward:
      v = v(none) + s_img * (v(image) - v(none)) + s_txt * (v(image, text) - v(image))
  The passes that cancel are skipped: both scales exactly 1 -> v(image, text) (one pass); image scale
  exactly 1 -> v(image) + s_txt * (v(image, text) - v(image)) (two passes). `null_cond` is the family's
  'no instruction' (needed unless both scales are 1)."""
  b = x.shape[0]
  t = jnp.broadcast_to(t, (b,))
  if _is_one(text_scale) and _is_one(image_scale):
    return net(x, t, cond, inputs, input_mask)
  if null_cond is None:
    raise ValueError("guided_velocity: guidance needs null_cond (the family's null_condition)")
  no_image = jnp.zeros_like(input_mask)
  # Rows: [image + text, image only, (nothing)].
  variants = [(cond, input_mask), (null_cond, input_mask)]
  if not _is_one(image_scale):
    variants.append((null_cond, no_image))
  n = len(variants)
  cat = lambda *arrays: jnp.concatenate(arrays, axis=0)
  v = net(cat(*[x] * n), cat(*[t] * n), jax.tree.map(cat, *[a[0] for a in variants]), cat(*[inputs] * n),
          cat(*[a[1] for a in variants]))
  v_full, v_image = v[:b], v[b:2 * b]
  out = v_image + text_scale * (v_full - v_image)
  if n == 3:
    v_none = v[2 * b:]
    out = out + (image_scale - 1.0) * (v_image - v_none)  # = v_none + s_img (v_image - v_none) + s_txt (...)
  return out


def sample(net, noise, cond, inputs, input_mask, *, steps: int, method: str = "euler", text_scale=1.0,
           image_scale=1.0, null_cond=None, prediction: str = "v", times: jax.Array | None = None):
  """Integrates from t = 1 (noise) to t = 0 over `times` (default: a uniform grid of `steps` steps; a
  family's `sample_times` may shift it); returns x_0 (float, unclipped).

  Euler: one network evaluation per step. Heun: two per step, except the last (to t = 0), which is an
  Euler step (2 * steps - 1 evaluations). The loop is a `lax.fori_loop`, so under jit it is one program.
  `net(x_t, t, cond, inputs, input_mask)` is the network; `prediction` what it outputs
  (config.flow.prediction); guidance combines velocities either way.
  """
  check_prediction(prediction, "sample: prediction")
  if method not in ("euler", "heun"):
    raise ValueError(f"sample: method={method!r}; expected 'euler' or 'heun'")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"sample: steps={steps!r}; expected an int >= 1")

  def velocity(x, t):
    return guided_velocity(as_velocity(net, prediction), x, t, cond, inputs, input_mask, null_cond=null_cond,
                           text_scale=text_scale, image_scale=image_scale).astype(x.dtype)

  times = jnp.linspace(1.0, 0.0, steps + 1) if times is None else times
  if times.shape != (steps + 1,):
    raise ValueError(f"sample: times has shape {times.shape}, expected ({steps + 1},) for {steps} steps")

  def euler_step(i, x):
    return x + (times[i + 1] - times[i]) * velocity(x, times[i])

  def heun_step(i, x):
    t0, t1 = times[i], times[i + 1]
    v0 = velocity(x, t0)
    x1 = x + (t1 - t0) * v0
    return x + (t1 - t0) * 0.5 * (v0 + velocity(x1, t1))

  x = noise.astype(jnp.float32)
  if method == "euler":
    return jax.lax.fori_loop(0, steps, euler_step, x)
  x = jax.lax.fori_loop(0, steps - 1, heun_step, x)
  return euler_step(steps - 1, x)
