"""Instance segmentation as an RGB image, one request per class.

Encoding: "paint each <class> a different solid colour on a <colour> background": every instance of that
class gets its own colour (well separated in CIELAB and far from the background), everything else the
background colour. The model picks the instance colours, so decoding does not know them: it clusters.
Decoding (the paper's algorithm, distances in 0-255 RGB units):
  1. background = pixels within 14 of the background colour;
  2. flood fill from seeds (row-major), a neighbour joins when within 14 of the seed's colour;
  3. drop components under 0.02% of the image; drop thin halos (a 3x3 erosion keeps under 10%);
  4. merge components whose mean colours are within 14 and whose union bounding box is at most 5x their
     summed areas (one object split by a highlight or an occluder).
Each mask's confidence is the share of its pixels within 14 of its mean colour (solid = confident).
Metrics: COCO-style mask AP (IoU 0.5:0.95) and panoptic PQ / SQ / RQ (IoU > 0.5 matches).
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import ndimage

from vbanana.tasks import common

NAME = "instance"
TOL = 14.0
TEMPLATES = (
    "paint each {cls} a different solid colour on a {bg} background",
    "give every {cls} its own colour, background {bg}",
    "instance segmentation of the {cls}s on {bg}",
)
CANONICAL = "paint each {cls} a different solid colour on a {bg} background"
BACKGROUNDS = ("black", "white", "gray")


def instance_colors(n: int, background) -> np.ndarray:
  return common.well_separated_palette(n, seed=n, exclude=[background])


def encode(masks, background=(0, 0, 0), colors=None) -> np.ndarray:
  """(N, H, W) boolean instance masks -> uint8 RGB: instance k in colors[k] on the background colour."""
  masks = np.asarray(masks, bool)
  if masks.ndim != 3:
    raise ValueError(f"instance masks: expected shape (N, H, W), got {masks.shape}")
  colors = instance_colors(len(masks), background) if colors is None else np.asarray(colors, np.uint8)
  out = np.empty(masks.shape[1:] + (3,), np.uint8)
  out[:] = np.asarray(background, np.uint8)
  for m, c in zip(masks, colors):
    out[m] = c
  return out


def _flood_fill(rgb: np.ndarray, foreground: np.ndarray) -> np.ndarray:
  """Labels from seeded flood fill: a 4-neighbour joins when its colour is within TOL of the seed's."""
  h, w = foreground.shape
  labels = np.zeros((h, w), np.int32)
  color = rgb.astype(np.float32)
  n = 0
  for start in zip(*np.nonzero(foreground)):
    if labels[start]:
      continue
    n += 1
    seed = color[start]
    labels[start] = n
    queue = collections.deque([start])
    while queue:
      y, x = queue.popleft()
      for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
        if 0 <= yy < h and 0 <= xx < w and foreground[yy, xx] and not labels[yy, xx] \
            and np.sqrt(((color[yy, xx] - seed) ** 2).sum()) <= TOL:
          labels[yy, xx] = n
          queue.append((yy, xx))
  return labels


def decode(rgb, background=(0, 0, 0), **_) -> dict:
  """uint8 RGB -> {'masks': (N, H, W) bool, 'scores': (N,)}; never raises on odd colours."""
  rgb = common.check_rgb(rgb, "instance.decode rgb")
  h, w, _ = rgb.shape
  color = rgb.astype(np.float32)
  foreground = np.linalg.norm(color - np.asarray(background, np.float32), axis=-1) > TOL
  labels = _flood_fill(rgb, foreground)
  comps = []
  min_area = max(1, int(np.ceil(0.0002 * h * w)))
  for k, sl in enumerate(ndimage.find_objects(labels), start=1):
    if sl is None:
      continue
    mask = labels == k
    area = int(mask.sum())
    if area < min_area:
      continue
    if area >= 40 and ndimage.binary_erosion(mask, np.ones((3, 3), bool)).sum() < 0.1 * area:  # thin halo
      continue
    comps.append({"mask": mask, "area": area, "mean": color[mask].mean(0)})
  merged = True
  while merged:  # merge pairs until nothing changes
    merged = False
    for i in range(len(comps)):
      for j in range(i + 1, len(comps)):
        a, b = comps[i], comps[j]
        if np.linalg.norm(a["mean"] - b["mean"]) > TOL:
          continue
        ys, xs = np.nonzero(a["mask"] | b["mask"])
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        if box <= 5 * (a["area"] + b["area"]):
          mask = a["mask"] | b["mask"]
          comps[i] = {"mask": mask, "area": int(mask.sum()), "mean": color[mask].mean(0)}
          del comps[j]
          merged = True
          break
      if merged:
        break
  masks = np.stack([c["mask"] for c in comps]) if comps else np.zeros((0, h, w), bool)
  scores = np.array([np.mean(np.linalg.norm(color[c["mask"]] - c["mean"], axis=-1) <= TOL) for c in comps],
                    np.float32)
  return {"masks": masks, "scores": scores}


def _iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  if len(pred) == 0 or len(gt) == 0:
    return np.zeros((len(pred), len(gt)))
  p = pred.reshape(len(pred), -1).astype(np.float64)
  g = gt.reshape(len(gt), -1).astype(np.float64)
  inter = p @ g.T
  union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
  return inter / np.maximum(union, 1)


