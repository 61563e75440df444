"""Instance segmentation as an RGB image, one request per class.

Encoding: "paint each <class> a different solid colour on a <colour> background" (background black, white or
gray): instance k of that class is painted in colors[k], everything else (other classes too) in the
background colour. The colours are `instance_colors(n, background)`: farthest-point picks in CIELAB from the
6-level RGB lattice, starting far from the background; training shuffles them, so the model learns that any
well-separated colours will do. Decoding therefore does not know the colours: it clusters. The paper's
algorithm, made robust to what a generator writes (noise, colour drift, blended edges); colour distances are
Euclidean in 0-255 RGB, TOL = 14:
  0. denoise: two passes of a range-limited mean (each pixel -> the mean of the pixels of its 5x5 window
     within 2 * TOL of its current estimate; exact codes pass unchanged, edges between code colours stay);
  1. background = pixels within TOL of the background colour as drawn: the requested colour moved to the
     mean of the pixels within 2 * TOL of it (global drift), and that mean taken over an 11x11 window
     (drift across the image); the rest is foreground;
  2. regions: 4-neighbouring foreground pixels within TOL of each other join (connected components of that
     graph, vectorised; the paper grows regions from seeds with a per-pixel flood fill). As a chain of small
     steps could join two colours, a region is split while some of its pixels lie over 2 * TOL from its mean
     colour (those pixels and the rest are relabelled apart, up to 8 passes);
  3. drop components under max(4 pixels, 0.02% of the image); drop thin halos, components of 40 pixels or
     more whose 3x3 erosion keeps under 10% of them (a ring of in-between colours around an object); drop
     blended rims, thin components of any size whose mean colour lies within TOL of the segment between the
     colours of two labels (background included) within 2 pixels, 10-90% of the way along; keep the 100
     largest (COCO's cap);
  4. merge, one pair at a time until nothing changes, components whose mean colours are within TOL and
     whose union bounding box is at most 5x their summed areas (one object split by a highlight or an
     occluder);
  5. the dropped pixels are not lost: up to 4 rounds, each joins the neighbouring (8-neighbourhood) label,
     a kept component or the background, nearest in denoised colour; what no label reaches is background.
     Then every boundary pixel takes, of its own and its neighbours' labels, the one nearest in its colour as
     written. A blurred edge's in-between pixels so go to the side they are nearer: a straight edge comes
     back exactly, a convex corner (4/9 of its 3x3 window inside) is lost.
Each mask's confidence is the share of its pixels whose denoised colour is within TOL of its colour (the
mean of its component) and over 2 * TOL from the background: 1 for a solid mask, lower where the rim was
in-between colours, near 0 for a speck of noise around the background colour. Any image decodes (at most 100
masks, masks under the size floor dropped); exact codes decode exactly, except pieces of an instance under 4
pixels that touch no pixel of it, not even diagonally, and thin rings (step 3's halos: a frame of 40 pixels or
more, 1-2 pixels wide, is taken for the rim of an object).
Metrics (`Accumulator`, pooled over all requests of the split): COCO-style mask AP (predictions ranked by
confidence, greedy matching at IoU 0.5:0.05:0.95, 101-point interpolated precision), AP50, AP75, and panoptic
PQ = SQ * RQ with matches at IoU > 0.5 (SQ: mean matched IoU; RQ = TP / (TP + FP/2 + FN/2)).
"""

from __future__ import annotations

import collections

import numpy as np
from scipy import ndimage, sparse
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
HEADLINE = ("ap",)


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
HALO_PIXELS = 40        # the thin-halo rule looks at components from this size up
THIN = 0.1              # thin: a 3x3 erosion keeps under this share of the component
DENOISE_WINDOW = 5      # the edge-preserving denoise: window (pixels) and passes
DENOISE_PASSES = 2
BACKGROUND_WINDOW = 11  # the local background colour: mean of background-like pixels in this window
BLEND_REACH = 2         # a rim's two source colours lie within this many pixels of it (3x3 blur: 1-2)
BLEND_SPAN = 0.1        # a rim's colour lies between 10% and 90% of the way from one source to the other
GROW_ROUNDS = 4         # leftover pixels further than this from every kept label become background
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))


