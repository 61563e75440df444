"""The built-in scenes dataset as a TFDS builder writing ArrayRecord, and its random-access reader.

  path = build("/tmp/tfds", resolution=64, num_train=10_000, num_validation=500, num_test=500)
  source = load("/tmp/tfds", resolution=64, split="train")   # len(source), source[i] -> raw sample

Any resolution from MIN_RESOLUTION to MAX_RESOLUTION builds: config `r<resolution>` (r32, r64, r128 and r256
are declared; others are made on request with the same name). Large builds run on Apache Beam through
TFDS's own Beam support (`build(..., beam_options=...)`, the DirectRunner here, Dataflow for real; see
vbanana/data/build_scenes.py). Record i of a split is scene i of that split (`disable_shuffling`; with Beam,
TFDS orders the records by key, the scene index), so `load(...)[i]` equals
`scenes.make_sample(split, i, resolution, seed=seed)` exactly. Storage: images and edit targets as PNG,
depth and normals as zlib-compressed float32 tensors (lossless), masks as zlib-compressed uint8 tensors,
and the variable-length parts (referring expressions, instance classes, objects) as JSON text. Writing
needs no TensorFlow: images are handed over as PNG bytes.
"""
from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
from typing import Iterator

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vbanana.data import scenes

RESOLUTIONS = (32, 64, 128, 256)  # declared configs; any other resolution in range gets one made on request
# Below 16 px most objects cover fewer than the 4 pixels that the text needs (at 8 px half of the scenes
# have an empty caption); above 1024 px one render holds about 2 GB of ray buffers per worker process.
MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
BEAM_CHUNK = 1000  # scene indices per element of the Beam source (the job graph stays small at any size)
DEFAULT_SPLIT_SIZES = {"train": 64, "validation": 16, "test": 16}  # small: tests and smoke runs


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
  resolution: int = 64
  # Non-square cameras: record i of a split is rendered at shapes[i % len(shapes)] (H, W); () = square.
  shapes: tuple = ()


