"""Small benchmark folders in each dataset's published layout (vbanana.bench.readers.LAYOUTS), written to a
tmp dir, with ground truth the tests know by construction."""

import json
import os

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def _image(path, h, w):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def kitti(root, h=30, w=100):
  drive, frame = "2011_09_26_drive_0002_sync", "0000000005"
  gt = np.zeros((h, w), np.uint16)
  gt[10:, :] = 256 * 20  # 20 m below row 10, no measurement above
  gt[12, 50] = 256 * 90  # beyond the 80 m cap
  path = os.path.join(root, "kitti", "data_depth_annotated", "val", drive, "proj_depth", "groundtruth", "image_02")
  os.makedirs(path, exist_ok=True)
  Image.fromarray(gt).save(os.path.join(path, frame + ".png"))
  _image(os.path.join(root, "kitti", "raw", drive[:10], drive, "image_02", "data", frame + ".png"), h, w)
  return gt


def eth3d(root, h=20, w=30):
  depth = np.full((h, w), 5.0, np.float32)
  depth[:, :3] = np.inf
  _image(os.path.join(root, "eth3d", "courtyard", "images", "dslr_images_undistorted", "DSC_0001.JPG"), h, w)
  path = os.path.join(root, "eth3d", "courtyard", "ground_truth_depth", "dslr_images")
  os.makedirs(path, exist_ok=True)
  depth.astype("<f4").tofile(os.path.join(path, "DSC_0001.JPG"))
  return depth


def diode(root, h=16, w=24):
  base = os.path.join(root, "diode", "val", "indoors", "scene_00019", "scan_00183")
  stem = os.path.join(base, "00019_00183_indoors_000_010")
  _image(stem + ".png", h, w)
  depth = np.full((h, w, 1), 3.0, np.float32)
  np.save(stem + "_depth.npy", depth)
  mask = np.ones((h, w), np.float32)
  mask[0] = 0
  np.save(stem + "_depth_mask.npy", mask)
  normal = np.zeros((h, w, 3), np.float32)
  normal[1:, :, 2] = -1.0  # facing the camera in DIODE's (OpenCV) axes; row 0 invalid (zero)
  np.save(stem + "_normal.npy", normal)
  return stem


def ibims1(root, h=12, w=16):
  base = os.path.join(root, "ibims1", "ibims1_core_raw")
  _image(os.path.join(base, "rgb", "corridor_01.png"), h, w)
  depth = np.full((h, w), 13107, np.uint16)  # 13107 / 65535 * 50 = 10.0 m
  os.makedirs(os.path.join(base, "depth"), exist_ok=True)
  Image.fromarray(depth).save(os.path.join(base, "depth", "corridor_01.png"))
  for name, bad in (("mask_invalid", (0, 0)), ("mask_transp", (1, 1))):
    m = np.full((h, w), 255, np.uint8)
    m[bad] = 0
    os.makedirs(os.path.join(base, name), exist_ok=True)
    Image.fromarray(m).save(os.path.join(base, name, "corridor_01.png"))


def dsine(root, dataset="nyuv2", h=12, w=16):
  base = os.path.join(root, "dsine_eval", dataset, "test")
  _image(os.path.join(base, "000000_img.png"), h, w)
  normal = np.zeros((h, w, 3), np.uint8)
  normal[2:] = (128, 128, 255)  # facing the camera; rows 0-1 black = invalid
  Image.fromarray(normal).save(os.path.join(base, "000000_normal.png"))


# ------------------------------------------------------------------------------------------------------------
# DSINE's evaluation sets at their real sizes: a box room whose normals are known in both frames.
# ------------------------------------------------------------------------------------------------------------
NYU_K = [[518.8579, 0.0, 325.5824], [0.0, 519.4696, 253.7362], [0.0, 0.0, 1.0]]  # NYUv2's colour camera
VKITTI_K = [[725.0087, 0.0, 620.5], [0.0, 725.0087, 187.0], [0.0, 0.0, 1.0]]     # Virtual KITTI 2's camera


