"""Each benchmark's scoring protocol in one table, and the pure NumPy functions that apply it.

Why a table: the numbers a benchmark is compared on depend on constants that live in no dataset file (the
Eigen crop, a depth cap, which pixels count), and a paper's number is only comparable when they match.
Every constant below names where it comes from. The paper itself fixes the metrics (delta1, AbsRel without
any alignment, "no camera intrinsics at inference"; mean / median angular error; mIoU; cIoU / gIoU) but no
crops or caps: those are each dataset's published conventions, as the counterparts it compares with use them.

Crops are fractions of the image, (top, bottom, left, right), applied as row int(top * H) to int(bottom * H),
likewise columns (`crop_mask`), the way every peer applies the KITTI crops: int() of the published float
fraction times the size, with no rounding help (0.99189189 * 370 = 366.99999 gives row 366, as in Marigold,
ZoeDepth, UniDepth and monodepth2). A box given in a dataset's native pixels (NYU's 480 x 640) is stored as
exact fractions (`fractions.Fraction`), so it gives its own rows at the native size (471 / 480 * 480 = 471
exactly) and scales to any other size. Every score is taken at the ground truth's own resolution:
`to_gt_size` brings the decoded prediction there first (bilinear for depth and normals, nearest for masks).

The choices on which the peers' evaluators split are `vbanana.bench.options`; `depth_protocol` applies them.
"""

from __future__ import annotations

import dataclasses
import fractions

import numpy as np

from vbanana.bench import options as options_lib
from vbanana.tasks import depth as depth_task
from vbanana.tasks import normals as normals_task


@dataclasses.dataclass(frozen=True)
class DepthProtocol:
  """Which ground-truth pixels a depth benchmark scores: inside `crop`, min_depth < d and d <= max_depth
  (d < max_depth when `cap` is 'lt'), finite, and inside the dataset's own validity mask (the reader supplies
  it); `clip` / `affine_clip` 'range' clip the metric / affine-aligned prediction to [min_depth, max_depth]."""
  crop: tuple | None
  min_depth: float
  max_depth: float | None
  source: str
  cap: str = "le"          # options.depth_cap
  clip: str = "off"        # options.depth_clip
  affine_clip: str = "off"  # options.affine_clip

  def describe(self) -> str:
    crop = "no crop" if self.crop is None else "crop (t, b, l, r) = " + ", ".join(
        f"{float(v):.4f}" for v in self.crop)
    cap = "no cap" if self.max_depth is None else f"{'<=' if self.cap == 'le' else '<'} {self.max_depth:g} m"
    clip = ", predictions clipped to that range" if self.clip == "range" else ""
    return f"{crop}; {self.min_depth:g} m < depth {cap}{clip}"


def box_to_fractions(box, native_hw) -> tuple:
  """A crop box (top, bottom, left, right) in native pixels -> exact fractions of the native (H, W)."""
  (t, b, l, r), (h, w) = box, native_hw
  return tuple(fractions.Fraction(int(a), int(n)) for a, n in ((t, h), (b, h), (l, w), (r, w)))


# Eigen crop of NYU Depth v2 (Eigen et al., NeurIPS 2014; the box every NYUv2 depth benchmark uses): rows
# 45..470 and columns 41..600 of the 480 x 640 frames, i.e. [45:471, 41:601].
NYU_EIGEN_BOX, NYU_NATIVE = (45, 471, 41, 601), (480, 640)
# Garg crop of KITTI (Garg et al., ECCV 2016), published as fractions of the image: the same box
# vbanana.tasks.depth.EIGEN_CROP holds (that module names it after the Eigen split it is used with).
KITTI_GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
# Eigen's KITTI crop (Eigen et al. 2014), as ZoeDepth and Marigold spell its fractions.
KITTI_EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
# The KITTI depth benchmark's frame (Uhrig et al. 2017): the bottom 352 rows and the middle 1216 columns,
# top = H - 352, left = int((W - 1216) / 2), as ZoeDepth, Marigold and UniDepth crop raw frames
# (options.kitti_crop).
KITTI_BENCHMARK_HW = (352, 1216)


