"""The training mixture and the eval batches: raw samples -> task examples -> fixed-shape numpy batches.

Per component (a named source + task + weight from `data.components`), an infinite random-access stream:

    MapDataset.source(source).shuffle(seed).repeat()            a new order every epoch, the same on every host
      -> Examples: position j -> preprocess(record at j)        read, check, augment, make_example, tokenize;
                                                                  a broken record is skipped (counted) and the
                                                                  same position of the next epoch used instead

then `MapDataset.mix(components, weights)`: global example i of the mixture is (component, position), a pure
function of i and the weights. Global batch b is examples [b * B, (b + 1) * B); process p of P builds rows
[p * B/P, (p + 1) * B/P) of it (`GlobalBatchRows`), reading only those records. So the global batches are the
same whatever the number of processes or worker processes, and an iterator restored from `get_state()` (an
index) continues with exactly the batches an uninterrupted run sees.

    GlobalBatchRows(mixture).batch(B / P)  ->  to_iter_dataset()  ->  mp_prefetch(num_workers)

Batches are formed before the worker split: worker w makes batches w, w + W, ... and Grain interleaves them
back in order. Each example's randomness (augmentation, instruction phrasing, colours) is seeded from
(data.seed, component, position).

The data config (an ml_collections.ConfigDict or a dict):
    resolution=32, text_length=224 (bytes), max_inputs=1 (K input-image slots), global_batch=32, num_workers=0,
    seed=0, strict=False, augment=dict(crop_scale=(1.0, 1.0), flip=True), worker_buffer_size=2 (batches
    per worker), read_threads=2 and read_buffer=4 (batches made ahead by threads, per process or worker),
    components={'generation': dict(source={...}, task='generation', weight=0.85), ...}
crop_scale is the side of the random square crop as a fraction of the image's short side: the default 1.0
crops only non-square images (at a random position) and never cuts an object out of a scene whose caption
lists it; real datasets may want (0.8, 1.0). A component may carry its own `augment` dict.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import zlib
from typing import Iterator, Mapping

import grain
import numpy as np
from absl import logging

from vbanana import procs
from vbanana.data import augment as augment_lib
from vbanana.data import sources as sources_lib

DEFAULTS = dict(resolution=32, text_length=224, max_inputs=1, global_batch=32, num_workers=0, seed=0,
                strict=False, augment=dict(crop_scale=(1.0, 1.0), flip=True), worker_buffer_size=2,
                read_threads=2, read_buffer=4, shapes=None)
# Targets that are images (interpolate when resizing); every other task's target is a code (nearest).
_IMAGE_TARGET_TASKS = ("generation", "editing")
# Errors of the code, not of a record: never skipped, whatever data.strict says.
_CODE_ERRORS = (ImportError, NameError, AttributeError, NotImplementedError, SyntaxError)
# After this many records of a component, more than this fraction skipped means a systematic problem.
_STALL_MIN_RECORDS, _STALL_MAX_FRACTION = 100, 0.5
# A broken record is replaced by the same position of the next epoch, at most this many times in a row.
_MAX_REPLACEMENTS = 32


def _get(cfg, name: str):
  if isinstance(cfg, Mapping):
    value = cfg.get(name, DEFAULTS.get(name))
  else:
    value = getattr(cfg, name, DEFAULTS.get(name))
  if value is None and name not in DEFAULTS:
    raise ValueError(f"data config has no field 'data.{name}'")
  return value


def _as_dict(value) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


@dataclasses.dataclass(frozen=True)
class Component:
  name: str
  source: dict
  task: str
  weight: float
  augment: dict | None = None  # Overrides data.augment for this component.


def components(data_cfg) -> list[Component]:
  """The mixture's components with positive weight, in config order; errors name the bad field."""
  from vbanana import tasks  # Lazy: keeps worker start-up light until a task is needed.

  raw = _as_dict(_get(data_cfg, "components") or {})
  result = []
  for name, comp in raw.items():
    comp = _as_dict(comp)
    where = f"data.components.{name}"
    for field in ("source", "task", "weight"):
      if field not in comp:
        raise ValueError(f"{where} has no field '{field}' (expected source, task, weight)")
    if comp["task"] not in tasks.TASKS:
      raise ValueError(f"{where}.task: unknown task '{comp['task']}'; expected one of {tasks.TASKS}")
    weight = float(comp["weight"])
    if weight < 0 or not math.isfinite(weight):
      raise ValueError(f"{where}.weight must be a finite number >= 0, got {comp['weight']!r}")
    if weight == 0:
      logging.info("Data component %s has weight 0: left out of the mixture.", name)
      continue
    augment = _as_dict(comp["augment"]) if comp.get("augment") is not None else None
    result.append(Component(name, _as_dict(comp["source"]), comp["task"], weight, augment))
  if not result:
    raise ValueError("data.components: no component with a positive weight")
  return result


