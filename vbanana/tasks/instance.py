"""Instance segmentation as an RGB image, one request per class.

Encoding: "paint each <class> a different solid colour on a <colour> background": every instance of that
class gets its own colour (well separated in CIELAB and far from the background), everything else the
background colour. The model picks the instance colours, so decoding does not know them: it clusters.
Decoding (the paper's algorithm, distances in 0-255 RGB units):
  1. background = pixels within 14 of the background colour;
  2. regions: 4-neighbours within 14 of each other join (connected components, vectorised; the paper's
     seeded flood fill is a Python loop per pixel), a region is split while some of its pixels lie over 28 from its mean;
  3. drop components under 0.02% of the image (and under 4 pixels); drop thin halos (a 3x3 erosion keeps
     under 10%); keep the 100 largest (COCO's cap);
  4. merge components whose mean colours are within 14 and whose union bounding box is at most 5x their
     summed areas (one object split by a highlight or an occluder).
Each mask's confidence is the share of its pixels within 14 of its mean colour (solid = confident).
Metrics: COCO-style mask AP (IoU 0.5:0.95) and panoptic PQ / SQ / RQ (IoU > 0.5 matches).
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

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


MIN_PIXELS = 4          # components smaller than this are noise at any resolution
MAX_INSTANCES = 100     # COCO's detection cap; also keeps a palette PNG of the ids possible


def _components(color: np.ndarray, foreground: np.ndarray, passes: int = 8) -> np.ndarray:
  """Labels (0 = none) of the graph joining 4-neighbours whose colours are within TOL.

  The paper grows each region from a seed with a Python flood fill, which takes minutes on a noisy
  output where every pixel is a seed. Connected components of the colour-similarity graph give the same
  regions on solid colours in one sparse call; since a slow colour ramp could chain two colours, each
  pass splits a region into the pixels within 2*TOL of its mean colour and the rest, and labels again.
  """
  h, w = foreground.shape
  index = np.arange(h * w).reshape(h, w)

  def label(group):
    rows, cols = [], []
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
      close = foreground[a] & (group[a] == group[b]) & (np.linalg.norm(color[a] - color[b], axis=-1) <= TOL)
      rows.append(index[a][close])
      cols.append(index[b][close])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(h * w, h * w))
    _, comp = csgraph.connected_components(graph, directed=False)
    comp = np.where(foreground, comp.reshape(h, w) + 1, 0)
    return np.unique(comp, return_inverse=True)[1].reshape(h, w) + (0 if (~foreground).any() else 1)

  group = np.zeros((h, w), np.int64)
  for _ in range(passes):
    labels = label(group)
    n = int(labels.max())
    if n == 0:
      return labels
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n + 1), 1).astype(np.float64)
    means = np.stack([np.bincount(labels.ravel(), color[..., c].ravel(), n + 1) for c in range(3)], -1)
    far = foreground & (np.linalg.norm(color - (means / counts[:, None])[labels], axis=-1) > 2 * TOL)
    if not far.any():
      break
    group = labels * 2 + far
  return labels


def _eroded_counts(labels: np.ndarray, n: int) -> np.ndarray:
  """Per label, the pixels whose 3x3 neighbourhood is all that label (a binary erosion of every mask)."""
  padded = np.pad(labels, 1)
  h, w = labels.shape
  inner = np.ones_like(labels, bool)
  for dy in range(3):
    for dx in range(3):
      inner &= padded[dy:dy + h, dx:dx + w] == labels
  return np.bincount(labels[inner].ravel(), minlength=n + 1)


def decode(rgb, background=(0, 0, 0), **_) -> dict:
  """uint8 RGB -> {'masks': (N, H, W) bool, 'scores': (N,)}; never raises on odd colours."""
  rgb = common.check_rgb(rgb, "instance.decode rgb")
  h, w, _ = rgb.shape
  color = rgb.astype(np.float32)
  foreground = np.linalg.norm(color - np.asarray(background, np.float32), axis=-1) > TOL
  labels = _components(color, foreground)
  n = int(labels.max())
  flat = labels.ravel()
  area = np.bincount(flat, minlength=n + 1)
  eroded = _eroded_counts(labels, n)
  min_area = max(MIN_PIXELS, int(np.ceil(0.0002 * h * w)))
  keep = (area >= min_area) & ~((area >= 40) & (eroded < 0.1 * area))  # small or thin halo: drop
  keep[0] = False
  ids = np.nonzero(keep)[0]
  ids = ids[np.argsort(-area[ids], kind="stable")][:MAX_INSTANCES]
  comps = []
  for k in ids:
    ys, xs = np.nonzero(labels == k)
    comps.append({"ids": [int(k)], "area": int(area[k]), "mean": color[ys, xs].mean(0),
                  "box": np.array([ys.min(), ys.max(), xs.min(), xs.max()])})
  merged = True
  while merged:  # merge one pair at a time until nothing changes (at most MAX_INSTANCES components)
    merged = False
    for i in range(len(comps)):
      for j in range(i + 1, len(comps)):
        a, b = comps[i], comps[j]
        if np.linalg.norm(a["mean"] - b["mean"]) > TOL:
          continue
        box = np.array([min(a["box"][0], b["box"][0]), max(a["box"][1], b["box"][1]),
                        min(a["box"][2], b["box"][2]), max(a["box"][3], b["box"][3])])
        if (box[1] - box[0] + 1) * (box[3] - box[2] + 1) <= 5 * (a["area"] + b["area"]):
          total = a["area"] + b["area"]
          comps[i] = {"ids": a["ids"] + b["ids"], "area": total, "box": box,
                      "mean": (a["mean"] * a["area"] + b["mean"] * b["area"]) / total}
          del comps[j]
          merged = True
          break
      if merged:
        break
  masks = np.stack([np.isin(labels, c["ids"]) for c in comps]) if comps else np.zeros((0, h, w), bool)
  scores = np.array([np.mean(np.linalg.norm(color[m] - c["mean"], axis=-1) <= TOL) for m, c in zip(masks, comps)],
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