def box_room(h, w, k, half_width=2.0, half_height=1.5, depth=6.0):
  """A camera inside a box room (walls at x = -+half_width, floor and ceiling at y = +-half_height in OpenCV
  axes, x right, y down, z forward; back wall at z = depth). Returns (ours, dsine), both (H, W, 3) from the
  geometry alone: `ours` the outward normal (the side the camera sees) in vbanana's frame (x right, y up, z
  towards the viewer): the left wall faces right, (1, 0, 0); the floor (0, 1, 0); the back wall (0, 0, 1).
  `dsine` the normal as DSINE's d2n code orients it, pointing away from the camera in OpenCV axes (n . ray > 0):
  the left wall (-1, 0, 0), the floor (0, 1, 0), the back wall (0, 0, 1)."""
  fx, fy, cx, cy = k[0][0], k[1][1], k[0][2], k[1][2]
  u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
  ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], -1)
  # (axis, plane coordinate, outward normal in OpenCV axes: towards the inside of the room)
  planes = [(0, -half_width, (1, 0, 0)), (0, half_width, (-1, 0, 0)), (1, half_height, (0, -1, 0)),
            (1, -half_height, (0, 1, 0)), (2, depth, (0, 0, -1))]
  nearest, outward = np.full((h, w), np.inf), np.zeros((h, w, 3))
  for axis, c, n in planes:
    with np.errstate(divide="ignore"):
      t = c / ray[..., axis]
    hit = (t > 0) & (t < nearest)
    nearest[hit] = t[hit]
    outward[hit] = n
  ours = outward * (1, -1, -1)  # OpenCV -> vbanana: y up, z towards the viewer
  dsine = -outward              # away from the camera
  assert np.all(np.einsum("hwc,hwc->hw", dsine, ray) > 0)
  return ours, dsine


def dsine_room(root, dataset):
  """The box room in the DSINE layout of `dataset` at its real size: nyuv2 test/000000_img.png with an 8-bit
  normal PNG (480 x 640), vkitti Scene01/000000_img.jpg with a 16-bit one (375 x 1242), as DSINE stores them:
  rgb = round((n + 1) / 2 * (2^bits - 1)). Returns our-frame normals (the perfect prediction) and the PNG's
  integer values."""
  folder, ext, k, hw, bits = {"nyuv2": ("test", "png", NYU_K, (480, 640), 8),
                              "vkitti": ("Scene01", "jpg", VKITTI_K, (375, 1242), 16)}[dataset]
  base = os.path.join(root, "dsine_eval", dataset, folder)
  _image(os.path.join(base, f"000000_img.{ext}"), *hw)
  np.save(os.path.join(base, "000000_intrins.npy"), np.asarray(k, np.float32))
  ours, dsine = box_room(*hw, k)
  top = 2 ** bits - 1
  raw = np.round((dsine + 1) / 2 * top).astype(np.uint16 if bits == 16 else np.uint8)
  if bits == 16:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (PIL cannot write 16-bit RGB)
    with open(os.path.join(base, "000000_normal.png"), "wb") as f:
      f.write(tf.io.encode_png(raw).numpy())
  else:
    Image.fromarray(raw).save(os.path.join(base, "000000_normal.png"))
  return ours, raw


def kitti_frame(root, h=375, w=1242):
  """One KITTI frame at a real size: depth 20 m everywhere (256 * 20), 80 m exactly in row 200, no
  measurement (0) in column 0."""
  drive, frame = "2011_09_26_drive_0002_sync", "0000000005"
  gt = np.full((h, w), 256 * 20, np.uint16)
  gt[200] = 256 * 80
  gt[:, 0] = 0
  path = os.path.join(root, "kitti", "data_depth_annotated", "val", drive, "proj_depth", "groundtruth", "image_02")
  os.makedirs(path, exist_ok=True)
  Image.fromarray(gt).save(os.path.join(path, frame + ".png"))
  _image(os.path.join(root, "kitti", "raw", drive[:10], drive, "image_02", "data", frame + ".png"), h, w)
  return gt


def reasonseg_hole(root, h=768, w=1024, ignore_first=False):
  """ReasonSeg at a real size: a 400 x 400 'target' square (vertices 100 and 500: 401 x 401 pixels drawn) with a
  100 x 100 'ignore' square inside it (vertices 200 and 300: 101 x 101 pixels), and two query texts."""
  base = os.path.join(root, "reasonseg", "val")
  os.makedirs(base, exist_ok=True)
  _image(os.path.join(base, "hole.jpg"), h, w)
  target = {"label": "target", "points": [[100, 100], [500, 100], [500, 500], [100, 500]], "shape_type": "polygon"}
  ignore = {"label": "ignore", "points": [[200, 200], [300, 200], [300, 300], [200, 300]], "shape_type": "polygon"}
  meta = {"text": ["what would you stand on to paint the ceiling", "the ladder"], "is_sentence": True,
          "shapes": [ignore, target] if ignore_first else [target, ignore]}
  with open(os.path.join(base, "hole.json"), "w") as f:
    json.dump(meta, f)