def data_shapes(data_cfg) -> tuple[tuple[int, int], ...]:
  """The image shapes (H, W) batches come in: data.shapes (aspect-ratio buckets), or the square
  data.resolution."""
  shapes = _get(data_cfg, "shapes")
  if not shapes:
    r = int(_get(data_cfg, "resolution"))
    return ((r, r),)
  out = []
  for shape in shapes:
    if len(shape) != 2 or any(int(v) != v or v < 1 for v in shape):
      raise ValueError(f"data.shapes: expected (height, width) pairs of positive ints, got {shape!r}")
    out.append((int(shape[0]), int(shape[1])))
  return tuple(out)


def component_seed(seed: int, name: str) -> int:
  """A stable 32-bit seed per (data.seed, component name), equal in every process and worker."""
  return zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF


# The quickstart's mixture (configs/quickstart.py trains on it; the data benchmark measures it).
QUICKSTART_WEIGHTS = dict(generation=0.3, editing=0.15, depth=0.11, normals=0.11, semantic=0.11, instance=0.11,
                          referring=0.11)


def scenes_data_config(data_dir: str, resolution: int = 32, global_batch: int = 32, text_length: int = 224,
                       num_train: int = 2048, num_workers: int = 0, weights=None) -> dict:
  """A data config mixing every task on the built-in scenes (the quickstart mixture by default)."""
  source = dict(kind="scenes", data_dir=data_dir, resolution=resolution, num_train=num_train,
                num_validation=128, num_test=128)
  weights = QUICKSTART_WEIGHTS if weights is None else weights
  return dict(resolution=resolution, text_length=text_length, max_inputs=1, global_batch=global_batch,
              num_workers=num_workers, seed=0,
              components={name: dict(source=source, task=name, weight=w) for name, w in weights.items()})


# ----------------------------------------------------------------------------------------------------------
# Text and fixed-shape examples.


def tokenize(texts, length: int) -> np.ndarray:
  """The model's byte tokenizer (docs/interfaces.md), imported on first use (worker start-up stays light)."""
  from vbanana.model.text import tokenize as model_tokenize

  return model_tokenize(texts, length)


def to_arrays(example, task_ids: Mapping[str, int], shape, text_length: int,
              max_inputs: int) -> dict[str, np.ndarray]:
  """A TaskExample -> the fixed-shape arrays of one batch row (docs/interfaces.md, 'Batch'); `shape` is
  the batch's image shape (H, W) (or a side, for a square)."""
  if len(example.inputs) > max_inputs:
    raise ValueError(f"task '{example.task}' gave {len(example.inputs)} input images; data.max_inputs is "
                     f"{max_inputs}")
  h, w = augment_lib.hw(shape)
  inputs = np.zeros((max_inputs, h, w, 3), np.uint8)
  for slot, image in enumerate(example.inputs):
    inputs[slot] = augment_lib.resize_rgb(np.asarray(image, np.uint8), (h, w))
  target = np.asarray(example.target, np.uint8)
  if example.task in _IMAGE_TARGET_TASKS:
    target = augment_lib.resize_rgb(target, (h, w))
  else:
    target = augment_lib.resize_nearest(target, (h, w))
  return {
      "text": tokenize([example.instruction], text_length)[0],
      "inputs": inputs,
      "input_mask": np.arange(max_inputs) < len(example.inputs),
      "target": np.ascontiguousarray(target),
      "task": np.asarray(task_ids[example.task], np.int32),
  }


