r"""Evaluation: evaluators built from `config.evals`, run inside training or as a job following a workdir.

Evaluators are data (big_vision style). One entry per evaluator:

    config.evals.depth = dict(type='depth', component='depth', split='test', steps=4, sampler='euler',
                              text_scale=1.0, image_scale=1.0, limit=64, batch_size=32, every_steps=0,
                              seed=0, num_images=4, quality=True)

`type` is a task name (vbanana.tasks.TASKS); `component` names the data component whose source and task
preprocessing give the examples (default: the evaluator's name, else its type). Each evaluator samples the
model (params as given, normally the EMA params) on the mesh with its steps and guidance, turns the output
into uint8, decodes it with each example's `decode_args` and accumulates the task's metrics over the split.
Scalars come back prefixed by the evaluator's name (`depth/abs_rel`), with one image grid per evaluator
(rows: input | prediction | target). Generation and editing evaluators add the model-independent scores of
vbanana.quality (scenes FD, caption-attribute accuracy), unless `quality=False`.

Determinism: the sampling noise of an example is drawn from (seed, index of the example in the split), so
the same params give the same metrics under any mesh, batch size or number of processes. Every process
reads the whole (small) eval split and scores all of it; only the sampling is spread over the devices.

Following a workdir (`--mode=eval`):

  python -m vbanana.main --config=configs/quickstart.py --workdir=runs/quickstart --mode=eval

evaluates each checkpoint once as it appears (the steps done are the rows of DIR/eval_metrics.jsonl, so a
restarted job continues), writes scalars to DIR/eval_metrics.jsonl and through clu writers to DIR/eval/,
and stops after the final step (config.train.steps).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from vbanana import console
from vbanana import flow

EVAL_METRICS_FILE = "eval_metrics.jsonl"
EVAL_DIR = "eval"
SAMPLERS = ("euler", "heun")
_FIELDS = ("type", "component", "split", "steps", "sampler", "text_scale", "image_scale", "limit", "batch_size",
           "every_steps", "seed", "num_images", "quality")
_IMAGE_TASKS = ("generation", "editing")


# ----------------------------------------------------------------------------------------------------------
# Evaluator specs: config.evals entries, checked once with errors that name the entry and field.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class EvalSpec:
  name: str
  type: str
  component: str
  split: str = "validation"
  steps: int = 4
  sampler: str = "euler"
  text_scale: float = 1.0
  image_scale: float = 1.0
  limit: int | None = None
  batch_size: int = 0  # 0: data.global_batch
  every_steps: int = 0  # 0: every time the trainer evaluates
  seed: int = 0
  num_images: int = 4  # examples shown in the image grid
  quality: bool = True  # generation / editing: vbanana.quality scores


def _as_dict(value) -> dict:
  return value.to_dict() if hasattr(value, "to_dict") else dict(value)


def parse_specs(config) -> list[EvalSpec]:
  """config.evals -> EvalSpecs, in config order."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  evals = _as_dict(config.get("evals") or {})
  components = _as_dict(config.data.get("components") or {})
  specs = []
  for name, entry in evals.items():
    entry, where = _as_dict(entry), f"config.evals.{name}"
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
      raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    kind = entry.get("type", name)
    if kind not in tasks.TASKS:
      raise ValueError(f"{where}.type={kind!r}: expected one of {tasks.TASKS}")
    component = entry.get("component") or (name if name in components else kind)
    if component not in components:
      raise ValueError(f"{where}.component={component!r}: no such data component; data.components has "
                       f"{sorted(components)}")
    spec = EvalSpec(name=name, type=kind, component=component,
                    **{k: v for k, v in entry.items() if k not in ("type", "component")})
    if spec.sampler not in SAMPLERS:
      raise ValueError(f"{where}.sampler={spec.sampler!r}: expected one of {SAMPLERS}")
    if not isinstance(spec.steps, int) or spec.steps < 1:
      raise ValueError(f"{where}.steps={spec.steps!r}: expected an int >= 1")
    if spec.limit is not None and spec.limit < 1:
      raise ValueError(f"{where}.limit={spec.limit!r}: expected None or an int >= 1")
    specs.append(spec)
  return specs


