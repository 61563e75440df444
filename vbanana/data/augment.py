"""Geometric augmentation of raw samples: crops, resizes and flips applied to the image and every ground truth.

Pure functions of NumPy arrays (PIL only does the interpolation). One rule per kind of array:
- RGB images (`image`, `edit_source`, `edit_target`): antialiased bilinear resize.
- Label maps (`semantic`, `instance`): nearest neighbour, so no new class or instance id appears.
- Depth and normals: a masked resize that averages only valid pixels (invalid = NaN, <= 0 depth, zero
  normal), so an invalid pixel never leaks into a valid one; normals are renormalised afterwards.
A horizontal flip negates the normals' x and swaps "left" and "right" in every text of the sample, so
captions, referring expressions and edit instructions stay true.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from PIL import Image

RGB_KEYS = ("image", "edit_source", "edit_target")
LABEL_KEYS = ("semantic", "instance")
SPATIAL_KEYS = RGB_KEYS + LABEL_KEYS + ("depth", "normals")

_LEFT_RIGHT = re.compile(r"\b(left|right|leftmost|rightmost)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}


# ----------------------------------------------------------------------------------------------------------
# Array-level operations.


def hw(size) -> tuple[int, int]:
  """A target size: an int side (a square) or (H, W)."""
  if isinstance(size, (int, np.integer)):
    return int(size), int(size)
  return int(size[0]), int(size[1])


def resize_rgb(image: np.ndarray, size) -> np.ndarray:
  """uint8 (H, W, 3) -> uint8 at `size` (a side, or (H, W)), antialiased bilinear."""
  h, w = hw(size)
  if image.shape[:2] == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_nearest(labels: np.ndarray, size) -> np.ndarray:
  """Any (H, W, ...) array -> `size` (a side, or (H, W)) by nearest neighbour (pixel centres)."""
  out_h, out_w = hw(size)
  h, w = labels.shape[:2]
  rows = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.int64), w - 1)
  return labels[rows[:, None], cols[None, :]]


def _resize_float(channel: np.ndarray, size) -> np.ndarray:
  h, w = hw(size)
  image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
  return np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32)


def resize_masked(values: np.ndarray, valid: np.ndarray, size, min_coverage: float = 0.5):
  """Resizes (H, W) or (H, W, C) floats averaging only `valid` pixels.

  Returns (resized values, resized valid mask); an output pixel is valid when at least `min_coverage` of
  its interpolation weight fell on valid input pixels.
  """
  weight = valid.astype(np.float32)
  coverage = _resize_float(weight, size)
  channels = values[..., None] if values.ndim == 2 else values
  clean = np.where(valid[..., None], channels, 0.0).astype(np.float32)
  sums = np.stack([_resize_float(clean[..., c] * weight, size) for c in range(clean.shape[-1])], -1)
  out_valid = coverage >= min_coverage
  out = np.where(out_valid[..., None], sums / np.maximum(coverage, 1e-6)[..., None], np.nan)
  out = out.astype(np.float32)
  return (out[..., 0] if values.ndim == 2 else out), out_valid


def depth_valid(depth: np.ndarray) -> np.ndarray:
  return np.isfinite(depth) & (depth > 0)


def normals_valid(normals: np.ndarray) -> np.ndarray:
  return np.all(np.isfinite(normals), -1) & (np.sum(np.nan_to_num(normals) ** 2, -1) > 1e-6)


def resize_depth(depth: np.ndarray, size) -> np.ndarray:
  if depth.shape[:2] == hw(size):
    return depth
  out, _ = resize_masked(depth, depth_valid(depth), size)
  return out


def resize_normals(normals: np.ndarray, size) -> np.ndarray:
  if normals.shape[:2] == hw(size):
    return normals
  out, valid = resize_masked(normals, normals_valid(normals), size)
  norm = np.linalg.norm(np.nan_to_num(out), axis=-1, keepdims=True)
  return np.where(valid[..., None], out / np.maximum(norm, 1e-6), np.nan).astype(np.float32)


def swap_left_right(text: str) -> str:
  """'the leftmost cube, left of the ball' -> 'the rightmost cube, right of the ball' (keeps case)."""

  def swap(match):
    word = match.group(0)
    new = _SWAP[word.lower()]
    return new.capitalize() if word[0].isupper() else new

  return _LEFT_RIGHT.sub(swap, text)


# ----------------------------------------------------------------------------------------------------------
# Sample-level operations (a raw sample is a dict, see docs/interfaces.md).


def largest_box(height: int, width: int, aspect: float = 1.0) -> tuple[int, int]:
  """(h, w) of the largest box of this width / height that fits the image."""
  if width >= height * aspect:
    return height, max(1, min(width, int(round(height * aspect))))
  return max(1, min(height, int(round(width / aspect)))), width


def random_box(height: int, width: int, rng: np.random.Generator, scale: Sequence[float] = (1.0, 1.0),
               aspect: float = 1.0) -> tuple[int, int, int, int]:
  """A random (top, left, h, w) box of this width / height, `scale` x the largest such box's sides (for a
  square: `scale` x the shorter image side)."""
  u = rng.uniform(scale[0], scale[1])
  max_h, max_w = largest_box(height, width, aspect)
  box_h, box_w = max(1, int(round(max_h * u))), max(1, int(round(max_w * u)))
  top = int(rng.integers(0, height - box_h + 1))
  left = int(rng.integers(0, width - box_w + 1))
  return top, left, box_h, box_w


def random_square_box(height: int, width: int, rng: np.random.Generator,
                      scale: Sequence[float] = (1.0, 1.0)) -> tuple[int, int, int]:
  """A random square (top, left, side) whose side is `scale` x the shorter image side."""
  top, left, side, _ = random_box(height, width, rng, scale)
  return top, left, side


def center_box(height: int, width: int, aspect: float = 1.0) -> tuple[int, int, int, int]:
  """The central (top, left, h, w) box of this width / height, as large as fits."""
  box_h, box_w = largest_box(height, width, aspect)
  return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def center_square_box(height: int, width: int) -> tuple[int, int, int]:
  top, left, side, _ = center_box(height, width)
  return top, left, side


def crop(sample: dict, box: Sequence[int]) -> dict:
  """Crops every spatial array of the sample to the box, (top, left, side) for a square or
  (top, left, h, w); drops instances that fell outside."""
  top, left, box_h = box[:3]
  box_w = box[3] if len(box) == 4 else box_h
  out = dict(sample)
  for key in SPATIAL_KEYS:
    if key in out:
      out[key] = out[key][top:top + box_h, left:left + box_w]
  return _drop_missing_instances(out)


def resize(sample: dict, size) -> dict:
  """Resizes every spatial array of the sample to `size` (a side, or (H, W)) with the rule for its kind."""
  out = dict(sample)
  for key in RGB_KEYS:
    if key in out:
      out[key] = resize_rgb(out[key], size)
  for key in LABEL_KEYS:
    if key in out:
      out[key] = resize_nearest(out[key], size)
  if "depth" in out:
    out["depth"] = resize_depth(out["depth"], size)
  if "normals" in out:
    out["normals"] = resize_normals(out["normals"], size)
  return _drop_missing_instances(out)


def hflip(sample: dict) -> dict:
  """Mirrors the sample left-right: arrays, the normals' x component and every text."""
  out = dict(sample)
  for key in SPATIAL_KEYS:
    if key in out:
      out[key] = out[key][:, ::-1]
  if "normals" in out:
    out["normals"] = out["normals"] * np.array([-1.0, 1.0, 1.0], np.float32)
  for key in ("caption", "edit_instruction"):
    if key in out:
      out[key] = swap_left_right(out[key])
  if "captions" in out:
    out["captions"] = tuple(swap_left_right(c) for c in out["captions"])
  if "referring" in out:
    out["referring"] = [(swap_left_right(text), iid) for text, iid in out["referring"]]
  return out