# ----------------------------------------------------------------------------------------------------------
# Broken records: skipped and counted, or fatal in strict mode.

class _Reader:
  """Reads record i of a source; a failure becomes an Exception value instead of killing the stream."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    try:
      return self.source[index]
    except _CODE_ERRORS:
      raise
    except Exception as e:  # Decoders raise many types; the message names the record.
      return e


class Preprocess:
  """One component's per-record work: check, augment, make the task example, make fixed-shape arrays.

  Picklable (it travels into Grain workers); the task module is imported on first use.
  """

  def __init__(self, component: Component, data_cfg, train: bool, shape: tuple[int, int] | None = None):
    from vbanana import tasks

    self.component = component.name
    self.task = component.task
    self.task_ids = {name: tasks.task_id(name) for name in tasks.TASKS}
    # The batch shape: fixed (a training stream of one bucket), or per sample the bucket nearest its
    # aspect ratio (evaluation; `shape_for`).
    self.shapes = data_shapes(data_cfg)
    self.shape = shape
    self.text_length = int(_get(data_cfg, "text_length"))
    self.max_inputs = int(_get(data_cfg, "max_inputs"))
    self.strict = bool(_get(data_cfg, "strict"))
    aug = {**_as_dict(_get(data_cfg, "augment")), **(component.augment or {})}
    self.crop_scale = tuple(aug.get("crop_scale", (1.0, 1.0)))
    self.flip = bool(aug.get("flip", True))
    self.train = train
    # Records this object read and skipped (in the process or Grain worker that holds this copy): the stall
    # check's counts. Training rows also carry how many records were skipped to make them (`Examples`), so
    # the trainer reports the skips of every worker and process as a metric.
    self.seen = self.skipped = 0

  def example(self, sample, rng: np.random.Generator):
    """Sample (or the Exception reading it) -> (TaskExample, arrays); None when skipped."""
    from vbanana import tasks

    self.seen += 1
    try:
      if isinstance(sample, Exception):
        raise sample
      sources_lib.check_sample(sample)
      shape = self.shape_for(sample["image"].shape[:2])
      if self.train:
        sample = augment_lib.train_augment(sample, rng, shape, self.crop_scale, self.flip)
      else:
        sample = augment_lib.eval_crop(sample, shape[1] / shape[0])
      example = tasks.get(self.task).make_example(sample, rng, train=self.train)
      if example is None:
        raise sources_lib.BadRecordError(
            f"{sample.get('key')}: this sample cannot make a '{self.task}' example")
      return example, to_arrays(example, self.task_ids, shape, self.text_length, self.max_inputs)
    except _CODE_ERRORS:
      raise
    except Exception as e:
      self._skip(sample, e)
      return None

  def shape_for(self, image_shape) -> tuple[int, int]:
    """The batch shape of a sample whose image is `image_shape` (H, W)."""
    if self.shape is not None:
      return self.shape
    from vbanana import aspect  # pylint: disable=g-import-not-at-top
    return aspect.nearest(image_shape, self.shapes)

  def _skip(self, sample, error: Exception):
    key = getattr(sample, "get", lambda *_: None)("key") or "<unreadable record>"
    message = f"data component '{self.component}' (task {self.task}): {type(error).__name__}: {error}"
    if self.strict:
      raise RuntimeError(f"data.strict=True: {message}") from error
    self.skipped += 1
    logging.warning("Skipping record %s of %s [%d of %d records skipped so far in this process]",
                    key, message, self.skipped, self.seen)
    if self.seen >= _STALL_MIN_RECORDS and self.skipped > _STALL_MAX_FRACTION * self.seen:
      raise RuntimeError(
          f"data component '{self.component}': {self.skipped} of {self.seen} records "
          f"skipped; the source cannot feed task '{self.task}' (last: {message})")

  def __call__(self, sample, rng: np.random.Generator):
    result = self.example(sample, rng)
    return None if result is None else result[1]


# ----------------------------------------------------------------------------------------------------------
# Training mixture.


def _process(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} outside [0, {process_count})")
  return process_index, process_count


class Examples(grain.MapDataset):
  """One component's examples by position: `Preprocess` of record `records[j]`.

  A record that cannot make an example (counted and logged by Preprocess) is replaced by position
  j + epoch, j + 2 * epoch, ... (the same slot of later epochs, other records since every epoch is shuffled
  anew), so every position yields an example and the stream stays a function of the position alone. Each
  row's `skipped` is how many records were replaced to make it (the trainer's `data/skipped_records`).
  """

  def __init__(self, records: grain.MapDataset, preprocess: "Preprocess", epoch: int, seed: int):
    super().__init__(records)
    self._preprocess, self._epoch, self._seed = preprocess, epoch, seed

  def __len__(self) -> int:
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    for attempt in range(_MAX_REPLACEMENTS):
      position = index + attempt * self._epoch
      result = self._preprocess(self._parent[position], np.random.default_rng([self._seed, position]))
      if result is not None:
        return {**result, "skipped": np.int32(attempt)}  # records skipped to make this row
    raise RuntimeError(f"data component '{self._preprocess.component}': {_MAX_REPLACEMENTS} records in a "
                       f"row could not make a '{self._preprocess.task}' example (position {index})")


class GlobalBatchRows(grain.MapDataset):
  """This process's rows of the global batches: row r of local batch b is element
  b * global_batch + process_index * local_batch + r of `parent`. The global batch is then the same for
  any process count (`jax.make_array_from_process_local_data` puts process p's rows at that offset)."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int, process_count: int):
    super().__init__(parent)
    self._global, self._local = global_batch, global_batch // process_count
    self._offset = process_index * self._local

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    batch, row = divmod(index, self._local)
    return self._parent[batch * self._global + self._offset + row]


def component_dataset(component: Component, data_cfg, source=None, *, shape=None,
                      name: str | None = None) -> grain.MapDataset:
  """One component's infinite, shuffled, preprocessed examples, indexed by position (the same on every
  process: processes differ only in the positions they read). `shape` fixes the image shape (one
  aspect-ratio bucket's stream); `name` seeds the shuffle (default: the component's)."""
  source = source if source is not None else sources_lib.make_source(component.source)
  if len(source) == 0:
    raise ValueError(f"data.components.{component.name}: the source has no records")
  seed = component_seed(int(_get(data_cfg, "seed")), name or component.name)
  records = grain.MapDataset.source(_Reader(source)).shuffle(seed=seed).repeat()
  return Examples(records, Preprocess(component, data_cfg, train=True, shape=shape), epoch=len(source),
                  seed=seed + 1)


class RecordSubset:
  """The records of `source` at `indices` (one aspect-ratio bucket's), as a random-access source."""

  def __init__(self, source, indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int):
    return self.source[int(self.indices[index])]


def record_buckets(source, shapes, component: str, seed: int) -> np.ndarray:
  """(N,) int: the aspect-ratio bucket of every record, the one nearest its image's aspect ratio.

  Read from `source.shapes()` (the scenes and folder sources know every record's shape without decoding
  it). A source that cannot tell (a TFDS dataset) gets a bucket per record drawn from (data.seed,
  component): its records are then cropped to that bucket's aspect ratio in training, never distorted."""
  from vbanana import aspect  # pylint: disable=g-import-not-at-top
  known = source.shapes() if hasattr(source, "shapes") else None
  if known is None:
    logging.warning("data component %s: its source does not list its image shapes, so its records are "
                    "spread over the %d aspect-ratio buckets at random and cropped to them.", component,
                    len(shapes))
    return np.random.default_rng(component_seed(seed, component + "/buckets")).integers(
        len(shapes), size=len(source))
  index = {s: k for k, s in enumerate(shapes)}
  return np.asarray([index[aspect.nearest(s, shapes)] for s in np.asarray(known).reshape(-1, 2)], np.int64)


def _mixture(streams, weights):
  return grain.MapDataset.mix(streams, weights) if len(streams) > 1 else streams[0]


def bucket_mixtures(data_cfg) -> list[tuple[tuple[int, int], float, grain.MapDataset]]:
  """Per aspect-ratio bucket (data.shapes): (shape, share of all examples, the mixture of its records).

  A component of weight w whose records fall a fraction f_k into bucket k adds w * f_k to bucket k's
  mixture, so every component keeps its weight and every record keeps its own aspect ratio."""
  shapes, comps = data_shapes(data_cfg), components(data_cfg)
  seed = int(_get(data_cfg, "seed"))
  per_bucket: list[list[tuple[grain.MapDataset, float]]] = [[] for _ in shapes]
  for comp in comps:
    source = sources_lib.make_source(comp.source)
    if len(source) == 0:
      raise ValueError(f"data.components.{comp.name}: the source has no records")
    buckets = record_buckets(source, shapes, comp.name, seed)
    for k, shape in enumerate(shapes):
      indices = np.flatnonzero(buckets == k)
      if len(indices):
        stream = component_dataset(comp, data_cfg, RecordSubset(source, indices), shape=shape,
                                   name=f"{comp.name}/{shape[0]}x{shape[1]}")
        per_bucket[k].append((stream, comp.weight * len(indices) / len(source)))
  out = []
  for shape, parts in zip(shapes, per_bucket):
    if parts:
      share = sum(w for _, w in parts)
      out.append((shape, share, _mixture([p for p, _ in parts], [w / share for _, w in parts])))
  return out


def make_train_dataset(data_cfg, *, process_index=None, process_count=None) -> grain.IterDataset:
  """The mixture as a Grain IterDataset of per-process batches (before iteration).

  With several image shapes (data.shapes), each global batch is of one aspect-ratio bucket: the buckets'
  batch streams are mixed by their shares of the data, batch b of the mixture a pure function of b as
  before, so every process agrees on the shape of every step and the order resumes exactly."""
  process_index, process_count = _process(process_index, process_count)
  global_batch = int(_get(data_cfg, "global_batch"))
  if global_batch % process_count:
    raise ValueError(f"data.global_batch={global_batch} is not divisible by the {process_count} processes")
  local = global_batch // process_count
  if len(data_shapes(data_cfg)) == 1:
    comps = components(data_cfg)
    mixture = _mixture([component_dataset(c, data_cfg) for c in comps], [c.weight for c in comps])
    batches = GlobalBatchRows(mixture, global_batch, process_index, process_count).batch(
        local, drop_remainder=True)
  else:
    parts = bucket_mixtures(data_cfg)
    batches = _mixture([GlobalBatchRows(m, global_batch, process_index, process_count).batch(
        local, drop_remainder=True) for _, _, m in parts], [share for _, share, _ in parts])
  # Threads make the next batches while the step runs (per process, or per worker with num_workers > 0).
  read = grain.ReadOptions(num_threads=int(_get(data_cfg, "read_threads")),
                           prefetch_buffer_size=int(_get(data_cfg, "read_buffer")))
  ds = batches.to_iter_dataset(read)
  num_workers = int(_get(data_cfg, "num_workers"))
  if num_workers > 0:
    # Each worker ends within a second of this process, however it ends (SIGKILL too): vbanana/procs.py.
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=int(_get(data_cfg, "worker_buffer_size"))),
        worker_init_fn=procs.DieWithParent())
  return ds