# ----------------------------------------------------------------------------------------------------------
# One evaluator: sample on the mesh, decode and score on the host.
# ----------------------------------------------------------------------------------------------------------
def _global_array(value: np.ndarray, sharding) -> jax.Array:
  """A host array that every process holds whole -> a global array with `sharding`."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class Evaluator:
  """Samples and scores one eval split. `run(params) -> (scalars, image grid)`."""

  def __init__(self, spec: EvalSpec, setup):
    self.spec, self.setup, self.config = spec, setup, setup.config
    self.batch_size = int(spec.batch_size or self.config.data.global_batch)
    shards = math.prod(setup.mesh.shape[a] for a in _batch_axes(setup.batch_sharding.spec))
    if self.batch_size % shards:
      raise ValueError(f"config.evals.{spec.name}.batch_size={self.batch_size} is not divisible by the {shards} "
                       "devices the batch is split over")
    self.data_sharding = setup.batch_sharding
    self.sample_fn = setup.sampler(steps=spec.steps, method=spec.sampler, text_scale=spec.text_scale,
                                   image_scale=spec.image_scale)
    key = jax.random.key(spec.seed)

    def noise(indices, shape):  # per example: the same noise whatever the batch, mesh or process count
      return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32))(indices)

    # One program per image shape (aspect-ratio bucket) of the batches.
    self.noise_fn = jax.jit(noise, static_argnums=1, out_shardings=self.data_sharding)
    self.to_uint8 = jax.jit(flow.to_uint8, out_shardings=self.data_sharding)

  def batches(self):
    """(batch, examples) over the whole split, on every process (each host scores every example)."""
    from vbanana.data import pipeline  # pylint: disable=g-import-not-at-top
    return pipeline.make_eval_batches(self.config.data, self.spec.component, self.spec.split, self.batch_size,
                                      limit=self.spec.limit, process_index=0, process_count=1)

  def sample(self, params, batch: Mapping[str, np.ndarray], start: int) -> np.ndarray:
    """uint8 (B, H, W, 3) generated for a batch whose first row is example `start` of the split."""
    keys = [k for k in ("text", "inputs", "input_mask", "text_embeddings") if k in batch]
    arrays = {k: _global_array(batch[k], self.data_sharding) for k in keys}
    indices = _global_array(np.arange(start, start + len(batch["text"]), dtype=np.int32), self.data_sharding)
    shape = self.setup.family.denoised_shape(self.setup.model_cfg, batch["target"].shape[1:3])
    with jax.set_mesh(self.setup.mesh):
      images = self.sample_fn(params, self.setup.frozen, self.noise_fn(indices, tuple(shape)), arrays)
      return _to_host(self.to_uint8(images))

  def run(self, params) -> tuple[dict[str, float], np.ndarray | None]:
    from vbanana import tasks  # pylint: disable=g-import-not-at-top
    task = tasks.get(self.spec.type)
    accumulator = task.Accumulator()
    quality = _QualityScores() if self.spec.quality and self.spec.type in _IMAGE_TASKS else None
    tiles, count, t0 = [], 0, time.perf_counter()
    for batch, examples in self.batches():
      generated = self.sample(params, batch, count)  # real rows first: row r is example count + r
      for row, example in enumerate(examples):
        rgb = generated[row]
        update_accumulator(task, accumulator, rgb, example)
        if len(tiles) < 3 * self.spec.num_images:
          row_tiles = _grid_row(batch, row, rgb)
          if tiles:  # batches of other aspect-ratio buckets: shown at the first one's shape
            row_tiles = [resize_nearest(t, *tiles[0].shape[:2]) for t in row_tiles]
          tiles += row_tiles
      if quality is not None and examples:
        quality.update(generated[:len(examples)], batch["target"][:len(examples)], examples)
      count += len(examples)
    scalars = {k: float(v) for k, v in accumulator.result().items()}
    if quality is not None:
      scalars.update({f"quality/{k}": v for k, v in quality.result().items()})
    scalars["num_examples"] = float(count)
    scalars["seconds"] = time.perf_counter() - t0
    grid = None
    if tiles:
      from vbanana import metrics_writer  # pylint: disable=g-import-not-at-top
      grid = metrics_writer.image_grid(np.stack(tiles), cols=3)
    return {f"{self.spec.name}/{k}": v for k, v in scalars.items()}, grid


def _batch_axes(spec) -> tuple[str, ...]:
  first = tuple(spec)[0] if len(tuple(spec)) else None
  return () if first is None else (first,) if isinstance(first, str) else tuple(first)


def resize_nearest(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize (codes must not blend): pixel centres of the output sample the input."""
  rows = ((np.arange(height) + 0.5) * rgb.shape[0] / height).astype(int)
  cols = ((np.arange(width) + 0.5) * rgb.shape[1] / width).astype(int)
  return rgb[rows[:, None], cols[None, :]]


