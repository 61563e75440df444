"""Aspect-ratio buckets: the few image shapes (H, W) a model trains and predicts at, under one token budget.

A model of `image_size` S and patch size p has a budget of (S / p)^2 tokens per image. A bucket is a grid of
gh x gw patches with gh * gw <= budget whose ratio gw / gh is nearest a requested width/height ratio, so a
3:4 portrait and a 4:3 landscape cost what the square costs, and jit compiles one program per bucket (as
large image models batch by aspect-ratio bucket). Every photo goes to the bucket nearest its own aspect
ratio (in log ratio, so 2:1 and 1:2 are equally far from 1:1); only the resize to that bucket changes it.

Pure functions of ints and floats; the model, the data pipeline, the scenes renderer and predict share them.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

Shape = tuple[int, int]
# Ratios (width / height) outside this range give grids too thin for the 2D positions to mean much.
MIN_RATIO, MAX_RATIO = 0.25, 4.0
# A bucket's ratio may miss the one asked for by up to 10 % (in log ratio) to use more of the budget.
RATIO_TOLERANCE = 0.1


def parse_ratio(value) -> float:
  """1.5, '3:2', '3/2' or '1.5' -> 1.5 (width / height)."""
  if isinstance(value, str):
    text = value.strip()
    for sep in (":", "/", "x"):
      if sep in text:
        w, h = text.split(sep, 1)
        return float(w) / float(h)
    return float(text)
  return float(value)


def shape_at_budget(image_size: int, patch_size: int, ratio: float) -> Shape:
  """The (H, W) in pixels, multiples of patch_size, of at most (image_size / patch_size)^2 patches whose
  width / height is near `ratio` (the square for ratio 1)."""
  if not MIN_RATIO <= ratio <= MAX_RATIO:
    raise ValueError(f"aspect ratio {ratio:g} (width / height) is outside [{MIN_RATIO}, {MAX_RATIO}]")
  budget = (image_size // patch_size) ** 2
  candidates = []
  for gh in range(1, budget + 1):
    for gw in {max(1, min(budget // gh, g)) for g in (math.floor(gh * ratio), math.ceil(gh * ratio))}:
      candidates.append((abs(math.log(gw / gh / ratio)), gh * gw, gh, gw))
  # The most tokens among grids within RATIO_TOLERANCE of the ratio (the most detail the budget allows),
  # then the nearest ratio; with none that close (a tiny budget), the nearest ratio.
  close = [c for c in candidates if c[0] <= RATIO_TOLERANCE]
  _, _, gh, gw = (min(close, key=lambda c: (-c[1], c[0])) if close
                  else min(candidates, key=lambda c: (c[0], -c[1])))
  return gh * patch_size, gw * patch_size


def shapes_at_budget(image_size: int, patch_size: int, ratios: Iterable) -> tuple[Shape, ...]:
  """The buckets of `ratios` (each parsed by `parse_ratio`), duplicates dropped, in the order given."""
  out: list[Shape] = []
  for r in ratios:
    shape = shape_at_budget(image_size, patch_size, parse_ratio(r))
    if shape not in out:
      out.append(shape)
  return tuple(out)


def nearest(shape: Sequence[int], buckets: Sequence[Shape]) -> Shape:
  """The bucket whose aspect ratio is nearest (in log ratio) that of `shape` = (H, W); ties go to the
  bucket listed first."""
  h, w = int(shape[0]), int(shape[1])
  if h < 1 or w < 1:
    raise ValueError(f"an image of shape {(h, w)} has no aspect ratio")
  ratio = w / h
  return min(buckets, key=lambda b: abs(math.log(b[1] / b[0] / ratio)))


def check_shapes(shapes, patch_size: int, budget_tokens: int, where: str) -> tuple[Shape, ...]:
  """`shapes` as a tuple of (H, W) int pairs, each a multiple of the patch size within the token budget;
  otherwise a ValueError naming `where`."""
  out = []
  for s in shapes:
    if len(s) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s):
      raise ValueError(f"{where}: expected (height, width) pairs of positive ints, got {s!r}")
    h, w = s
    if h % patch_size or w % patch_size:
      raise ValueError(f"{where}: shape {(h, w)} is not a multiple of patch_size={patch_size}")
    if (h // patch_size) * (w // patch_size) > budget_tokens:
      raise ValueError(f"{where}: shape {(h, w)} has {(h // patch_size) * (w // patch_size)} patches, over the "
                       f"budget of {budget_tokens} (image_size / patch_size squared)")
    out.append((h, w))
  if len(set(out)) != len(out):
    raise ValueError(f"{where}: repeated shapes in {out}")
  return tuple(out)