def make_train_iterator(data_cfg, *, process_index=None, process_count=None) -> grain.DatasetIterator:
  """A checkpointable iterator of this process's numpy batches (`global_batch // process_count` rows).

  Save and restore it with `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)` in the Orbax
  manager (or `it.get_state()` / `it.set_state(state)`); call `it.close()` to stop worker processes.
  """
  return iter(make_train_dataset(data_cfg, process_index=process_index, process_count=process_count))


# ----------------------------------------------------------------------------------------------------------
# Evaluation.


def make_eval_batches(data_cfg, component_name: str, split: str, batch_size: int, *, limit: int | None = None,
                      process_index=None, process_count=None, source=None) -> Iterator[tuple[dict, list]]:
  """Yields (batch, examples) covering a split exactly once with eval preprocessing (`train=False`).

  `batch_size` is global; this process yields rows for its records (index p, p + P, ...), and every
  process yields the same number of batches. Each batch has the keys of the training batch plus
  `example_mask` (bool (B,), True for real rows, which come first); `examples` are the real rows'
  TaskExamples with their full-resolution `ground_truth` and `decode_args`. `limit` keeps the first
  `limit` records of the split. Broken records are skipped and counted (or fail with data.strict).
  """
  process_index, process_count = _process(process_index, process_count)
  if batch_size % process_count:
    raise ValueError(f"eval batch_size={batch_size} is not divisible by the {process_count} processes")
  by_name = {c.name: c for c in components(data_cfg)}
  raw = _as_dict(_get(data_cfg, "components"))
  if component_name not in raw:
    raise ValueError(f"eval: no data component '{component_name}' in data.components ({sorted(raw)})")
  comp = by_name.get(component_name)
  if comp is None:  # A weight-0 component can still be evaluated.
    spec = _as_dict(raw[component_name])
    comp = Component(component_name, _as_dict(spec["source"]), spec["task"], 0.0)
  source = source if source is not None else sources_lib.make_source(comp.source, split)
  total = len(source) if limit is None else min(limit, len(source))
  local_batch = batch_size // process_count
  indices = range(process_index, total, process_count)
  num_batches = math.ceil(math.ceil(total / process_count) / local_batch)
  preprocess = Preprocess(comp, data_cfg, train=False)
  reader = _Reader(source)
  if len(preprocess.shapes) > 1:
    yield from _bucketed_eval_batches(reader, total, preprocess, batch_size, process_index, process_count)
    return
  pending = iter(indices)
  for _ in range(num_batches):
    rows, examples = [], []
    while len(rows) < local_batch:
      index = next(pending, None)
      if index is None:
        break
      result = preprocess.example(reader[index], np.random.default_rng(index))
      if result is not None:
        examples.append(result[0])
        rows.append(result[1])
    yield _pad_batch(rows, local_batch, preprocess, preprocess.shapes[0]), examples


