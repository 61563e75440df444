"""The benchmark protocols themselves, against values computed by hand: crop boxes, caps, ignored pixels, a
perfect prediction scoring perfectly, known corruptions scoring what they must, normal-frame conversions; the
cases where a peer's evaluation code (Marigold, ZoeDepth, monodepth2, UniDepth, SAM 3) disagreed with ours, at
the benchmark's real image size; and each protocol option (vbanana.bench.options)."""

import dataclasses

import numpy as np
import pytest

from vbanana.bench import benchmarks, options, protocols, runner, table
from vbanana.tasks import common, normals, referring, semantic


def _box(mask):
  rows, cols = mask.nonzero()
  return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_nyu_eigen_crop_is_the_published_box_and_scales_with_the_ground_truth():
  crop = protocols.DEPTH["nyu"].crop
  mask = protocols.crop_mask((480, 640), crop)
  assert _box(mask) == (45, 471, 41, 601) and mask.sum() == (471 - 45) * (601 - 41)
  # Half the size: int(45/480*240)=22, int(471/480*240)=235, int(41/640*320)=20, int(601/640*320)=300.
  assert _box(protocols.crop_mask((240, 320), crop)) == (22, 235, 20, 300)


def test_kitti_garg_crop_on_a_375x1242_frame():
  # int(0.40810811*375)=153, int(0.99189189*375)=371, int(0.03594771*1242)=44, int(0.96405229*1242)=1197.
  assert _box(protocols.crop_mask((375, 1242), protocols.DEPTH["kitti"].crop)) == (153, 371, 44, 1197)
  assert protocols.DEPTH["kitti"].max_depth == 80.0 and protocols.DEPTH["nyu"].max_depth == 10.0


@pytest.mark.parametrize("width, left, right", [(1224, 43, 1180), (1226, 44, 1181)])
def test_kitti_garg_crop_on_370_row_frames_stops_at_row_365(width, left, right):
  # Bug 3: 0.99189189 * 370 = 366.9999993, and int() of it is 366 (Marigold, ZoeDepth, UniDepth and monodepth2
  # all take int() of the float product), so rows 151..365; a rounding nudge made it 367 (216 rows, not 215).
  # Top int(151.0000007) = 151; left int(0.03594771 * 1224 = 43.99999704) = 43, right int(1180.00000296) = 1180;
  # for 1226: int(44.0718925) = 44, int(1181.9281075) = 1181. Both 1137 columns.
  mask = protocols.crop_mask((370, width), protocols.DEPTH["kitti"].crop)
  assert _box(mask) == (151, 366, left, right)
  assert mask.sum() == 215 * 1137 == 244_455  # before the fix: 216 * 1137 = 245,592 (1,137 pixels too many)


def test_depth_perfect_and_scaled_by_1_1():
  gt = np.full((48, 64), 3.0)
  gt[:, :32] = 7.0
  p = protocols.DEPTH["nyu"]
  perfect = protocols.depth_scores(gt.copy(), gt, p)
  assert perfect["abs_rel"] == 0 and perfect["delta1"] == 1 and perfect["affine_abs_rel"] < 1e-9
  scaled = protocols.depth_scores(gt * 1.1, gt, p)
  assert scaled["abs_rel"] == pytest.approx(0.1, abs=1e-12) and scaled["delta1"] == 1.0
  assert scaled["affine_abs_rel"] < 1e-9  # scale and shift are undone by the alignment
  # 1.3x: every ratio is above 1.25, so delta1 is 0 while delta2 (1.5625) is 1.
  off = protocols.depth_scores(gt * 1.3, gt, p)
  assert off["delta1"] == 0.0 and off["delta2"] == 1.0 and off["abs_rel"] == pytest.approx(0.3)


