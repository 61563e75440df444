"""Referring segmentation as an RGB image.

Encoding: "paint <expression> in <colour>": the one object the expression refers to in that colour c,
everything else black. Evaluation asks for red; training picks any of `common.PROMPT_COLORS` and a random
phrasing. Decoding (Euclidean distances in 0-255 RGB): a pixel belongs to the object when
    |rgb - c| < |rgb - black|   and   |rgb - c| <= threshold,   threshold = max(60, |c| / 2) by default,
i.e. it is closer to the named colour than to black and not far from it, so blur and colour drift move the
boundary by little and stray colours stay background. Any image decodes to a boolean mask.
Metrics: IoU per image; dataset numbers (`Accumulator`) are gIoU (the mean of per-image IoUs) and cIoU (summed
intersections over summed unions). An image where both masks are empty scores IoU 1.
"""

from __future__ import annotations

import numpy as np

from vbanana.tasks import common

NAME = "referring"
TEMPLATES = (
    "paint {expr} in {color}",
    "highlight {expr} in {color} on black",
    "colour {expr} {color}, everything else black",
    "segment {expr}: {color} on black",
)
CANONICAL = "paint {expr} in {color}"
EVAL_COLOR = "red"
HEADLINE = ("giou",)


def encode(mask, color) -> np.ndarray:
  mask = common.check_map(mask, "referring mask", 2).astype(bool)
  out = np.zeros(mask.shape + (3,), np.uint8)
  out[mask] = np.asarray(color, np.uint8)
  return out


def decode(rgb, color, threshold=None, **_) -> np.ndarray:
  rgb = common.check_rgb(rgb, "referring.decode rgb").astype(np.float32)
  color = np.asarray(color, np.float32)
  to_color = np.linalg.norm(rgb - color, axis=-1)
  to_black = np.linalg.norm(rgb, axis=-1)
  threshold = threshold or max(60.0, 0.5 * float(np.linalg.norm(color)))
  return (to_color < to_black) & (to_color <= threshold)


def _inter_union(pred, gt, valid):
  pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
  if pred.shape != gt.shape:
    raise ValueError(f"referring prediction shape {pred.shape} != ground truth shape {gt.shape}")
  if valid is not None:
    pred, gt = pred & valid, gt & valid
  return float((pred & gt).sum()), float((pred | gt).sum())


def metrics(prediction, ground_truth, valid=None) -> dict[str, float]:
  gt, gt_valid = common.as_dict(ground_truth, "mask")
  i, u = _inter_union(prediction, gt, valid if valid is not None else gt_valid)
  iou = i / u if u else 1.0
  return {"giou": iou, "ciou": iou}


class Accumulator:
  def __init__(self):
    self.ious, self.inter, self.union = [], 0.0, 0.0

  def update(self, prediction, ground_truth, valid=None):
    gt, gt_valid = common.as_dict(ground_truth, "mask")
    i, u = _inter_union(prediction, gt, valid if valid is not None else gt_valid)
    self.ious.append(i / u if u else 1.0)
    self.inter += i
    self.union += u

  def result(self) -> dict[str, float]:
    if not self.ious:
      return {}
    return {"giou": float(np.mean(self.ious)), "ciou": self.inter / self.union if self.union else 1.0}


def make_example(sample, rng, train) -> common.TaskExample | None:
  refs = sample.get("referring")
  if not refs or sample.get("instance") is None:
    return None
  inst = np.asarray(sample["instance"])
  refs = [(e, int(i)) for e, i in refs if (inst == int(i)).any()]
  if not refs:
    return None
  expr, iid = refs[int(rng.integers(len(refs)))] if (train and rng is not None) else refs[0]
  name = common.PROMPT_COLORS[int(rng.integers(len(common.PROMPT_COLORS)))] if common.random_colours(rng, train) \
      else EVAL_COLOR
  color = common.COLOR_NAMES[name]
  mask = inst == iid
  instruction = common.pick(TEMPLATES, CANONICAL, rng, train).format(expr=expr, color=name)
  return common.TaskExample(
      task=NAME, instruction=instruction, inputs=[sample["image"]], target=encode(mask, color),
      ground_truth={"mask": mask}, decode_args={"color": tuple(color)})


def request(prompt: str | None = None, color: str = EVAL_COLOR) -> common.Request:
  """Paint the object `prompt` (the referring expression) names in `color` (the evaluation's red by
  default); `decode` returns a bool mask (H, W)."""
  if not (prompt or "").strip():
    raise ValueError("referring: the request needs the referring expression, e.g. 'the red sphere'")
  return common.Request(CANONICAL.format(expr=prompt.strip(), color=color),
                        {"color": tuple(int(v) for v in common.COLOR_NAMES[color])})


def visualize(prediction, ground_truth=None) -> np.ndarray:
  """[prediction | ground truth] as white masks on black."""
  panels = [np.repeat(np.asarray(prediction, np.uint8)[..., None] * 255, 3, -1)]
  if ground_truth is not None:
    gt = np.asarray(common.as_dict(ground_truth, "mask")[0], np.uint8)
    panels += [np.full((gt.shape[0], 4, 3), 128, np.uint8), np.repeat(gt[..., None] * 255, 3, -1)]
  return np.concatenate(panels, 1)
