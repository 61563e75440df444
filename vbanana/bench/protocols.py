"""Each benchmark's scoring protocol in one table, and the pure NumPy functions that apply it.

Why a table: the numbers a benchmark is compared on depend on constants that live in no dataset file (the
Eigen crop, a depth cap, which pixels count), and a paper's number is only comparable when they match.
Every constant below names where it comes from. The paper itself fixes the metrics (delta1, AbsRel without
any alignment, "no camera intrinsics at inference"; mean / median angular error; mIoU; cIoU / gIoU) but no
crops or caps: those are each dataset's published conventions, as the counterparts it compares with use them.

Crops are fractions of the image, (top, bottom, left, right): a box given in a dataset's native pixels
(NYU's 480 x 640) is stored as box / native size, so the same crop applies to a ground truth of any size
(`crop_mask`: row int(top * H) to int(bottom * H), likewise columns, the way the KITTI Garg crop has always
been applied). Every score is taken at the ground truth's own resolution: `to_gt_size` brings the decoded
prediction there first (bilinear for depth and normals, nearest for masks).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vbanana.tasks import depth as depth_task
from vbanana.tasks import normals as normals_task

EPS = 1e-6  # crop edges: int(0.98125 * 480 + EPS) == 471 whatever the float rounding


@dataclasses.dataclass(frozen=True)
class DepthProtocol:
  """Which ground-truth pixels a depth benchmark scores: inside `crop`, min_depth < d <= max_depth, finite,
  and inside the dataset's own validity mask (the reader supplies it)."""
  crop: tuple[float, float, float, float] | None
  min_depth: float
  max_depth: float | None
  source: str

  def describe(self) -> str:
    crop = "no crop" if self.crop is None else "crop (t, b, l, r) = " + ", ".join(f"{v:.4f}" for v in self.crop)
    cap = "no cap" if self.max_depth is None else f"cap {self.max_depth:g} m"
    return f"{crop}; {self.min_depth:g} m < depth, {cap}"


def box_to_fractions(box, native_hw) -> tuple[float, float, float, float]:
  """A crop box (top, bottom, left, right) in native pixels -> fractions of the native (H, W)."""
  (t, b, l, r), (h, w) = box, native_hw
  return (t / h, b / h, l / w, r / w)


# Eigen crop of NYU Depth v2 (Eigen et al., NeurIPS 2014; the box every NYUv2 depth benchmark uses): rows
# 45..470 and columns 41..600 of the 480 x 640 frames, i.e. [45:471, 41:601].
NYU_EIGEN_BOX, NYU_NATIVE = (45, 471, 41, 601), (480, 640)
# Garg crop of KITTI (Garg et al., ECCV 2016), published as fractions of the image: the same box
# vbanana.tasks.depth.EIGEN_CROP holds (that module names it after the Eigen split it is used with).
KITTI_GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)

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
                            "iBims-1's mask_invalid and mask_transp (Koch et al. 2018); the 10 m indoor cap of "
                            "the zero-shot metric-depth protocols (an assumption: the paper states none)"),
    "nuscenes": DepthProtocol(None, NUSCENES_MIN_DIST, NUSCENES_MAX_DEPTH,
                              "LIDAR_TOP key-frame sweep projected into each camera (nuScenes devkit transforms; "
                              "points nearer than 1 m dropped as the devkit's map_pointcloud_to_image does, the "
                              "nearest point per pixel); the six cameras and the 80 m cap of UniDepth's nuScenes loader "
                              "(an assumption: the paper states none)"),
}


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