def update_accumulator(task, accumulator, rgb: np.ndarray, example) -> None:
  """Decodes one generated image with the example's decode_args and adds it to the task's Accumulator.

  The model works at the training resolution; the ground truth is at the source's (the example's target
  before batching), so the generated image is brought to that size first, as benchmarks score.
  """
  height, width = np.shape(example.target)[:2]
  if rgb.shape[:2] != (height, width):
    rgb = resize_nearest(rgb, height, width)
  prediction = task.decode(rgb, **example.decode_args)
  accumulator.update(prediction, example.ground_truth, example.ground_truth.get("valid"))


def _grid_row(batch, row: int, generated: np.ndarray) -> list[np.ndarray]:
  """[first input image (grey when there is none) | prediction | target], at the model's resolution."""
  target = batch["target"][row]
  if batch["input_mask"].shape[1] and batch["input_mask"][row, 0]:
    first = batch["inputs"][row, 0]
  else:
    first = np.full_like(target, 128)
  return [first, generated, target]


class _QualityScores:
  """vbanana.quality on generated vs target images, with the caption's attributes for generation.

  Attributes come from the sample's `objects` in the example's ground truth (with the object count), else
  from the shape and colour words of the instruction. Editing targets show the edited scene, which the
  example's objects do not describe: FD only.
  """

  def __init__(self):
    from vbanana.quality import metrics as quality_metrics  # pylint: disable=g-import-not-at-top
    self._acc = quality_metrics.GenerationQuality()

  def update(self, generated: np.ndarray, targets: np.ndarray, examples) -> None:
    from vbanana.quality import metrics as quality_metrics  # pylint: disable=g-import-not-at-top
    from vbanana.quality import net as quality_net  # pylint: disable=g-import-not-at-top
    labels = counts = None
    if all(e.task == "generation" for e in examples):
      objects = [e.ground_truth.get("objects") if isinstance(e.ground_truth, Mapping) else None for e in examples]
      if all(o is not None for o in objects):
        labels, counts = zip(*(quality_net.attribute_labels(o) for o in objects))
        labels, counts = np.stack(labels), np.asarray(counts)
      else:
        labels = np.stack([quality_metrics.caption_attributes(e.instruction) for e in examples])
    self._acc.update(generated, targets, labels, counts)

  def result(self) -> dict[str, float]:
    return self._acc.result()


# ----------------------------------------------------------------------------------------------------------
# The trainer's entry points.
# ----------------------------------------------------------------------------------------------------------
def build_evaluators(setup) -> list[Evaluator]:
  """One Evaluator per config.evals entry of the setup's config (each compiles its sampler on first use).
  Built once by the caller (the trainer, the follower, the recipe) and reused at every evaluation."""
  return [Evaluator(spec, setup) for spec in parse_specs(setup.config)]


def run_evaluators(evaluators, params, step: int, *, final_step: int | None = None
                   ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Runs the evaluators due at `step` (every_steps divides it, or it is the final step).

  Returns (scalars prefixed by evaluator name, {evaluator name: uint8 image grid}).
  """
  scalars, images = {}, {}
  for ev in evaluators:
    every = ev.spec.every_steps
    if every and step % every and step != final_step:
      continue
    values, grid = ev.run(params)
    scalars.update(values)
    if grid is not None:
      images[ev.spec.name] = grid
    logging.info("eval %s at step %d: %s", ev.spec.name, step,
                 ", ".join(f"{k.split('/', 1)[1]}={v:.4g}" for k, v in values.items()))
  return scalars, images


def headline(evaluators, scalars: Mapping[str, float]) -> str:
  """One line of each evaluator's headline metric (its task's HEADLINE), for the console."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  parts = []
  for ev in evaluators:
    for metric in tasks.get(ev.spec.type).HEADLINE:
      key = f"{ev.spec.name}/{metric}"
      if key in scalars:
        parts.append(f"{ev.spec.name} {metric} {scalars[key]:.4g}")
        break
  return ", ".join(parts) or "no evaluator ran"