def test_depth_ignores_outside_the_crop_beyond_the_cap_and_invalid_pixels():
  gt = np.full((480, 640), 2.0)
  pred = gt.copy()
  pred[:45] = 100.0            # outside the Eigen crop: never scored
  gt[100:110, 100:110] = 12.0  # beyond NYU's 10 m cap
  pred[100:110, 100:110] = 1.0
  gt[200, 200] = 0.0           # no measurement
  pred[200, 200] = 50.0
  dataset_valid = np.ones_like(gt, bool)
  dataset_valid[300:310, 300:310] = False
  pred[300:310, 300:310] = 9.0
  s = protocols.depth_scores(pred, gt, protocols.DEPTH["nyu"], dataset_valid)
  assert s["abs_rel"] == 0.0 and s["delta1"] == 1.0
  # Half of the scored pixels 10% off: AbsRel 0.05 exactly (counted by hand over the valid pixels).
  valid = protocols.depth_valid(gt, protocols.DEPTH["nyu"], dataset_valid)
  rows = np.nonzero(valid.any(1))[0]
  pred2 = gt.copy()
  pred2[rows[0]:rows[0] + 213] *= 1.1  # rows 45..257 of 426 scored rows
  s2 = protocols.depth_scores(pred2, gt, protocols.DEPTH["nyu"], dataset_valid)
  expected = 0.1 * (valid[rows[0]:rows[0] + 213].sum() / valid.sum())
  assert s2["abs_rel"] == pytest.approx(expected, rel=1e-9)
  # DIODE scores nothing closer than 0.6 m.
  near = protocols.depth_valid(np.array([[0.5, 0.7]]), protocols.DEPTH["diode_indoor"])
  assert near.tolist() == [[False, True]]
  # ETH3D's inf (no laser return) is not scored and does not poison the mean.
  eth = np.array([[np.inf, 4.0]])
  assert protocols.depth_scores(np.array([[1.0, 4.0]]), eth, protocols.DEPTH["eth3d"])["abs_rel"] == 0.0


