"""Semantic segmentation as an RGB image.

Encoding: class k is painted in colours[k], ignored pixels (`ignore_label`, 255) black:
    rgb[y, x] = colours[labels[y, x]]
The colours come from one of two places:
  - named in the instruction (up to MAX_NAMED_CLASSES classes): colour names from `common.COLOR_NAMES`, hex
    codes, RGB tuples or a JSON-like mapping ("segment the image: road purple, car (0, 0, 255), sky #87ceeb"),
    parsed by `common.parse_color_mapping`; training draws them at random for half of its examples
    (1 - `common.FIXED_COLOURS_SHARE`);
  - the class list's fixed palette ("segment the image with the 7-class palette", `PALETTE_PROMPT`): the
    other half of training, every evaluation and every list longer than MAX_NAMED_CLASSES.
    `palette_for(class_names)` gives the dataset's standard colours for the Cityscapes-19 and ADE20K-150
    class lists (data files in palettes/, see `dataset_palette`), the named colours `common.PROMPT_COLORS`
    in order (red, green, blue, ...) for other lists of up to 10 classes, and `common.well_separated_palette`
    colours for longer ones. A fixed code is learned as fast as depth's; named colours need the model to read.
Decoding: every pixel takes the class of the nearest prompted colour in CIELAB (perceptual distance, so a
drifted colour goes to the class it looks like), and `ignore_label` (unlabelled) when even the nearest
colour is farther than `threshold` (40 CIELAB units by default). Any image decodes; exact codes decode
exactly. The black of ignored pixels is not a code: it decodes as unlabelled against `common.PROMPT_COLORS`
(none is within the threshold of black) but as "building" / "floor" against the Cityscapes / ADE20K
palettes, which no metric sees, since ground-truth ignore pixels are not scored.
Metrics: per-class IoU, mIoU and pixel accuracy from the confusion matrix summed over the dataset
(`Accumulator`; not a mean of per-image IoUs); a predicted "unlabelled" pixel counts as wrong.
"""

from __future__ import annotations

import functools
import json
import os

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
CANONICAL = "segment the image: {mapping}"  # the named-colour phrasing used with `common.pick`
PALETTE_PROMPT = "segment the image with the {n}-class palette"  # evaluation's instruction
HEADLINE = ("miou",)
PALETTE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "palettes")
DATASET_PALETTES = ("cityscapes_19", "ade20k_150")


def _norm(name: str) -> str:
  return " ".join(str(name).replace("_", " ").lower().split())


@functools.lru_cache(maxsize=None)
def _load_palette(name: str):
  """(names, colours, accepted names per class) of palettes/<name>.json, overrides applied."""
  if name not in DATASET_PALETTES:
    raise ValueError(f"dataset palette {name!r}: expected one of {DATASET_PALETTES}")
  with open(os.path.join(PALETTE_DIR, f"{name}.json"), encoding="utf-8") as f:
    data = json.load(f)
  classes, overrides = data["classes"], data.get("overrides", {})
  names = tuple(c["name"] for c in classes)
  colors = np.asarray([overrides.get(c["name"], c["color"]) for c in classes], np.uint8)
  colors.setflags(write=False)
  accepted = tuple(frozenset(_norm(n) for n in [c["name"], *c.get("synonyms", ())]) for c in classes)
  return names, colors, accepted


def dataset_palette(name: str) -> tuple[tuple[str, ...], np.ndarray]:
  """(class names, uint8 (N, 3) colours) of a shipped dataset palette: 'cityscapes_19' or 'ade20k_150'.

  The colours are the dataset's published standard, except where palettes/<name>.json lists an override
  (ADE20K-150 publishes one colour twice, for road and skyscraper; skyscraper gets a free colour)."""
  names, colors, _ = _load_palette(name)
  return names, colors.copy()


CITYSCAPES_19 = {n: tuple(int(v) for v in c) for n, c in zip(*dataset_palette("cityscapes_19"))}
ADE20K_150 = {n: tuple(int(v) for v in c) for n, c in zip(*dataset_palette("ade20k_150"))}
MAX_NAMED_CLASSES = 10  # longer class lists use the palette prompt (the instruction would not fit)


def palette_for(class_names) -> np.ndarray:
  """The fixed palette of a class list: the dataset's standard colours for the Cityscapes-19 and ADE20K-150
  lists (names compared case-, underscore- and synonym-insensitively, in order); for other lists of up to
  MAX_NAMED_CLASSES classes the named colours `common.PROMPT_COLORS` in order (red, green, blue, ...: the
  palette prompt paints what "background red, ground green, ..." would); else well-separated colours."""
  names = [_norm(n) for n in class_names]
  for palette in DATASET_PALETTES:
    _, colors, accepted = _load_palette(palette)
    if len(names) == len(accepted) and all(n in a for n, a in zip(names, accepted)):
      return colors.copy()
  if len(names) <= MAX_NAMED_CLASSES:
    return np.asarray([common.COLOR_NAMES[c] for c in common.PROMPT_COLORS[:len(names)]], np.uint8)
  return common.well_separated_palette(len(names), seed=len(names))


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
  if len(names) <= MAX_NAMED_CLASSES and common.random_colours(rng, train):
    # Colours named in the instruction, drawn at random: the model learns to read them.
    named = list(rng.permutation(common.PROMPT_COLORS)[:len(names)])
    colors = np.asarray([common.COLOR_NAMES[c] for c in named], np.uint8)
    style = ["name", "hex", "tuple"][int(rng.integers(3))] if rng.random() < 0.3 else "name"
    mapping = ", ".join(f"{n} {common.describe_color(c, style)}" for n, c in zip(names, colors))
    instruction = common.pick(TEMPLATES, CANONICAL, rng, train).format(mapping=mapping)
  else:
    # The class list's fixed palette (evaluation, the fixed-colour share of training, long class lists).
    colors = palette_for(names)
    instruction = PALETTE_PROMPT.format(n=len(names))
  return common.TaskExample(
      task=NAME, instruction=instruction, inputs=[sample["image"]], target=encode(labels, colors),
      ground_truth={"semantic": labels, "num_classes": len(names)},
      decode_args={"colors": colors, "class_names": tuple(names)})


def request(class_names, prompt: str | None = None) -> common.Request:
  """Segment a photo into `class_names`: with no prompt, the class list's fixed palette (the evaluation's
  instruction); a prompt maps classes to colours ('sky red, road #00ff00, car (0, 0, 255)';
  `common.parse_color_mapping`), and only those classes are asked for. `decode` returns int32 class ids
  (H, W), IGNORE where no prompted colour is near."""
  names = list(class_names)
  if not names:
    raise ValueError("semantic: the request needs the class names")
  if not (prompt or "").strip():
    return common.Request(PALETTE_PROMPT.format(n=len(names)),
                          {"colors": palette_for(names), "class_names": tuple(names)})
  mapping = common.parse_color_mapping(prompt, names)
  chosen = [n for n in names if n in mapping]
  colors = np.asarray([mapping[n] for n in chosen], np.uint8)
  text = ", ".join(f"{n} {common.describe_color(c)}" for n, c in zip(chosen, colors))
  return common.Request(CANONICAL.format(mapping=text), {"colors": colors, "class_names": tuple(chosen)})


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