def _drop_missing_instances(sample: dict) -> dict:
  """Keeps `instance_class` and `referring` to the instance ids still visible."""
  if "instance" not in sample or not ("instance_class" in sample or "referring" in sample):
    return sample
  present = set(np.unique(sample["instance"]).tolist())
  out = dict(sample)
  if "instance_class" in out:
    out["instance_class"] = {i: c for i, c in out["instance_class"].items() if i in present}
  if "referring" in out:
    out["referring"] = [(text, iid) for text, iid in out["referring"] if iid in present]
  return out


def train_augment(sample: dict, rng: np.random.Generator, size,
                  crop_scale: Sequence[float] = (1.0, 1.0), flip: bool = True) -> dict:
  """Random crop of the aspect ratio of `size` (a side, or (H, W): an aspect-ratio bucket), resize to it,
  random horizontal flip (one draw for the whole sample). A sample already of that aspect ratio is only
  resized (with crop_scale 1), never distorted."""
  height, width = sample["image"].shape[:2]
  out_h, out_w = hw(size)
  out = crop(sample, random_box(height, width, rng, crop_scale, out_w / out_h))
  out = resize(out, size)
  if flip and rng.random() < 0.5:
    out = hflip(out)
  if "captions" in out and len(out["captions"]) > 1:
    out["caption"] = out["captions"][int(rng.integers(len(out["captions"])))]
  return out


def eval_crop(sample: dict, aspect: float = 1.0) -> dict:
  """The central box of this width / height (the square by default; an aspect-ratio bucket's) at full
  resolution: the region the model sees at eval, before any resize."""
  height, width = sample["image"].shape[:2]
  return crop(sample, center_box(height, width, aspect))
