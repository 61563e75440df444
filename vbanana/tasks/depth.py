"""Metric depth as an RGB image.

Encoding: depth d (metres) is squashed to [0, 1) by the power transform
    f(d) = 1 - (1 - d / (lam * c)) ** (lam + 1),   lam = -3, c = 10/3   (so f = 1 - (1 + d/10) ** -2),
and f is read as the position along the seven-edge walk over the RGB cube's corners
    C_0..C_7 = black -> red -> yellow -> green -> cyan -> blue -> magenta -> white.
With s = 7 f and k = min(floor(s), 6), the colour is rgb = round(255 * (C_k + (s - k) * (C_k+1 - C_k))): each
edge changes one channel, so neighbouring depths get neighbouring colours and the walk never crosses itself.
Near depths get most of the code: f(1 m) = 0.17, f(10 m) = 0.75, f(50 m) = 0.97.
Decoding projects every RGB value (scaled to [0, 1]^3) onto the nearest point of the walk in Euclidean RGB
distance (per edge the clipped projection t in [0, 1], then the edge k of smallest distance: f = (k + t) / 7),
so every colour, on the walk or not, gives a depth; f is clipped below 1 - 1 / (4 * 7 * 255), so white decodes
to 835 m rather than infinity, and the inverse transform gives metres. `decode_jax` is the same on device.
Quantisation: one 8-bit step moves f by 1 / (7 * 255); to first order the relative depth error of rounding is
at most 0.5 / (7 * 255) / (d * f'(d)): 0.19% at 1 m, 0.11% at 10 m, 0.6% at 50 m (`quantisation_bound`;
tests check it, docs/tasks.md has the measured errors).
Invalid pixels (NaN, <= 0, or outside `valid`) are never a special colour: the encoder fills them from the
nearest valid pixel and metrics skip them through the valid mask.
Metrics (one image): AbsRel, SqRel, RMSE, RMSE-log, delta1/2/3 without alignment, and the same after a
least-squares scale and shift on valid pixels (`affine_*`, in depth or inverse depth); optional min / max depth
and the KITTI Eigen crop. Dataset numbers (`Accumulator`) are the mean of per-image metrics.
"""

from __future__ import annotations

import numpy as np

from vbanana.tasks import common

NAME = "depth"
LAM, C = -3.0, 10.0 / 3.0
TEMPLATES = (
    "estimate the depth of this image",
    "predict a metric depth map",
    "show how far away everything is",
    "turn this photo into a depth map",
    "depth map please",
)
CANONICAL = "estimate the depth of this image"
HEADLINE = ("abs_rel",)  # the metric the console shows for an evaluation
CORNERS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [1, 1, 1]],
                   np.float64)
EIGEN_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)  # top, bottom, left, right (KITTI)


def squash(d, lam=LAM, c=C):
  return 1.0 - (1.0 - d / (lam * c)) ** (lam + 1.0)


def unsquash(f, lam=LAM, c=C):
  return lam * c * (1.0 - (1.0 - f) ** (1.0 / (lam + 1.0)))


def quantisation_bound(d, lam=LAM, c=C):
  """The largest relative error 8-bit rounding on the walk can cause at depth d."""
  slope = (lam + 1.0) / (lam * c) * (1.0 - d / (lam * c)) ** lam
  return 0.5 / (7 * 255) / (d * slope)


def encode(depth, valid=None, lam=LAM, c=C) -> np.ndarray:
  """Depth in metres (H, W) -> uint8 (H, W, 3)."""
  depth = common.check_map(depth, "depth", 2).astype(np.float64)
  ok = np.isfinite(depth) & (depth > 0)
  if valid is not None:
    ok &= np.asarray(valid, bool)
  depth = common.nearest_fill(np.where(ok, depth, 0.0), ok) if ok.any() else np.zeros_like(depth)
  f = np.clip(squash(depth, lam, c), 0.0, 1.0 - 1e-9)
  s = f * 7
  k = np.minimum(np.floor(s).astype(int), 6)
  rgb = CORNERS[k] + (s - k)[..., None] * (CORNERS[k + 1] - CORNERS[k])
  return np.round(rgb * 255).astype(np.uint8)


def walk_position(rgb01: np.ndarray) -> np.ndarray:
  """f in [0, 1] of the nearest point on the walk, for colours in [0, 1]^3 (any leading shape)."""
  p = rgb01[..., None, :]                                      # (..., 1, 3)
  a, d = CORNERS[:-1], CORNERS[1:] - CORNERS[:-1]              # (7, 3) each; |d| = 1
  t = np.clip(((p - a) * d).sum(-1), 0.0, 1.0)                 # (..., 7)
  dist = ((p - (a + t[..., None] * d)) ** 2).sum(-1)
  k = dist.argmin(-1)
  return (k + np.take_along_axis(t, k[..., None], -1)[..., 0]) / 7.0


def decode(rgb, lam=LAM, c=C) -> np.ndarray:
  """uint8 (H, W, 3) -> depth in metres (H, W), float32, always finite."""
  rgb = common.check_rgb(rgb, "depth.decode rgb")
  f = np.clip(walk_position(rgb.astype(np.float64) / 255.0), 0.0, 1.0 - 1.0 / (7 * 255 * 4))
  return unsquash(f, lam, c).astype(np.float32)