class VbananaScenes(tfds.core.GeneratorBasedBuilder):
  """Procedural 3D scenes with image, depth, normals, masks, captions, referring expressions, edits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [ScenesConfig(name=f"r{r}", resolution=r, description=f"{r}x{r} pixels")
                     for r in RESOLUTIONS]

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and "... downloaded and prepared" for
  # every build: nothing is downloaded here. The build's caller says what it builds (vbanana.data.sources).
  def _log_download_bytes(self) -> None:
    logging.info("Building %s in %s", self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("Built %s in %s", self.name, self.data_dir)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's default probes `importlib_resources` (not installed) for builders outside a dataset package.
    return epath.Path(__file__)

  def __init__(self, *, split_sizes: dict[str, int] | None = None, seed: int = 0, num_workers: int = 1,
               supersample: int = 2, beam: bool = False, **kwargs):
    self._split_sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    unknown = set(self._split_sizes) - set(scenes.SPLITS)
    if unknown:
      raise ValueError(f"split_sizes has unknown splits {sorted(unknown)}; expected {tuple(scenes.SPLITS)}")
    self._seed, self._num_workers, self._supersample, self._beam = seed, num_workers, supersample, beam
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    r = self.builder_config.resolution
    h, w = (None, None) if self.builder_config.shapes else (r, r)  # several shapes: stored per record
    tensor = lambda shape, dtype: tfds.features.Tensor(shape=shape, dtype=dtype,
                                                        encoding=tfds.features.Encoding.ZLIB)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(h, w, 3)),
            "depth": tensor((h, w), np.float32),
            "normals": tensor((h, w, 3), np.float32),
            "semantic": tensor((h, w), np.uint8),
            "instance": tensor((h, w), np.uint8),
            "instance_class": tfds.features.Text(),  # JSON {instance id: class id}
            "caption": tfds.features.Text(),
            "referring": tfds.features.Text(),  # JSON [[expression, instance id], ...]
            "edit_instruction": tfds.features.Text(),
            "edit_target": tfds.features.Image(shape=(h, w, 3)),
            "objects": tfds.features.Text(),  # JSON list of dicts
            "key": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(seed=self._seed, supersample=self._supersample,
                                        class_names=list(scenes.CLASS_NAMES),
                                        shapes=[list(s) for s in self.builder_config.shapes]),
        disable_shuffling=True,  # record i is scene i: random access by scene index
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, n) for split, n in self._split_sizes.items() if n > 0}

  def _generate_examples(self, split: str, num: int):
    if self._beam:
      return _beam_examples(split, num, self.builder_config.resolution, self._seed, self._supersample,
                            self.builder_config.shapes)
    return self._local_examples(split, num)

  def _local_examples(self, split: str, num: int) -> Iterator[tuple[int, dict]]:
    cfg = self.builder_config
    jobs = [(split, i, cfg.resolution, self._seed, self._supersample, cfg.shapes) for i in range(num)]
    if self._num_workers <= 1:
      yield from enumerate(map(_render_and_encode, jobs))
      return
    # Rendering is the slow part: spread it over processes, write in order here. Spawned workers import
    # this module afresh; callers need the usual `if __name__ == "__main__":` guard.
    from vbanana import procs  # pylint: disable=g-import-not-at-top
    # Each worker ends within a second of this process, however it ends (SIGKILL too): vbanana/procs.py.
    with multiprocessing.get_context("spawn").Pool(self._num_workers, initializer=procs.DieWithParent()) as pool:
      yield from enumerate(pool.imap(_render_and_encode, jobs, chunksize=16))


def record_shape(index: int, resolution: int, shapes=()) -> tuple[int, int]:
  """The (H, W) record `index` of a split is rendered at: shapes[index % len(shapes)], or the square."""
  return tuple(shapes[index % len(shapes)]) if shapes else (resolution, resolution)


def _render_and_encode(job) -> dict:
  split, index, resolution, seed, supersample, shapes = job
  return encode_record(scenes.make_sample(split, index, resolution, seed=seed, supersample=supersample,
                                          shape=record_shape(index, resolution, shapes)))


def _beam_examples(split: str, num: int, resolution: int, seed: int, supersample: int, shapes=()):
  """The split as a Beam PTransform of (scene index, record): TFDS runs it on the pipeline's runner.

  The source holds chunk starts, not a million indices; the reshuffle spreads the indices over the workers
  before the rendering (otherwise a runner may fuse it with the one-element-per-chunk source).
  """
  beam = tfds.core.lazy_imports.apache_beam
  return (beam.Create(range(0, num, BEAM_CHUNK)) | "Indices" >> beam.FlatMap(_chunk, num)
          | "Spread" >> beam.Reshuffle()
          | "Render" >> beam.Map(_keyed_record, split, resolution, seed, supersample, shapes))


def _chunk(start: int, num: int) -> range:
  return range(start, min(start + BEAM_CHUNK, num))


def _keyed_record(index: int, split: str, resolution: int, seed: int, supersample: int,
                  shapes=()) -> tuple[int, dict]:
  return index, _render_and_encode((split, index, resolution, seed, supersample, tuple(shapes)))


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def encode_record(sample: dict) -> dict:
  """A raw sample (scenes.make_sample) -> the feature dict the builder writes."""
  if sample["instance"].max() > 255 or sample["semantic"].max() > 255:
    raise ValueError(f"{sample['key']}: masks must fit in uint8 to be stored")
  return {
      "image": _png(sample["image"]),
      "depth": sample["depth"].astype(np.float32),
      "normals": sample["normals"].astype(np.float32),
      "semantic": sample["semantic"].astype(np.uint8),
      "instance": sample["instance"].astype(np.uint8),
      "instance_class": json.dumps({str(k): int(v) for k, v in sample["instance_class"].items()}),
      "caption": sample["caption"],
      "referring": json.dumps([[e, int(i)] for e, i in sample["referring"]]),
      "edit_instruction": sample["edit_instruction"],
      "edit_target": _png(sample["edit_target"]),
      "objects": json.dumps(sample["objects"]),
      "key": sample["key"],
  }


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_record(record: dict) -> dict:
  """A record as read by a TFDS data source -> the raw sample dict (docs/interfaces.md)."""
  image = np.asarray(record["image"], np.uint8)
  return {
      "image": image,
      "depth": np.asarray(record["depth"], np.float32),
      "normals": np.asarray(record["normals"], np.float32),
      "semantic": np.asarray(record["semantic"], np.int32),
      "class_names": scenes.CLASS_NAMES,
      "instance": np.asarray(record["instance"], np.int32),
      "instance_class": {int(k): v for k, v in json.loads(_text(record["instance_class"])).items()},
      "caption": _text(record["caption"]),
      "referring": [(e, i) for e, i in json.loads(_text(record["referring"]))],
      "edit_instruction": _text(record["edit_instruction"]),
      "edit_source": image,
      "edit_target": np.asarray(record["edit_target"], np.uint8),
      "objects": json.loads(_text(record["objects"])),
      "key": _text(record["key"]),
  }


class ScenesSource:
  """Random access to one split: `len(source)`, `source[i]` -> raw sample. Wrap in grain.MapDataset.source."""

  def __init__(self, data_source, name: str, resolution: int | None = None, shapes=()):
    self._source = data_source
    self._name = name
    self._resolution, self._shapes = resolution, tuple(shapes)

  def __len__(self) -> int:
    return len(self._source)

  def shapes(self) -> np.ndarray | None:
    """(N, 2) int (H, W) of every record, known without reading one (the pipeline's aspect buckets)."""
    if self._resolution is None:
      return None
    return np.asarray([record_shape(i, self._resolution, self._shapes) for i in range(len(self))], np.int64)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self._name}: index {index} out of range for {len(self)} records")
    return decode_record(self._source[index])

  def __repr__(self) -> str:
    return f"ScenesSource({self._name}, {len(self)} records)"