def kitti_benchmark_box(shape_hw) -> tuple[int, int, int, int]:
  """(top, bottom, left, right) rows / columns of the 352 x 1216 KITTI-benchmark crop of a raw frame."""
  h, w = shape_hw
  kh, kw = KITTI_BENCHMARK_HW
  if h < kh or w < kw:
    raise ValueError(f"a {h} x {w} KITTI frame is smaller than the {kh} x {kw} benchmark crop")
  top, left = h - kh, int((w - kw) / 2)
  return top, top + kh, left, left + kw

# nuScenes (Caesar et al. 2020): the paper names the dataset (Table 3) but no split, cameras or range. Depth
# Anything 3 reports no nuScenes number; the zero-shot methods Table 3 compares with on it (UniDepth / UniK3D)
# load nuScenes with max_depth 80 m and its val split in groups of the six cameras of a key frame (UniDepth's
# unidepth/datasets/nuscenes.py). Points nearer than 1 m (the ego vehicle itself) are dropped, the default
# min_dist of the devkit's map_pointcloud_to_image.
NUSCENES_MIN_DIST, NUSCENES_MAX_DEPTH = 1.0, 80.0
NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")

DEPTH = {
    "nyu": DepthProtocol(box_to_fractions(NYU_EIGEN_BOX, NYU_NATIVE), 1e-3, 10.0,
                         "Eigen crop [45:471, 41:601] of 480x640 and the 10 m cap (Eigen et al. 2014; the NYUv2 "
                         "convention); 0 = no measurement"),
    "kitti": DepthProtocol(KITTI_GARG_CROP, 1e-3, 80.0,
                           "Garg crop (Garg et al. 2016) and the 80 m cap of the KITTI Eigen-split convention; "
                           "annotated depth 0 = no measurement (Uhrig et al. 2017)"),
    "eth3d": DepthProtocol(None, 1e-3, None,
                           "ETH3D's own validity: pixels without laser depth are stored as inf; no crop, no cap"),
    "diode_indoor": DepthProtocol(None, 0.6, 350.0,
                                  "DIODE's depth_mask and its scanner's range 0.6-350 m (Vasiljevic et al. 2019)"),
    "ibims1": DepthProtocol(None, 1e-3, 10.0,
                            "iBims-1's mask_invalid and mask_transp (Koch et al. 2018); a 10 m indoor cap without "
                            "crop (an assumption: the paper states none; option ibims picks ZoeDepth's or "
                            "UniDepth's)"),
    "nuscenes": DepthProtocol(None, NUSCENES_MIN_DIST, NUSCENES_MAX_DEPTH,
                              "LIDAR_TOP key-frame sweep projected into each camera (nuScenes devkit transforms; "
                              "points nearer than 1 m dropped as the devkit's map_pointcloud_to_image does, the "
                              "nearest point per pixel); the six cameras and the 80 m cap of UniDepth's nuScenes loader "
                              "(an assumption: the paper states none)"),
}

# iBims-1 as the two peers score it (options.ibims): ZoeDepth applies NYU's Eigen box to iBims' 480 x 640
# frames with 0 < d < 10 m; UniDepth takes the whole frame with 0.005 < d < 25 m.
IBIMS = {
    "cap10": DEPTH["ibims1"],
    "zoedepth": DepthProtocol(box_to_fractions(NYU_EIGEN_BOX, NYU_NATIVE), 0.0, 10.0,
                              "iBims-1's masks; NYU's Eigen crop [45:471, 41:601] and 0 < d, cap 10 m (ZoeDepth's "
                              "ibims config)"),
    "unidepth": DepthProtocol(None, 0.005, 25.0,
                              "iBims-1's masks; no crop, 0.005 m < d, cap 25 m (UniDepth's IBims dataset)"),
}
KITTI_CROPS = {"garg": KITTI_GARG_CROP, "kb_garg": KITTI_GARG_CROP, "kb_eigen": KITTI_EIGEN_CROP, "none": None}