def reasonseg(root, h=20, w=20):
  base = os.path.join(root, "reasonseg", "val")
  os.makedirs(base, exist_ok=True)
  Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(base, "img1.jpg"))
  meta = {"text": ["the thing you would sit on", "where to rest"], "is_sentence": True,
          "shapes": [{"label": "target", "points": [[2, 2], [9, 2], [9, 9], [2, 9]], "shape_type": "polygon"},
                     {"label": "ignore", "points": [[12, 12], [18, 12], [18, 18], [12, 18]],
                      "shape_type": "polygon"}]}
  with open(os.path.join(base, "img1.json"), "w") as f:
    json.dump(meta, f)


# ------------------------------------------------------------------------------------------------------------
# nuScenes: one key-frame sample, the devkit's tables, a LIDAR_TOP sweep whose points land on known pixels.
# ------------------------------------------------------------------------------------------------------------
NUSC_HW = (20, 30)
NUSC_K = [[10.0, 0.0, 15.5], [0.0, 10.0, 10.5], [0.0, 0.0, 1.0]]
YAW90 = [np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)]  # (w, x, y, z): ego x points along global +y
# LiDAR points (x, y, z, intensity, ring). With the poses below a LiDAR point (X, Y, Z) is, in the camera,
# (-Y, -(Z + 0.5), X - 1.5) (worked out in tests/test_bench_readers.py), so u = 10 * -Y / z + 15.5 and
# v = 10 * -(Z + 0.5) / z + 10.5 with z = X - 1.5.
NUSC_POINTS = np.array([
    [11.5, 0.0, -0.5],     # z 10 -> pixel (10, 15), depth 10
    [21.5, -10.0, -8.5],   # z 20 -> (14, 20), depth 20
    [31.5, 0.0, -0.5],     # z 30 -> (10, 15) again: farther, so not kept
    [-8.5, 0.0, -0.5],     # behind the camera (z -10)
    [11.5, -20.0, -0.5],   # u 35.5: right of the image
    [91.5, 9.0, -0.5],     # z 90 -> (10, 14): in the map, beyond the 80 m cap
    [2.0, 0.0, -0.5],      # z 0.5: nearer than 1 m, dropped (would win pixel (10, 15))
    [11.5, -0.55, -3.2],   # z 10 -> u 16.05, v 13.2 -> (13, 16)
])
NUSC_DEPTH = {(10, 15): 10.0, (14, 20): 20.0, (10, 14): 90.0, (13, 16): 10.0}