def check_resolution(resolution, field: str = "resolution") -> int:
  """The resolution as an int, or a one-line ValueError naming `field` and the range the renderer serves."""
  if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not (
      MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
    raise ValueError(f"{field} must be an integer number of pixels from {MIN_RESOLUTION} to {MAX_RESOLUTION} "
                     f"(the scenes renderer's range), got {resolution!r}")
  return int(resolution)


def check_shapes(shapes, field: str = "shapes") -> tuple[tuple[int, int], ...]:
  """Camera shapes as a tuple of (H, W) ints in the renderer's range, or a ValueError naming `field`."""
  out = []
  for shape in shapes or ():
    if len(shape) != 2:
      raise ValueError(f"{field}: expected (height, width) pairs, got {shape!r}")
    out.append(tuple(check_resolution(v, f"{field} {tuple(shape)}") for v in shape))
  if len(set(out)) != len(out):
    raise ValueError(f"{field}: repeated shapes in {out}")
  return tuple(out)


def builder_config(resolution: int, shapes=()) -> ScenesConfig:
  """The declared config `r<resolution>`, or one made for this resolution (same name, same layout); with
  `shapes`, a config `r<resolution>_<H>x<W>_...` whose records cycle through those camera shapes."""
  resolution, shapes = check_resolution(resolution), check_shapes(shapes)
  if shapes:
    name = f"r{resolution}_" + "_".join(f"{h}x{w}" for h, w in shapes)
    return ScenesConfig(name=name, resolution=resolution, shapes=shapes,
                        description=f"records cycle through {', '.join(f'{h}x{w}' for h, w in shapes)} pixels")
  declared = VbananaScenes.builder_configs.get(f"r{resolution}")
  return declared or ScenesConfig(name=f"r{resolution}", resolution=resolution,
                                  description=f"{resolution}x{resolution} pixels")


def prepared_dir(data_dir: str, resolution: int, shapes=()) -> str:
  """Where the prepared dataset of this resolution (and shapes) lives under data_dir (built or not)."""
  return os.path.join(os.fspath(data_dir), VbananaScenes.name, builder_config(resolution, shapes).name,
                      str(VbananaScenes.VERSION))


def is_built(data_dir: str, resolution: int, shapes=()) -> bool:
  return epath.Path(prepared_dir(data_dir, resolution, shapes), "dataset_info.json").exists()


def beam_pipeline_options(options: str):
  """'runner=DataflowRunner,project=P,...' (the `tfds build --beam_pipeline_options` form) -> PipelineOptions."""
  try:
    import apache_beam as beam  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("building on Beam needs apache-beam: pip install -e '.[beam]' (with the Google Cloud "
                      "clients, for Dataflow) or -e '.[test]' (the DirectRunner)") from e
  return beam.options.pipeline_options.PipelineOptions(
      flags=[f"--{option.strip()}" for option in options.split(",") if option.strip()])


def build_command(data_dir: str, resolution: int, num_train: int, num_validation: int, num_test: int, *,
                  seed: int = 0, supersample: int = 2, shapes=()) -> str:
  """The shell command that builds this dataset on Apache Beam (vbanana/data/build_scenes.py, docs/data.md)."""
  extra = (f" --seed={seed}" if seed else "") + (f" --supersample={supersample}" if supersample != 2 else "")
  if shapes:
    extra += " --shapes=" + ",".join(f"{h}x{w}" for h, w in shapes)
  return (f"python -m vbanana.data.build_scenes --data_dir={data_dir} --resolution={resolution} "
          f"--num_train={num_train} --num_validation={num_validation} --num_test={num_test}{extra} "
          "--beam_pipeline_options=runner=DataflowRunner,project=PROJECT,region=REGION,... (docs/data.md)")


def build(data_dir: str, resolution: int = 64, num_train: int = DEFAULT_SPLIT_SIZES["train"],
          num_validation: int = DEFAULT_SPLIT_SIZES["validation"], num_test: int = DEFAULT_SPLIT_SIZES["test"],
          *, seed: int = 0, num_workers: int = 1, supersample: int = 2, beam_options=None,
          num_shards: int | None = None, shapes=()) -> str:
  """Writes the dataset (once) under data_dir and returns the directory of the prepared version.

  An existing build is reused when its split sizes and seed match, and is an error otherwise (pick another
  data_dir rather than silently mixing two datasets). `beam_options` (a PipelineOptions, or a string for
  `beam_pipeline_options`) renders on Apache Beam instead of local processes: TFDS's Beam writer, the same
  records in the same order. `num_shards` fixes the files per split (otherwise TFDS picks files of 64 MiB
  to 1 GiB: 1,024 of ~150 MB for a million scenes at 256 px; a Beam worker holds one file's records in
  memory while it writes them).
  """
  sizes = {"train": num_train, "validation": num_validation, "test": num_test}
  if isinstance(beam_options, str):
    beam_options = beam_pipeline_options(beam_options)
  builder = VbananaScenes(config=builder_config(resolution, shapes), data_dir=data_dir, split_sizes=sizes,
                          seed=seed, num_workers=num_workers, supersample=supersample,
                          beam=beam_options is not None)
  if is_built(data_dir, resolution, shapes):
    info = tfds.builder_from_directory(builder.data_dir).info
    have = {name: info.splits[name].num_examples if name in info.splits else 0 for name in sizes}
    meta = dict(info.metadata or {})
    if have != sizes or meta.get("seed") != seed or meta.get("supersample") != supersample:
      raise ValueError(
          f"{builder.data_dir} already holds scenes with split sizes {have}, seed {meta.get('seed')}, "
          f"supersample {meta.get('supersample')}; asked for {sizes}, seed {seed}, supersample {supersample}. "
          "Use another data_dir or delete that one.")
    return str(builder.data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP,
                                                   beam_options=beam_options, num_shards=num_shards),
      file_format="array_record")
  return str(builder.data_dir)


def load(data_dir: str, resolution: int, split: str, shapes=()) -> ScenesSource:
  """The random-access source of a built split (no TensorFlow needed to read)."""
  path = prepared_dir(data_dir, resolution, shapes)
  if not is_built(data_dir, resolution, shapes):
    raise FileNotFoundError(f"no scenes dataset at {path}; write it first with "
                            f"vbanana.data.scenes_tfds.build({data_dir!r}, resolution={resolution}"
                            + (f", shapes={list(shapes)})" if shapes else ")"))
  builder = tfds.builder_from_directory(path)
  if split not in builder.info.splits:
    raise ValueError(f"{path} has splits {sorted(builder.info.splits)}, not {split!r}")
  return ScenesSource(builder.as_data_source(split), f"{path}[{split}]", resolution, check_shapes(shapes))