# The DSINE evaluation sets (Bae and Davison 2024; also used by StableNormal and Lotus): normals stored as
# 8-bit PNG, n = rgb / 255 * 2 - 1, valid where rgb != 0, in the frame x right, y up, z towards the viewer
# (DSINE computes its ground truth from OpenCV points with both y and z negated: a floor is +y, a wall
# facing the camera +z), the same frame as ours: no conversion.
DSINE_FRAME = NormalsProtocol((1, 1, 1), "DSINE eval sets: x right, y up, z towards the viewer (= ours)")
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
  """Boolean (H, W): True inside the fractional crop (top, bottom, left, right); all True for no crop."""
  h, w = shape_hw
  mask = np.zeros((h, w), bool)
  if crop is None:
    mask[:] = True
    return mask
  t, b, l, r = crop
  mask[int(t * h + EPS):int(b * h + EPS), int(l * w + EPS):int(r * w + EPS)] = True
  return mask


def depth_valid(gt: np.ndarray, protocol: DepthProtocol, dataset_valid: np.ndarray | None = None) -> np.ndarray:
  """The pixels a depth benchmark scores (see DepthProtocol)."""
  gt = np.asarray(gt, np.float64)
  ok = np.isfinite(gt) & (gt > protocol.min_depth) & crop_mask(gt.shape, protocol.crop)
  if protocol.max_depth is not None:
    ok &= gt <= protocol.max_depth
  if dataset_valid is not None:
    ok &= np.asarray(dataset_valid, bool)
  return ok


def depth_scores(pred: np.ndarray, gt: np.ndarray, protocol: DepthProtocol,
                 dataset_valid: np.ndarray | None = None) -> dict[str, float]:
  """One image's depth metrics at the ground truth's resolution: metric (no alignment, the paper's setting)
  and `affine_*` after a least-squares scale and shift on the valid pixels (vbanana.tasks.depth.metrics)."""
  valid = depth_valid(gt, protocol, dataset_valid)
  gt = np.where(valid, np.asarray(gt, np.float64), 0.0)  # inf / NaN outside the mask never reach a metric
  return depth_task.metrics(pred, {"depth": gt, "valid": valid}, min_depth=0.0, max_depth=None, crop=None)


def to_gt_size(values: np.ndarray, gt_hw, nearest: bool = False) -> np.ndarray:
  """A decoded prediction at the ground truth's (H, W): bilinear for depth / normals, nearest for masks."""
  from vbanana.predict import resize_values  # pylint: disable=g-import-not-at-top
  values = np.asarray(values)
  if values.dtype == bool:
    return resize_values(values.astype(np.int32), tuple(gt_hw), nearest=True).astype(bool)
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


def project_depth(points_cam: np.ndarray, intrinsic, shape_hw, min_depth: float = NUSCENES_MIN_DIST) -> np.ndarray:
  """A sparse (H, W) depth map (metres, 0 = no point) from points in the camera frame: points with z >
  min_depth whose projection K p / z lands inside the image, in pixel (floor(v), floor(u)), the nearest point
  kept where several land on one pixel. Depth is z (distance to the camera plane), as the devkit takes it."""
  h, w = shape_hw
  p = np.asarray(points_cam, np.float64)
  p = p[p[:, 2] > min_depth]
  uvw = p @ np.asarray(intrinsic, np.float64).T
  u, v = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2]
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
# evaluator adds 1e-4 to denominators; here F1 = 2 TP / (2 TP + FP + FN) exactly, so a perfect answer is 1.
SACO_SCORE_THRESHOLD = 0.5
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
  def _score(tp, n_pred, n_gt):
    if n_pred == 0 and n_gt == 0:
      return np.inf  # a true negative: as good as it gets
    return float(_f1(tp, n_pred - tp, n_gt - tp).mean())

  def update(self, masks, scores, annotations) -> None:
    masks = np.asarray(masks, bool)
    keep = np.asarray(scores, np.float64) >= SACO_SCORE_THRESHOLD
    masks = masks[keep] if len(masks) else masks
    best = None
    for gt in annotations:  # the oracle: the first annotation with the best mean local F1
      gt = np.asarray(gt, bool)
      tp = match_counts(masks, gt)
      score = self._score(tp, len(masks), len(gt))
      if best is None or score > best[0]:
        best = (score, tp, len(gt))
    _, tp, n_gt = best
    n_pred = len(masks)
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