# ----------------------------------------------------------------------------------------------------------
# Following a workdir's checkpoints.
# ----------------------------------------------------------------------------------------------------------
def evaluated_steps(workdir: str) -> set[int]:
  """The steps already in DIR/eval_metrics.jsonl."""
  path = epath.Path(workdir) / EVAL_METRICS_FILE
  if not path.exists():
    return set()
  return {int(json.loads(line)["step"]) for line in path.read_text().splitlines() if line.strip()}


def _append_row(workdir: str, step: int, scalars: Mapping[str, float]) -> None:
  row = {"step": int(step)}
  row.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
  with (epath.Path(workdir) / EVAL_METRICS_FILE).open("a") as f:
    f.write(json.dumps(row) + "\n")


def follow(config, workdir: str, *, poll_seconds: float = 10.0, timeout_seconds: float | None = None,
           tensorboard: bool | None = None) -> list[int]:
  """Evaluates each checkpoint of `workdir` once, as they appear, until the final step (config.train.steps).

  Reads the EMA params of each step onto this job's mesh. Returns the steps evaluated by this call.
  Stops early (with a warning) when no new checkpoint appears for `timeout_seconds`.
  """
  from vbanana import checkpoint  # pylint: disable=g-import-not-at-top
  from vbanana import metrics_writer  # pylint: disable=g-import-not-at-top
  from vbanana import setup as setup_lib  # pylint: disable=g-import-not-at-top

  setup = setup_lib.create(config)
  config = setup.config
  final = int(config.train.steps)
  evaluators = build_evaluators(setup)
  console.open_log(os.fspath(epath.Path(workdir) / EVAL_DIR))
  if tensorboard is None:
    tensorboard = bool(config.train.tensorboard)
  writer = metrics_writer.create_writer(os.fspath(epath.Path(workdir) / EVAL_DIR), tensorboard=tensorboard)
  done, evaluated = evaluated_steps(workdir), []
  last_progress = time.monotonic()
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  logging.info("Following %s (already evaluated: %s; final step %d)", ckpt_dir, sorted(done), final)
  try:
    while max(done, default=-1) < final:
      pending = [s for s in checkpoint.complete_steps(ckpt_dir) if s not in done]
      step = agree(pending[0] if pending else -1)  # oldest first; every process takes process 0's view
      if step < 0:
        if timeout_seconds is not None and time.monotonic() - last_progress > timeout_seconds:
          logging.warning("No new checkpoint in %s for %.0fs; stopping before the final step %d.", ckpt_dir,
                          timeout_seconds, final)
          break
        time.sleep(poll_seconds)
        continue
      try:
        params = checkpoint.load_params(os.fspath(ckpt_dir / str(step)), setup.abstract_params)
      except Exception:  # pylint: disable=broad-except
        if (ckpt_dir / str(step)).exists():
          raise
        # Deleted by the trainer's keep policy between listing and reading.
        logging.warning("Checkpoint %d of %s disappeared before it was read; skipping it.", step, ckpt_dir)
        done.add(step)
        continue
      scalars, images = run_evaluators(evaluators, params, step, final_step=final)
      if jax.process_index() == 0:
        _append_row(workdir, step, scalars)
      writer.write_scalars(step, scalars)
      if images:
        writer.write_images(step, images)
      writer.flush()
      console.say(f"eval step {step}: {headline(evaluators, scalars)}")
      done.add(step)
      evaluated.append(step)
      last_progress = time.monotonic()
  finally:
    writer.close()
  return evaluated


def agree(value: int) -> int:
  """Process 0's value on every process (file listings can differ between hosts for a moment)."""
  if jax.process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


follow_checkpoints = follow  # the name vbanana/main.py calls
