"""Source specs -> random-access sources of raw samples (`len(src)`, `src[i]` -> dict, picklable).

A source spec is a small dict from the config:
    {'kind': 'scenes', 'data_dir': ..., 'resolution': 32}       the built-in procedural scenes (built once)
    {'kind': 'tfds', 'name': 'nyu_depth_v2', 'data_dir': ...}    a prepared TFDS dataset + its adapter
    {'kind': 'folder', 'path': ...}                              a directory of images (see folder.py)
`check_sample` is the one place that decides whether a raw sample is usable; the pipeline skips (or, in
strict mode, fails on) the samples it rejects.
"""

from __future__ import annotations

import logging as std_logging
import time
from typing import Any, Mapping

import numpy as np
from absl import logging

from vbanana.data import adapters
from vbanana.data.adapters import IGNORE_LABEL, BadRecordError
from vbanana.data.folder import FolderSource

KINDS = ("scenes", "tfds", "folder")


class _PilDecoding(std_logging.Filter):
  """TFDS warns, in every process that decodes an image, that OpenCV is not installed and that it decodes
  with PIL: vbanana decodes with PIL on purpose (no OpenCV dependency), so that warning is dropped."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith("OpenCV is not installed")


std_logging.getLogger("absl").addFilter(_PilDecoding())
SCENES_DEFAULTS = dict(resolution=32, num_train=2048, num_validation=128, num_test=128, seed=0,
                       build_workers=1, shapes=())


def _field(spec: Mapping[str, Any], name: str, what: str):
  if name not in spec or spec[name] is None:
    raise ValueError(f"source spec {dict(spec)} has no field '{name}' ({what})")
  return spec[name]


class TfdsSource:
  """A prepared TFDS dataset read by random access, each record mapped by its adapter.

  Opens the ArrayRecord files lazily, so the object pickles small into Grain worker processes.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None, class_names=None):
    import tensorflow_datasets as tfds  # Imported here: the folder and scenes paths do not need it.

    self.name, self.split, self.data_dir = name, split, data_dir
    builder = tfds.builder(name, data_dir=data_dir)
    self.adapter = adapters.make_adapter(name, builder.info.features, class_names)
    self._records = None
    self._length = len(self._open())

  def _open(self):
    if self._records is None:
      import tensorflow_datasets as tfds

      self._records = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
    return self._records

  def __getstate__(self):
    return {**self.__dict__, "_records": None}

  def __len__(self) -> int:
    return self._length

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, split={self.split!r}, {self._length} records)"

  def __getitem__(self, index: int) -> dict:
    key = f"{self.name}/{self.split}[{index}]"
    try:
      record = self._open()[index]
    except Exception as e:  # Corrupt bytes surface here as decode errors of any type.
      raise BadRecordError(f"{key}: cannot decode record ({type(e).__name__}: {e})") from e
    return self.adapter(record, key)


# Who builds the scenes data: the first reader builds small data inline (process 0 of a multi-host run,
# while the others wait at a barrier; never every host writing the same files at once); large data must be
# built beforehand by `python -m vbanana.data.build_scenes` (on Apache Beam at pod scale, docs/data.md) and
# the trainer refuses to start without it. The line: 2**26 rendered pixels per build worker, 5 to 15
# minutes of one core at the renderer's 65-220 k pixels/s (benchmarks/scenes_build.py; 256 px is the
# slowest per pixel): 1,024 scenes at 256 px, 16,384 at 64 px. Every CPU config and test is far below it;
# the pod configs' million scenes at 256 px (6.6e10 pixels) are ~1,000 times above it: 12 core-days.
INLINE_BUILD_MAX_PIXELS = 2**26


class ScenesNotBuiltError(FileNotFoundError):
  """The scenes data a config reads is missing and too large to build inside the trainer."""


