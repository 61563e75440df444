"""Benchmark data readers: each yields raw samples (docs/interfaces.md) with the ground truth at its own
resolution, from a prepared TFDS dataset or from a dataset's own file layout on disk.

Why two kinds: TFDS has builders for NYU Depth v2, Cityscapes and RefCOCOg (ref_coco/refcocog_umd), so
those are read by name from a TFDS data_dir (prepared by the user: Cityscapes needs a manual download).
The other benchmarks are read where their publishers' archives unpack, with no download code: the user
points at the files. Each folder reader checks its layout first and raises `LayoutError`, one line naming
the file it looked for and the layout it expected. `LAYOUTS` is the layout of each, as docs/benchmarks.md
draws it.

Every reader is an iterable of samples; a sample carries `valid` (the dataset's own validity mask) where the
dataset defines one, and `key` (where it came from).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from vbanana.bench import protocols
from vbanana.data import adapters, folder
from vbanana.data.adapters import BadRecordError


class LayoutError(FileNotFoundError):
  """A benchmark directory that is not in its dataset's published layout."""


LAYOUTS = {
    "kitti": "kitti/data_depth_annotated/val/<drive>/proj_depth/groundtruth/image_02/<frame>.png (16-bit, "
             "metres x 256) and kitti/raw/<date>/<drive>/image_02/data/<frame>.png; optional kitti/split.txt "
             "with '<drive> <frame>' lines",
    "eth3d": "eth3d/<scene>/images/dslr_images_undistorted/<name>.JPG and "
             "eth3d/<scene>/ground_truth_depth/dslr_images/<name>.JPG (raw float32, H x W, inf = no depth)",
    "diode": "diode/val/indoors/<scene>/<scan>/<name>.png with <name>_depth.npy, <name>_depth_mask.npy "
             "(and <name>_normal.npy for normals)",
    "ibims1": "ibims1/ibims1_core_raw/{rgb,depth,mask_invalid,mask_transp}/<name>.png (depth 16-bit, "
              "50 m = 65535)",
    "dsine_eval": "dsine_eval/<dataset>/<folder>/<id>_img.png (vkitti: Scene<NN>/<id>_img.jpg) with "
                  "<id>_normal.png (nyuv2, scannet 8-bit: n = rgb / 255 * 2 - 1; vkitti 16-bit: n = rgb / 65535 * "
                  "2 - 1), <dataset> one of nyuv2, scannet, vkitti",
    "reasonseg": "reasonseg/val/<name>.jpg with <name>.json (LISA's release: 'text' list, polygon 'shapes' "
                 "labelled 'target' or 'ignore')",
    "nuscenes": "nuscenes/v1.0-{trainval,mini,test}/{sample,sample_data,calibrated_sensor,ego_pose,sensor}.json "
                "(the devkit's tables) with nuscenes/samples/LIDAR_TOP/<name>.pcd.bin (float32 x, y, z, intensity, "
                "ring) and nuscenes/samples/CAM_*/<name>.jpg; optional nuscenes/split.txt with one scene name a "
                "line (then scene.json too)",
    "sa_co_gold": "sa_co_gold/annotations/gold_<subset>_merged_{a,b,c}_release_test.json (the release's "
                  "COCO-format JSON: images with 'text_input', 'file_name', 'is_instance_exhaustive'; annotations "
                  "with RLE 'segmentation') and the images under sa_co_gold/images/metaclip/<file_name> "
                  "(sa_co_gold/images/sa1b/<file_name> for the sa1b subset)",
}


def _need(path: str, dataset: str) -> str:
  if not os.path.exists(path):
    raise LayoutError(f"error: {dataset}: {path} not found; expected the layout {LAYOUTS[dataset]}")
  return path


_read = folder.read_image  # one image file -> its array, or a BadRecordError naming the file


def _rgb(path: str) -> np.ndarray:
  image = _read(path)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _same_size(path: str, array: np.ndarray, image: np.ndarray) -> np.ndarray:
  if array.shape[:2] != image.shape[:2]:
    raise BadRecordError(f"{path}: shape {array.shape[:2]} differs from its image's {image.shape[:2]}")
  return array


