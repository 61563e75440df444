"""Semantic segmentation as an RGB image.

Encoding: every class gets a colour, either named in the instruction (colour names, hex codes, RGB tuples or a
JSON-like mapping: "paint the road purple and cars (0, 0, 255)") or a dataset's fixed palette
(CITYSCAPES_19; `well_separated_palette` for any class list, also used for ADE20K-150 here, whose published
palette is not shipped yet). Decoding gives each pixel the class of the nearest prompted colour in CIELAB, and
`ignore_label` past `threshold` (a colour far from every code). Metrics: per-class IoU, mIoU and pixel accuracy
from the confusion matrix summed over the dataset, with an ignore label.
"""

from __future__ import annotations

import numpy as np

from vbanana.tasks import common

NAME = "semantic"
IGNORE = 255
TEMPLATES = (
    "segment the image: {mapping}",
    "paint {mapping}",
    "colour every pixel by its class: {mapping}",
    "semantic segmentation with {mapping}",
)
CANONICAL = "segment the image: {mapping}"
CITYSCAPES_19 = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156),
    "fence": (190, 153, 153), "pole": (153, 153, 153), "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35), "terrain": (152, 251, 152),
    "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}
MAX_NAMED_CLASSES = 10  # longer class lists use the palette prompt (the instruction would not fit)


def palette_for(class_names) -> np.ndarray:
  """The fixed palette of a class list: Cityscapes' own colours, else well-separated ones."""
  if list(class_names) == list(CITYSCAPES_19):
    return np.asarray(list(CITYSCAPES_19.values()), np.uint8)
  return common.well_separated_palette(len(class_names), seed=len(class_names))


def encode(labels, colors, ignore_label=IGNORE) -> np.ndarray:
  """Class ids (H, W) -> uint8 RGB with colors[id]; ignored pixels are black."""
  labels = common.check_map(labels, "semantic labels", 2)
  colors = np.asarray(colors, np.uint8)
  bad = (labels != ignore_label) & ((labels < 0) | (labels >= len(colors)))
  if bad.any():
    raise ValueError(f"semantic labels: class id {int(labels[bad][0])} is outside the palette of "
                     f"{len(colors)} colours (ignore label {ignore_label})")
  out = np.zeros(labels.shape + (3,), np.uint8)
  ok = labels != ignore_label
  out[ok] = colors[labels[ok]]
  return out


def decode(rgb, colors, threshold=40.0, ignore_label=IGNORE, **_) -> np.ndarray:
  """Nearest prompted colour in CIELAB per pixel; `ignore_label` where the nearest is farther than threshold."""
  rgb = common.check_rgb(rgb, "semantic.decode rgb")
  idx, dist = common.nearest_color(rgb, np.asarray(colors))
  return np.where(dist <= threshold, idx, ignore_label).astype(np.int32)


def confusion(pred, gt, num_classes, ignore_label=IGNORE) -> np.ndarray:
  """num_classes x num_classes counts (rows: ground truth) over pixels whose ground truth is not ignored.
  A prediction of ignore_label counts as wrong (it lands in no column; pixel accuracy and IoU see it)."""
  gt = np.asarray(gt).reshape(-1)
  pred = np.asarray(pred).reshape(-1)
  ok = (gt != ignore_label) & (gt >= 0) & (gt < num_classes)
  gt, pred = gt[ok], pred[ok]
  hit = (pred >= 0) & (pred < num_classes)
  cm = np.bincount(gt[hit] * num_classes + pred[hit], minlength=num_classes ** 2).reshape(num_classes, num_classes)
  missed = np.bincount(gt[~hit], minlength=num_classes)
  return cm, missed


def scores_from_confusion(cm, missed) -> dict[str, float]:
  tp = np.diag(cm).astype(np.float64)
  gt_total = cm.sum(1) + missed
  union = gt_total + cm.sum(0) - tp
  present = union > 0
  iou = np.where(present, tp / np.maximum(union, 1), np.nan)
  out = {"miou": float(np.nanmean(iou)) if present.any() else 0.0,
         "pixel_acc": float(tp.sum() / max(gt_total.sum(), 1))}
  out.update({f"iou/{c}": float(v) for c, v in enumerate(iou) if np.isfinite(v)})
  return out


