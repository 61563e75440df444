"""Runs a model on the paper's benchmarks and writes `paper_table.md`.

    python -m vbanana.main --config=configs/eval_paper.py:checkpoint=PATH,data_dir=DIR --mode=eval
    python -m vbanana.bench --checkpoint=PATH --data_dir=DIR --out=DIR [--limit=N]

Why this shape: the model sees each photo at the shape `vbanana.predict` runs it (its nearest aspect-ratio
bucket); the task module decodes that output and the decoded values are resized to the ground truth's
(H, W) before any score (protocols.to_gt_size), so every number is taken at the benchmark's own resolution
whatever the model's. Instructions and decode arguments come from each task's `make_example` (evaluation
phrasing), except Cityscapes, whose one fixed prompt names all 19 colours (`cityscapes_prompt`), and
SA-Co/Gold, whose noun phrase is the class of the instance instruction (`saco_example`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time

import numpy as np

from vbanana import tasks
from vbanana.bench import benchmarks as bench_lib
from vbanana.bench import options, protocols, readers, table
from vbanana.data.adapters import BadRecordError
from vbanana.tasks import common, instance, semantic

TABLE_FILE = "paper_table.md"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings(options.Options):  # the protocol options (vbanana.bench.options) are fields too
  checkpoint: str
  data_dir: str
  limit: int = 0            # examples per benchmark; 0 = all
  steps: int = 4            # sampler steps
  sampler: str = "euler"
  text_scale: float = 1.0
  batch_size: int = 8
  seed: int = 0
  semantic_prompt: str = "named"  # 'named': all 19 colours in the prompt; 'palette': the trained palette phrase
  only: str = ""            # comma-separated benchmark names; empty = all
  queries: int = 500        # SA-Co/Gold (image, phrase) pairs drawn at random (protocols.SACO_SEED); 0 = all


def cityscapes_prompt() -> str:
  """The one fixed Cityscapes instruction: every train class with its Cityscapes colour as an RGB tuple,
  in vbanana's named-colour phrasing (the paper's protocol names each class's colour in the prompt)."""
  names, colors = semantic.dataset_palette("cityscapes_19")
  mapping = ", ".join(f"{n} {common.describe_color(c, 'tuple')}" for n, c in zip(names, colors))
  return semantic.CANONICAL.format(mapping=mapping)


def saco_example(sample) -> common.TaskExample:
  """One SA-Co/Gold query as an instance request: the noun phrase is the class in the instance task's
  evaluation instruction, on black (its make_example needs integer instance maps, which overlapping and
  empty SA-Co masks are not)."""
  background = "black"
  return common.TaskExample(
      task="instance", instruction=instance.CANONICAL.format(cls=sample["query"], bg=background),
      inputs=[sample["image"]], target=None, ground_truth={"annotations": sample["annotations"]},
      decode_args={"background": tuple(int(v) for v in common.COLOR_NAMES[background])})


def make_example(benchmark, sample, settings: Settings):
  if benchmark.name == "sa_co_gold":
    return saco_example(sample)
  example = tasks.get(benchmark.task).make_example(sample, None, train=False)
  if example is not None and benchmark.name == "cityscapes" and settings.semantic_prompt == "named":
    example = dataclasses.replace(example, instruction=cityscapes_prompt())
  return example


class Scorer:
  """Accumulates one benchmark's numbers from decoded predictions already at the ground truth's size."""

  def __init__(self, benchmark, opts: options.Options = options.Options()):
    self.b, self.opts = benchmark, opts
    if benchmark.task == "depth":
      self.acc = protocols.MeanOfImages()
    elif benchmark.task == "normals":
      self.acc = tasks.get("normals").Accumulator()
    elif benchmark.task == "semantic":
      self.acc = semantic.Accumulator(num_classes=19)
    elif benchmark.task == "instance":
      self.acc = protocols.SacoGold(opts.saco_pooling)
    else:
      self.acc = tasks.get("referring").Accumulator()
    self.count = 0

  def update(self, prediction, sample) -> None:
    self.count += 1
    if self.b.task == "depth":
      protocol = protocols.depth_protocol(self.b.paper_key, self.opts)
      self.acc.update(protocols.depth_scores(prediction, sample["depth"], protocol, sample.get("valid")))
    elif self.b.task == "normals":
      gt = protocols.to_our_frame(sample["normals"], protocols.NORMALS[self.b.paper_key])
      self.acc.update(prediction, {"normals": gt, "valid": sample.get("valid")})
    elif self.b.task == "semantic":
      self.acc.update(prediction, {"semantic": sample["semantic"], "num_classes": 19})
    elif self.b.task == "instance":
      self.acc.update(prediction["masks"], prediction["scores"], sample["annotations"], sample.get("subset", ""))
    else:
      self.acc.update(prediction, {"mask": sample["instance"] == 1}, valid=sample.get("valid"))

  def result(self) -> dict[str, float]:
    out = {k: v for k, v in self.acc.result().items() if "/" not in k}  # no per-class IoUs in the table
    out["count"] = self.count
    return out