# ------------------------------------------------------------------------------------------------------------
# TFDS: read by name from a prepared data_dir.
# ------------------------------------------------------------------------------------------------------------
TFDS_NAMES = {"nyu": ("nyu_depth_v2", "validation"),
              "cityscapes": ("cityscapes/semantic_segmentation", "validation"),
              "refcocog": ("ref_coco/refcocog_umd", "validation")}


def tfds_present(benchmark: str, data_dir: str) -> str | None:
  """None when the TFDS dataset's folder is under data_dir, else the path that was expected."""
  path = os.path.join(data_dir, TFDS_NAMES[benchmark][0].split("/")[0])
  return None if os.path.isdir(path) else path


def _tfds_records(benchmark: str, data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name, split = TFDS_NAMES[benchmark]
  return name, split, tfds.data_source(name, split=split, data_dir=data_dir)


def nyu(data_dir: str) -> Iterator[dict]:
  """NYU Depth v2, TFDS `nyu_depth_v2` split `validation`: the 654 test frames of Eigen's split, 480 x 640,
  depth in metres (0 = no measurement)."""
  name, split, records = _tfds_records("nyu", data_dir)
  for i in range(len(records)):
    sample = adapters.nyu_depth_v2(records[i], f"{name}/{split}[{i}]")
    sample["valid"] = np.isfinite(sample["depth"]) & (sample["depth"] > 0)
    yield sample


def cityscapes(data_dir: str) -> Iterator[dict]:
  """Cityscapes, TFDS `cityscapes/semantic_segmentation` split `validation` (500 images, 1024 x 2048):
  label ids -> the 19 train ids, everything else the ignore label 255 (vbanana.data.adapters)."""
  name, split, records = _tfds_records("cityscapes", data_dir)
  for i in range(len(records)):
    yield adapters.cityscapes(records[i], f"{name}/{split}[{i}]")


def _texts(value) -> list[str]:
  if isinstance(value, (str, bytes)):
    return [adapters._text(value)]  # pylint: disable=protected-access
  return [adapters._text(v) for v in np.asarray(value, dtype=object).reshape(-1).tolist()]  # pylint: disable=protected-access


def refcocog(data_dir: str) -> Iterator[dict]:
  """RefCOCOg (umd split), TFDS `ref_coco/refcocog_umd` split `validation`: one sample per referring
  expression (the unit cIoU and gIoU count), the referred object's mask (mask channel 0 > 0) as instance 1."""
  name, split, records = _tfds_records("refcocog", data_dir)
  for i in range(len(records)):
    key = f"{name}/{split}[{i}]"
    record = records[i]
    image = adapters._rgb(record, "image", key)  # pylint: disable=protected-access
    objects = adapters._feature(record, "objects", key)  # pylint: disable=protected-access
    masks, refexps = objects["mask"], objects["refexp"]
    raws = refexps["raw"] if isinstance(refexps, dict) else [r["raw"] for r in refexps]
    if len(masks) != len(raws):
      raise BadRecordError(f"{key}: {len(masks)} object masks but {len(raws)} lists of expressions")
    for j, (mask, raw) in enumerate(zip(masks, raws)):
      mask = np.asarray(mask)
      mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
      if mask.shape != image.shape[:2]:
        raise BadRecordError(f"{key}: object {j} mask {mask.shape} differs from the image {image.shape[:2]}")
      for k, expression in enumerate(_texts(raw)):
        yield {"image": image, "instance": mask.astype(np.int32), "referring": [(expression, 1)],
               "key": f"{key} object {j} expression {k}"}


# ------------------------------------------------------------------------------------------------------------
# Folders: each dataset's own layout.
# ------------------------------------------------------------------------------------------------------------
def _split_lines(path: str) -> list[tuple[str, str]]:
  with open(path, encoding="utf-8") as f:
    rows = [line.split() for line in f if line.strip()]
  bad = [r for r in rows if len(r) != 2]
  if bad:
    raise LayoutError(f"error: kitti: {path} line {' '.join(bad[0])!r}: expected '<drive> <frame>'")
  return [(d, os.path.splitext(f)[0]) for d, f in rows]


def kitti(root: str, kitti_crop: str = "garg") -> Iterator[dict]:
  """KITTI depth (Uhrig et al. 2017): the annotated depth of data_depth_annotated/val (16-bit PNG, metres x
  256, 0 = no measurement) with its raw left colour image (image_02); `split.txt` restricts the frames.
  `kitti_crop` 'kb_garg' / 'kb_eigen' (options.kitti_crop) cut image and depth to the 352 x 1216 KITTI-benchmark
  frame (protocols.kitti_benchmark_box), as ZoeDepth, Marigold and UniDepth feed their models."""
  gt_root = _need(os.path.join(root, "data_depth_annotated", "val"), "kitti")
  split = os.path.join(root, "split.txt")
  if os.path.exists(split):
    frames = _split_lines(split)
  else:
    frames = sorted((p.split(os.sep)[-5], os.path.splitext(os.path.basename(p))[0]) for p in glob.glob(
        os.path.join(gt_root, "*", "proj_depth", "groundtruth", "image_02", "*.png")))
  if not frames:
    raise LayoutError(f"error: kitti: no depth maps in {gt_root}; expected the layout {LAYOUTS['kitti']}")
  for drive, frame in frames:
    gt_path = _need(os.path.join(gt_root, drive, "proj_depth", "groundtruth", "image_02", frame + ".png"), "kitti")
    image_path = _need(os.path.join(root, "raw", drive[:10], drive, "image_02", "data", frame + ".png"), "kitti")
    image, raw = _rgb(image_path), _read(gt_path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
      raise BadRecordError(f"{gt_path}: expected a 16-bit single-channel PNG, got {raw.dtype} {raw.shape}")
    depth, valid = _same_size(gt_path, raw.astype(np.float32) / 256.0, image), raw > 0
    if kitti_crop.startswith("kb_"):
      try:
        t, b, l, r = protocols.kitti_benchmark_box(depth.shape)
      except ValueError as e:
        raise BadRecordError(f"{gt_path}: {e}") from e
      image, depth, valid = image[t:b, l:r], depth[t:b, l:r], valid[t:b, l:r]
    yield {"image": image, "depth": depth, "valid": valid, "key": gt_path}


def eth3d(root: str) -> Iterator[dict]:
  """ETH3D high-resolution multi-view training scenes: undistorted DSLR images and their laser depth maps
  (raw little-endian float32 of the image's H x W, inf where the scanner saw nothing)."""
  _need(root, "eth3d")
  images = sorted(glob.glob(os.path.join(root, "*", "images", "dslr_images_undistorted", "*.JPG")))
  if not images:
    raise LayoutError(f"error: eth3d: no images in {os.path.join(root, '*', 'images', 'dslr_images_undistorted')}; "
                      f"expected the layout {LAYOUTS['eth3d']}")
  for image_path in images:
    scene = image_path.split(os.sep)[-4]
    gt_path = _need(os.path.join(root, scene, "ground_truth_depth", "dslr_images", os.path.basename(image_path)),
                    "eth3d")
    image = _rgb(image_path)
    raw = np.fromfile(gt_path, dtype="<f4")
    if raw.size != image.shape[0] * image.shape[1]:
      raise BadRecordError(f"{gt_path}: {raw.size} float32 values, expected H x W = "
                           f"{image.shape[0]} x {image.shape[1]} of its image")
    depth = raw.reshape(image.shape[:2])
    yield {"image": image, "depth": depth, "valid": np.isfinite(depth) & (depth > 0), "key": gt_path}


def _diode_images(root: str) -> list[str]:
  base = _need(os.path.join(root, "val", "indoors"), "diode")
  images = sorted(p for p in glob.glob(os.path.join(base, "*", "*", "*.png")))
  if not images:
    raise LayoutError(f"error: diode: no images in {base}; expected the layout {LAYOUTS['diode']}")
  return images


def diode_depth(root: str) -> Iterator[dict]:
  """DIODE validation, indoor scenes: depth (H, W, 1) .npy in metres and the dataset's depth_mask."""
  for image_path in _diode_images(root):
    stem = image_path[:-4]
    image = _rgb(image_path)
    depth = np.load(_need(stem + "_depth.npy", "diode")).astype(np.float32)
    depth = _same_size(stem + "_depth.npy", depth[..., 0] if depth.ndim == 3 else depth, image)
    mask = _same_size(stem + "_depth_mask.npy", np.load(_need(stem + "_depth_mask.npy", "diode")) > 0, image)
    yield {"image": image, "depth": depth, "valid": mask, "key": image_path}


def diode_normals(root: str) -> Iterator[dict]:
  """DIODE validation, indoor scenes: <name>_normal.npy (H, W, 3), zero vectors where invalid; in DIODE's
  own axes (protocols.NORMALS['diode_indoor'] converts)."""
  for image_path in _diode_images(root):
    stem = image_path[:-4]
    image = _rgb(image_path)
    normals = _same_size(stem + "_normal.npy", np.load(_need(stem + "_normal.npy", "diode")).astype(np.float32),
                         image)
    valid = np.isfinite(normals).all(-1) & (np.linalg.norm(np.nan_to_num(normals), axis=-1) > 1e-3)
    yield {"image": image, "normals": normals, "valid": valid, "key": image_path}


def ibims1(root: str) -> Iterator[dict]:
  """iBims-1 core: 16-bit depth PNGs (metres = value / 65535 * 50) with mask_invalid and mask_transp
  (non-zero = usable); every mask must be non-zero for a pixel to count."""
  base = _need(os.path.join(root, "ibims1_core_raw"), "ibims1")
  rgb_dir = _need(os.path.join(base, "rgb"), "ibims1")
  names = sorted(f for f in os.listdir(rgb_dir) if f.endswith(".png"))
  if not names:
    raise LayoutError(f"error: ibims1: no images in {rgb_dir}; expected the layout {LAYOUTS['ibims1']}")
  for name in names:
    image = _rgb(os.path.join(rgb_dir, name))
    depth_path = _need(os.path.join(base, "depth", name), "ibims1")
    raw = _read(depth_path)
    if raw.dtype != np.uint16:
      raise BadRecordError(f"{depth_path}: expected a 16-bit PNG (50 m = 65535), got {raw.dtype}")
    valid = raw > 0
    for mask in ("mask_invalid", "mask_transp"):
      m = _read(_need(os.path.join(base, mask, name), "ibims1"))
      valid &= _same_size(os.path.join(base, mask, name), (m[..., 0] if m.ndim == 3 else m) > 0, image)
    depth = _same_size(depth_path, raw.astype(np.float32) / 65535.0 * 50.0, image)
    yield {"image": image, "depth": depth, "valid": valid, "key": depth_path}


def png_bit_depth(path: str) -> int:
  """The bit depth per channel in a PNG's IHDR chunk (byte 24), 0 for a file that is not a PNG."""
  with open(path, "rb") as f:
    head = f.read(26)
  return head[24] if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" else 0


def read_rgb16(path: str) -> np.ndarray:
  """A 16-bit RGB(A) PNG as (H, W, 3) uint16. PIL has no 16-bit RGB mode (it keeps each sample's high byte:
  off by up to 255 / 65535 per sample), so TensorFlow's PNG decoder reads these."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      return tf.io.decode_png(f.read(), channels=3, dtype=tf.uint16).numpy()
  except Exception as e:  # pylint: disable=broad-except  (TF raises its own error types on corrupt files)
    raise BadRecordError(f"{path}: cannot decode a 16-bit PNG ({type(e).__name__}: {str(e)[:120]})") from e


def dsine_normals(root: str, dataset: str) -> Iterator[dict]:
  """One of the DSINE evaluation sets (nyuv2: GeoNet's normals of the 654 NYUv2 test frames; scannet;
  vkitti: Scene<NN>/<id>_img.jpg): <id>_img.<png|jpg> and <id>_normal.png, n = rgb / 255 * 2 - 1 for 8-bit maps
  and rgb / 65535 * 2 - 1 for 16-bit ones (vkitti's; the bit depth is read from the PNG header), valid where
  the map is not black; in DSINE's frame (protocols.NORMALS converts)."""
  base = _need(os.path.join(root, dataset), "dsine_eval")
  images = sorted(p for ext in ("png", "jpg") for p in glob.glob(os.path.join(base, "**", f"*_img.{ext}"),
                                                                  recursive=True))
  if not images:
    raise LayoutError(f"error: dsine_eval: no <id>_img.png or <id>_img.jpg under {base}; expected the layout "
                      f"{LAYOUTS['dsine_eval']}")
  for image_path in images:
    normal_path = _need(image_path[:-len("_img.png")] + "_normal.png", "dsine_eval")
    image = _rgb(image_path)
    raw = read_rgb16(normal_path) if png_bit_depth(normal_path) == 16 else _read(normal_path)
    if raw.ndim != 3 or raw.shape[-1] < 3:
      raise BadRecordError(f"{normal_path}: expected an RGB normal map, got shape {raw.shape}")
    raw = _same_size(normal_path, raw[..., :3], image)
    scale = 65535.0 if raw.dtype == np.uint16 else 255.0
    normals = raw.astype(np.float32) / scale * 2.0 - 1.0
    yield {"image": image, "normals": normals, "valid": raw.astype(np.int64).sum(-1) > 0, "key": normal_path}


REASONSEG_TARGET, REASONSEG_IGNORE = 1, 255


def _draw_polygon(shape_hw, points, value: int, canvas=None) -> Image.Image:
  """A polygon filled and outlined with `value`, vertices truncated to integers (as the authors' cv2 calls do)."""
  canvas = Image.new("L", (shape_hw[1], shape_hw[0]), 0) if canvas is None else canvas
  xy = [tuple(int(float(c)) for c in p[:2]) for p in points]
  if len(xy) >= 2:
    ImageDraw.Draw(canvas).polygon(xy, fill=value, outline=value)
  return canvas


def reasonseg_mask(shape_hw, shapes) -> np.ndarray:
  """(H, W) uint8: 1 target, 255 ignore, 0 background, drawn the way the dataset authors' code draws it (LISA's
  get_mask_from_json): 'flag' shapes skipped, a label containing 'ignore' is ignore and any other label target,
  polygons drawn largest first so a smaller one inside a larger one wins (an 'ignore' hole in a target stays
  ignored)."""
  shapes = [s for s in shapes if str(s.get("label", "")).lower() != "flag" and len(s.get("points", ())) >= 2]
  areas = [int((np.asarray(_draw_polygon(shape_hw, s["points"], 1)) > 0).sum()) for s in shapes]
  order = np.argsort(areas, kind="stable")[::-1]
  canvas = Image.new("L", (shape_hw[1], shape_hw[0]), 0)
  for i in order:
    label = str(shapes[i].get("label", "")).lower()
    _draw_polygon(shape_hw, shapes[i]["points"], REASONSEG_IGNORE if "ignore" in label else REASONSEG_TARGET, canvas)
  return np.asarray(canvas, np.uint8)


def reasonseg(root: str, reasonseg_texts: str = "first") -> Iterator[dict]:
  """ReasonSeg val (Lai et al. 2024, LISA): per image, its first query text (`reasonseg_texts` 'first', the
  authors' evaluator) or one sample per text ('all'); the target mask and the ignored pixels drawn as the
  authors draw them (`reasonseg_mask`): 'ignore' regions are left out of the score (`valid`)."""
  base = _need(os.path.join(root, "val"), "reasonseg")
  images = sorted(glob.glob(os.path.join(base, "*.jpg")))
  if not images:
    raise LayoutError(f"error: reasonseg: no <name>.jpg in {base}; expected the layout {LAYOUTS['reasonseg']}")
  for image_path in images:
    json_path = _need(image_path[:-4] + ".json", "reasonseg")
    try:
      with open(json_path, encoding="utf-8") as f:
        meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise BadRecordError(f"{json_path}: cannot read ({type(e).__name__}: {e})") from e
    image = _rgb(image_path)
    mask = reasonseg_mask(image.shape[:2], meta.get("shapes", []))
    target, ignore = mask == REASONSEG_TARGET, mask == REASONSEG_IGNORE
    texts = meta.get("text", [])
    texts = [texts] if isinstance(texts, str) else list(texts)
    for k, text in enumerate(texts[:1] if reasonseg_texts == "first" else texts):
      yield {"image": image, "instance": target.astype(np.int32), "referring": [(text, 1)], "valid": ~ignore,
             "key": f"{json_path} text {k}"}


# ------------------------------------------------------------------------------------------------------------
# nuScenes: LiDAR depth in the camera images, from the devkit's JSON tables (no devkit needed).
# ------------------------------------------------------------------------------------------------------------
NUSCENES_VERSIONS = ("v1.0-trainval", "v1.0-test", "v1.0-mini")  # the first present is read


def _json(path: str, dataset: str):
  _need(path, dataset)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise BadRecordError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _by_token(records, path):
  try:
    return {r["token"]: r for r in records}
  except (TypeError, KeyError) as e:
    raise LayoutError(f"error: nuscenes: {path} has records without a 'token'; expected the layout "
                      f"{LAYOUTS['nuscenes']}") from e


def nuscenes(root: str, cameras=None, nuscenes_points: str = "devkit") -> Iterator[dict]:
  """nuScenes key frames: each camera of `cameras` (protocols.NUSCENES_CAMERAS) with the LIDAR_TOP sweep of
  the same sample projected into it (protocols.lidar_to_camera, protocols.project_depth; `nuscenes_points`:
  options.nuscenes_points). Samples in the order of their scene and time; `split.txt` (scene names, e.g. the
  devkit's val scenes) restricts them."""
  cameras = protocols.NUSCENES_CAMERAS if cameras is None else tuple(cameras)
  _need(root, "nuscenes")
  versions = [v for v in NUSCENES_VERSIONS if os.path.exists(os.path.join(root, v, "sample_data.json"))]
  if not versions:
    raise LayoutError(f"error: nuscenes: no {os.path.join(root, 'v1.0-*', 'sample_data.json')}; expected the "
                      f"layout {LAYOUTS['nuscenes']}")
  tables = os.path.join(root, versions[0])

  def load(name):
    return _json(os.path.join(tables, name + ".json"), "nuscenes")

  samples = load("sample")
  sensors = _by_token(load("sensor"), os.path.join(tables, "sensor.json"))
  calibrated = _by_token(load("calibrated_sensor"), os.path.join(tables, "calibrated_sensor.json"))
  poses = _by_token(load("ego_pose"), os.path.join(tables, "ego_pose.json"))
  frames = {}  # sample token -> channel -> key-frame sample_data record
  try:
    for sd in load("sample_data"):
      if sd.get("is_key_frame"):
        channel = sensors[calibrated[sd["calibrated_sensor_token"]]["sensor_token"]]["channel"]
        frames.setdefault(sd["sample_token"], {})[channel] = sd
  except KeyError as e:
    raise LayoutError(f"error: nuscenes: {os.path.join(tables, 'sample_data.json')}: key {e} not found in its "
                      f"record or in calibrated_sensor.json / sensor.json; expected the layout "
                      f"{LAYOUTS['nuscenes']}") from e
  split = os.path.join(root, "split.txt")
  if os.path.exists(split):
    with open(split, encoding="utf-8") as f:
      names = {line.strip() for line in f if line.strip()}
    scenes = {s["token"] for s in load("scene") if s["name"] in names}
    samples = [s for s in samples if s["scene_token"] in scenes]
  samples = sorted(samples, key=lambda s: (s["scene_token"], s["timestamp"]))
  if not samples:
    raise LayoutError(f"error: nuscenes: no samples in {os.path.join(tables, 'sample.json')}"
                      f"{' for the scenes of ' + split if os.path.exists(split) else ''}; expected the layout "
                      f"{LAYOUTS['nuscenes']}")
  for sample in samples:
    data = frames.get(sample["token"], {})
    if "LIDAR_TOP" not in data:
      raise BadRecordError(f"{tables}: sample {sample['token']} has no LIDAR_TOP key frame in sample_data.json")
    lidar = data["LIDAR_TOP"]
    bin_path = _need(os.path.join(root, lidar["filename"]), "nuscenes")
    raw = np.fromfile(bin_path, dtype="<f4")
    if raw.size % 5:
      raise BadRecordError(f"{bin_path}: {raw.size} float32 values, expected 5 per point (x, y, z, intensity, "
                           "ring)")
    points = raw.reshape(-1, 5)[:, :3]
    for channel in cameras:
      if channel not in data:
        raise BadRecordError(f"{tables}: sample {sample['token']} has no {channel} key frame in sample_data.json")
      cam = data[channel]
      image_path = _need(os.path.join(root, cam["filename"]), "nuscenes")
      image = _rgb(image_path)
      cam_sensor = calibrated[cam["calibrated_sensor_token"]]
      try:
        lidar_ego, cam_ego = poses[lidar["ego_pose_token"]], poses[cam["ego_pose_token"]]
      except KeyError as e:
        raise BadRecordError(f"{tables}: ego pose {e} of sample {sample['token']} not in ego_pose.json") from e
      in_cam = protocols.lidar_to_camera(points, calibrated[lidar["calibrated_sensor_token"]], lidar_ego, cam_ego,
                                         cam_sensor)
      depth = protocols.project_depth(in_cam, cam_sensor["camera_intrinsic"], image.shape[:2],
                                      points=nuscenes_points)
      yield {"image": image, "depth": depth, "valid": depth > 0, "key": image_path}


# ------------------------------------------------------------------------------------------------------------
# SA-Co/Gold: COCO-format JSON per subset and annotator, RLE masks.
# ------------------------------------------------------------------------------------------------------------
SACO_SUBSETS = ("metaclip", "sa1b", "attributes", "crowded", "wiki_common", "fg_food", "fg_sports_equipment")


def rle_counts(counts) -> list[int]:
  """COCO RLE counts: a list of ints (uncompressed) or COCO's compressed string (pycocotools' rleFrString:
  6-bit groups offset by 48, 5 bits of value each, 0x20 = more groups follow, 0x10 in the last = negative;
  from the fourth count on, each is stored as its difference to the count two before)."""
  if not isinstance(counts, (str, bytes)):
    return [int(c) for c in counts]
  s = counts.encode("ascii") if isinstance(counts, str) else counts
  out, p = [], 0
  while p < len(s):
    x, k, more = 0, 0, True
    while more:
      c = s[p] - 48
      x |= (c & 0x1f) << (5 * k)
      more = bool(c & 0x20)
      p += 1
      k += 1
      if not more and (c & 0x10):
        x |= -1 << (5 * k)
    if len(out) > 2:
      x += out[-2]
    out.append(x)
  return out


def rle_decode(rle: dict) -> np.ndarray:
  """A COCO RLE {'size': [H, W], 'counts': ...} -> (H, W) bool: alternating runs of 0s then 1s, column-major."""
  h, w = (int(v) for v in rle["size"])
  counts = rle_counts(rle["counts"])
  if sum(counts) != h * w or min(counts, default=0) < 0:
    raise BadRecordError(f"RLE counts sum to {sum(counts)} (min {min(counts, default=0)}), expected H x W = "
                         f"{h} x {w}")
  flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
  return flat.reshape(w, h).T


def _coco_mask(segmentation, hw) -> np.ndarray:
  if isinstance(segmentation, dict):
    if len(segmentation.get("size", ())) != 2 or "counts" not in segmentation:
      raise BadRecordError(f"RLE without 'size' [H, W] and 'counts': {str(segmentation)[:80]}")
    mask = rle_decode(segmentation)
  else:  # polygons [[x0, y0, x1, y1, ...], ...], drawn with PIL (pycocotools rasterises edges slightly apart)
    canvas = Image.new("L", (hw[1], hw[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in segmentation:
      if len(poly) >= 6:
        draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
    mask = np.asarray(canvas, bool)
  if mask.shape != tuple(hw):
    raise BadRecordError(f"mask {mask.shape} differs from its image's {tuple(hw)}")
  return mask


def _saco_annotations(path: str):
  data = _json(path, "sa_co_gold")
  if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
    raise LayoutError(f"error: sa_co_gold: {path} has no 'images' and 'annotations'; expected the layout "
                      f"{LAYOUTS['sa_co_gold']}")
  anns = {}
  for a in data["annotations"]:
    if not (a.get("iscrowd") or a.get("is_crowd")):  # crowd segments are ignored, as COCOeval ignores them
      anns.setdefault(a["image_id"], []).append(a)
  return {im["id"]: im for im in data["images"]}, anns


def sa_co_gold(root: str, queries: int | None = None, seed: int | None = None) -> Iterator[dict]:
  """SA-Co/Gold (SAM 3): every (image, noun phrase) pair that is instance-exhaustive in all its annotations,
  over the seven subsets, `queries` of them drawn at random with a fixed `seed` (protocols.SACO_QUERIES,
  SACO_SEED; 0 = all). Each sample: the image, the phrase ('query') and the masks of each annotator (a, b, c;
  those present): an empty list of masks is a negative pair."""
  queries = protocols.SACO_QUERIES if queries is None else int(queries)
  seed = protocols.SACO_SEED if seed is None else int(seed)
  ann_dir = _need(os.path.join(root, "annotations"), "sa_co_gold")
  subsets = [s for s in SACO_SUBSETS if os.path.exists(os.path.join(ann_dir, f"gold_{s}_merged_a_release_test.json"))]
  if not subsets:
    raise LayoutError(f"error: sa_co_gold: no gold_<subset>_merged_a_release_test.json in {ann_dir}; expected the "
                      f"layout {LAYOUTS['sa_co_gold']}")
  pool, tables = [], {}
  for subset in subsets:
    paths = [os.path.join(ann_dir, f"gold_{subset}_merged_{k}_release_test.json") for k in "abc"]
    tables[subset] = [_saco_annotations(p) for p in paths if os.path.exists(p)]
    first = tables[subset][0][0]
    excluded = {i for images, _ in tables[subset][1:] for i, im in images.items()
                if not im.get("is_instance_exhaustive")}
    pool += [(subset, i) for i, im in sorted(first.items()) if im.get("is_instance_exhaustive") and i not in excluded]
  if queries and queries < len(pool):
    picked = np.sort(np.random.default_rng(seed).choice(len(pool), queries, replace=False))
    pool = [pool[i] for i in picked]
  for subset, image_id in pool:
    im = tables[subset][0][0][image_id]
    source = "sa1b" if subset == "sa1b" else "metaclip"
    image_path = _need(os.path.join(root, "images", source, im["file_name"]), "sa_co_gold")
    image = _rgb(image_path)
    hw = image.shape[:2]
    key = f"{subset}/{image_id}"
    try:
      annotations = [np.stack([_coco_mask(a["segmentation"], hw) for a in anns.get(image_id, [])])
                     if anns.get(image_id) else np.zeros((0,) + hw, bool) for _, anns in tables[subset]]
    except BadRecordError as e:
      raise BadRecordError(f"sa_co_gold {key} ({image_path}): {e}") from e
    yield {"image": image, "query": str(im["text_input"]), "annotations": annotations, "subset": subset,
           "key": key}
