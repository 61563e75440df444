"""Benchmark readers on fixtures in each dataset's published folder layout and on TFDS mock records in the
real feature specs; a wrong layout gets one error line naming the file looked for and the layout expected.
The DSINE normal sets and ReasonSeg are also checked at their real image sizes on scenes whose ground truth is
known from first principles (where our reading once disagreed with DSINE's and LISA's own code)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

import bench_fixtures
from vbanana.bench import benchmarks, options, protocols, readers
from vbanana.data.adapters import BadRecordError
from vbanana.tasks import normals, referring


def test_kitti_depth_png_is_metres_times_256_and_zero_is_invalid(tmp_path):
  gt = bench_fixtures.kitti(str(tmp_path))
  [s] = list(readers.kitti(str(tmp_path / "kitti")))
  assert s["image"].shape == (30, 100, 3)
  np.testing.assert_array_equal(s["depth"], gt / 256.0)
  assert s["valid"].sum() == 20 * 100 and not s["valid"][:10].any()
  scored = protocols.depth_valid(s["depth"], protocols.DEPTH["kitti"], s["valid"])
  assert not scored[12, 50]  # 90 m: beyond the cap
  # Garg crop rows int(0.408*30)=12 .. int(0.992*30)=29, columns 3 .. 96; minus the 90 m pixel.
  assert scored.sum() == (29 - 12) * (96 - 3) - 1


def test_eth3d_reads_raw_float32_with_inf_invalid(tmp_path):
  depth = bench_fixtures.eth3d(str(tmp_path))
  [s] = list(readers.eth3d(str(tmp_path / "eth3d")))
  np.testing.assert_array_equal(s["depth"], depth)
  assert s["valid"].sum() == 20 * 27


def test_diode_depth_mask_and_normals_in_our_frame(tmp_path):
  bench_fixtures.diode(str(tmp_path))
  [d] = list(readers.diode_depth(str(tmp_path / "diode")))
  assert d["depth"].shape == (16, 24) and d["valid"].sum() == 15 * 24
  [n] = list(readers.diode_normals(str(tmp_path / "diode")))
  ours = protocols.to_our_frame(n["normals"], protocols.NORMALS["diode_indoor"])
  np.testing.assert_array_equal(ours[n["valid"]], np.tile([0, 0, 1], (15 * 24, 1)))
  assert not n["valid"][0].any()


def test_ibims1_scale_and_both_masks(tmp_path):
  bench_fixtures.ibims1(str(tmp_path))
  [s] = list(readers.ibims1(str(tmp_path / "ibims1")))
  assert s["depth"][5, 5] == pytest.approx(10.0, abs=1e-4)
  assert s["valid"].sum() == 12 * 16 - 2 and not s["valid"][0, 0] and not s["valid"][1, 1]


def test_dsine_normals_decode_to_camera_facing(tmp_path):
  bench_fixtures.dsine(str(tmp_path))
  [s] = list(readers.dsine_normals(str(tmp_path / "dsine_eval"), "nyuv2"))
  assert s["valid"].sum() == 10 * 16
  np.testing.assert_allclose(s["normals"][5, 5], [128 / 255 * 2 - 1, 128 / 255 * 2 - 1, 1.0], atol=1e-6)


def test_reasonseg_polygons_target_and_ignore(tmp_path):
  bench_fixtures.reasonseg(str(tmp_path))
  # The authors' evaluator scores the first text of each image (the default); 'all' gives one sample a text.
  assert [s["referring"][0][0] for s in readers.reasonseg(str(tmp_path / "reasonseg"))] == [
      "the thing you would sit on"]
  samples = list(readers.reasonseg(str(tmp_path / "reasonseg"), reasonseg_texts="all"))
  assert [s["referring"][0][0] for s in samples] == ["the thing you would sit on", "where to rest"]
  mask = samples[0]["instance"] == 1
  assert mask[2:10, 2:10].all() and mask.sum() == 64
  assert not samples[0]["valid"][12:19, 12:19].any() and samples[0]["valid"].sum() == 400 - 49


def test_wrong_layout_names_the_file_and_the_layout(tmp_path):
  bench_fixtures.kitti(str(tmp_path))
  raw = tmp_path / "kitti" / "raw" / "2011_09_26" / "2011_09_26_drive_0002_sync" / "image_02" / "data"
  os.remove(raw / "0000000005.png")
  with pytest.raises(readers.LayoutError) as e:
    list(readers.kitti(str(tmp_path / "kitti")))
  line = str(e.value)
  assert "\n" not in line and line.startswith("error: kitti: ")
  assert str(raw / "0000000005.png") in line and "expected the layout kitti/data_depth_annotated" in line
  (tmp_path / "eth3d").mkdir()
  with pytest.raises(readers.LayoutError, match=r"error: eth3d: no images in .*dslr_images_undistorted"):
    list(readers.eth3d(str(tmp_path / "eth3d")))


def test_a_missing_dataset_is_skipped_with_the_path_expected(tmp_path):
  assert benchmarks.by_name("depth_kitti").missing(str(tmp_path)).startswith(f"no folder {tmp_path}/kitti")
  assert benchmarks.by_name("cityscapes").missing(str(tmp_path)) == (
      f"no TFDS dataset at {tmp_path}/cityscapes (prepare cityscapes/semantic_segmentation into this TFDS data_dir)")
  bench_fixtures.diode(str(tmp_path))
  assert benchmarks.by_name("depth_diode_indoor").missing(str(tmp_path)) is None


def test_tfds_nyu_and_cityscapes_in_their_real_feature_specs(tmp_path):
  with tfds.testing.mock_data(num_examples=2):
    nyu = list(readers.nyu(str(tmp_path)))
    city = list(readers.cityscapes(str(tmp_path)))
  assert len(nyu) == 2 and nyu[0]["depth"].shape == (480, 640) and nyu[0]["image"].shape == (480, 640, 3)
  np.testing.assert_array_equal(nyu[0]["valid"], nyu[0]["depth"] > 0)
  assert city[0]["semantic"].shape == (1024, 2048)
  assert set(np.unique(city[0]["semantic"])) <= set(range(19)) | {255}


def _refcoco_record():
  image = np.zeros((6, 8, 3), np.uint8)
  masks = np.zeros((2, 6, 8, 3), np.uint8)
  masks[0, :2, :2] = 255
  masks[1, 3:, 4:] = 255
  return {"image": image, "image/id": 1,
          "objects": {"mask": masks, "id": np.array([5, 6]), "label": np.array([1, 2]),
                      "refexp": {"raw": [np.array([b"the left cup", b"a cup"]), np.array([b"the dog"])],
                                 "refexp_id": [np.array([1, 2]), np.array([3])]}}}


def test_refcocog_one_sample_per_expression(tmp_path):
  with tfds.testing.mock_data(as_data_source_fn=lambda *a, **k: [_refcoco_record()]):
    samples = list(readers.refcocog(str(tmp_path)))
  assert [s["referring"][0][0] for s in samples] == ["the left cup", "a cup", "the dog"]
  assert (samples[0]["instance"] == 1).sum() == 4 and (samples[2]["instance"] == 1).sum() == 12
  # TFDS's own random mock records have masks of another size than the image: one clear line.
  with tfds.testing.mock_data(num_examples=1):
    with pytest.raises(BadRecordError, match=r"^ref_coco/refcocog_umd/validation\[0\]: .*object"):
      list(readers.refcocog(str(tmp_path)))


def test_nuscenes_lidar_projected_into_each_camera(tmp_path):
  bench_fixtures.nuscenes(str(tmp_path))
  samples = list(readers.nuscenes(str(tmp_path / "nuscenes")))
  assert len(samples) == 6 and samples[0]["key"].endswith("CAM_FRONT__1.jpg")  # the six cameras of the key frame
  [s] = list(readers.nuscenes(str(tmp_path / "nuscenes"), cameras=("CAM_FRONT",)))
  assert s["image"].shape == bench_fixtures.NUSC_HW + (3,) and s["depth"].shape == bench_fixtures.NUSC_HW
  # The points of bench_fixtures.NUSC_POINTS land where worked out by hand there: nearest per pixel, behind
  # the camera, outside the image and nearer than 1 m dropped.
  got = {tuple(int(i) for i in ij): float(s["depth"][tuple(ij)]) for ij in np.argwhere(s["valid"])}
  assert got.keys() == bench_fixtures.NUSC_DEPTH.keys()
  for ij, d in bench_fixtures.NUSC_DEPTH.items():
    assert got[ij] == pytest.approx(d, abs=1e-4)
  # The 80 m cap: the 90 m point is read but not scored; a perfect prediction scores perfectly.
  p = protocols.DEPTH["nuscenes"]
  assert protocols.depth_valid(s["depth"], p, s["valid"]).sum() == 3
  scores = protocols.depth_scores(np.where(s["valid"], s["depth"], 7.0), s["depth"], p, s["valid"])
  assert scores["delta1"] == 1.0 and scores["abs_rel"] == pytest.approx(0.0, abs=1e-7)


def test_nuscenes_split_and_wrong_layouts(tmp_path):
  bench_fixtures.nuscenes(str(tmp_path))
  root = tmp_path / "nuscenes"
  (root / "split.txt").write_text("scene-0001\n")
  assert len(list(readers.nuscenes(str(root), cameras=("CAM_FRONT",)))) == 1
  (root / "split.txt").write_text("scene-0002\n")
  with pytest.raises(readers.LayoutError, match=r"^error: nuscenes: no samples in .* for the scenes of "):
    list(readers.nuscenes(str(root)))
  os.remove(root / "split.txt")
  os.remove(root / "samples" / "LIDAR_TOP" / "n008__LIDAR_TOP__1.pcd.bin")
  with pytest.raises(readers.LayoutError) as e:
    list(readers.nuscenes(str(root)))
  assert "\n" not in str(e.value) and "LIDAR_TOP/n008__LIDAR_TOP__1.pcd.bin not found" in str(e.value)
  (tmp_path / "other" / "nuscenes").mkdir(parents=True)
  with pytest.raises(readers.LayoutError, match=r"^error: nuscenes: no .*v1.0-\*/sample_data.json; expected"):
    list(readers.nuscenes(str(tmp_path / "other" / "nuscenes")))
  assert benchmarks.by_name("depth_nuscenes").missing(str(tmp_path / "none")).startswith(
      f"no folder {tmp_path}/none/nuscenes (nuscenes/v1.0-")


def test_rle_decoding_against_a_hand_made_mask():
  mask = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]], bool)
  # Column-major: 0 0 1 | 1 1 1 | 1 0 0 | 0 0 1 -> runs 2 zeros, 5 ones, 4 zeros, 1 one.
  assert readers.rle_counts([2, 5, 4, 1]) == [2, 5, 4, 1]
  np.testing.assert_array_equal(readers.rle_decode({"size": [3, 4], "counts": [2, 5, 4, 1]}), mask)
  # Compressed: '2' '5' '4' (value + 48), then the fourth count as its difference to the second, 1 - 5 = -4:
  # the 5-bit group 28 with the sign bit 0x10 set -> chr(28 + 48) = 'L'.
  assert readers.rle_counts("254L") == [2, 5, 4, 1]
  np.testing.assert_array_equal(readers.rle_decode({"size": [3, 4], "counts": "254L"}), mask)
  # 40 needs two groups: 40 & 31 = 8 with the continuation bit 0x20 -> chr(8 + 32 + 48) = 'X', then 1 -> '1'.
  assert readers.rle_counts("X11") == [40, 1]
  assert bench_fixtures.rle_string(mask) == "254L"
  big = np.random.default_rng(1).random((37, 53)) > 0.4
  np.testing.assert_array_equal(readers.rle_decode({"size": [37, 53], "counts": bench_fixtures.rle_string(big)}),
                                big)
  with pytest.raises(BadRecordError, match="expected H x W = 3 x 4"):
    readers.rle_decode({"size": [3, 4], "counts": [2, 5]})


def test_sa_co_gold_reader_pairs_annotators_and_subsample(tmp_path):
  bench_fixtures.sa_co_gold(str(tmp_path))
  samples = list(readers.sa_co_gold(str(tmp_path / "sa_co_gold"), queries=0))
  # Pair 3 is not instance-exhaustive in a, pair 4 not in b: both left out.
  assert [(s["key"], s["query"]) for s in samples] == [("fg_food/1", "chili"), ("fg_food/2", "the fish ball")]
  m1, m2 = bench_fixtures.saco_masks()
  a, b = samples[0]["annotations"]
  assert a.shape == (2,) + bench_fixtures.SACO_HW  # the crowd segment is ignored
  np.testing.assert_array_equal(a[0], m1)
  np.testing.assert_array_equal(a[1], m2)
  np.testing.assert_array_equal(b, m2[None])
  assert [x.shape[0] for x in samples[1]["annotations"]] == [0, 0]  # a negative pair
  assert samples[0]["image"].shape == bench_fixtures.SACO_HW + (3,)
  one = [s["key"] for s in readers.sa_co_gold(str(tmp_path / "sa_co_gold"), queries=1)]
  assert len(one) == 1 and one == [s["key"] for s in readers.sa_co_gold(str(tmp_path / "sa_co_gold"), queries=1)]
  assert len(list(readers.sa_co_gold(str(tmp_path / "sa_co_gold")))) == 2  # 500 > the pool: all of it


def test_sa_co_gold_wrong_layout_and_missing(tmp_path):
  assert benchmarks.by_name("sa_co_gold").missing(str(tmp_path)).startswith(f"no folder {tmp_path}/sa_co_gold (")
  (tmp_path / "sa_co_gold" / "annotations").mkdir(parents=True)
  with pytest.raises(readers.LayoutError) as e:
    list(readers.sa_co_gold(str(tmp_path / "sa_co_gold")))
  assert str(e.value).startswith("error: sa_co_gold: no gold_<subset>_merged_a_release_test.json in ")
  assert "\n" not in str(e.value)
  bench_fixtures.sa_co_gold(str(tmp_path / "x"))
  os.remove(tmp_path / "x" / "sa_co_gold" / "images" / "metaclip" / "1" / "1001" / "metaclip_1_1001_x.jpeg")
  with pytest.raises(readers.LayoutError, match=r"metaclip_1_1001_x.jpeg not found; expected the layout sa_co_gold/"):
    list(readers.sa_co_gold(str(tmp_path / "x" / "sa_co_gold")))


# ------------------------------------------------------------------------------------------------------------
# The DSINE sets and ReasonSeg at their real sizes, against first principles.
# ------------------------------------------------------------------------------------------------------------
Q8 = 128 / 255 * 2 - 1     # a zero component stored in 8 bits: round(0.5 * 255) = 128 -> 0.0039216
Q16 = 32768 / 65535 * 2 - 1  # in 16 bits: round(0.5 * 65535) = 32768 -> 0.0000153


def _room_error(tmp_path, dataset):
  ours, raw = bench_fixtures.dsine_room(str(tmp_path), dataset)
  [s] = list(readers.dsine_normals(str(tmp_path / "dsine_eval"), dataset))
  assert s["normals"].shape == ours.shape and s["valid"].all()
  gt = protocols.to_our_frame(s["normals"], protocols.NORMALS[dataset])
  acc = normals.Accumulator()
  acc.update(ours, {"normals": gt, "valid": s["valid"]})  # a perfect prediction in our frame
  return acc.result(), s, gt, raw


def test_dsine_nyuv2_box_room_perfect_prediction_scores_zero(tmp_path):
  # Bug 1, on a box room at NYUv2's 480 x 640 whose normals are known in both frames (bench_fixtures.box_room).
  # The left wall at pixel (240, 0) faces right: DSINE stores it as rgb (0, 128, 128), n = (-1, Q8, Q8) (its
  # normals point away from the camera); in our frame it is (1, 0, 0).
  r, s, gt, raw = _room_error(tmp_path, "nyuv2")
  assert tuple(raw[240, 0]) == (0, 128, 128) and tuple(raw[479, 320]) == (128, 255, 128)  # left wall, floor
  np.testing.assert_allclose(gt[240, 0], [1.0, Q8, Q8], atol=1e-6)
  np.testing.assert_allclose(gt[479, 320], [-Q8, 1.0, Q8], atol=1e-6)  # the floor: stored (Q8, 1, Q8)
  # Every wall is axis-aligned, so every pixel is off only by the 8-bit rounding of its two zero components:
  # arctan(sqrt(2) * Q8) = 0.3178 degrees (reading x unflipped, the side walls score 180: mean 63.7).
  expected = float(np.degrees(np.arctan(np.sqrt(2) * Q8)))
  assert r["mean_angle"] == pytest.approx(expected, abs=2e-3) and r["within_11.25"] == 100.0


def test_dsine_vkitti_layout_16bit_normals_and_frame(tmp_path):
  # Bug 2: DSINE's vkitti set is Scene01/<id>_img.jpg with 16-bit normal PNGs (375 x 1242), n = rgb / 65535 * 2
  # - 1. A zero component is stored as 32768: Q16 = 1.5e-5 read as 16 bits, Q8 = 3.9e-3 if read as 8 bits.
  r, s, gt, raw = _room_error(tmp_path, "vkitti")
  assert s["key"].endswith(os.path.join("vkitti", "Scene01", "000000_normal.png"))
  assert raw.dtype == np.uint16 and tuple(raw[187, 0]) == (0, 32768, 32768)  # the left wall, facing right
  np.testing.assert_allclose(s["normals"][187, 0], [-1.0, Q16, Q16], atol=1e-7)
  np.testing.assert_allclose(gt[187, 0], [1.0, Q16, Q16], atol=1e-7)
  # 16-bit rounding: arctan(sqrt(2) * Q16) = 0.0012 degrees per pixel (8-bit reading: 0.318; x unflipped: 110).
  assert r["mean_angle"] < 0.01 and r["within_11.25"] == 100.0


@pytest.mark.parametrize("ignore_first", [False, True])
def test_reasonseg_ignore_inside_target_is_ignored(tmp_path, ignore_first):
  # Bug 4, at 768 x 1024: a target square with vertices 100 and 500 (401 x 401 = 160,801 pixels drawn) around an
  # ignore square with vertices 200 and 300 (101 x 101 = 10,201). The authors draw the larger polygon first, so
  # the ignore square stays ignored: 160,801 - 10,201 = 150,600 target pixels, whatever the JSON's order.
  bench_fixtures.reasonseg_hole(str(tmp_path), ignore_first=ignore_first)
  [s] = list(readers.reasonseg(str(tmp_path / "reasonseg")))
  target = s["instance"] == 1
  assert s["image"].shape == (768, 1024, 3)
  assert target.sum() == 150_600 and (~s["valid"]).sum() == 10_201
  assert not (target & ~s["valid"]).any() and target[100:501, 100:501].sum() == 150_600
  # A prediction equal to the authors' mask scores IoU 1 (scored as target before: 150,600 / 160,801 = 0.937).
  acc = referring.Accumulator()
  acc.update(target.copy(), {"mask": target}, valid=s["valid"])
  assert acc.result()["giou"] == 1.0


def test_kitti_benchmark_crop_option_cuts_image_and_depth(tmp_path):
  # A 375 x 1242 frame: 20 m everywhere but 80 m in row 200 and nothing in column 0 (bench_fixtures.kitti_frame).
  bench_fixtures.kitti_frame(str(tmp_path))
  root = str(tmp_path / "kitti")
  [full] = list(readers.kitti(root))
  [kb] = list(readers.kitti(root, kitti_crop="kb_garg"))
  assert full["image"].shape == (375, 1242, 3) and kb["image"].shape == (352, 1216, 3)
  # The benchmark frame is rows 23..374 and columns 13..1228: row 200 -> 177, column 0 cut away.
  np.testing.assert_array_equal(kb["depth"], full["depth"][23:, 13:1229])
  assert kb["valid"].all() and kb["depth"][177, 500] == 80.0
  # Scored: Garg rows 143..348 (206) x columns 43..1171 (1129) of the crop; rows 153..370 (218) x 44..1196
  # (1153) of the full frame; the 80 m row counts with '<=' only.
  def scored(sample, **kw):
    p = protocols.depth_protocol("kitti", options.Options(**kw))
    return protocols.depth_valid(sample["depth"], p, sample["valid"]).sum()
  assert scored(kb, kitti_crop="kb_garg") == 206 * 1129 and scored(kb, kitti_crop="kb_eigen") == 204 * 1129
  assert scored(full) == 218 * 1153 and scored(full, depth_cap="lt") == 217 * 1153
  assert scored(full, kitti_crop="none") == 375 * 1241