def predictions(loaded, sampler, pairs, settings: Settings, start: int):
  """Decoded predictions at each ground truth's size for a batch of (sample, example) pairs."""
  from vbanana import predict  # pylint: disable=g-import-not-at-top
  rgbs = predict.predict_rgb(loaded, sampler, [e.instruction for _, e in pairs], [s["image"] for s, _ in pairs],
                             seed=settings.seed + start)
  out = []
  for (sample, example), rgb in zip(pairs, rgbs):
    task = tasks.get(example.task)
    decoded = task.decode(np.asarray(rgb), **example.decode_args)
    gt_hw = sample["image"].shape[:2]
    if example.task == "instance":  # a set of masks: each to the ground truth's size
      masks = np.stack([protocols.to_gt_size(m, gt_hw) for m in decoded["masks"]]) if len(decoded["masks"]) else (
          np.zeros((0,) + tuple(gt_hw), bool))
      out.append({"masks": masks, "scores": np.asarray(decoded["scores"])})
      continue
    out.append(protocols.to_gt_size(decoded, gt_hw, nearest=example.task in ("semantic", "referring"),
                                    resize=settings.resize))
  return out


def run_benchmark(benchmark, loaded, sampler, settings: Settings) -> dict[str, float]:
  """The benchmark's numbers over its first `settings.limit` examples (all when 0)."""
  samples = benchmark.read(bench_lib.source_dir(benchmark, settings.data_dir),
                           **{k: getattr(settings, k) for k in benchmark.settings_args})
  if settings.limit:
    samples = itertools.islice(samples, settings.limit)
  scorer, batch, done = Scorer(benchmark, settings), [], 0
  for sample in itertools.chain(samples, [None]):
    if sample is not None:
      example = make_example(benchmark, sample, settings)
      if example is not None:
        batch.append((sample, example))
    if batch and (sample is None or len(batch) == settings.batch_size):
      for (s, _), pred in zip(batch, predictions(loaded, sampler, batch, settings, done)):
        scorer.update(pred, s)
      done += len(batch)
      batch = []
  return scorer.result()


def run(settings: Settings, out_dir: str, log=print) -> dict:
  """Runs every benchmark whose data is present; one line per skipped one; writes out_dir/paper_table.md.

  Returns {'results': {name: metrics}, 'skipped': {name: line}, 'errors': {name: line}, 'table': path}."""
  from vbanana import predict  # pylint: disable=g-import-not-at-top
  settings = dataclasses.replace(settings, data_dir=os.path.expanduser(settings.data_dir),
                                 checkpoint=os.path.expanduser(settings.checkpoint))
  if not settings.checkpoint:
    raise ValueError("error: eval_paper: 'checkpoint' is empty; expected a workdir or an exported .safetensors")
  options.check(settings)
  if not settings.data_dir or not os.path.isdir(settings.data_dir):
    raise ValueError(f"error: eval_paper: 'data_dir' {settings.data_dir!r} is not a directory; expected the "
                     "TFDS data_dir that also holds the folder datasets (docs/benchmarks.md)")
  log("protocol options: " + ", ".join(f"{o.name}={getattr(settings, o.name)}" for o in options.OPTIONS))
  only = {n.strip() for n in settings.only.split(";") if n.strip()} if settings.only else None
  chosen = [b for b in bench_lib.BENCHMARKS if only is None or b.name in only]
  results, skipped, errors = {}, {}, {}
  present = []
  for b in chosen:
    line = b.missing(settings.data_dir)
    if line:
      skipped[b.name] = line
      log(f"skipped {b.name}: {line}")
    else:
      present.append(b)
  loaded = predict.load(settings.checkpoint) if present else None
  sampler = predict.make_sampler(loaded, steps=settings.steps, method=settings.sampler,
                                 text_scale=settings.text_scale) if present else None
  for b in present:
    t0 = time.time()
    try:
      results[b.name] = run_benchmark(b, loaded, sampler, settings)
    except (readers.LayoutError, BadRecordError) as e:
      line = str(e).splitlines()[0]
      errors[b.name] = line if line.startswith("error:") else f"error: {b.name}: {line}"
      log(errors[b.name])
      continue
    log(f"{b.name}: {table.format_metrics(results[b.name])} ({time.time() - t0:.1f} s)")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, TABLE_FILE)
  with open(path, "w", encoding="utf-8") as f:
    f.write(table.markdown(results, skipped, errors, settings))
  log(f"wrote {path}")
  return {"results": results, "skipped": skipped, "errors": errors, "table": path}


def settings_from_config(bench_config) -> Settings:
  fields = {f.name for f in dataclasses.fields(Settings)}
  values = dict(bench_config.to_dict() if hasattr(bench_config, "to_dict") else bench_config)
  unknown = sorted(set(values) - fields - {"out"})
  if unknown:
    raise ValueError(f"error: config.bench: unknown fields {unknown}; expected {sorted(fields | {'out'})}")
  return Settings(**{k: v for k, v in values.items() if k in fields})


def main_from_config(config, workdir: str | None) -> int:
  """`python -m vbanana.main --config=configs/eval_paper.py:... --mode=eval`: exit status 1 on a layout error."""
  settings = settings_from_config(config.bench)
  out = workdir or config.bench.get("out") or "runs/eval_paper"
  try:
    outcome = run(settings, out)
  except ValueError as e:
    print(str(e), file=sys.stderr)
    return 2
  return 1 if outcome["errors"] else 0
