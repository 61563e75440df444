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
from flax import nnx


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


def drop_conditions(rng: jax.Array, text: jax.Array, input_mask: jax.Array, text_embeddings, cfg: FlowConfig):
  """Classifier-free-guidance dropout, per example: the instruction (tokens -> padding, embeddings -> 0)
  with probability text_dropout, the input images (mask -> False) with probability image_dropout."""
  k_text, k_image = jax.random.split(rng)
  b = text.shape[0]
  drop_text = jax.random.bernoulli(k_text, cfg.text_dropout, (b,))
  drop_image = jax.random.bernoulli(k_image, cfg.image_dropout, (b,))
  text = jnp.where(drop_text[:, None], 0, text)
  if text_embeddings is not None:
    text_embeddings = jnp.where(drop_text[:, None, None], 0, text_embeddings)
  input_mask = input_mask & ~drop_image[:, None]
  return text, input_mask, text_embeddings


def loss(model, batch: Mapping[str, jax.Array], rng: jax.Array, cfg: FlowConfig | Any = None,
         weights: jax.Array | None = None, train: bool = True):
  """Velocity MSE. Returns (weighted mean loss, aux) with aux['per_example'] (B,) and aux['t'] (B,).

  `batch` as in docs/interfaces.md (images uint8 or float in [-1, 1]); `weights` (B,) optional. With
  `train`, conditions are dropped for classifier-free guidance. With cfg.prediction = 'x' the network's x_0
  becomes a velocity (`as_velocity`) and the target is the velocity of the same clamped formula,
  (x_t - x_0) / max(t, X_PREDICTION_MIN_T) (= noise - x_0 above the clamp): JiT's "x-prediction, v-loss",
  which is the x_0 error weighted by 1 / max(t, X_PREDICTION_MIN_T)^2.
  """
  cfg = FlowConfig.create(cfg)
  x0 = to_float(batch["target"])
  inputs = to_float(batch["inputs"])
  b = x0.shape[0]
  k_t, k_noise, k_drop = jax.random.split(rng, 3)
  t = sample_time(k_t, b, cfg)
  noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
  x_t, v_target = interpolate(x0, noise, t)
  if cfg.prediction == "x":
    v_target = x_to_velocity(x_t, t, x0)
  text, input_mask, text_emb = batch["text"], batch["input_mask"], batch.get("text_embeddings")
  if train:
    text, input_mask, text_emb = drop_conditions(k_drop, text, input_mask, text_emb, cfg)
  v = as_velocity(model, cfg.prediction)(x_t, t, text, inputs, input_mask, text_embeddings=text_emb)
  per_example = jnp.mean(jnp.square(v - v_target), axis=tuple(range(1, x0.ndim)))
  w = jnp.ones((b,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  total = jnp.sum(w * per_example) / jnp.maximum(jnp.sum(w), 1e-8)
  return total, {"per_example": per_example, "t": t}


# ----------------------------------------------------------------------------------------------------------
# Guidance and sampling.
# ----------------------------------------------------------------------------------------------------------
def _is_one(scale) -> bool:
  return isinstance(scale, numbers.Number) and float(scale) == 1.0


def guided_velocity(model, x, t, text, inputs, input_mask, text_embeddings=None, *, text_scale=1.0,
                    image_scale=1.0):
  """InstructPix2Pix-style guidance over three predictions, evaluated in ONE batched forward:
      v = v(none) + s_img * (v(image) - v(none)) + s_txt * (v(image, text) - v(image))
  The passes that cancel are skipped: both scales exactly 1 -> v(image, text) (one pass); image scale
  exactly 1 -> v(image) + s_txt * (v(image, text) - v(image)) (two passes)."""
  b = x.shape[0]
  t = jnp.broadcast_to(t, (b,))
  no_text = jnp.zeros_like(text)
  no_emb = None if text_embeddings is None else jnp.zeros_like(text_embeddings)
  no_image = jnp.zeros_like(input_mask)
  if _is_one(text_scale) and _is_one(image_scale):
    return model(x, t, text, inputs, input_mask, text_embeddings=text_embeddings)
  # Rows: [image + text, image only, (nothing)].
  variants = [(text, input_mask, text_embeddings), (no_text, input_mask, no_emb)]
  if not _is_one(image_scale):
    variants.append((no_text, no_image, no_emb))
  n = len(variants)
  cat = lambda arrays: jnp.concatenate(arrays, axis=0)
  v = model(cat([x] * n), cat([t] * n), cat([a[0] for a in variants]), cat([inputs] * n),
            cat([a[1] for a in variants]),
            text_embeddings=None if text_embeddings is None else cat([a[2] for a in variants]))
  v_full, v_image = v[:b], v[b:2 * b]
  out = v_image + text_scale * (v_full - v_image)
  if n == 3:
    v_none = v[2 * b:]
    out = out + (image_scale - 1.0) * (v_image - v_none)  # = v_none + s_img (v_image - v_none) + s_txt (...)
  return out


def sample(model, noise, text, inputs, input_mask, *, steps: int, method: str = "euler", text_scale=1.0,
           image_scale=1.0, text_embeddings=None, prediction: str = "v"):
  """Integrates from t = 1 (noise) to t = 0 on a uniform grid of `steps` steps; returns x_0 (float, unclipped).

  Euler: one network evaluation per step. Heun: two per step, except the last (to t = 0), which is an
  Euler step (2 * steps - 1 evaluations). The loop is a `lax.fori_loop`, so under jit it is one program.
  `prediction` is what the model outputs (config.flow.prediction); guidance combines velocities either way.
  """
  check_prediction(prediction, "sample: prediction")
  if method not in ("euler", "heun"):
    raise ValueError(f"sample: method={method!r}; expected 'euler' or 'heun'")
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"sample: steps={steps!r}; expected an int >= 1")
  # An nnx model enters the loop as (graphdef, state), the functional form lax control flow wants.
  if isinstance(model, nnx.Module):
    graphdef, state = nnx.split(model)
    get_net = lambda: nnx.merge(graphdef, state)
  else:
    get_net = lambda: model  # any callable with the model's signature (e.g. an analytic velocity)

  def velocity(x, t):
    net = as_velocity(get_net(), prediction)
    return guided_velocity(net, x, t, text, inputs, input_mask, text_embeddings, text_scale=text_scale,
                           image_scale=image_scale).astype(x.dtype)

  times = jnp.linspace(1.0, 0.0, steps + 1)

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