def depth_protocol(name: str, opts=None) -> DepthProtocol:
  """DEPTH[name] with the options (vbanana.bench.options) applied: the KITTI crop, the iBims-1 variant, the cap's
  comparison and the clipping of predictions. The KITTI-benchmark crop itself is cut by the reader
  (readers.kitti), so the crop here is the one taken inside that 352 x 1216 frame."""
  opts = options_lib.Options() if opts is None else opts
  p = DEPTH[name]
  if name == "kitti":
    crop = KITTI_CROPS[opts.kitti_crop]
    first = "" if not opts.kitti_crop.startswith("kb_") else "the 352 x 1216 KITTI-benchmark crop, then "
    what = {"garg": "the Garg crop (Garg et al. 2016)", "kb_garg": "the Garg crop", "kb_eigen": "the Eigen crop",
            "none": "no crop"}[opts.kitti_crop]
    p = dataclasses.replace(p, crop=crop, source=f"{first}{what} and the 80 m cap of the KITTI Eigen-split "
                                                 "convention; annotated depth 0 = no measurement (Uhrig et al. 2017)")
  elif name == "ibims1":
    p = IBIMS[opts.ibims]
  return dataclasses.replace(p, cap=opts.depth_cap, clip=opts.depth_clip, affine_clip=opts.affine_clip)


@dataclasses.dataclass(frozen=True)
class NormalsProtocol:
  """How a normals benchmark's ground truth is read into vbanana's frame (+x right, +y up, +z to the viewer).

  `flip` multiplies (x, y, z) of the dataset's vectors; (1, 1, 1) means the dataset already uses our frame."""
  flip: tuple[int, int, int]
  source: str

  def describe(self) -> str:
    axes = ["x", "y", "z"]
    flips = [a for a, f in zip(axes, self.flip) if f < 0]
    return "same frame as ours" if not flips else f"flip {', '.join(flips)} into ours"


# The DSINE evaluation sets (Bae and Davison 2024; also used by StableNormal and Lotus): normals stored as PNG,
# n = rgb / 255 * 2 - 1 (8-bit: nyuv2, scannet) or rgb / 65535 * 2 - 1 (16-bit: vkitti), valid where rgb != 0.
# Their frame is the negated OpenCV frame: DSINE's depth-to-normal code (utils/d2n) turns every normal to
# point away from the camera (n . p > 0 for the OpenCV point p: x right, y down, z forward), and its model's
# ray-ReLU output layer enforces the same. So the stored n is minus the outward normal in OpenCV axes:
# x points left, y up, z towards the viewer. Ours is x right, y up, z towards the viewer: y and z agree (a floor
# is +y, a wall facing the camera +z) and x is reversed (a wall on the left of the image, facing right, is
# stored as rgb (0, 128, 128), n = (-1, 0, 0), and is (1, 0, 0) here).
DSINE_FRAME = NormalsProtocol((-1, 1, 1), "DSINE eval sets: x left, y up, z towards the viewer (d2n's normals "
                                          "point away from the camera)")
# DIODE's *_normal.npy: zero vectors where invalid. DIODE does not state its axes in the files we read;
# taken as the frame of its depth (OpenCV: x right, y down, z into the scene) and converted by flipping y
# and z. Unverified against a published statement: check a floor decodes to +y before trusting the number.
DIODE_FRAME = NormalsProtocol(tuple(int(v) for v in normals_task.CONVENTIONS["opencv"]),
                              "DIODE normal maps, taken as OpenCV axes (x right, y down, z forward): flip y, z "
                              "(unverified)")
NORMALS = {"nyuv2": DSINE_FRAME, "scannet": DSINE_FRAME, "vkitti": DSINE_FRAME, "diode_indoor": DIODE_FRAME}