def _denoise(color: np.ndarray) -> np.ndarray:
  """An edge-preserving denoise (a range-limited mean, i.e. two mean-shift steps in colour).

  Each pass replaces every pixel by the mean of the original pixels in its 5x5 window whose colour is within
  2 * TOL of the pixel's current estimate. On an exact code every neighbour is either the same colour or a
  code colour far away, so nothing changes; under noise a solid region averages ~25 samples (noise / 5),
  while a neighbour of another instance colour stays out of the mean, so edges stay where they were.
  """
  h, w, _ = color.shape
  r = DENOISE_WINDOW // 2
  src = np.pad(color, ((r, r), (r, r), (0, 0)), mode="edge").transpose(2, 0, 1).copy()  # channels first
  est = src[:, r:r + h, r:r + w]
  for _ in range(DENOISE_PASSES):
    total = np.zeros((3, h, w), color.dtype)
    count = np.zeros((h, w), color.dtype)
    for dy in range(DENOISE_WINDOW):
      for dx in range(DENOISE_WINDOW):
        q = src[:, dy:dy + h, dx:dx + w]
        diff = q - est
        dist2 = diff[0] * diff[0] + diff[1] * diff[1] + diff[2] * diff[2]
        near = (dist2 <= (2 * TOL) ** 2).astype(color.dtype)
        total += q * near
        count += near
    est = total / count  # the pixel itself is always near its first estimate, so count >= 1
  return np.ascontiguousarray(est.transpose(1, 2, 0))


