"""The benchmarks of the paper's Table 1 that have public data: one entry each, naming its task, where its
data lives under the bench's data_dir, its reader and its protocol.

Why a registry: the runner, the table and the docs all walk the same list, so a benchmark added here is
run, reported and skipped (with the path it expected) in one place.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Callable, Iterable

from vbanana.bench import options, protocols, readers


@dataclasses.dataclass(frozen=True)
class Benchmark:
  name: str
  task: str                 # a vbanana.tasks name
  title: str                # the dataset and split, as the paper names it
  paper_key: str            # key into paper.DEPTH / paper.NORMALS, or the Table 1 row
  location: str             # 'tfds:<name>' or the folder under data_dir
  read: Callable[[str], Iterable[dict]]  # data_dir -> samples
  protocol: str             # one line: what is scored and how
  settings_args: tuple[str, ...] = ()  # runner.Settings fields passed to `read` as keyword arguments

  def missing(self, data_dir: str) -> str | None:
    """None when this benchmark's data is under data_dir, else a line naming the path expected."""
    if self.location.startswith("tfds:"):
      path = readers.tfds_present(self.paper_key, data_dir)
      return None if path is None else (f"no TFDS dataset at {path} (prepare {self.location[5:]} into this "
                                        "TFDS data_dir)")
    path = os.path.join(data_dir, self.location)
    if not os.path.isdir(path):
      return f"no folder {path} ({readers.LAYOUTS[self.location.split('/')[0]]})"
    if self.name == "normals_diode_indoor" and not glob.glob(os.path.join(path, "val", "indoors", "*", "*",
                                                                          "*_normal.npy")):
      return f"no DIODE normal maps (<name>_normal.npy) under {os.path.join(path, 'val', 'indoors')}"
    return None

  def protocol_for(self, opts: options.Options) -> str:
    """The one-line protocol under the given options (`protocol` is the line under the defaults)."""
    if self.task == "depth":
      return _depth_line(protocols.depth_protocol(self.paper_key, opts), opts)
    if self.task == "normals":
      return _normals_line(protocols.NORMALS[self.paper_key], opts)
    if self.name == "reasonseg":
      return _reasonseg_line(opts)
    if self.name == "sa_co_gold":
      return _saco_line(opts)
    return self.protocol


def _resize_line(opts) -> str:
  return ("predictions resized bilinearly with align_corners "
          f"{'True' if opts.resize == 'corners' else 'False'}")


def _depth_line(p: protocols.DepthProtocol, opts) -> str:
  affine = ", aligned map clipped to that range" if p.affine_clip == "range" else ""
  return (f"metric depth, no alignment (and affine-aligned{affine}): delta1, AbsRel; {p.describe()}; mean of "
          f"per-image metrics at the ground truth's resolution, {_resize_line(opts)} ({p.source})")


def _depth(name, title, location, read, settings_args=()):
  return Benchmark(f"depth_{name}", "depth", title, name, location, read,
                   _depth_line(protocols.depth_protocol(name), options.Options()), settings_args)


def _reasonseg_line(opts) -> str:
  texts = "the first query text of each image" if opts.reasonseg_texts == "first" else "every query text"
  return (f"gIoU (mean per-query IoU) and cIoU over {texts}, 'ignore' polygons not scored (drawn largest first, "
          "as the authors draw them), at the image's resolution; the query is the instruction's expression")


def _saco_line(opts) -> str:
  pooling = ("the mean over the subsets of each subset's pmF1 (SAM 3's reported numbers)"
             if opts.saco_pooling == "subsets" else "TP / FP / FN pooled over all drawn pairs")
  return ("pmF1 (positive micro F1, SAM 3): masks scored >= 0.5, Hungarian IoU matching per (image, phrase) pair, "
          "F1 averaged over IoU 0.5:0.05:0.95, the best of the three annotations per pair (oracle, SAM 3's "
          f"tie rule), instance-exhaustive pairs only; {pooling}; {protocols.SACO_QUERIES} pairs drawn with seed "
          f"{protocols.SACO_SEED} (`queries`); the phrase in the instance instruction, on black; at the image's "
          "resolution")


def _normals_line(p: protocols.NormalsProtocol, opts) -> str:
  return (f"mean / median angular error, % within 11.25 / 22.5 / 30 deg over valid pixels pooled over the split, "
          f"at the ground truth's resolution, {_resize_line(opts)}; {p.describe()} ({p.source})")


def _normals(name, title, location, read):
  return Benchmark(f"normals_{name}", "normals", title, name, location, read,
                   _normals_line(protocols.NORMALS[name], options.Options()))


BENCHMARKS = (
    Benchmark("refcocog", "referring", "RefCOCOg (umd) val", "refcocog", "tfds:ref_coco/refcocog_umd",
              readers.refcocog, "cIoU (summed intersections / summed unions) and gIoU (mean per-expression "
              "IoU) over every expression, at the image's resolution; the object painted red on black"),
    Benchmark("reasonseg", "referring", "ReasonSeg val", "reasonseg", "reasonseg", readers.reasonseg,
              _reasonseg_line(options.Options()), settings_args=("reasonseg_texts",)),
    Benchmark("cityscapes", "semantic", "Cityscapes val", "cityscapes", "tfds:cityscapes/semantic_segmentation",
              readers.cityscapes, "mIoU over the 19 train classes from the confusion matrix summed over the "
              "split, ignore label 255 not scored, at the full 1024 x 2048 resolution; one fixed prompt naming "
              "each class's Cityscapes colour"),
    _depth("nyu", "NYU Depth v2 (Eigen test split)", "tfds:nyu_depth_v2", readers.nyu),
    _depth("ibims1", "iBims-1", "ibims1", readers.ibims1),
    _depth("eth3d", "ETH3D", "eth3d", readers.eth3d),
    _depth("diode_indoor", "DIODE-Indoor (val)", "diode", readers.diode_depth),
    _depth("kitti", "KITTI (annotated depth, val)", "kitti", readers.kitti, ("kitti_crop",)),
    _depth("nuscenes", "nuScenes (LiDAR in the six cameras, key frames)", "nuscenes", readers.nuscenes,
           ("nuscenes_points",)),
    Benchmark("sa_co_gold", "instance", "SA-Co/Gold (random queries)", "sa_co_gold", "sa_co_gold",
              readers.sa_co_gold, _saco_line(options.Options()), settings_args=("queries",)),
    _normals("nyuv2", "NYUv2 (DSINE eval set)", "dsine_eval/nyuv2", lambda d: readers.dsine_normals(d, "nyuv2")),
    _normals("diode_indoor", "DIODE-indoor (val)", "diode", readers.diode_normals),
    _normals("scannet", "ScanNet (DSINE eval set)", "dsine_eval/scannet",
             lambda d: readers.dsine_normals(d, "scannet")),
    _normals("vkitti", "VKitti (DSINE eval set)", "dsine_eval/vkitti", lambda d: readers.dsine_normals(d, "vkitti")),
)


def by_name(name: str) -> Benchmark:
  for b in BENCHMARKS:
    if b.name == name:
      return b
  raise ValueError(f"no benchmark {name!r}: expected one of {[b.name for b in BENCHMARKS]}")


def source_dir(benchmark: Benchmark, data_dir: str) -> str:
  """What the reader is given: the TFDS data_dir itself, or the dataset's folder (dsine_eval for its sets)."""
  if benchmark.location.startswith("tfds:"):
    return data_dir
  return os.path.join(data_dir, benchmark.location.split("/")[0])