def to_our_frame(normals: np.ndarray, protocol: NormalsProtocol) -> np.ndarray:
  """A dataset's (H, W, 3) normals in vbanana's frame (+x right, +y up, +z towards the viewer)."""
  return np.asarray(normals, np.float32) * np.asarray(protocol.flip, np.float32)


# ------------------------------------------------------------------------------------------------------------
# Pure functions.
# ------------------------------------------------------------------------------------------------------------
def crop_mask(shape_hw, crop) -> np.ndarray:
  """Boolean (H, W): True inside the fractional crop (top, bottom, left, right); all True for no crop. Edges
  are int(fraction * size), floats as the peers take them, Fractions exactly."""
  h, w = shape_hw
  mask = np.zeros((h, w), bool)
  if crop is None:
    mask[:] = True
    return mask
  t, b, l, r = crop
  mask[int(t * h):int(b * h), int(l * w):int(r * w)] = True
  return mask


def depth_valid(gt: np.ndarray, protocol: DepthProtocol, dataset_valid: np.ndarray | None = None) -> np.ndarray:
  """The pixels a depth benchmark scores (see DepthProtocol)."""
  gt = np.asarray(gt, np.float64)
  ok = np.isfinite(gt) & (gt > protocol.min_depth) & crop_mask(gt.shape, protocol.crop)
  if protocol.max_depth is not None:
    ok &= (gt <= protocol.max_depth) if protocol.cap == "le" else (gt < protocol.max_depth)
  if dataset_valid is not None:
    ok &= np.asarray(dataset_valid, bool)
  return ok


def _clip_to_range(depth: np.ndarray, protocol: DepthProtocol) -> np.ndarray:
  return np.clip(depth, protocol.min_depth, np.inf if protocol.max_depth is None else protocol.max_depth)


def depth_scores(pred: np.ndarray, gt: np.ndarray, protocol: DepthProtocol,
                 dataset_valid: np.ndarray | None = None) -> dict[str, float]:
  """One image's depth metrics at the ground truth's resolution: metric (no alignment, the paper's setting)
  and `affine_*` after a least-squares scale and shift on the valid pixels (vbanana.tasks.depth.metrics).
  With `clip` 'range' the metric prediction is clipped to the benchmark's range first (ZoeDepth); with
  `affine_clip` 'range' the aligned one is, after the alignment (Marigold)."""
  valid = depth_valid(gt, protocol, dataset_valid)
  gt = np.where(valid, np.asarray(gt, np.float64), 0.0)  # inf / NaN outside the mask never reach a metric
  pred = np.asarray(pred, np.float64)
  truth = {"depth": gt, "valid": valid}
  out = depth_task.metrics(_clip_to_range(pred, protocol) if protocol.clip == "range" else pred, truth,
                           min_depth=0.0, max_depth=None, crop=None)
  if out and (protocol.clip == "range" or protocol.affine_clip == "range"):
    aligned = depth_task.align(pred, gt, valid & np.isfinite(pred))  # from the prediction as the model made it
    if protocol.affine_clip == "range":
      aligned = _clip_to_range(aligned, protocol)
    scored = depth_task.metrics(aligned, truth, min_depth=0.0, max_depth=None, crop=None)
    out.update({f"affine_{k}": v for k, v in scored.items() if not k.startswith("affine_")})
  return out