def _record_shapes(reader: "_Reader", total: int) -> list[tuple[int, int] | None]:
  """(H, W) of records 0..total-1: from the source's list, or by reading each (None if unreadable)."""
  known = reader.source.shapes() if hasattr(reader.source, "shapes") else None
  if known is not None:
    return [tuple(int(v) for v in s) for s in np.asarray(known)[:total]]
  shapes = []
  for i in range(total):
    sample = reader[i]
    image = None if isinstance(sample, Exception) else sample.get("image")
    shapes.append(tuple(np.shape(image)[:2]) if image is not None and np.ndim(image) == 3 else None)
  return shapes


def _bucketed_eval_batches(reader, total: int, preprocess: Preprocess, batch_size: int, process_index: int,
                           process_count: int):
  """The split's records grouped by aspect-ratio bucket (in the order of data.shapes, each bucket in record
  order), `batch_size` records per global batch, each process taking rows p, p + P, ... of every batch:
  one image shape per batch, and the same batches on every process."""
  from vbanana import aspect  # pylint: disable=g-import-not-at-top
  shapes = _record_shapes(reader, total)
  local = batch_size // process_count
  for bucket in preprocess.shapes:
    # An unreadable record goes to the first bucket, where preprocessing skips and counts it.
    members = [i for i, s in enumerate(shapes)
               if (aspect.nearest(s, preprocess.shapes) if s else preprocess.shapes[0]) == bucket]
    for start in range(0, len(members), batch_size):
      rows, examples = [], []
      for index in members[start:start + batch_size][process_index::process_count]:
        result = preprocess.example(reader[index], np.random.default_rng(index))
        if result is not None:
          examples.append(result[0])
          rows.append(result[1])
      yield _pad_batch(rows, local, preprocess, bucket), examples


def _pad_batch(rows: list[dict], size: int, preprocess: Preprocess, shape) -> dict[str, np.ndarray]:
  (h, w), k, length = augment_lib.hw(shape), preprocess.max_inputs, preprocess.text_length
  batch = {
      "text": np.zeros((size, length), np.int32),
      "inputs": np.zeros((size, k, h, w, 3), np.uint8),
      "input_mask": np.zeros((size, k), bool),
      "target": np.zeros((size, h, w, 3), np.uint8),
      "task": np.full((size,), preprocess.task_ids[preprocess.task], np.int32),
      "example_mask": np.arange(size) < len(rows),
  }
  for i, row in enumerate(rows):
    for key, value in row.items():
      batch[key][i] = value
  return batch
