"""Surface normals as an RGB image.

Encoding: a unit normal n = (x, y, z) in camera coordinates (+x right, +y up, +z towards the viewer) maps to
    R = (1 - x) / 2,   G = (1 + y) / 2,   B = (1 + z) / 2      (times 255, rounded)
(x is flipped: the convention the paper states, so a normal facing left is pinkish red (255, 128, 128), one
facing the camera light blue (128, 128, 255), one facing up mint green (128, 255, 128)). Inputs are
renormalised before encoding. Decoding inverts this, n' = (1 - 2R, 2G - 1, 2B - 1) with R, G, B in [0, 1], and
renormalises, n = n' / |n'|, so any colour gives a unit normal (an off-sphere colour gives the direction it
points in); a zero-length n' (|n'| <= 1e-6) decodes to (0, 0, 1), never NaN. 8-bit rounding moves a normal
by at most about 0.4 degrees. Datasets in other conventions convert with `to_camera` (CONVENTIONS lists the
axis flips in one place). Invalid pixels (non-finite or near-zero normals, or outside `valid`) are filled from
the nearest valid one in the encoding and skipped by the metrics.
Metrics: mean and median angular error (degrees) and the % of valid pixels under 11.25, 22.5 and 30 degrees;
dataset numbers (`Accumulator`) pool the errors of all valid pixels of the split.
"""

from __future__ import annotations

import numpy as np

from vbanana.tasks import common

NAME = "normals"
TEMPLATES = (
    "estimate the surface normals",
    "predict a surface normal map",
    "show which way every surface faces",
    "turn this photo into a normal map",
)
CANONICAL = "estimate the surface normals"
HEADLINE = ("mean_angle",)
# Sign flips that bring a dataset's normals into vbanana's camera frame (+x right, +y up, +z to the viewer).
CONVENTIONS = {
    "vbanana": (1, 1, 1),
    "opengl": (1, 1, 1),       # x right, y up, z out of the screen
    "opencv": (1, -1, -1),     # x right, y down, z into the scene (e.g. ScanNet, Omnidata)
    "nyu_depth_v2": (1, -1, -1),
}
DEFAULT_NORMAL = np.array([0.0, 0.0, 1.0], np.float32)


def to_camera(normals, convention: str) -> np.ndarray:
  if convention not in CONVENTIONS:
    raise ValueError(f"normals convention {convention!r}: expected one of {sorted(CONVENTIONS)}")
  return np.asarray(normals, np.float32) * np.asarray(CONVENTIONS[convention], np.float32)


def _normalise(n):
  norm = np.linalg.norm(n, axis=-1, keepdims=True)
  return np.where(norm > 1e-6, n / np.maximum(norm, 1e-12), DEFAULT_NORMAL)


def valid_mask(normals) -> np.ndarray:
  n = np.asarray(normals)
  return np.isfinite(n).all(-1) & (np.linalg.norm(np.nan_to_num(n), axis=-1) > 1e-3)


def encode(normals, valid=None) -> np.ndarray:
  """Unit normals (H, W, 3) -> uint8 (H, W, 3)."""
  n = common.check_map(normals, "normals", 3, 3).astype(np.float64)
  ok = valid_mask(n) if valid is None else (np.asarray(valid, bool) & valid_mask(n))
  n = _normalise(np.nan_to_num(n))
  if ok.any():
    n = common.nearest_fill(n, ok)
  rgb = np.stack([(1 - n[..., 0]) / 2, (1 + n[..., 1]) / 2, (1 + n[..., 2]) / 2], -1)
  return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def decode(rgb) -> np.ndarray:
  """uint8 (H, W, 3) -> unit normals float32 (H, W, 3)."""
  rgb = common.check_rgb(rgb, "normals.decode rgb").astype(np.float64) / 255.0
  n = np.stack([1 - 2 * rgb[..., 0], 2 * rgb[..., 1] - 1, 2 * rgb[..., 2] - 1], -1)
  return _normalise(n).astype(np.float32)


def decode_jax(rgb):
  """jit-able decode: uint8 or [0, 1] floats (..., 3) -> unit normals."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = rgb.astype(jnp.float32) / 255.0 if rgb.dtype == jnp.uint8 else rgb
  n = jnp.stack([1 - 2 * x[..., 0], 2 * x[..., 1] - 1, 2 * x[..., 2] - 1], -1)
  norm = jnp.linalg.norm(n, axis=-1, keepdims=True)
  return jnp.where(norm > 1e-6, n / jnp.maximum(norm, 1e-12), jnp.asarray(DEFAULT_NORMAL))


def angular_error(pred, gt) -> np.ndarray:
  """Degrees between two normal fields (both renormalised)."""
  cos = np.clip((_normalise(pred) * _normalise(gt)).sum(-1), -1.0, 1.0)
  return np.degrees(np.arccos(cos))


def _scores(err) -> dict[str, float]:
  return {"mean_angle": float(err.mean()), "median_angle": float(np.median(err)),
          "within_11.25": float(np.mean(err < 11.25) * 100), "within_22.5": float(np.mean(err < 22.5) * 100),
          "within_30": float(np.mean(err < 30) * 100)}


def metrics(prediction, ground_truth, valid=None) -> dict[str, float]:
  """Mean / median angular error (degrees) and % of valid pixels under 11.25, 22.5 and 30 degrees."""
  gt, gt_valid = common.as_dict(ground_truth, "normals")
  valid = gt_valid if valid is None else valid
  gt = common.check_map(gt, "normals ground truth", 3, 3)
  pred = common.check_map(prediction, "normals prediction", 3, 3)
  ok = valid_mask(gt) & (True if valid is None else np.asarray(valid, bool))
  if not ok.any():
    return {}
  return _scores(angular_error(np.nan_to_num(pred[ok]), gt[ok]))


class Accumulator:
  """Dataset numbers over all valid pixels of the split (the usual normals benchmarks pool pixels)."""

  def __init__(self):
    self.errors = []

  def update(self, prediction, ground_truth, valid=None):
    gt, gt_valid = common.as_dict(ground_truth, "normals")
    valid = gt_valid if valid is None else valid
    ok = valid_mask(gt) & (True if valid is None else np.asarray(valid, bool))
    if ok.any():
      self.errors.append(angular_error(np.nan_to_num(np.asarray(prediction)[ok]), np.asarray(gt)[ok]))

  def result(self) -> dict[str, float]:
    return _scores(np.concatenate(self.errors)) if self.errors else {}


def make_example(sample, rng, train) -> common.TaskExample | None:
  if sample.get("normals") is None:
    return None
  normals = np.asarray(sample["normals"], np.float32)
  valid = valid_mask(normals)
  if not valid.any():
    return None
  return common.TaskExample(
      task=NAME, instruction=common.pick(TEMPLATES, CANONICAL, rng, train), inputs=[sample["image"]],
      target=encode(normals, valid), ground_truth={"normals": normals, "valid": valid}, decode_args={})


def request(prompt: str | None = None) -> common.Request:
  """The canonical instruction; `decode` returns unit normals float32 (H, W, 3), camera frame."""
  del prompt
  return common.Request(CANONICAL, {})


def visualize(prediction, ground_truth=None) -> np.ndarray:
  """[prediction | ground truth] in the encoding's own colours (the colour key is the encoding)."""
  panels = [encode(prediction)]
  if ground_truth is not None:
    panels += [np.full((panels[0].shape[0], 4, 3), 255, np.uint8), encode(common.as_dict(ground_truth, "normals")[0])]
  return np.concatenate(panels, 1)
