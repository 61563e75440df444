"""Bring your own data: a directory of images, each with optional ground truth in files of the same stem.

    my_data/
      classes.txt               optional: semantic class names, one a line (line k = class id k)
      kitchen.jpg               the image (.png, .jpg, .jpeg, .webp)
      kitchen.txt               optional caption
      kitchen.depth.npy         optional depth in metres, float (H, W); or kitchen.depth.png: 16-bit, millimetres
      kitchen.normals.npy       optional unit normals (H, W, 3), camera coordinates (+x right, +y up, +z out)
      kitchen.semantic.png      optional class id per pixel (8- or 16-bit, 255 = unlabelled)
      kitchen.instance.png      optional instance id per pixel (8- or 16-bit, 0 = none)

A split is a subdirectory (my_data/train, my_data/validation) when it exists, else the directory itself.
Records are sorted by file name, so index i is the same record on every host. Reading a record that is
unreadable raises BadRecordError naming the file.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vbanana.data.adapters import IGNORE_LABEL, BadRecordError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_AUX_SUFFIXES = (".depth", ".normals", ".semantic", ".instance")


def _is_image(name: str) -> bool:
  stem, ext = os.path.splitext(name)
  return ext.lower() in IMAGE_EXTENSIONS and not stem.endswith(_AUX_SUFFIXES)


def read_image(path: str) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image.load()
      return np.asarray(image)
  except Exception as e:  # PIL raises several types for corrupt files.
    raise BadRecordError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e


class FolderSource:
  """Random-access source of raw samples read from a directory (see the module docstring)."""

  def __init__(self, path: str, split: str | None = None):
    if not os.path.isdir(path):
      raise FileNotFoundError(f"source spec field 'path': {path} is not a directory")
    if split and os.path.isdir(os.path.join(path, split)):
      path = os.path.join(path, split)
    self.path = path
    self.files = sorted(f for f in os.listdir(path) if _is_image(f))
    if not self.files:
      raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this directory")
    self.class_names = self._read_classes()

  def _read_classes(self):
    for directory in (self.path, os.path.dirname(self.path)):
      classes = os.path.join(directory, "classes.txt")
      if os.path.exists(classes):
        with open(classes) as f:
          return tuple(line.strip() for line in f if line.strip())
    return None

  def __len__(self) -> int:
    return len(self.files)

  def __repr__(self) -> str:
    return f"FolderSource({self.path!r}, {len(self)} images)"

  def shapes(self) -> np.ndarray:
    """(N, 2) int (H, W) of every image, from the file headers (no pixel is decoded): the pipeline's
    aspect-ratio buckets."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    out = []
    for name in self.files:
      with Image.open(os.path.join(self.path, name)) as im:
        out.append((im.height, im.width))
    return np.asarray(out, np.int64).reshape(-1, 2)

  def _aux(self, stem: str, suffix: str) -> str | None:
    path = os.path.join(self.path, stem + suffix)
    return path if os.path.exists(path) else None

  def __getitem__(self, index: int) -> dict:
    name = self.files[index]
    stem = os.path.splitext(name)[0]
    image_path = os.path.join(self.path, name)
    image = read_image(image_path)
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, -1)
    if image.dtype != np.uint8 or image.shape[-1] not in (3, 4):
      raise BadRecordError(f"{image_path}: expected an 8-bit RGB image, got {image.dtype} {image.shape}")
    sample = {"image": np.ascontiguousarray(image[..., :3]), "key": image_path}
    height, width = image.shape[:2]

    def check_shape(path, array):
      if array.shape[:2] != (height, width):
        raise BadRecordError(f"{path}: shape {array.shape[:2]} differs from the image's {(height, width)}")
      return array

    if path := self._aux(stem, ".txt"):
      with open(path, encoding="utf-8") as f:
        sample["caption"] = f.read().strip()
    if path := self._aux(stem, ".depth.npy"):
      sample["depth"] = check_shape(path, self._load_npy(path, 2)).astype(np.float32)
    elif path := self._aux(stem, ".depth.png"):
      millimetres = read_image(path)
      if millimetres.ndim != 2 or millimetres.dtype != np.uint16:
        raise BadRecordError(f"{path}: depth PNG must be 16-bit single channel (millimetres), got "
                             f"{millimetres.dtype} {millimetres.shape}")
      sample["depth"] = check_shape(path, millimetres.astype(np.float32) / 1000.0)
    if path := self._aux(stem, ".normals.npy"):
      sample["normals"] = check_shape(path, self._load_npy(path, 3)).astype(np.float32)
    if path := self._aux(stem, ".semantic.png"):
      sample["semantic"] = check_shape(path, self._labels(path))
      if self.class_names is None:
        raise BadRecordError(f"{path}: a semantic mask needs classes.txt in {self.path}")
      sample["class_names"] = self.class_names
    if path := self._aux(stem, ".instance.png"):
      instance = check_shape(path, self._labels(path))
      sample["instance"] = instance
      if "semantic" in sample:
        sample["instance_class"] = _instance_classes(instance, sample["semantic"])
    return sample

  @staticmethod
  def _load_npy(path: str, ndim: int) -> np.ndarray:
    try:
      array = np.load(path, allow_pickle=False)
    except Exception as e:
      raise BadRecordError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    if array.ndim != ndim:
      raise BadRecordError(f"{path}: expected {ndim} dimensions, got shape {array.shape}")
    return array

  @staticmethod
  def _labels(path: str) -> np.ndarray:
    labels = read_image(path)
    if labels.ndim == 3:  # A label map saved as RGB: all channels equal.
      labels = labels[..., 0]
    if labels.ndim != 2:
      raise BadRecordError(f"{path}: expected a single-channel label PNG, got shape {labels.shape}")
    return labels.astype(np.int32)


def _instance_classes(instance: np.ndarray, semantic: np.ndarray) -> dict[int, int]:
  """Each instance's class: the most frequent labelled semantic class under it."""
  classes = {}
  for iid in np.unique(instance):
    if iid == 0:
      continue
    labels = semantic[(instance == iid) & (semantic != IGNORE_LABEL)]
    if labels.size:
      classes[int(iid)] = int(np.bincount(labels).argmax())
  return classes