THRESHOLDS = np.linspace(0.5, 0.95, 10)


def _gt_masks(ground_truth):
  masks, _ = common.as_dict(ground_truth, "masks")
  masks = np.asarray(masks, bool)
  if masks.ndim != 3:
    raise ValueError(f"instance ground truth masks: expected (N, H, W), got {masks.shape}")
  return masks


class Accumulator:
  """Dataset AP (COCO: all predictions of the split ranked by score, 101-point precision) and PQ."""

  def __init__(self):
    self.records = []   # (score, matched at each threshold)
    self.num_gt = 0
    self.pq = {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}

  def update(self, prediction, ground_truth, valid=None):
    pred = np.asarray(prediction["masks"], bool)
    scores = np.asarray(prediction["scores"], np.float64)
    gt = _gt_masks(ground_truth)
    iou = _iou_matrix(pred, gt)
    self.num_gt += len(gt)
    order = np.argsort(-scores, kind="stable")
    hits = np.zeros((len(pred), len(THRESHOLDS)), bool)
    for t_idx, thr in enumerate(THRESHOLDS):  # greedy matching, most confident prediction first
      taken = np.zeros(len(gt), bool)
      for p in order:
        cand = np.where(~taken & (iou[p] >= thr))[0]
        if len(cand):
          taken[cand[np.argmax(iou[p, cand])]] = True
          hits[p, t_idx] = True
    self.records += [(scores[p], hits[p]) for p in range(len(pred))]
    matched = iou > 0.5  # unique at IoU > 0.5
    tp_iou = iou[matched]
    self.pq["iou"] += float(tp_iou.sum())
    self.pq["tp"] += int(matched.sum())
    self.pq["fp"] += int(len(pred) - matched.any(1).sum())
    self.pq["fn"] += int(len(gt) - matched.any(0).sum())

  def result(self) -> dict[str, float]:
    aps = []
    if self.records:
      scores = np.array([r[0] for r in self.records])
      hits = np.stack([r[1] for r in self.records])[np.argsort(-scores, kind="stable")]
    for t in range(len(THRESHOLDS)):
      if self.num_gt == 0:
        continue
      if not self.records:
        aps.append(0.0)
        continue
      tp = np.cumsum(hits[:, t])
      precision = tp / np.arange(1, len(tp) + 1)
      recall = tp / self.num_gt
      precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
      samples = [precision[recall >= r].max() if (recall >= r).any() else 0.0 for r in np.linspace(0, 1, 101)]
      aps.append(float(np.mean(samples)))
    tp, fp, fn = self.pq["tp"], self.pq["fp"], self.pq["fn"]
    sq = self.pq["iou"] / tp if tp else 0.0
    rq = tp / (tp + 0.5 * fp + 0.5 * fn) if (tp + fp + fn) else 0.0
    return {"ap": float(np.mean(aps)) if aps else 0.0, "ap50": aps[0] if aps else 0.0,
            "ap75": aps[5] if aps else 0.0, "pq": sq * rq, "sq": sq, "rq": rq}


def metrics(prediction, ground_truth, valid=None) -> dict[str, float]:
  acc = Accumulator()
  acc.update(prediction, ground_truth, valid)
  return acc.result()


def make_example(sample, rng, train) -> common.TaskExample | None:
  if sample.get("instance") is None or not sample.get("instance_class"):
    return None
  inst = np.asarray(sample["instance"], np.int32)
  by_class = collections.defaultdict(list)
  for iid, cls in sorted(sample["instance_class"].items()):
    if (inst == int(iid)).any():
      by_class[int(cls)].append(int(iid))
  if not by_class:
    return None
  classes = sorted(by_class)
  cls = classes[int(rng.integers(len(classes)))] if (train and rng is not None) else classes[0]
  bg_name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))] if (train and rng is not None) else "black"
  background = common.COLOR_NAMES[bg_name]
  masks = np.stack([inst == i for i in by_class[cls]])
  names = sample.get("class_names") or ()
  cls_name = names[cls] if cls < len(names) else f"class {cls}"
  colors = instance_colors(len(masks), background)
  if train and rng is not None:
    colors = colors[rng.permutation(len(colors))]
  instruction = common.pick(TEMPLATES, CANONICAL, rng, train).format(cls=cls_name, bg=bg_name)
  return common.TaskExample(
      task=NAME, instruction=instruction, inputs=[sample["image"]], target=encode(masks, background, colors),
      ground_truth={"masks": masks, "class": cls}, decode_args={"background": tuple(background)})


def visualize(prediction, ground_truth=None) -> np.ndarray:
  """[prediction | ground truth], each instance in its own colour on black."""
  def paint(masks):
    masks = np.asarray(masks, bool)
    return encode(masks, (0, 0, 0)) if len(masks) else None
  pred = paint(prediction["masks"])
  panels = [pred] if pred is not None else []
  if ground_truth is not None:
    panels.append(paint(_gt_masks(ground_truth)))
  panels = [p for p in panels if p is not None]
  if not panels:
    return np.zeros((8, 8, 3), np.uint8)
  gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
  return np.concatenate([x for p in panels for x in (p, gap)][:-1], 1)