def test_normals_frames():
  # DSINE's sets: x left, y up, z towards the viewer (normals point away from the camera in OpenCV axes): a
  # wall facing the camera (0, 0, 1) and a floor (0, 1, 0) stay, a left wall facing right, (-1, 0, 0) there,
  # is (1, 0, 0) here (tests/test_bench_readers.py checks the whole frame on a box room).
  n = np.array([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]], np.float32)
  for name in ("nyuv2", "scannet", "vkitti"):
    np.testing.assert_array_equal(protocols.to_our_frame(n, protocols.NORMALS[name]),
                                  [[[0, 0, 1], [0, 1, 0], [1, 0, 0]]])
  # DIODE (OpenCV axes): facing the camera is -z there, +z here; a floor is -y there, +y here.
  diode = np.array([[[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]], np.float32)
  np.testing.assert_array_equal(protocols.to_our_frame(diode, protocols.NORMALS["diode_indoor"]),
                                [[[0, 0, 1], [0, 1, 0], [1, 0, 0]]])


def test_normals_metrics_perfect_and_a_quarter_turn():
  gt = np.zeros((4, 4, 3), np.float32)
  gt[..., 2] = 1
  acc = normals.Accumulator()
  acc.update(gt.copy(), {"normals": gt, "valid": np.ones((4, 4), bool)})
  assert acc.result()["mean_angle"] == pytest.approx(0, abs=1e-3) and acc.result()["within_11.25"] == 100
  turned = np.zeros_like(gt)
  turned[..., 0] = 1
  valid = np.ones((4, 4), bool)
  valid[0] = False  # invalid rows are not scored even when wrong
  acc = normals.Accumulator()
  acc.update(np.where(valid[..., None], gt, turned), {"normals": gt, "valid": valid})
  acc.update(turned, {"normals": gt, "valid": np.ones((4, 4), bool)})
  # 12 perfect pixels and 16 at 90 degrees: mean 16 * 90 / 28.
  assert acc.result()["mean_angle"] == pytest.approx(16 * 90 / 28, abs=1e-3)


def test_cityscapes_prompt_names_every_colour_and_ignore_is_not_scored():
  names, colors = semantic.dataset_palette("cityscapes_19")
  mapping = common.parse_color_mapping(runner.cityscapes_prompt(), names)
  assert mapping == {n: tuple(int(v) for v in c) for n, c in zip(names, colors)}
  gt = np.arange(19 * 4).reshape(4, 19) % 19
  gt[0, :5] = 255  # ignore label
  pred = semantic.decode(semantic.encode(gt, colors), colors)
  pred[0, :5] = 3  # wrong where the ground truth is ignored: no effect
  acc = semantic.Accumulator(num_classes=19)
  acc.update(pred, {"semantic": gt})
  assert acc.result()["miou"] == 1.0
  pred[1, 0] = 1  # one pixel of class 0 (row 1, column 0) called class 1
  acc = semantic.Accumulator(num_classes=19)
  acc.update(pred, {"semantic": gt})
  # class 0: 3 pixels, 2 right -> IoU 2/3; class 1: 3 + 1 -> 3/4; the other 17 perfect.
  assert acc.result()["miou"] == pytest.approx((2 / 3 + 3 / 4 + 17) / 19)


def test_ciou_sums_and_giou_averages():
  acc = referring.Accumulator()
  a_gt, a_pred = np.zeros((1, 10), bool), np.zeros((1, 10), bool)
  a_gt[0, :2], a_pred[0, 1:2] = True, True      # inter 1, union 2
  b_gt, b_pred = np.zeros((1, 10), bool), np.zeros((1, 10), bool)
  b_gt[0, :10], b_pred[0, :9] = True, True      # inter 9, union 10
  acc.update(a_pred, {"mask": a_gt})
  acc.update(b_pred, {"mask": b_gt})
  r = acc.result()
  assert r["giou"] == pytest.approx((0.5 + 0.9) / 2) and r["ciou"] == pytest.approx(10 / 12)


def test_predictions_are_resized_to_the_ground_truth():
  mask = np.array([[True, False], [False, True]])
  big = protocols.to_gt_size(mask, (4, 6))
  assert big.dtype == bool and big.shape == (4, 6) and big[0, 0] and not big[0, 5] and big[3, 5]
  depth = protocols.to_gt_size(np.array([[1.0, 3.0]], np.float32), (3, 8))
  assert depth.shape == (3, 8) and depth.min() >= 1.0 and depth.max() <= 3.0
  labels = protocols.to_gt_size(np.array([[0, 18]], np.int32), (2, 4), nearest=True)
  assert set(np.unique(labels)) == {0, 18}


# ------------------------------------------------------------------------------------------------------------
# nuScenes: the pose chain and the projection.
# ------------------------------------------------------------------------------------------------------------
def test_quaternion_matrix_by_hand():
  np.testing.assert_allclose(protocols.quaternion_matrix([1, 0, 0, 0]), np.eye(3))
  # 90 degrees about z: x -> y, y -> -x.
  c = np.cos(np.pi / 4)
  np.testing.assert_allclose(protocols.quaternion_matrix([c, 0, 0, c]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]],
                             atol=1e-12)
  # nuScenes' front-camera mounting (w, x, y, z) = (0.5, -0.5, 0.5, -0.5): camera z (forward) is ego x,
  # camera x (right) is ego -y, camera y (down) is ego -z; the columns are the camera's axes in the ego frame.
  np.testing.assert_allclose(protocols.quaternion_matrix([0.5, -0.5, 0.5, -0.5]),
                             [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
  # Not unit length: normalised first.
  np.testing.assert_allclose(protocols.quaternion_matrix([2, 0, 0, 0]), np.eye(3))


def test_lidar_to_camera_goes_through_both_ego_poses():
  c = np.cos(np.pi / 4)
  yaw90 = [c, 0, 0, c]
  lidar = {"translation": [0, 0, 2], "rotation": [1, 0, 0, 0]}
  ego_then = {"translation": [100, 50, 0], "rotation": yaw90}
  ego_now = {"translation": [100, 50.5, 0], "rotation": yaw90}  # 0.5 m further along ego x (global +y)
  cam = {"translation": [1, 0, 1.5], "rotation": [0.5, -0.5, 0.5, -0.5]}
  # By hand: ego (LiDAR time) = (X, Y, Z + 2); global = (100 - Y, 50 + X, Z + 2); ego (camera time) =
  # (X - 0.5, Y, Z + 2); minus the camera's mount (1, 0, 1.5), in its axes: (-Y, -(Z + 0.5), X - 1.5).
  p = np.array([[11.5, 0.0, -0.5], [21.5, -10.0, -8.5], [3.0, 2.0, 1.0]])
  expected = np.stack([-p[:, 1], -(p[:, 2] + 0.5), p[:, 0] - 1.5], 1)
  np.testing.assert_allclose(protocols.lidar_to_camera(p, lidar, ego_then, ego_now, cam), expected, atol=1e-9)
  # Same pose at both times: the car's motion is what the two ego poses add.
  still = protocols.lidar_to_camera(p, lidar, ego_then, ego_then, cam)
  np.testing.assert_allclose(still[:, 2], p[:, 0] - 1.0, atol=1e-9)


def test_project_depth_keeps_the_nearest_point_inside_the_image():
  k = [[10.0, 0, 15.5], [0, 10.0, 10.5], [0, 0, 1]]
  pts = np.array([[0.0, 0.0, 10.0],     # u 15.5, v 10.5 -> (10, 15), 10 m
                  [0.0, 0.0, 30.0],     # same pixel, farther: not kept
                  [0.0, 0.0, -10.0],    # behind the camera
                  [0.0, 0.0, 0.5],      # nearer than 1 m (the devkit's min_dist)
                  [20.0, 0.0, 10.0],    # u 35.5: outside (W = 30)
                  [-16.0, 0.0, 10.0],   # u -0.5: outside
                  [1.0, 1.0, 20.0]])    # u 16.0, v 11.0 -> (11, 16), 20 m
  depth = protocols.project_depth(pts, k, (20, 30))
  assert depth.shape == (20, 30) and depth.dtype == np.float32
  assert {tuple(int(i) for i in ij): float(depth[tuple(ij)]) for ij in np.argwhere(depth > 0)} == {
      (10, 15): 10.0, (11, 16): 20.0}


def test_nuscenes_protocol_cap_and_a_perfect_prediction():
  p = protocols.DEPTH["nuscenes"]
  assert p.max_depth == 80.0 and p.min_depth == 1.0 and p.crop is None
  gt = np.zeros((20, 30), np.float32)
  gt[10, 15], gt[14, 20], gt[10, 14] = 10.0, 20.0, 90.0  # 90 m: beyond the cap
  valid = gt > 0
  assert protocols.depth_valid(gt, p, valid).sum() == 2
  pred = np.where(valid, gt, 5.0)
  pred[10, 14] = 1.0  # wrong only beyond the cap: not scored
  s = protocols.depth_scores(pred, gt, p, valid)
  assert s["delta1"] == 1.0 and s["abs_rel"] == 0.0
  s2 = protocols.depth_scores(np.where(valid, gt * 1.1, 5.0), gt, p, valid)
  assert s2["abs_rel"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------------------
# SA-Co/Gold: pmF1.
# ------------------------------------------------------------------------------------------------------------
def _strips():
  """GT A rows 0-1 (20 px) and B rows 5-9 (50 px) of a 10 x 10 image; predictions: A exactly (IoU 1), 42 px
  inside B (IoU 0.84), row 3 (no overlap), and B exactly but scored 0.3 (below 0.5: not evaluated)."""
  gt = np.zeros((2, 10, 10), bool)
  gt[0, 0:2], gt[1, 5:10] = True, True
  pred = np.zeros((4, 10, 10), bool)
  pred[0] = gt[0]
  pred[1, 5:9], pred[1, 9, :2] = True, True
  pred[2, 3] = True
  pred[3] = gt[1]
  return pred, np.array([0.9, 0.8, 0.7, 0.3]), gt


def test_pmf1_by_hand_two_gt_three_predictions():
  pred, scores, gt = _strips()
  assert protocols.mask_ious(pred[:3], gt)[1, 1] == pytest.approx(0.84)
  np.testing.assert_array_equal(protocols.match_counts(pred[:3], gt), [2] * 7 + [1] * 3)  # 0.84 < 0.85
  acc = protocols.PositiveMicroF1()
  acc.update(pred, scores, [gt])
  # IoU thresholds 0.5..0.8 (7): TP 2, FP 1, FN 0 -> F1 4/5; 0.85..0.95 (3): TP 1, FP 2, FN 1 -> 2/5.
  assert acc.result()["pmf1"] == pytest.approx((7 * 0.8 + 3 * 0.4) / 10)
  assert acc.result()["pmf1_50"] == pytest.approx(0.8)
  # A positive pair with no prediction adds its GT to FN; a negative pair with a prediction is an image-level
  # FP but no pmF1 FP (positives only). Pooled: TP 2 / FP 1 / FN 1 -> 4/6; TP 1 / FP 2 / FN 2 -> 2/6.
  acc.update(np.zeros((0, 10, 10), bool), np.zeros(0), [gt[:1]])
  acc.update(pred[:1], [0.9], [np.zeros((0, 10, 10), bool)])
  r = acc.result()
  assert r["pmf1"] == pytest.approx((7 * 4 / 6 + 3 * 2 / 6) / 10)
  # Image level: TP 1, FN 1, FP 1, TN 0 -> MCC (0 - 1) / sqrt(2 * 2 * 1 * 1) = -0.5.
  assert r["il_mcc"] == pytest.approx(-0.5) and r["cgf1"] == pytest.approx(100 * r["pmf1"] * -0.5)
  assert r["positives"] == 2


def test_pmf1_oracle_keeps_the_best_annotation():
  pred, scores, gt = _strips()
  one = protocols.PositiveMicroF1()
  one.update(pred, scores, [gt])
  # Against b = [A] alone: TP 1, FP 2, FN 0 at every threshold (local F1 0.5) < 0.68 against a: a is kept,
  # whichever order the annotations come in.
  for order in ([gt[:1], gt], [gt, gt[:1]]):
    acc = protocols.PositiveMicroF1()
    acc.update(pred, scores, order)
    assert acc.result()["pmf1"] == pytest.approx(one.result()["pmf1"])
  # An annotator who saw nothing, with no prediction kept, beats one who saw something.
  acc = protocols.PositiveMicroF1()
  acc.update(pred[3:], scores[3:], [gt, np.zeros((0, 10, 10), bool)])
  assert acc.il["tn"] == 1 and acc.result()["positives"] == 0


def test_pmf1_perfect_is_one_and_empty_is_zero():
  _, _, gt = _strips()
  acc = protocols.PositiveMicroF1()
  acc.update(gt, np.ones(2), [gt])
  acc.update(gt[:1], [1.0], [gt[:1]])
  acc.update(np.zeros((0, 10, 10), bool), np.zeros(0), [np.zeros((0, 10, 10), bool)])
  assert acc.result()["pmf1"] == 1.0 and acc.result()["il_mcc"] == pytest.approx(1.0)
  empty = protocols.PositiveMicroF1()
  empty.update(np.zeros((0, 10, 10), bool), np.zeros(0), [gt])
  empty.update(gt, np.full(2, 0.2), [gt])  # all below the 0.5 score threshold: nothing predicted
  assert empty.result()["pmf1"] == 0.0


def test_saco_request_is_the_instance_instruction_with_the_phrase():
  sample = {"image": np.zeros((4, 4, 3), np.uint8), "query": "the fish ball", "annotations": []}
  example = runner.saco_example(sample)
  assert example.task == "instance" and example.decode_args == {"background": (0, 0, 0)}
  assert example.instruction == "paint each the fish ball a different solid colour on a black background"


def test_saco_scorer_on_a_perfectly_painted_answer():
  from vbanana.bench import benchmarks
  from vbanana.tasks import instance
  gt = np.zeros((2, 24, 32), bool)
  gt[0, 2:10, 3:12], gt[1, 14:22, 18:30] = True, True
  sample = {"image": np.zeros((24, 32, 3), np.uint8), "query": "cup", "annotations": [gt, gt[:1]]}
  example = runner.saco_example(sample)
  decoded = instance.decode(instance.encode(gt, (0, 0, 0)), **example.decode_args)
  scorer = runner.Scorer(benchmarks.by_name("sa_co_gold"))
  scorer.update(decoded, sample)
  r = scorer.result()
  assert r["pmf1"] == 1.0 and r["count"] == 1 and r["positives"] == 1


def _disjoint_masks(n, hw, offset=0):
  """n disjoint 100 x 100 squares on a (H, W) image, in a row."""
  masks = np.zeros((n,) + hw, bool)
  for i in range(n):
    masks[i, 100:200, 50 + 120 * (i + offset):150 + 120 * (i + offset)] = True
  return masks


@pytest.mark.parametrize("a_first", [True, False])
def test_saco_oracle_breaks_exact_ties_as_sam3(a_first):
  # Bug 5, at a real SA-Co/Gold image size. Pair 1 predicts {A, B}; annotator a drew {A}, annotator b drew
  # {A, B, C, D}. Exact local F1 at every IoU threshold: a 2*1 / (2*1 + 1 + 0) = 2/3, b 2*2 / (2*2 + 0 + 2) = 2/3:
  # a tie. SAM 3's local F1 has 1e-4 in each denominator: a: P = 1 / 2.0001, R = 1 / 1.0001, F1 = 2PR / (P + R
  # + 1e-4) = 0.666578; b: P = 2 / 2.0001, R = 2 / 4.0001, F1 = 0.666600 > a: SAM 3 keeps b, whichever comes first.
  # Pair 2 is a perfect match of 5 masks (TP 5). Kept b: TP 2 + 5 = 7, FP 0, FN 2 -> pmF1 14 / 16 = 0.875
  # (keeping a: TP 6, FP 1, FN 0 -> 12 / 13 = 0.923, ours before the fix when a came first).
  hw = (1024, 1024)
  masks = _disjoint_masks(4, hw)
  a, b = masks[:1], masks
  acc = protocols.PositiveMicroF1()
  acc.update(masks[:2], np.ones(2), [a, b] if a_first else [b, a])
  perfect = _disjoint_masks(5, hw, offset=2)
  acc.update(perfect, np.ones(5), [perfect, perfect])
  np.testing.assert_array_equal(acc.tp, [7] * 10)
  np.testing.assert_array_equal(acc.fp, [0] * 10)
  np.testing.assert_array_equal(acc.fn, [2] * 10)
  assert acc.result()["pmf1"] == 0.875  # exact F1 in the reported number (SAM 3's would read 0.87495)
  assert protocols.sam3_local_f1([1] * 10, 2, 1) == pytest.approx(0.666578, abs=1e-6)
  assert protocols.sam3_local_f1([2] * 10, 2, 4) == pytest.approx(0.666600, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------
# The protocol options: where the peers split.
# ------------------------------------------------------------------------------------------------------------
def _opts(**kw):
  return options.Options(**kw)


def test_depth_clip_nyu_prediction_past_10m():
  # A model that overshoots: ground truth 8 m, prediction 20 m (480 x 640). Unclipped (Depth-Anything-V2):
  # AbsRel |20 - 8| / 8 = 1.5; clipped to [1e-3, 10] first (ZoeDepth, Marigold): |10 - 8| / 8 = 0.25.
  gt, pred = np.full((480, 640), 8.0), np.full((480, 640), 20.0)
  assert protocols.depth_scores(pred, gt, protocols.depth_protocol("nyu"))["abs_rel"] == pytest.approx(1.5)
  clipped = protocols.depth_scores(pred, gt, protocols.depth_protocol("nyu", _opts(depth_clip="range")))
  assert clipped["abs_rel"] == pytest.approx(0.25)
  assert clipped["affine_abs_rel"] < 1e-9  # the alignment starts from the unclipped prediction


def test_depth_cap_comparison_at_exactly_80m():
  # KITTI ground truth exactly at the 80 m cap in one row of the Garg crop (rows 153..370, columns 44..1196 of a
  # 375 x 1242 frame: 218 x 1153 pixels): '<=' (Depth-Anything-V2) scores it, '<' (ZoeDepth, Marigold,
  # monodepth2, UniDepth) does not.
  gt = np.full((375, 1242), 20.0)
  gt[200] = 80.0
  assert protocols.depth_valid(gt, protocols.depth_protocol("kitti")).sum() == 218 * 1153
  assert protocols.depth_valid(gt, protocols.depth_protocol("kitti", _opts(depth_cap="lt"))).sum() == 217 * 1153


def test_affine_clip_clips_the_aligned_map_to_the_range():
  # NYU (480 x 640), three equal bands of the Eigen crop's 426 rows: ground truth 2, 6, 10 m, prediction 0, 1, 3.
  # Least squares: mean p 4/3, mean g 6, cov 4, var 14/9 -> scale 18/7, shift 18/7: aligned 18/7, 36/7, 72/7.
  # AbsRel: (4/7) / 2 = 2/7, (6/7) / 6 = 1/7, (2/7) / 10 = 1/35 -> mean 16/105. Clipped to 10 m (Marigold) the
  # third band is exact: (2/7 + 1/7 + 0) / 3 = 1/7.
  gt, pred = np.full((480, 640), 6.0), np.zeros((480, 640))
  for k, (g, p) in enumerate(((2.0, 0.0), (6.0, 1.0), (10.0, 3.0))):
    gt[45 + 142 * k:45 + 142 * (k + 1)], pred[45 + 142 * k:45 + 142 * (k + 1)] = g, p
  off = protocols.depth_scores(pred, gt, protocols.depth_protocol("nyu"))
  on = protocols.depth_scores(pred, gt, protocols.depth_protocol("nyu", _opts(affine_clip="range")))
  assert off["affine_abs_rel"] == pytest.approx(16 / 105) and on["affine_abs_rel"] == pytest.approx(1 / 7)
  assert off["abs_rel"] == on["abs_rel"]  # the metric numbers do not change


def test_kitti_crop_and_ibims_options_pick_the_peers_boxes():
  # The KITTI-benchmark frame of a 375 x 1242 raw frame: rows 375 - 352 = 23..374, columns int(26 / 2) = 13..1228.
  assert protocols.kitti_benchmark_box((375, 1242)) == (23, 375, 13, 1229)
  # Inside it (352 x 1216): Garg rows int(143.65) = 143 .. int(349.15) = 349, columns int(43.71) = 43 ..
  # int(1172.29) = 1172; Eigen rows int(117.02) = 117 .. int(321.56) = 321, same columns.
  kb_garg = protocols.depth_protocol("kitti", _opts(kitti_crop="kb_garg"))
  kb_eigen = protocols.depth_protocol("kitti", _opts(kitti_crop="kb_eigen"))
  assert _box(protocols.crop_mask((352, 1216), kb_garg.crop)) == (143, 349, 43, 1172)
  assert _box(protocols.crop_mask((352, 1216), kb_eigen.crop)) == (117, 321, 43, 1172)
  assert protocols.depth_protocol("kitti", _opts(kitti_crop="none")).crop is None
  # iBims-1: ZoeDepth's NYU Eigen box and 0 < d < 10; UniDepth's whole frame and 0.005 < d < 25.
  gt = np.full((480, 640), 12.0)
  gt[:, :320] = 0.003
  zoe = protocols.depth_protocol("ibims1", _opts(ibims="zoedepth", depth_cap="lt"))
  uni = protocols.depth_protocol("ibims1", _opts(ibims="unidepth", depth_cap="lt"))
  assert _box(protocols.crop_mask((480, 640), zoe.crop)) == (45, 471, 41, 601)
  assert protocols.depth_valid(gt, zoe).sum() == 426 * (320 - 41)  # 12 m beyond 10, 3 mm above 0
  assert protocols.depth_valid(gt, uni).sum() == 480 * 320           # 12 m within 25, 3 mm below 5 mm
  assert protocols.depth_valid(gt, protocols.depth_protocol("ibims1")).sum() == 480 * 320  # ours: 1 mm < d <= 10


def test_resize_half_pixel_and_corners():
  row = np.array([[0.0, 1.0]], np.float32)
  # half_pixel (align_corners False): output i samples (i + 0.5) * 2 / 5 - 0.5 = -0.3, 0.1, 0.5, 0.9, 1.3,
  # clamped at the edges; corners (True): i * (2 - 1) / (5 - 1) = 0, 0.25, 0.5, 0.75, 1.
  np.testing.assert_allclose(protocols.to_gt_size(row, (1, 5)), [[0, 0.1, 0.5, 0.9, 1]], atol=1e-6)
  np.testing.assert_allclose(protocols.to_gt_size(row, (1, 5), resize="corners"), [[0, 0.25, 0.5, 0.75, 1]])
  normals3 = np.zeros((2, 2, 3), np.float32)
  normals3[1, :, 2] = 1.0
  up = protocols.to_gt_size(normals3, (3, 4), resize="corners")  # rows sample 0, 0.5, 1 of the input
  assert up.shape == (3, 4, 3)
  np.testing.assert_allclose(up[:, 0, 2], [0, 0.5, 1])


def test_nuscenes_points_devkit_margin_on_a_900x1600_frame():
  # K = identity and z = 10: a point (10 u, 10 v, 10) lands at (u, v). The devkit keeps 1 < u < 1599 and
  # 1 < v < 899; 'all' keeps 0 <= u < 1600 and 0 <= v < 900.
  us = [0.5, 1.0, 2.5, 1597.5, 1598.5, 1599.5]
  pts = np.array([[10 * u, 10 * 450.5, 10.0] for u in us] + [[10 * 800.5, 10 * 0.5, 10.0],
                                                              [10 * 800.5, 10 * 898.5, 10.0]])
  devkit = protocols.project_depth(pts, np.eye(3), (900, 1600))
  everything = protocols.project_depth(pts, np.eye(3), (900, 1600), points="all")
  assert sorted(map(tuple, np.argwhere(devkit > 0).tolist())) == [(450, 2), (450, 1597), (450, 1598), (898, 800)]
  assert len(np.argwhere(everything > 0)) == 8


def test_saco_pooling_subsets_or_pooled():
  # Subset x: one pair answered perfectly (TP 1) -> pmF1 1. Subset y: one pair of 3 masks, no prediction
  # (FN 3) -> 0. Mean over the subsets (SAM 3's reported numbers) 0.5; pooled: TP 1, FN 3 -> 2 / (2 + 3) = 0.4.
  hw = (64, 64)
  m = np.zeros((3,) + hw, bool)
  m[0, :10], m[1, 20:30], m[2, 40:50] = True, True, True
  results = {}
  for pooling in ("subsets", "pooled"):
    acc = protocols.SacoGold(pooling)
    acc.update(m[:1], [1.0], [m[:1]], subset="x")
    acc.update(np.zeros((0,) + hw, bool), np.zeros(0), [m], subset="y")
    results[pooling] = acc.result()
  assert results["subsets"]["pmf1"] == pytest.approx(0.5) and results["pooled"]["pmf1"] == pytest.approx(0.4)
  assert results["subsets"]["pmf1_pooled"] == pytest.approx(0.4) and results["pooled"]["pmf1_subsets"] == 0.5


def test_options_are_checked_and_listed_in_the_table():
  with pytest.raises(ValueError, match=r"option kitti_crop='kb'; expected one of garg, kb_garg, kb_eigen, none"):
    options.check(_opts(kitti_crop="kb"))
  settings = runner.Settings(checkpoint="ck", data_dir="d", kitti_crop="kb_garg", depth_cap="lt")
  kitti = {"delta1": 0.9, "abs_rel": 0.1, "affine_delta1": 0.95, "affine_abs_rel": 0.05, "count": 1}
  text = table.markdown({"depth_kitti": kitti}, {}, {}, settings)
  assert "- `kitti_crop=kb_garg` (not the default garg; depth_kitti): 352 x 1216" in text
  assert "- `depth_cap=lt` (not the default le;" in text and "- `saco_pooling=subsets` (default;" in text
  kitti_row = [line for line in text.splitlines() if line.startswith("| KITTI |")][0]
  assert "the 352 x 1216 KITTI-benchmark crop, then the Garg crop" in kitti_row and "< 80 m" in kitti_row
  assert benchmarks.by_name("depth_kitti").protocol_for(options.Options()) == benchmarks.by_name("depth_kitti").protocol
  assert dataclasses.asdict(options.Options()) == options.DEFAULTS