def metrics(prediction, ground_truth, valid=None, num_classes=None, ignore_label=IGNORE) -> dict[str, float]:
  gt, gt_valid = common.as_dict(ground_truth, "semantic")
  gt = np.asarray(gt)
  if valid is not None or gt_valid is not None:
    gt = np.where(np.asarray(valid if valid is not None else gt_valid, bool), gt, ignore_label)
  num_classes = num_classes or (int(ground_truth.get("num_classes")) if isinstance(ground_truth, dict)
                                and "num_classes" in ground_truth else int(gt[gt != ignore_label].max(initial=0)) + 1)
  return scores_from_confusion(*confusion(prediction, gt, num_classes, ignore_label))


class Accumulator:
  """mIoU from the confusion matrix summed over the dataset (not a mean of per-image IoUs)."""

  def __init__(self, num_classes=None, ignore_label=IGNORE):
    self.num_classes, self.ignore = num_classes, ignore_label
    self.cm, self.missed = None, None

  def update(self, prediction, ground_truth, valid=None):
    gt, gt_valid = common.as_dict(ground_truth, "semantic")
    gt = np.asarray(gt)
    v = valid if valid is not None else gt_valid
    if v is not None:
      gt = np.where(np.asarray(v, bool), gt, self.ignore)
    n = self.num_classes or (ground_truth.get("num_classes") if isinstance(ground_truth, dict) else None)
    if n is None:
      raise ValueError("semantic Accumulator: give num_classes, or a ground_truth dict with 'num_classes'")
    cm, missed = confusion(prediction, gt, int(n), self.ignore)
    self.cm = cm if self.cm is None else self.cm + cm
    self.missed = missed if self.missed is None else self.missed + missed

  def result(self) -> dict[str, float]:
    return scores_from_confusion(self.cm, self.missed) if self.cm is not None else {}


def make_example(sample, rng, train) -> common.TaskExample | None:
  if sample.get("semantic") is None or not sample.get("class_names"):
    return None
  names = list(sample["class_names"])
  labels = np.asarray(sample["semantic"], np.int32)
  if len(names) > MAX_NAMED_CLASSES:
    colors = palette_for(names)
    instruction = f"segment the image with the {len(names)}-class palette"
  else:
    if train and rng is not None:
      named = list(rng.permutation(common.PROMPT_COLORS)[:len(names)])
      colors = np.asarray([common.COLOR_NAMES[c] for c in named], np.uint8)
      style = ["name", "hex", "tuple"][int(rng.integers(3))] if rng.random() < 0.3 else "name"
    else:
      colors = np.asarray([common.COLOR_NAMES[c] for c in common.PROMPT_COLORS[:len(names)]], np.uint8)
      style = "name"
    mapping = ", ".join(f"{n} {common.describe_color(c, style)}" for n, c in zip(names, colors))
    instruction = common.pick(TEMPLATES, CANONICAL, rng, train).format(mapping=mapping)
  return common.TaskExample(
      task=NAME, instruction=instruction, inputs=[sample["image"]], target=encode(labels, colors),
      ground_truth={"semantic": labels, "num_classes": len(names)},
      decode_args={"colors": colors, "class_names": tuple(names)})


def visualize(prediction, ground_truth=None, colors=None, class_names=None) -> np.ndarray:
  """[prediction | ground truth] in the palette, with a legend of class names."""
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  n = len(colors) if colors is not None else int(np.max(prediction)) + 1
  colors = np.asarray(colors if colors is not None else common.well_separated_palette(n), np.uint8)
  panels = [("prediction", prediction)]
  if ground_truth is not None:
    panels.append(("ground truth", common.as_dict(ground_truth, "semantic")[0]))
  fig = common.figure(figsize=(3.2 * len(panels) + 1.6, 3))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (title, lab) in zip(axes[0], panels):
    lab = np.asarray(lab)
    ax.imshow(np.where((lab >= 0)[..., None] & (lab < n)[..., None], colors[np.clip(lab, 0, n - 1)], 0))
    ax.set_title(title)
    ax.axis("off")
  names = class_names or [str(i) for i in range(n)]
  fig.legend(handles=[Patch(color=np.asarray(c) / 255, label=nm) for c, nm in zip(colors, names)],
             loc="center right", fontsize=7)
  return common.figure_to_array(fig)