def _background(color: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(background mask, the background colour as drawn, a per-pixel local background colour).

  The colour as drawn: starting from the requested one, the mean of the (denoised) pixels within 2 * TOL of
  it, three times, if at least 5% of the image is that close (a generator drifts colours; clipped noise
  on black averages above black). Its local version: the mean of those pixels in an 11x11 window, for a
  background whose colour drifts across the image. Background: within TOL of the local colour (the
  paper's rule) and within 2 * TOL of the drawn one.
  """
  flat = color.reshape(-1, 3).astype(np.float64)
  drawn = background.astype(np.float64)
  for _ in range(3):
    near = np.sum((flat - drawn) ** 2, -1) <= (2 * TOL) ** 2
    if near.mean() < 0.05:
      break
    drawn = flat[near].mean(0)
  near = np.linalg.norm(color - drawn, axis=-1) <= 2 * TOL
  count = ndimage.uniform_filter(near.astype(np.float64), BACKGROUND_WINDOW, mode="nearest")
  local = np.stack([ndimage.uniform_filter(np.where(near, color[..., c], 0.0), BACKGROUND_WINDOW,
                                           mode="nearest") for c in range(3)], -1)
  local = np.where(count[..., None] > 1e-6, local / np.maximum(count, 1e-6)[..., None], drawn)
  return near & (np.linalg.norm(color - local, axis=-1) <= TOL), drawn, local


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
      close = (foreground[a] & foreground[b] & (group[a] == group[b])
               & (np.linalg.norm(color[a] - color[b], axis=-1) <= TOL))
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
    far = foreground & (np.linalg.norm(color - _means(labels, color, n)[labels], axis=-1) > 2 * TOL)
    if not far.any():
      break
    group = labels * 2 + far
  return labels


def _means(labels: np.ndarray, color: np.ndarray, n: int) -> np.ndarray:
  """(n + 1, 3) mean colour of every label 0..n (0 for an empty label)."""
  counts = np.maximum(np.bincount(labels.ravel(), minlength=n + 1), 1).astype(np.float64)
  sums = np.stack([np.bincount(labels.ravel(), color[..., c].ravel(), n + 1) for c in range(3)], -1)
  return sums / counts[:, None]


def _eroded_counts(labels: np.ndarray, n: int) -> np.ndarray:
  """Per label, the pixels whose 3x3 neighbourhood is all that label (a binary erosion of every mask)."""
  padded = np.pad(labels, 1)
  h, w = labels.shape
  inner = np.ones_like(labels, bool)
  for dy in range(3):
    for dx in range(3):
      inner &= padded[dy:dy + h, dx:dx + w] == labels
  return np.bincount(labels[inner].ravel(), minlength=n + 1)


def _blended_rims(labels: np.ndarray, means: np.ndarray, candidates: np.ndarray) -> np.ndarray:
  """Which candidate labels are rims of blended colours: a mean colour within TOL of the segment between the
  colours of two labels (background included) within BLEND_REACH pixels, 10-90% of the way along it.

  A blur (or a generator's soft edge) turns the edge between colours a and b into pixels of in-between
  colours, which the TOL rule groups into thin strips of their own; a thin real instance of its own colour
  is not between two neighbours, so it stays.
  """
  n = len(means) - 1
  out = np.zeros(n + 1, bool)
  if not candidates.any():
    return out
  r = BLEND_REACH
  padded = np.pad(labels, r, constant_values=-1)
  ys, xs = np.nonzero(candidates[labels])
  own = labels[ys, xs].astype(np.int64)
  # (candidate, label near it) pairs coded as c * (n + 1) + near; the background is always near
  pairs = [np.flatnonzero(candidates).astype(np.int64) * (n + 1)]
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      other = padded[ys + r + dy, xs + r + dx]
      ok = (other >= 0) & (other != own)
      pairs.append(own[ok] * (n + 1) + other[ok])
  cand, near = np.divmod(np.unique(np.concatenate(pairs)), n + 1)  # sorted by candidate
  starts = np.flatnonzero(np.diff(cand)) + 1
  for c, group in zip(cand[np.r_[0, starts]], np.split(near, starts)):
    pts = means[group]
    a, ab = pts[:, None, :], pts[None, :, :] - pts[:, None, :]
    length2 = np.sum(ab * ab, -1)
    t = np.sum((means[c] - a) * ab, -1) / np.maximum(length2, 1e-9)
    off = np.linalg.norm(means[c] - a - t[..., None] * ab, axis=-1)
    out[c] = bool(np.any((length2 > 0) & (t >= BLEND_SPAN) & (t <= 1 - BLEND_SPAN) & (off <= TOL)))
  return out


def _merge(comps: list[dict]) -> list[dict]:
  """Merge, one pair at a time until nothing changes, components whose mean colours are within TOL and whose
  union bounding box is at most 5x their summed areas (at most MAX_INSTANCES components)."""
  merged = True
  while merged:
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
  return comps


def _nearest_label(lab, color, colors, bg_local, ys, xs, include_self):
  """At pixels (ys, xs): of the labels (>= 0) of the pixel itself (if include_self) and of its 8 neighbours,
  the one whose colour (colors[label]; label 0, the background: bg_local there) is nearest the pixel's
  colour; -1 where there is none."""
  padded = np.pad(lab, 1, constant_values=-1)
  c, bg_here = color[ys, xs], bg_local[ys, xs]
  colors = colors.astype(np.float32)

  def dist2(label):
    ref = colors[np.maximum(label, 0)]
    ref[label == 0] = bg_here[label == 0]
    d = np.einsum("ij,ij->i", c - ref, c - ref)
    d[label < 0] = np.inf
    return d

  best = lab[ys, xs].copy() if include_self else np.full(len(ys), -1, lab.dtype)
  best_d = dist2(best)
  for dy, dx in _NEIGHBOURS:
    cand = padded[ys + 1 + dy, xs + 1 + dx]
    d = dist2(cand)
    better = d < best_d
    best[better], best_d[better] = cand[better], d[better]
  return best


def decode(rgb, background=(0, 0, 0), **_) -> dict:
  """uint8 RGB -> {'masks': (N, H, W) bool, 'scores': (N,)}; never raises on odd colours."""
  rgb = common.check_rgb(rgb, "instance.decode rgb")
  h, w, _ = rgb.shape
  raw = rgb.astype(np.float32)
  color = _denoise(raw)
  is_bg, bg_color, bg_local = _background(color, np.asarray(background, np.float32))
  bg_local = bg_local.astype(np.float32)
  labels = _components(color, ~is_bg)
  n = int(labels.max())
  area = np.bincount(labels.ravel(), minlength=n + 1)
  eroded = _eroded_counts(labels, n)
  means = _means(labels, color, n)
  means[0] = bg_color
  min_area = max(MIN_PIXELS, int(np.ceil(0.0002 * h * w)))
  thin = eroded < THIN * area
  keep = (area >= min_area) & ~((area >= HALO_PIXELS) & thin)  # small or thin halo: drop
  keep[0] = False
  keep &= ~_blended_rims(labels, means, keep & thin)
  ids = np.nonzero(keep)[0]
  ids = ids[np.argsort(-area[ids], kind="stable")][:MAX_INSTANCES]
  order = np.zeros(n + 1, np.int64)
  order[ids] = np.arange(1, len(ids) + 1)
  boxes = ndimage.find_objects(order[labels], len(ids))  # boxes[i]: the bounding box of ids[i]
  comps = [{"ids": [int(k)], "area": int(area[k]), "mean": means[k],
            "box": np.array([b[0].start, b[0].stop - 1, b[1].start, b[1].stop - 1])}
           for k, b in zip(ids, boxes)]
  comps = _merge(comps)
  if not comps:
    return {"masks": np.zeros((0, h, w), bool), "scores": np.zeros((0,), np.float32)}
  # Every pixel gets a label: 0 background, k = comps[k - 1], -1 not yet decided (dropped pieces: specks,
  # halos, blended rims, pixels cut off by the 2 * TOL split).
  lut = np.full(n + 1, -1, np.int64)
  for k, c in enumerate(comps):
    lut[c["ids"]] = k + 1
  lab = np.where(is_bg, 0, lut[labels])
  colors = np.concatenate([bg_color[None], np.stack([c["mean"] for c in comps])])
  for _ in range(GROW_ROUNDS):  # leftovers join the neighbouring label nearest in (denoised) colour
    ys, xs = np.nonzero(lab < 0)
    best = _nearest_label(lab, color, colors, bg_local, ys, xs, include_self=False)
    if not (best >= 0).any():
      break
    lab[ys[best >= 0], xs[best >= 0]] = best[best >= 0]
  lab[lab < 0] = 0
  edge = np.zeros((h, w), bool)  # one pass on the boundaries, in the colours as written
  edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
  edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
  edge[1:] |= lab[1:] != lab[:-1]
  edge[:-1] |= lab[1:] != lab[:-1]
  ys, xs = np.nonzero(edge)
  lab[ys, xs] = _nearest_label(lab, raw, colors, bg_local, ys, xs, include_self=True)
  # confidence: the share of the mask's pixels within TOL of its colour and clear of the background
  solid = ((np.linalg.norm(color - colors[lab], axis=-1) <= TOL)
           & (np.linalg.norm(color - bg_local, axis=-1) > 2 * TOL))
  sizes = np.bincount(lab.ravel(), minlength=len(colors))
  scores = (np.bincount(lab[solid], minlength=len(colors)) / np.maximum(sizes, 1)).astype(np.float32)
  big = np.flatnonzero(sizes[1:] >= min_area) + 1
  return {"masks": lab[None] == big[:, None, None], "scores": scores[big]}


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
  bg_name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))] if common.random_colours(rng, train) else "black"
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


def request(prompt: str | None = None, background: str = "black") -> common.Request:
  """Every object of the class `prompt` names in its own colour on `background` (the evaluation's black);
  `decode` returns {'masks': bool (N, H, W), 'scores': float (N,)}."""
  if not (prompt or "").strip():
    raise ValueError("instance: the request needs the class to segment, e.g. 'sphere'")
  return common.Request(CANONICAL.format(cls=prompt.strip(), bg=background),
                        {"background": tuple(int(v) for v in common.COLOR_NAMES[background])})


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