def decode_jax(rgb, lam=LAM, c=C):
  """jit-able decode for the eval loop on device: uint8 or [0, 1] floats (..., 3) -> metres."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = rgb.astype(jnp.float32) / 255.0 if rgb.dtype == jnp.uint8 else rgb
  corners = jnp.asarray(CORNERS, jnp.float32)
  p, a, d = x[..., None, :], corners[:-1], corners[1:] - corners[:-1]
  t = jnp.clip(((p - a) * d).sum(-1), 0.0, 1.0)
  dist = ((p - (a + t[..., None] * d)) ** 2).sum(-1)
  k = dist.argmin(-1)
  f = (k + jnp.take_along_axis(t, k[..., None], -1)[..., 0]) / 7.0
  f = jnp.clip(f, 0.0, 1.0 - 1.0 / (7 * 255 * 4))
  return lam * c * (1.0 - (1.0 - f) ** (1.0 / (lam + 1.0)))


def _valid(gt, valid, min_depth, max_depth, crop):
  ok = np.isfinite(gt) & (gt > max(min_depth, 0.0))
  if max_depth is not None:
    ok &= gt <= max_depth
  if valid is not None:
    ok &= np.asarray(valid, bool)
  if crop is not None:
    h, w = gt.shape
    box = np.zeros_like(ok)
    box[int(crop[0] * h):int(crop[1] * h), int(crop[2] * w):int(crop[3] * w)] = True
    ok &= box
  return ok


def align(pred, gt, ok, space="depth"):
  """Least-squares scale and shift of pred onto gt on valid pixels, in depth or inverse depth."""
  p, g = pred[ok].astype(np.float64), gt[ok].astype(np.float64)
  if space == "inverse":
    p, g = 1.0 / np.maximum(p, 1e-6), 1.0 / g
  a = np.stack([p, np.ones_like(p)], 1)
  (s, t), *_ = np.linalg.lstsq(a, g, rcond=None)
  out = s * pred.astype(np.float64) + t
  if space == "inverse":
    out = 1.0 / np.maximum(out, 1e-6)
  return out


def _scores(p, g) -> dict[str, float]:
  p = np.maximum(p, 1e-6)
  ratio = np.maximum(p / g, g / p)
  return {
      "abs_rel": float(np.mean(np.abs(p - g) / g)),
      "sq_rel": float(np.mean((p - g) ** 2 / g)),
      "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
      "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
      "delta1": float(np.mean(ratio < 1.25)),
      "delta2": float(np.mean(ratio < 1.25 ** 2)),
      "delta3": float(np.mean(ratio < 1.25 ** 3)),
  }


def metrics(prediction, ground_truth, valid=None, *, min_depth=1e-3, max_depth=None, crop=None,
            align_space="depth") -> dict[str, float]:
  """Metric scores (no alignment) and affine-invariant ones (`affine_*`) over valid pixels of one image.

  NaN / non-positive ground truth is invalid, not an error. Returns {} when no pixel is valid.
  """
  gt, gt_valid = common.as_dict(ground_truth, "depth")
  valid = gt_valid if valid is None else valid
  gt = common.check_map(gt, "depth ground truth", 2).astype(np.float64)
  pred = common.check_map(prediction, "depth prediction", 2).astype(np.float64)
  if pred.shape != gt.shape:
    raise ValueError(f"depth prediction shape {pred.shape} != ground truth shape {gt.shape}")
  ok = _valid(gt, valid, min_depth, max_depth, crop) & np.isfinite(pred)
  if not ok.any():
    return {}
  out = _scores(pred[ok], gt[ok])
  out.update({f"affine_{k}": v for k, v in _scores(align(pred, gt, ok, align_space)[ok], gt[ok]).items()})
  return out


class Accumulator:
  """Dataset numbers as the depth benchmarks (NYUv2, KITTI) define them: the mean of per-image metrics."""

  def __init__(self, **metric_kwargs):
    self.kwargs, self.sums, self.count = metric_kwargs, {}, 0

  def update(self, prediction, ground_truth, valid=None):
    scores = metrics(prediction, ground_truth, valid, **self.kwargs)
    if scores:
      self.count += 1
      for k, v in scores.items():
        self.sums[k] = self.sums.get(k, 0.0) + v

  def result(self) -> dict[str, float]:
    return {k: v / self.count for k, v in self.sums.items()}


def make_example(sample, rng, train) -> common.TaskExample | None:
  if sample.get("depth") is None:
    return None
  depth = np.asarray(sample["depth"], np.float32)
  valid = np.isfinite(depth) & (depth > 0)
  if not valid.any():
    return None
  return common.TaskExample(
      task=NAME, instruction=common.pick(TEMPLATES, CANONICAL, rng, train), inputs=[sample["image"]],
      target=encode(depth, valid), ground_truth={"depth": depth, "valid": valid}, decode_args={})


def request(prompt: str | None = None) -> common.Request:
  """What to ask for a photo without labels: the canonical instruction; decode needs nothing more. `decode`
  returns float32 metres (H, W)."""
  del prompt
  return common.Request(CANONICAL, {})


def visualize(prediction, ground_truth=None, max_depth=None) -> np.ndarray:
  """[prediction | ground truth] in one colour scale, with a colour bar."""
  panels = [("prediction (m)", prediction)] + ([("ground truth (m)", common.as_dict(ground_truth, "depth")[0])]
                                               if ground_truth is not None else [])
  vmax = max_depth or float(np.nanmax([np.nanmax(np.where(np.isfinite(p), p, np.nan)) for _, p in panels]))
  fig = common.figure(figsize=(3.2 * len(panels) + 0.8, 3))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (title, img) in zip(axes[0], panels):
    im = ax.imshow(img, cmap="magma_r", vmin=0, vmax=vmax)
    ax.set_title(title)
    ax.axis("off")
  fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
  return common.figure_to_array(fig)