def _scenes_source(spec, split: str):
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana.data import scenes_tfds  # Written beside this module; imported lazily (TFDS builder).

  data_dir = _field(spec, "data_dir", "where the scenes dataset lives or is built")
  options = {k: spec.get(k, v) for k, v in SCENES_DEFAULTS.items()}
  resolution = scenes_tfds.check_resolution(options["resolution"],
                                            "config.data.resolution (the scenes source's 'resolution')")
  shapes = scenes_tfds.check_shapes(options["shapes"], "the scenes source's 'shapes' (config.data.shapes)")
  sizes = [options["num_train"], options["num_validation"], options["num_test"]]
  path = scenes_tfds.prepared_dir(data_dir, resolution, shapes)
  built = scenes_tfds.is_built(data_dir, resolution, shapes)
  where = ", ".join(f"{h}x{w}" for h, w in shapes) if shapes else f"{resolution}x{resolution}"
  if not built:
    pixels = sum(sizes) * (np.mean([h * w for h, w in shapes]) if shapes else resolution**2)
    if pixels > INLINE_BUILD_MAX_PIXELS * max(1, options["build_workers"]):
      command = scenes_tfds.build_command(data_dir, resolution, *sizes, seed=options["seed"], shapes=shapes)
      raise ScenesNotBuiltError(
          f"no scenes dataset at {path}, and {sum(sizes):,} scenes at {where} are too many to "
          f"build inside the trainer ({pixels:.2g} pixels > {INLINE_BUILD_MAX_PIXELS:.2g} per build worker); "
          f"build it first: {command}")
    if jax.process_index() == 0:
      from vbanana import console  # pylint: disable=g-import-not-at-top
      console.say(f"Building the scenes dataset once in {data_dir}: {sizes[0]} train / {sizes[1]} validation / "
                  f"{sizes[2]} test scenes at {where} (later runs reuse it)")
      start = time.perf_counter()
      scenes_tfds.build(data_dir, resolution, *sizes, seed=options["seed"], num_workers=options["build_workers"],
                        shapes=shapes)
      console.say(f"Built the scenes dataset in {time.perf_counter() - start:.0f} s")
  if jax.process_count() > 1:  # every process passes here once per call, built or not: the counts agree
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"vbanana scenes {path} {split}")
    if not scenes_tfds.is_built(data_dir, resolution, shapes):
      raise FileNotFoundError(f"process {jax.process_index()} does not see the scenes dataset that process 0 "
                              f"built at {path}: a multi-host run needs a data_dir that every host shares "
                              "(gs:// or a shared file system)")
  return scenes_tfds.load(data_dir, resolution, split, shapes)


def make_source(spec: Mapping[str, Any], split: str | None = None):
  """The random-access source of raw samples for a source spec; `split` overrides spec['split']."""
  if not isinstance(spec, Mapping):
    raise ValueError(f"a source spec must be a dict with a 'kind' field, got {spec!r}")
  kind = _field(spec, "kind", f"one of {KINDS}")
  split = split or spec.get("split", "train")
  if kind == "scenes":
    return _scenes_source(spec, split)
  if kind == "tfds":
    name = _field(spec, "name", "a TFDS dataset name such as 'nyu_depth_v2'")
    return TfdsSource(name, spec.get("split_names", {}).get(split, split), spec.get("data_dir"),
                      spec.get("class_names"))
  if kind == "folder":
    return FolderSource(_field(spec, "path", "a directory of images"), split)
  raise ValueError(f"source spec field 'kind': unknown kind '{kind}'; expected one of {KINDS}")


def check_sample(sample: Mapping[str, Any]) -> None:
  """Raises BadRecordError naming the record when a raw sample breaks the contract of docs/interfaces.md."""
  key = sample.get("key", "<unnamed record>")

  def fail(message):
    raise BadRecordError(f"{key}: {message}")

  if "image" not in sample:
    fail("no 'image'")
  image = sample["image"]
  if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    fail(f"'image' must be uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} "
         f"{getattr(image, 'shape', '')}")
  if min(image.shape[:2]) == 0:
    fail(f"'image' is empty {image.shape}")
  hw = image.shape[:2]
  for name in ("depth", "normals", "semantic", "instance"):
    if name in sample and np.shape(sample[name])[:2] != hw:
      fail(f"'{name}' has shape {np.shape(sample[name])}, the image {image.shape}")
  if "depth" in sample:
    depth = sample["depth"]
    if not np.any(np.isfinite(depth) & (depth > 0)):
      fail("'depth' has no valid pixel (all NaN, infinite or <= 0)")
  if "normals" in sample:
    normals = np.asarray(sample["normals"])
    if normals.ndim != 3 or normals.shape[-1] != 3 or not np.any(np.isfinite(normals).all(-1)):
      fail(f"'normals' must be (H, W, 3) with some finite pixels, got {normals.shape}")
  if "semantic" in sample:
    if "class_names" not in sample:
      fail("'semantic' without 'class_names'")
    num_classes = len(sample["class_names"])
    labels = np.unique(sample["semantic"])
    unknown = labels[(labels != IGNORE_LABEL) & ((labels < 0) | (labels >= num_classes))]
    if unknown.size:
      fail(f"'semantic' has class ids {unknown[:5].tolist()} outside the {num_classes} classes "
           f"(and {IGNORE_LABEL} = unlabelled)")
  if "instance_class" in sample and "class_names" in sample:
    bad = [c for c in sample["instance_class"].values() if not 0 <= c < len(sample["class_names"])]
    if bad:
      fail(f"'instance_class' has class ids {bad[:5]} outside the classes")
  for name in ("edit_source", "edit_target"):
    if name in sample:
      edit = sample[name]
      if edit.dtype != np.uint8 or edit.ndim != 3 or edit.shape[-1] != 3:
        fail(f"'{name}' must be uint8 (H, W, 3), got {edit.dtype} {edit.shape}")