def nuscenes(root, cameras=("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                            "CAM_FRONT_LEFT")):
  base = os.path.join(root, "nuscenes")
  tables = os.path.join(base, "v1.0-mini")
  os.makedirs(tables, exist_ok=True)
  pts = np.concatenate([NUSC_POINTS, np.zeros((len(NUSC_POINTS), 2))], 1).astype("<f4")
  lidar_file = "samples/LIDAR_TOP/n008__LIDAR_TOP__1.pcd.bin"
  os.makedirs(os.path.join(base, "samples", "LIDAR_TOP"), exist_ok=True)
  pts.tofile(os.path.join(base, lidar_file))
  sensor = [{"token": "s_lidar", "channel": "LIDAR_TOP", "modality": "lidar"}]
  calibrated = [{"token": "c_lidar", "sensor_token": "s_lidar", "translation": [0.0, 0.0, 2.0],
                 "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []}]
  ego = [{"token": "e_lidar", "translation": [100.0, 50.0, 0.0], "rotation": YAW90, "timestamp": 1000},
         {"token": "e_cam", "translation": [100.0, 50.5, 0.0], "rotation": YAW90, "timestamp": 1020}]
  data = [{"token": "sd_lidar", "sample_token": "sample1", "ego_pose_token": "e_lidar",
           "calibrated_sensor_token": "c_lidar", "filename": lidar_file, "fileformat": "pcd", "is_key_frame": True,
           "timestamp": 1000, "width": 0, "height": 0},
          {"token": "sd_sweep", "sample_token": "sample1", "ego_pose_token": "e_lidar",  # not a key frame
           "calibrated_sensor_token": "c_lidar", "filename": "samples/none.bin", "is_key_frame": False,
           "timestamp": 1050}]
  for i, cam in enumerate(cameras):
    sensor.append({"token": f"s_{i}", "channel": cam, "modality": "camera"})
    calibrated.append({"token": f"c_{i}", "sensor_token": f"s_{i}", "translation": [1.0, 0.0, 1.5],
                       "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": NUSC_K})
    name = f"samples/{cam}/n008__{cam}__1.jpg"
    _image(os.path.join(base, name), *NUSC_HW)
    data.append({"token": f"sd_{i}", "sample_token": "sample1", "ego_pose_token": "e_cam",
                 "calibrated_sensor_token": f"c_{i}", "filename": name, "fileformat": "jpg", "is_key_frame": True,
                 "timestamp": 1020, "width": NUSC_HW[1], "height": NUSC_HW[0]})
  for name, records in (("sample", [{"token": "sample1", "timestamp": 1000, "scene_token": "scene1",
                                     "prev": "", "next": ""}]),
                        ("sample_data", data), ("calibrated_sensor", calibrated), ("ego_pose", ego),
                        ("sensor", sensor), ("scene", [{"token": "scene1", "name": "scene-0001"}])):
    with open(os.path.join(tables, name + ".json"), "w") as f:
      json.dump(records, f)
  return base


# ------------------------------------------------------------------------------------------------------------
# SA-Co/Gold: the release's COCO-format JSON, compressed RLE masks.
# ------------------------------------------------------------------------------------------------------------
def rle_string(mask):
  """COCO's compressed RLE string of a boolean mask (column-major runs, 0s first), for fixtures."""
  flat = np.asarray(mask, bool).T.reshape(-1)
  counts, value, run = [], False, 0
  for v in flat:
    if v != value:
      counts.append(run)
      value, run = v, 0
    run += 1
  counts.append(run)
  out = []
  for i, c in enumerate(counts):
    x = c - counts[i - 2] if i > 2 else c
    more = True
    while more:
      ch = x & 0x1f
      x >>= 5
      more = (x != -1) if ch & 0x10 else (x != 0)
      out.append(chr(ch + (0x20 if more else 0) + 48))
  return "".join(out)


SACO_HW = (12, 16)


def saco_masks():
  """Two chili masks (a's) and b's single one; a crowd segment in a's is ignored."""
  m1, m2 = np.zeros(SACO_HW, bool), np.zeros(SACO_HW, bool)
  m1[1:4, 2:6] = True
  m2[6:11, 8:15] = True
  return m1, m2


def sa_co_gold(root):
  base = os.path.join(root, "sa_co_gold")
  _image(os.path.join(base, "images", "metaclip", "1", "1001", "metaclip_1_1001_x.jpeg"), *SACO_HW)
  m1, m2 = saco_masks()
  fname = "1/1001/metaclip_1_1001_x.jpeg"

  def image(i, text, exhaustive=1):
    return {"id": i, "file_name": fname, "text_input": text, "width": SACO_HW[1], "height": SACO_HW[0],
            "is_instance_exhaustive": exhaustive, "is_pixel_exhaustive": exhaustive}

  def ann(i, image_id, mask, crowd=0):
    return {"id": i, "image_id": image_id, "segmentation": {"counts": rle_string(mask), "size": list(SACO_HW)},
            "category_id": 1, "iscrowd": crowd, "area": float(mask.mean())}

  crowd = np.zeros(SACO_HW, bool)
  crowd[:, :] = True
  a = {"images": [image(1, "chili"), image(2, "the fish ball"), image(3, "spoon", 0), image(4, "bowl")],
       "annotations": [ann(1, 1, m1), ann(2, 1, m2), ann(3, 1, crowd, crowd=1), ann(4, 3, m1), ann(5, 4, m2)],
       "categories": [{"id": 1, "name": "object"}]}
  b = {"images": [image(1, "chili"), image(2, "the fish ball"), image(3, "spoon", 0), image(4, "bowl", 0)],
       "annotations": [ann(1, 1, m2)], "categories": [{"id": 1, "name": "object"}]}
  os.makedirs(os.path.join(base, "annotations"), exist_ok=True)
  for k, d in (("a", a), ("b", b)):
    with open(os.path.join(base, "annotations", f"gold_fg_food_merged_{k}_release_test.json"), "w") as f:
      json.dump(d, f)
  return base