def resize_corners(values: np.ndarray, gt_hw) -> np.ndarray:
  """Bilinear resize with the corner pixels aligned (torch's align_corners=True): output pixel i samples the
  input at i * (n_in - 1) / (n_out - 1), so the first and last pixels keep their values exactly."""
  values = np.asarray(values, np.float64)
  out = values
  for axis, n_out in enumerate(gt_hw):
    n_in = out.shape[axis]
    x = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.clip(np.floor(x).astype(np.int64), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    wt = (x - lo).reshape((-1,) + (1,) * (out.ndim - axis - 1))
    out = np.take(out, lo, axis) * (1 - wt) + np.take(out, hi, axis) * wt
  return out.astype(np.float32)


def to_gt_size(values: np.ndarray, gt_hw, nearest: bool = False, resize: str = "half_pixel") -> np.ndarray:
  """A decoded prediction at the ground truth's (H, W): bilinear for depth / normals (`resize`: 'half_pixel'
  = align_corners False, 'corners' = True; options.resize), nearest for masks."""
  from vbanana.predict import resize_values  # pylint: disable=g-import-not-at-top
  values = np.asarray(values)
  if values.dtype == bool:
    return resize_values(values.astype(np.int32), tuple(gt_hw), nearest=True).astype(bool)
  if not nearest and resize == "corners" and values.shape[:2] != tuple(gt_hw):
    return resize_corners(values, tuple(gt_hw))
  return resize_values(values, tuple(gt_hw), nearest=nearest)


class MeanOfImages:
  """Dataset depth numbers the way the depth benchmarks define them: the mean of per-image metrics (an
  image with no valid pixel is not counted)."""

  def __init__(self):
    self.sums, self.count = {}, 0

  def update(self, scores: dict[str, float]) -> None:
    if scores:
      self.count += 1
      for k, v in scores.items():
        self.sums[k] = self.sums.get(k, 0.0) + v

  def result(self) -> dict[str, float]:
    return {k: v / self.count for k, v in self.sums.items()} if self.count else {}


# ------------------------------------------------------------------------------------------------------------
# nuScenes: LiDAR into the camera, with the devkit's chain of poses.
# ------------------------------------------------------------------------------------------------------------
def quaternion_matrix(q) -> np.ndarray:
  """The 3x3 rotation of a unit quaternion (w, x, y, z), the order nuScenes' tables store."""
  w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                   [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                   [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def lidar_to_camera(points: np.ndarray, lidar_sensor: dict, lidar_ego: dict, cam_ego: dict,
                    cam_sensor: dict) -> np.ndarray:
  """(N, 3) points of a LiDAR sweep -> the camera's frame (x right, y down, z forward), through the ego pose at
  the LiDAR's time, the global frame and the ego pose at the camera's time: the two are ~tens of ms apart and
  the car moves in between. Each pose is a table record with 'translation' and 'rotation' (w, x, y, z)."""
  p = np.asarray(points, np.float64)
  for pose in (lidar_sensor, lidar_ego):  # sensor -> ego (LiDAR time) -> global
    p = p @ quaternion_matrix(pose["rotation"]).T + np.asarray(pose["translation"], np.float64)
  for pose in (cam_ego, cam_sensor):      # global -> ego (camera time) -> camera
    p = (p - np.asarray(pose["translation"], np.float64)) @ quaternion_matrix(pose["rotation"])
  return p


def project_depth(points_cam: np.ndarray, intrinsic, shape_hw, min_depth: float = NUSCENES_MIN_DIST,
                  points: str = "devkit") -> np.ndarray:
  """A sparse (H, W) depth map (metres, 0 = no point) from points in the camera frame: points with z >
  min_depth whose projection (u, v) = K p / z lands inside the image, in pixel (floor(v), floor(u)), the
  nearest point kept where several land on one pixel. Depth is z (distance to the camera plane), as the devkit
  takes it. `points` (options.nuscenes_points): 'devkit' keeps 1 < u < W - 1 and 1 < v < H - 1, the margin of
  the devkit's map_pointcloud_to_image; 'all' keeps 0 <= u < W and 0 <= v < H."""
  h, w = shape_hw
  p = np.asarray(points_cam, np.float64)
  p = p[p[:, 2] > min_depth]
  uvw = p @ np.asarray(intrinsic, np.float64).T
  u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
  if points == "devkit":
    inside = (u > 1) & (u < w - 1) & (v > 1) & (v < h - 1)
  else:
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
  rows, cols, z = np.floor(v[inside]).astype(np.int64), np.floor(u[inside]).astype(np.int64), p[inside, 2]
  depth = np.full((h, w), np.inf)
  np.minimum.at(depth, (rows, cols), z)
  return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------------------
# SA-Co/Gold: positive micro F1 (SAM 3, Carion et al. 2025).
# ------------------------------------------------------------------------------------------------------------
# SAM 3 paper, section "Metrics": only predictions with confidence above 0.5 are evaluated; localization is
# positive micro F1 on the (image, noun phrase) pairs with at least one ground-truth mask; on SA-Co/Gold each
# pair has three annotations and the score is the oracle's (the best of the three per pair). The official
# evaluator (facebookresearch/sam3, sam3/eval/cgf1_eval.py) fixes the rest: masks scored >= 0.5 kept; one
# Hungarian matching per pair maximising the summed IoU, a matched pair a TP at IoU threshold t when its IoU
# >= t; TP, FP, FN summed over the positive pairs; F1 per threshold, averaged over t = 0.5:0.05:0.95; the
# oracle keeps per pair the annotation with the best mean local F1 (a pair empty in both beats any other);
# only pairs `is_instance_exhaustive` in every annotation; crowd ground truth is ignored (COCOeval). The
# evaluator adds 1e-4 to denominators: precision TP / (TP + FP + 1e-4), recall TP / (TP + FN + 1e-4), local
# F1 2 P R / (P + R + 1e-4). The oracle's choice uses exactly that local F1 (`sam3_local_f1`), because the 1e-4
# also breaks exact ties (2/3 with one match against 2/3 with two): the annotation with more matches wins,
# and a later annotation replaces the kept one only when strictly better. The reported numbers are exact,
# F1 = 2 TP / (2 TP + FP + FN), so a perfect answer is 1 (SAM 3's reads 0.9999).
SACO_SCORE_THRESHOLD = 0.5
SACO_EPS = 1e-4
SACO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
SACO_QUERIES, SACO_SEED = 500, 0  # the paper's "500 random queries"; its seed and subset are not published


def mask_ious(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """(P, G) IoU of boolean masks (P, H, W) and (G, H, W); 0 where a union is empty."""
  if len(pred) == 0 or len(gt) == 0:
    return np.zeros((len(pred), len(gt)))
  p = np.asarray(pred, bool).reshape(len(pred), -1).astype(np.float64)
  g = np.asarray(gt, bool).reshape(len(gt), -1).astype(np.float64)
  inter = p @ g.T
  union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """True positives at each SACO_IOU_THRESHOLDS: one-to-one Hungarian matching on IoU (the assignment with
  the largest summed IoU), a matched pair counting where its IoU >= the threshold."""
  from scipy.optimize import linear_sum_assignment  # pylint: disable=g-import-not-at-top
  iou = mask_ious(pred, gt)
  if iou.size == 0:
    return np.zeros(len(SACO_IOU_THRESHOLDS), np.int64)
  rows, cols = linear_sum_assignment(-iou)
  matched = iou[rows, cols]
  return (matched[None, :] >= SACO_IOU_THRESHOLDS[:, None] - 1e-12).sum(1).astype(np.int64)


def _f1(tp, fp, fn) -> np.ndarray:
  tp, fp, fn = (np.asarray(a, np.float64) for a in (tp, fp, fn))
  den = 2 * tp + fp + fn
  return np.where(den > 0, 2 * tp / np.maximum(den, 1e-12), 0.0)


def sam3_local_f1(tp, n_pred: int, n_gt: int) -> float:
  """The score SAM 3's oracle compares annotations by: the mean over the IoU thresholds of its local F1, with
  1e-4 in each denominator; inf for a true negative (no ground truth, no prediction), which always wins."""
  if n_pred == 0 and n_gt == 0:
    return np.inf
  tp = np.asarray(tp, np.float64)
  precision = tp / (n_pred + SACO_EPS)  # TP + FP = the predictions kept
  recall = tp / (n_gt + SACO_EPS)       # TP + FN = the ground-truth masks
  return float((2 * precision * recall / (precision + recall + SACO_EPS)).mean())


class PositiveMicroF1:
  """SA-Co/Gold's numbers over a set of (image, noun phrase) pairs: pmF1 (the paper's Table 1 metric), and
  IL_MCC and cgF1 = 100 * pmF1 * IL_MCC, which the negative pairs (no ground-truth mask) feed.

  `update` takes the predicted masks with their scores and the ground truth of every annotation of the pair
  (a list of (G, H, W) masks, one per annotator): the oracle keeps the annotation that scores best."""

  def __init__(self):
    n = len(SACO_IOU_THRESHOLDS)
    self.tp, self.fp, self.fn = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    self.il = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    self.count = 0

  @staticmethod
  def oracle(masks, scores, annotations) -> tuple[np.ndarray, int, int]:
    """(TP per IoU threshold, predictions kept, ground-truth masks) of one pair against the annotation SAM 3's
    oracle keeps: the best `sam3_local_f1`, a later annotation replacing the kept one only when strictly better."""
    masks = np.asarray(masks, bool)
    keep = np.asarray(scores, np.float64) >= SACO_SCORE_THRESHOLD
    masks = masks[keep] if len(masks) else masks
    best = None
    for gt in annotations:
      gt = np.asarray(gt, bool)
      tp = match_counts(masks, gt)
      score = sam3_local_f1(tp, len(masks), len(gt))
      if best is None or score > best[0]:
        best = (score, tp, len(gt))
    return best[1], len(masks), best[2]

  def update(self, masks, scores, annotations) -> None:
    self.add(*self.oracle(masks, scores, annotations))

  def add(self, tp, n_pred: int, n_gt: int) -> None:
    """One pair's counts (from `oracle`)."""
    self.count += 1
    if n_gt:
      self.tp += tp
      self.fn += n_gt - tp
      self.fp += n_pred - tp
    self.il["tp" if n_gt and n_pred else "fn" if n_gt else "fp" if n_pred else "tn"] += 1

  def result(self) -> dict[str, float]:
    pmf1 = float(_f1(self.tp, self.fp, self.fn).mean())
    tp, fp, tn, fn = (float(self.il[k]) for k in ("tp", "fp", "tn", "fn"))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = float((tp * tn - fp * fn) / den) if den > 0 else 0.0
    return {"pmf1": pmf1, "pmf1_50": float(_f1(self.tp[0], self.fp[0], self.fn[0])), "il_mcc": mcc,
            "cgf1": 100.0 * pmf1 * mcc, "positives": int(tp + fn)}


class SacoGold:
  """SA-Co/Gold over its subsets (options.saco_pooling): 'subsets' scores each subset on its own and reports
  the mean of pmF1, pmF1@0.5, IL_MCC and cgF1 over the subsets (SAM 3's reported numbers are this mean over the
  seven; a subset without a positive pair has no pmF1 and is left out); 'pooled' pools TP / FP / FN and the
  image-level counts over every pair. Both pmF1s are returned (`pmf1_subsets`, `pmf1_pooled`); `pmf1`, `il_mcc`
  and `cgf1` are the chosen pooling's."""

  def __init__(self, pooling: str = "subsets"):
    self.pooling, self.pooled, self.subsets = pooling, PositiveMicroF1(), {}

  def update(self, masks, scores, annotations, subset: str = "") -> None:
    counts = PositiveMicroF1.oracle(masks, scores, annotations)
    self.pooled.add(*counts)
    self.subsets.setdefault(subset, PositiveMicroF1()).add(*counts)

  def result(self) -> dict[str, float]:
    pooled = self.pooled.result()
    per = [r for r in (acc.result() for acc in self.subsets.values()) if r["positives"]]
    mean = {k: float(np.mean([r[k] for r in per])) if per else 0.0 for k in ("pmf1", "pmf1_50", "il_mcc", "cgf1")}
    out = dict(pooled) if self.pooling == "pooled" else {**pooled, **mean}
    out.update({"pmf1_pooled": pooled["pmf1"], "pmf1_subsets": mean["pmf1"], "subsets": len(self.subsets)})
    return out
