r"""Label efficiency: does a pretrained generator learn perception from fewer labelled scenes than scratch?

  python -m vbanana.experiments.label_efficiency --out=/tmp/le_quick --budget=quick   # a smoke test, minutes
  python -m vbanana.experiments.label_efficiency --out=OUT --budget=full               # docs/results.md
  python -m vbanana.experiments.label_efficiency --out=OUT --budget=full --probes      # pretraining probes

The paper's claim in its own terms (issues 12 and 23): pretraining on plentiful generation data, then
instruction tuning with a *small* amount of vision data, beats training the same model from scratch, and by
more the fewer labels there are. Here unlabelled images are free (the renderer is procedural) and labels are
scarce:
  data/pool        generation-only pool: `pool` fresh scenes rendered with dataset seed 1 (train split only),
                   never labelled, disjoint from every labelled scene and from the test split.
  data/labelled    the labelled pool: `labelled` scenes, dataset seed 0 (the first experiment's pool), and
                   its test split (`num_test` scenes), on which every run is scored.
  data/l{S}_n{N}   the N labelled scenes of seed replicate s (render seed S = LABEL_SEEDS[s]): replicate 0
                   takes the first N scenes of the labelled pool (so N=32 is inside N=128, ...), replicate 1
                   an independent draw of N scenes, so the seed spread includes which scenes were labelled.
  data/labelled64  the labelled pool at 64 px (the single-task mask runs).
The runs, in this order (one workdir each under OUT/runs; a stopped run resumes from its last checkpoint
with the same command, a finished one is read from its cached OUT/runs/<name>/le_metrics.json):
  pretrain               generation 0.7 + editing 0.3 on the pool, `pretrain_steps` (scored along the way).
  instruct_n{N}_s{s}     from pretrain's EMA params, the mixture: vision tasks `vision_share` (split equally,
                         each reading the N labelled scenes), generation and editing (7:3) the rest, from
                         the pool; `steps` steps.
  scratch_n{N}_s{s}      the same config, data and order (data.seed = s) from random init (init seed s).
  scratch_long_n{N0}_s0  scratch at the smallest N with pretrain + instruct steps: the equal-compute arm.
  mask_instance, mask_referring   single-task runs at `mask_res` px (from scratch, the labelled pool there).
  pretrain_noedit, instruct_noedit_n{N0}_s{s}   the editing-copy test: pretraining without editing.
N runs over `label_counts` and the full labelled pool; seeds 0..small_seeds-1 at the two smallest N, seed 0
above. Every run is scored on the test split: depth, normals, semantic, instance, referring (`eval_steps`
Euler steps) and generation (vbanana.quality scenes FD and caption-attribute accuracy; `gen_steps` Euler
steps with classifier-free guidance `guidance` on the instruction). The pretrained generator is also scored
at each of `guidance_sweep`, and instruct at the smallest N at each of `sweep_steps` sampler steps. Writes
OUT/results.md, OUT/results.json, OUT/label_efficiency.png, OUT/generation.png, OUT/timings.json (seconds of
each part) and OUT/clock.json (wall and CPU seconds of each invocation); with --probes, OUT/probes.md.

The verdict rules (`judge_*`) were written, with the budget, before any number of this experiment was
seen; docs/results.md states them in words.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time

from vbanana.experiments import recipe

VISION_TASKS = recipe.VISION_TASKS
PRIMARY = {"depth": "abs_rel", "normals": "mean_angle", "semantic": "miou", "instance": "ap",
           "referring": "giou"}  # the metric of each task that "labels saved" is computed on
PERCEPTION_METRICS = recipe.PERCEPTION_METRICS
GENERATION_METRICS = recipe.GENERATION_METRICS
POOL_SEED = 1          # the generation-only pool's render seed
LABEL_SEEDS = (0, 1002, 1003)  # render seed of replicate s's labelled scenes (never the pool's seed 1)
TIE = 0.02             # relative difference below which two numbers tie (the recipe's margin)
FIRST_FD = 647.1       # the first experiment's pretrained generator (docs/results.md)
TARGET_ATTR = 0.75     # issue 12: caption-attribute accuracy the generator must reach
TARGET_FD = 0.5 * FIRST_FD  # "well below 647": at most half of it
MASK_TARGETS = {"instance": ("ap", 0.3), "referring": ("giou", 0.5)}  # issue 12, item 3


@dataclasses.dataclass(frozen=True)
class Budget:
  size: str
  res: int
  batch: int
  lr: float
  pool: int                     # generation-only scenes
  labelled: int                 # the full labelled pool (the largest N)
  num_test: int
  label_counts: tuple[int, ...]  # N below the full pool
  small_seeds: int              # seeds at the two smallest N
  pretrain_steps: int
  steps: int                    # per instruct / scratch run
  vision_share: float
  eval_limit: int
  eval_steps: int               # perception sampler steps
  gen_steps: int                # generation sampler steps
  guidance: float               # text guidance scale of the generation evaluation
  guidance_sweep: tuple[float, ...]
  mask_res: int
  mask_patch: int
  mask_prediction: str
  mask_steps: int
  noedit_seeds: int             # seeds of instruct_noedit at the smallest N
  probe_steps: int
  sweep_steps: tuple[int, ...] = (1, 2, 4, 8, 25)  # sampler-steps sweep of instruct at the smallest N, seed 0
  sweep_limit: int = 32
  curve_points: int = 5         # generation evaluations along a pretraining run
  checkpoints: int = 10         # per run: a killed run loses at most a tenth of itself
  warmup_frac: float = 0.05


BUDGETS = {
    "quick": Budget(size="tiny", res=32, batch=8, lr=1e-3, pool=96, labelled=24, num_test=4, label_counts=(4,),
                    small_seeds=2, pretrain_steps=4, steps=4, vision_share=0.5, eval_limit=2, eval_steps=1,
                    gen_steps=2, guidance=2.0, guidance_sweep=(1.0, 2.0), mask_res=32, mask_patch=4,
                    mask_prediction="v", mask_steps=4, noedit_seeds=1, probe_steps=4, sweep_steps=(1, 2),
                    sweep_limit=2, curve_points=1, checkpoints=1),
    # The design as fixed before any number: 3 x 3000 pretraining-length steps (pretrain, pretrain_noedit,
    # the equal-compute scratch arm), 14 x 300 mixture steps, 2 x 800 single-task steps at 64 px, and every
    # run's evaluation. Meant for 100 minutes of compute on the project's 2 cores, it took about 10 h there
    # (docs/results.md, "Time").
    "full": Budget(size="small", res=32, batch=16, lr=1e-3, pool=20000, labelled=2048, num_test=64,
                   label_counts=(32, 128, 512), small_seeds=2, pretrain_steps=3000, steps=300, vision_share=0.5,
                   eval_limit=64, eval_steps=4, gen_steps=20, guidance=3.0, guidance_sweep=(1.0, 2.0, 3.0, 5.0),
                   mask_res=64, mask_patch=8, mask_prediction="x", mask_steps=800, noedit_seeds=1,
                   probe_steps=1000),
}

# Short pretraining probes (item 1): each overrides budget fields of the pretrain run.
PROBES = {
    "small_lr1e-3": dict(),
    "small_lr2e-3": dict(lr=2e-3),
    "cpu_s_lr1e-3": dict(size="cpu_s"),
}


# ----------------------------------------------------------------------------------------------------------
# Data: every dataset this experiment reads, built once under OUT/data.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Dataset:
  path: str
  res: int
  seed: int
  num_train: int
  num_test: int

  def source(self) -> dict:
    return dict(kind="scenes", data_dir=self.path, resolution=self.res, num_train=self.num_train,
                num_validation=0, num_test=self.num_test, seed=self.seed)


def pool_data(b: Budget, out: str) -> Dataset:
  return Dataset(os.path.join(out, "data", "pool"), b.res, POOL_SEED, b.pool, 0)


def labelled_data(b: Budget, out: str, n: int | None = None, replicate: int = 0, res: int | None = None) -> Dataset:
  """The N labelled scenes of a replicate (the full labelled pool, with the test split, when N is None)."""
  if n is None or (n == b.labelled and replicate == 0):
    if res is not None and res != b.res:
      return Dataset(os.path.join(out, "data", f"labelled{res}"), res, LABEL_SEEDS[0], b.labelled, b.num_test)
    return Dataset(os.path.join(out, "data", "labelled"), b.res, LABEL_SEEDS[0], b.labelled, b.num_test)
  seed = LABEL_SEEDS[replicate]
  return Dataset(os.path.join(out, "data", f"l{seed}_n{n}"), b.res, seed, n, 0)


def build_data(datasets, timings: dict) -> None:
  from vbanana.data import scenes_tfds  # pylint: disable=g-import-not-at-top
  for d in datasets:
    if scenes_tfds.is_built(d.path, d.res):
      continue
    t0 = time.perf_counter()
    # Rendering is the cost: large builds use both cores (the records are the same, in the same order).
    workers = 2 if d.num_train + d.num_test >= 1000 else 1
    scenes_tfds.build(d.path, d.res, d.num_train, 0, d.num_test, seed=d.seed, num_workers=workers)
    seconds = time.perf_counter() - t0
    timings[f"data:{os.path.basename(d.path)}"] = seconds
    print(f"[label_efficiency] built {d.path}: {d.num_train + d.num_test} scenes at {d.res} px in {seconds:.0f}s "
          f"({(d.num_train + d.num_test) / seconds:.1f} scenes/s)", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Runs and their configs.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  kind: str            # pretrain | instruct | scratch | mask
  n: int = 0           # labelled scenes per vision task (instruct / scratch)
  seed: int = 0
  init: str = ""       # the run whose EMA params initialise this one
  steps: int = 0
  editing: bool = True  # pretrain: with the editing task
  task: str = ""       # mask: the single task


def plan(b: Budget) -> list[Run]:
  """Every run, in the order they train: the most informative first, so a cut-short budget still says
  something. The generator, then the smallest N with its seeds and the equal-compute scratch arm (the
  headline claim and its control), then the larger N, then the single-task mask runs and the editing-copy
  test."""
  counts = list(b.label_counts) + [b.labelled]
  n0 = counts[0]
  runs = [Run("pretrain", "pretrain", steps=b.pretrain_steps)]
  for n in counts:
    for s in range(b.small_seeds if n in counts[:2] else 1):
      runs.append(Run(f"instruct_n{n}_s{s}", "instruct", n, s, init="pretrain", steps=b.steps))
      runs.append(Run(f"scratch_n{n}_s{s}", "scratch", n, s, steps=b.steps))
    if n == n0:
      runs.append(Run(f"scratch_long_n{n0}_s0", "scratch", n0, 0, steps=b.pretrain_steps + b.steps))
  runs += [Run(f"mask_{t}", "mask", task=t, steps=b.mask_steps) for t in MASK_TARGETS]
  runs.append(Run("pretrain_noedit", "pretrain", steps=b.pretrain_steps, editing=False))
  runs += [Run(f"instruct_noedit_n{n0}_s{s}", "instruct", n0, s, init="pretrain_noedit", steps=b.steps)
           for s in range(b.noedit_seeds)]
  return runs


def _eval(task: str, component: str, b: Budget, guidance: float | None = None) -> dict:
  if task == "generation":
    return dict(type=task, component=component, split="test", limit=b.eval_limit, steps=b.gen_steps,
                text_scale=float(b.guidance if guidance is None else guidance))
  return dict(type=task, component=component, split="test", limit=b.eval_limit, steps=b.eval_steps)


def make_config(run: Run, b: Budget, out: str):
  """The trainer config of one run. Instruct and scratch runs of the same (N, seed) differ only in init."""
  from vbanana import config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  res, patch = (b.mask_res, b.mask_patch) if run.kind == "mask" else (b.res, None)
  test = labelled_data(b, out, res=res).source()
  comps = {}
  if run.kind == "mask":
    comps[run.task] = dict(source=labelled_data(b, out, res=res).source(), task=run.task, weight=1.0)
    evals = {f"{run.task}_test": _eval(run.task, f"{run.task}_test", b)}
    c.flow.prediction = b.mask_prediction
    c.model.patch_size = patch
    c.train.eval_every = max(1, run.steps // 4)  # the task's metric along the run: still rising, or flat?
  else:
    share = 0.0 if run.kind == "pretrain" else b.vision_share
    gen_w, edit_w = (0.7, 0.3) if run.editing else (1.0, 0.0)
    pool = pool_data(b, out).source()
    comps["generation"] = dict(source=dict(pool), task="generation", weight=gen_w * (1 - share))
    if edit_w:
      comps["editing"] = dict(source=dict(pool), task="editing", weight=edit_w * (1 - share))
    if share:
      labels = labelled_data(b, out, run.n, run.seed).source()
      for task in VISION_TASKS:
        comps[task] = dict(source=dict(labels), task=task, weight=share / len(VISION_TASKS))
    evals = {f"{t}_test": _eval(t, f"{t}_test", b) for t in ("generation",) + VISION_TASKS}
  for name, spec in evals.items():  # weight 0: scored, never trained on
    comps[name] = dict(source=dict(test), task=spec["type"], weight=0.0)
  c.seed = run.seed
  c.init_from = os.path.join(out, "runs", run.init) if run.init else ""
  c.model.size = b.size
  c.model.image_size = res
  c.data.resolution = res
  c.data.global_batch = b.batch
  c.data.seed = run.seed
  c.data.components = comps
  c.optim.lr = b.lr
  c.optim.warmup_steps = max(1, int(run.steps * b.warmup_frac))
  c.optim.ema_decay = max(0.0, min(0.999, 1.0 - 10.0 / run.steps))  # as the recipe: EMA over ~10% of the run
  c.train.steps = run.steps
  c.train.log_every = max(1, min(50, run.steps // 20))
  c.train.tensorboard = False
  c.train.peak_flops_per_device = 1e11  # MFU logging only: skip the start-up matmul measurement
  c.checkpoint.every = max(1, run.steps // b.checkpoints)
  c.checkpoint.keep = 1
  if run.kind == "pretrain" and run.editing:  # the generator's quality along the way (item 1's record)
    c.train.eval_every = max(1, run.steps // b.curve_points)
    for name, spec in evals.items():
      spec["every_steps"] = c.train.eval_every if spec["type"] == "generation" else run.steps
  c.evals = evals
  return c


def eval_curve(out: str, name: str, prefix: str) -> dict[int, dict[str, float]]:
  """step -> the scalars under `prefix` that a run's trainer wrote along the way (the last row of a step
  wins: a resumed run writes some steps again)."""
  curve: dict[int, dict[str, float]] = {}
  for row in recipe.read_jsonl(os.path.join(out, "runs", name, "metrics.jsonl")):
    values = {k: v for k, v in row.items() if k.startswith(prefix)}
    if values:
      curve[int(row["step"])] = _rename(values)
  return dict(sorted(curve.items()))


def generation_curve(out: str, name: str) -> dict[int, dict[str, float]]:
  """step -> the generation-quality scalars along a pretraining run (item 1's record)."""
  return eval_curve(out, name, "generation_test/quality/")


def datasets(b: Budget, out: str) -> list[Dataset]:
  counts = list(b.label_counts) + [b.labelled]
  ds = [labelled_data(b, out), pool_data(b, out)]
  for n in counts:
    for s in range(b.small_seeds if n in counts[:2] else 1):
      ds.append(labelled_data(b, out, n, s))
  ds.append(labelled_data(b, out, res=b.mask_res))
  unique = {}
  for d in ds:
    unique.setdefault(d.path, d)
  return list(unique.values())


# ----------------------------------------------------------------------------------------------------------
# Results: scalars of a run, keyed by the recipe's metric names ('<task>/<metric>').
# ----------------------------------------------------------------------------------------------------------
def _rename(scalars: dict[str, float]) -> dict[str, float]:
  """'depth_test/abs_rel' -> 'depth/abs_rel' (the evaluators here are named <task>_test)."""
  out = {}
  for k, v in scalars.items():
    head, _, rest = k.partition("/")
    out[f"{head[:-5] if head.endswith('_test') else head}/{rest}"] = v
  return out


class Stopped(Exception):
  """A run was stopped before its last step (SIGTERM, preemption); its checkpoint resumes it."""


def train_run(run: Run, b: Budget, out: str) -> dict[str, float]:
  from vbanana import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(out, "runs", run.name)

  def compute():
    import jax  # pylint: disable=g-import-not-at-top
    config = make_config(run, b, out)
    state = train.train_and_evaluate(config, workdir, final_eval=True)
    step = int(jax.device_get(state["step"]))
    if step < run.steps:  # stopped by a signal (the trainer saved a checkpoint): nothing to cache yet
      raise Stopped(f"{run.name} stopped at step {step} of {run.steps}; the same command resumes it")
    return _rename(recipe.final_eval_scalars(workdir, set(config.evals)))

  return recipe._cached(os.path.join(workdir, "le_metrics.json"), compute)  # pylint: disable=protected-access


def guidance_sweep(run: Run, b: Budget, out: str, scales) -> dict[float, dict[str, float]]:
  """The generation metrics of a finished run's final EMA params at each guidance scale (cached)."""
  workdir = os.path.join(out, "runs", run.name)
  result = {}
  for g in scales:
    config = make_config(run, b, out)
    config.evals = {"generation_test": _eval("generation", "generation_test", b, guidance=g)}
    path = os.path.join(workdir, f"le_guidance_{g:g}.json")
    own = os.path.join(workdir, "le_metrics.json")
    if g == b.guidance and os.path.exists(own):  # the run's own final evaluation: the same spec and noise
      compute = lambda: {k: v for k, v in recipe._cached(own, dict).items() if k.startswith("generation/")}  # pylint: disable=protected-access,cell-var-from-loop
    else:
      compute = lambda: _rename(recipe.evaluate_workdir(config, workdir))  # pylint: disable=cell-var-from-loop
    result[g] = recipe._cached(path, compute)  # pylint: disable=protected-access
  return result


def sampler_sweep(run: Run, b: Budget, out: str) -> dict[int, dict[str, float]]:
  """A finished instruct run's perception metrics at each sampler step count (cached)."""
  workdir = os.path.join(out, "runs", run.name)
  result = {}
  for steps in b.sweep_steps:
    config = make_config(run, b, out)
    config.evals = {f"{t}_test": dict(_eval(t, f"{t}_test", b), steps=steps, limit=b.sweep_limit)
                    for t in VISION_TASKS}
    path = os.path.join(workdir, f"le_steps_{steps}.json")
    result[steps] = recipe._cached(path, lambda: _rename(recipe.evaluate_workdir(config, workdir)))  # pylint: disable=protected-access
  return result


def latest_step(workdir: str) -> int:
  """The newest committed checkpoint step of a workdir (0 when none)."""
  ckpts = os.path.join(workdir, "checkpoints")
  steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()
           and os.path.exists(os.path.join(ckpts, d, "_CHECKPOINT_METADATA"))] if os.path.isdir(ckpts) else []
  return max(steps, default=0)


def guidance_probe(name: str, b: Budget, out: str) -> str:
  """Generation quality of a (possibly unfinished) pretraining run's newest checkpoint at each guidance
  scale of the sweep: the guidance probe of item 1 (cached per step and scale)."""
  run = next(r for r in plan(b) if r.name == name)
  workdir = os.path.join(out, "runs", name)
  step = latest_step(workdir)
  if not step:
    return f"{name}: no checkpoint yet"
  rows = [f"{name} at step {step} of {run.steps} (EMA params; {b.eval_limit} test scenes, {b.gen_steps} Euler steps)",
          "", "| guidance | scenes FD | attribute accuracy (balanced) | count accuracy |", "|---|---|---|---|"]
  for g in b.guidance_sweep:
    config = make_config(run, b, out)
    config.evals = {"generation_test": _eval("generation", "generation_test", b, guidance=g)}
    path = os.path.join(workdir, f"le_probe_step{step}_g{g:g}.json")
    s = recipe._cached(path, lambda: _rename(recipe.evaluate_workdir(config, workdir)))  # pylint: disable=protected-access
    rows.append(f"| {g:g} | {_fmt(s.get('generation/quality/fd', float('nan')))} | "
                f"{_fmt(s.get('generation/quality/attr_balanced', float('nan')))} | "
                f"{_fmt(s.get('generation/quality/count_acc', float('nan')))} |")
  return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------------------------------------
# The verdicts. Rules fixed before the numbers (docs/results.md repeats them in words).
# ----------------------------------------------------------------------------------------------------------
def _get(scalars, m) -> float:
  return recipe.lookup(scalars or {}, m)


def compare_seeds(a: list[float], b: list[float], higher_is_better: bool) -> int | None:
  """+1 when every seed of arm a beats every seed of arm b by more than the tie margin (the worst of a
  against the best of b), -1 the other way round, 0 otherwise (the seed ranges overlap or differ by less
  than the margin), None when a number is missing."""
  a, b = [x for x in a if math.isfinite(x)], [x for x in b if math.isfinite(x)]
  if not a or not b:
    return None
  worst_a, best_a = (min(a), max(a)) if higher_is_better else (max(a), min(a))
  worst_b, best_b = (min(b), max(b)) if higher_is_better else (max(b), min(b))
  if recipe.better(worst_a, best_b, higher_is_better, TIE) == 1:
    return 1
  if recipe.better(best_a, worst_b, higher_is_better, TIE) == -1:
    return -1
  return 0


def learned(values: list[float], baseline: float, m) -> bool:
  """An arm has learned a metric when its seed mean beats the no-vision baseline (pretrain) by the margin."""
  values = [x for x in values if math.isfinite(x)]
  return bool(values) and recipe.better(sum(values) / len(values), baseline, m.higher_is_better, TIE) == 1


def arm_votes(arm_a: list[dict], arm_b: list[dict], baseline: dict, what: str) -> tuple[int, int, int, str]:
  """(wins, losses, counted, text) of arm a against arm b (compare_seeds) over the perception metrics that
  at least one of them learned (beats the no-vision pretrain baseline)."""
  votes, skipped = [], []
  for m in PERCEPTION_METRICS:
    va, vb = [_get(r, m) for r in arm_a], [_get(r, m) for r in arm_b]
    base = _get(baseline, m)
    if not (learned(va, base, m) or learned(vb, base, m)):
      skipped.append(m.label)
      continue
    v = compare_seeds(va, vb, m.higher_is_better)
    if v is not None:
      votes.append((m.label, v))
  wins = [l for l, v in votes if v > 0]
  losses = [l for l, v in votes if v < 0]
  n = len(votes)
  if not n:
    return 0, 0, 0, f"{what}: no perception metric was learned by either arm"
  text = (f"{what}: better on {len(wins)} ({', '.join(wins) or '-'}), worse on {len(losses)} "
          f"({', '.join(losses) or '-'}), tied or within the seed spread on {n - len(wins) - len(losses)} of "
          f"{n} learned metrics" + (f"; not learned by either arm: {', '.join(skipped)}" if skipped else ""))
  return len(wins), len(losses), n, text


def judge_arms(arm_a: list[dict], arm_b: list[dict], baseline: dict, what: str) -> tuple[str, str]:
  """Arm a against arm b: confirmed when a wins on >= 75% of the learned metrics, refuted when it loses on
  >= 75%, inconclusive otherwise or when neither arm learned anything."""
  wins, losses, n, text = arm_votes(arm_a, arm_b, baseline, what)
  if n and wins >= 0.75 * n:
    return "confirmed", text
  if n and losses >= 0.75 * n:
    return "refuted", text
  return "inconclusive", text


def judge_hypothesis(arm_a: list[dict], arm_b: list[dict], baseline: dict, what: str) -> tuple[str, str]:
  """A hypothesis that predicts arm a better than arm b: confirmed when a wins on >= 75% of the learned
  metrics, refuted when it wins on at most 25% (no improvement is evidence against it), else inconclusive
  (also when neither arm learned anything)."""
  wins, _, n, text = arm_votes(arm_a, arm_b, baseline, what)
  if not n:
    return "inconclusive", text
  if wins >= 0.75 * n:
    return "confirmed", text
  return ("refuted" if wins <= 0.25 * n else "inconclusive"), text


def relative_gain(a: float, b: float, higher_is_better: bool) -> float:
  """How much better a is than b, relative to b (> 0: a better)."""
  if not (math.isfinite(a) and math.isfinite(b)):
    return float("nan")
  return ((a - b) if higher_is_better else (b - a)) / max(abs(b), 1e-8)


def judge_grows(gain_small: dict[str, float], gain_large: dict[str, float], counted: list[str]) -> tuple[str, str]:
  """The effect grows as labels shrink: the relative gain of instruct over scratch (seed means) is larger,
  by more than 0.02, at the smallest N than at the full pool on >= 75% of the learned metrics: confirmed;
  smaller by more than 0.02 on >= 75%: refuted; else inconclusive."""
  pairs = [(l, gain_small[l], gain_large[l]) for l in counted
           if math.isfinite(gain_small.get(l, float("nan"))) and math.isfinite(gain_large.get(l, float("nan")))]
  if not pairs:
    return "inconclusive", "no learned metric has both gains"
  larger = [l for l, s, g in pairs if s - g > 0.02]
  smaller = [l for l, s, g in pairs if g - s > 0.02]
  detail = (f"gain larger at the smallest N on {len(larger)}, smaller on {len(smaller)} of {len(pairs)} learned "
            "metrics (" + "; ".join(f"{l} {100 * s:+.0f}% vs {100 * g:+.0f}%" for l, s, g in pairs) + ")")
  if len(larger) >= 0.75 * len(pairs):
    return "confirmed", detail
  if len(smaller) >= 0.75 * len(pairs):
    return "refuted", detail
  return "inconclusive", detail


def judge_generator(scalars: dict) -> tuple[str, str]:
  """Item 1's target: caption-attribute accuracy >= 0.75 and scenes FD <= half the first experiment's 647."""
  fd, acc = _get(scalars, GENERATION_METRICS[0]), _get(scalars, GENERATION_METRICS[1])
  if not (math.isfinite(fd) and math.isfinite(acc)):
    return "not measured", "a generation number is missing"
  detail = f"attribute accuracy {acc:.3f} (target >= {TARGET_ATTR}), scenes FD {fd:.0f} (target <= {TARGET_FD:.0f})"
  return ("reached" if acc >= TARGET_ATTR and fd <= TARGET_FD else "not reached"), detail


def judge_generation_kept(pretrain: dict, instruct: list[dict]) -> tuple[str, str]:
  """The first experiment's rule (recipe.judge_generation_kept) on instruct's seed means: confirmed when the
  scenes FD rises by at most 10 % and the attribute accuracy drops by at most 0.05 from pretrain; refuted
  when the FD rises by more than 25 % or the accuracy drops by more than 0.10; inconclusive in between or
  when pretrain generates at chance."""
  mean = {f"{m.task}/{m.key}": _mean([_get(r, m) for r in instruct]) for m in GENERATION_METRICS}
  return recipe.judge_generation_kept({"pretrain": pretrain, "instruct": mean})


def judge_mask(task: str, scalars: dict) -> tuple[str, str]:
  key, target = MASK_TARGETS[task]
  value = (scalars or {}).get(f"{task}/{key}", float("nan"))
  if not math.isfinite(value):
    return "not measured", f"{task} {key} missing"
  return ("learnable" if value >= target else "not shown"), f"{task} {key} {value:.3f} (target >= {target})"


def labels_saved(counts: list[int], instruct_n0: list[float], scratch_by_n: dict[int, list[float]],
                 higher_is_better: bool) -> tuple[float, str]:
  """The N at which scratch (seed mean) first reaches instruct's seed mean at the smallest N, interpolated
  linearly in log N between the measured N; (N, text). inf when scratch never reaches it, N0 when scratch is
  already as good at N0 (nothing saved)."""
  fin = lambda xs: [x for x in xs if math.isfinite(x)]
  target = fin(instruct_n0)
  if not target:
    return float("nan"), "instruct not measured"
  target = sum(target) / len(target)
  reached = lambda v: v >= target if higher_is_better else v <= target
  prev = None
  for n in counts:
    values = fin(scratch_by_n.get(n, []))
    if not values:
      return float("nan"), f"scratch not measured at N={n}"
    v = sum(values) / len(values)
    if reached(v):
      if prev is None:
        return float(n), f"scratch already reaches it at N={n}: nothing saved"
      (n1, v1) = prev
      frac = (target - v1) / (v - v1) if v != v1 else 1.0
      n_star = math.exp(math.log(n1) + frac * (math.log(n) - math.log(n1)))
      return n_star, f"scratch reaches it at N~{n_star:.0f} ({n_star / counts[0]:.1f}x the labels)"
    prev = (n, v)
  return float("inf"), f"scratch does not reach it up to N={counts[-1]} (> {counts[-1] / counts[0]:.0f}x the labels)"


# ----------------------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _mean(xs):
  xs = [x for x in xs if math.isfinite(x)]
  return sum(xs) / len(xs) if xs else float("nan")


def _cell(values: list[float]) -> str:
  values = [v for v in values if math.isfinite(v)]
  if not values:
    return "not run"
  if len(values) == 1:
    return _fmt(values[0])
  return f"{_fmt(_mean(values))} ({', '.join(_fmt(v) for v in values)})"


def arms(results: dict, b: Budget) -> dict[tuple[str, int], list[dict]]:
  """(arm, N) -> the finished runs' scalars, one per seed."""
  out: dict[tuple[str, int], list[dict]] = {}
  for run in plan(b):
    if run.name not in results or run.kind not in ("instruct", "scratch"):
      continue
    arm = ("scratch_long" if run.name.startswith("scratch_long") else
           "instruct_noedit" if run.init == "pretrain_noedit" else run.kind)
    out.setdefault((arm, run.n), []).append(results[run.name])
  return out


def build_report(b: Budget, results: dict, sweep: dict, timings: dict, budget_name: str, command: str,
                 pending: list[str], out: str) -> tuple[str, dict]:
  counts = list(b.label_counts) + [b.labelled]
  n0 = counts[0]
  by = arms(results, b)
  base = results.get("pretrain", {})
  lines = [f"# Label efficiency ({budget_name} budget)", "", f"Command: `{command}`  ",
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}; compute time "
           f"{sum(timings.values()) / 60:.1f} min (summed over the invocations that computed each part).  "]
  clock_path = os.path.join(out, "clock.json")
  clock = json.load(open(clock_path)) if os.path.exists(clock_path) else {}  # pylint: disable=consider-using-with
  if clock:
    wall, cpu = (sum(v[k] for v in clock.values()) for k in ("wall_s", "cpu_s"))
    lines.append(f"Clock (OUT/clock.json, {len(clock)} invocations): {wall / 60:.1f} min wall, {cpu / 60:.1f} min "
                 "of CPU time (this process and its render workers).  ")
  lines += [f"Budget: {dataclasses.asdict(b)}", ""]
  if pending:
    lines += [f"**Not run yet ({len(pending)} runs):** {', '.join(pending)}. The same command continues.", ""]
  lines += ["## The generator (pretrain)", "", "| guidance | scenes FD | attribute accuracy (balanced) | "
            "count accuracy |", "|---|---|---|---|"]
  for g, s in sorted(sweep.items()):
    lines.append(f"| {g:g} | {_fmt(s.get('generation/quality/fd', float('nan')))} | "
                 f"{_fmt(s.get('generation/quality/attr_balanced', float('nan')))} | "
                 f"{_fmt(s.get('generation/quality/count_acc', float('nan')))} |")
  curve = generation_curve(out, "pretrain")
  if curve:
    lines += ["", f"Along the pretraining (guidance {b.guidance:g}, {b.gen_steps} Euler steps):", "",
              "| step | scenes FD | attribute accuracy (balanced) |", "|---|---|---|"]
    lines += [f"| {step} | {_fmt(s.get('generation/quality/fd', float('nan')))} | "
              f"{_fmt(s.get('generation/quality/attr_balanced', float('nan')))} |" for step, s in curve.items()]
  claims = {}
  if "pretrain" in results:
    claims["generator"] = judge_generator(results["pretrain"])
  lines += ["", "## Every metric against N (seed mean, then each seed)", ""]
  cols = [(arm, n) for n in counts for arm in ("instruct", "scratch") if (arm, n) in by]
  cols += [k for k in (("scratch_long", n0), ("instruct_noedit", n0)) if k in by]
  header = "| metric | no vision (pretrain) | " + " | ".join(f"{a} N={n}" for a, n in cols) + " |"
  lines += [header, "|---|---|" + "---|" * len(cols)]
  for m in PERCEPTION_METRICS + GENERATION_METRICS:
    arrow = "higher is better" if m.higher_is_better else "lower is better"
    lines.append(f"| {m.label} ({arrow}) | {_fmt(_get(base, m))} | "
                 + " | ".join(_cell([_get(r, m) for r in by[c]]) for c in cols) + " |")
  # Claims.
  if ("instruct", n0) in by and ("scratch", n0) in by:
    claims["pretraining_small_n"] = judge_arms(by["instruct", n0], by["scratch", n0], base,
                                               f"instruct vs scratch at N={n0}")
  if ("instruct", n0) in by and "pretrain" in results:
    claims["generation_kept"] = judge_generation_kept(results["pretrain"], by["instruct", n0])
  if ("instruct", n0) in by and ("scratch_long", n0) in by:
    claims["not_just_steps"] = judge_arms(by["instruct", n0], by["scratch_long", n0], base,
                                          f"instruct vs equal-compute scratch at N={n0}")
  nf = counts[-1]
  if all(k in by for k in (("instruct", n0), ("scratch", n0), ("instruct", nf), ("scratch", nf))):
    gains = {}
    counted = []
    for m in PERCEPTION_METRICS:
      vals = [_get(r, m) for k in (("instruct", n0), ("scratch", n0)) for r in by[k]]
      if any(learned([v], _get(base, m), m) for v in vals):
        counted.append(m.label)
      for n in (n0, nf):
        gains.setdefault(n, {})[m.label] = relative_gain(_mean([_get(r, m) for r in by["instruct", n]]),
                                                         _mean([_get(r, m) for r in by["scratch", n]]),
                                                         m.higher_is_better)
    claims["grows"] = judge_grows(gains[n0], gains[nf], counted)
  if ("instruct_noedit", n0) in by and ("instruct", n0) in by and "pretrain_noedit" in results:
    claims["editing_copy"] = judge_hypothesis(by["instruct_noedit", n0], by["instruct", n0], base,
                                              f"instruct from pretrain without editing vs with, at N={n0}")
  for task in MASK_TARGETS:
    if f"mask_{task}" in results:
      claims[f"mask_{task}"] = judge_mask(task, results[f"mask_{task}"])
  texts = {
      "generator": f"The pretrained generator reaches attribute accuracy >= {TARGET_ATTR} and scenes FD <= "
                   f"{TARGET_FD:.0f}.",
      "pretraining_small_n": "Pretraining beats scratch at the smallest label budget (same mixture, steps, data "
                             "order).",
      "generation_kept": f"Instruction tuning at N={n0} keeps the generator's quality (pretrain vs instruct, "
                         "seed means; the first experiment's rule).",
      "not_just_steps": "Pretraining beats a scratch model given the pretrained arm's total compute.",
      "grows": "The advantage of pretraining grows as labels shrink.",
      "editing_copy": "Editing in pretraining hurts perception (the editing-copy hypothesis).",
      "mask_instance": f"Instance segmentation is learnable by this model (single task, {b.mask_res} px).",
      "mask_referring": f"Referring segmentation is learnable by this model (single task, {b.mask_res} px).",
  }
  lines += ["", "## Verdicts (rules in `judge_*`, fixed before the numbers)", ""]
  lines += [f"- **{v}**: {texts[k]} {d}." for k, (v, d) in claims.items()]
  # Labels saved.
  saved = {}
  if ("instruct", n0) in by and all(("scratch", n) in by for n in counts):
    lines += ["", f"## Labels saved (the N at which scratch reaches instruct's N={n0} value)", ""]
    for task, key in PRIMARY.items():
      m = next(x for x in PERCEPTION_METRICS if x.task == task and x.key == key)
      n_star, text = labels_saved(counts, [_get(r, m) for r in by["instruct", n0]],
                                  {n: [_get(r, m) for r in by["scratch", n]] for n in counts}, m.higher_is_better)
      saved[task] = n_star
      lines.append(f"- {task} ({m.label}): {text}.")
  masks = [r for r in ("mask_instance", "mask_referring") if r in results]
  if masks:
    lines += ["", f"## Single-task mask runs ({b.mask_res} px, patch {b.mask_patch}, {b.mask_prediction}-prediction, "
              f"{b.mask_steps} steps)", ""]
    for r in masks:
      task = r.removeprefix("mask_")
      lines.append(f"- {r}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(results[r].items())
                                          if k.split('/')[1] in ('ap', 'pq', 'giou', 'ciou')))
      key = f"{task}/{MASK_TARGETS[task][0]}"
      curve = eval_curve(out, r, f"{task}_test/")
      if len(curve) > 1:
        lines.append(f"  - {key} along the run: " + ", ".join(f"step {step} {_fmt(v.get(key, float('nan')))}"
                                                              for step, v in curve.items()))
  lines += ["", "Run times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
  data = {"budget": budget_name, "results": results, "guidance_sweep": {str(k): v for k, v in sweep.items()},
          "claims": claims, "labels_saved": saved, "pretrain_curve": {str(k): v for k, v in curve.items()},
          "timings_s": timings, "clock": clock, "pending": pending}
  return "\n".join(lines), data


def write_plots(out: str, b: Budget, results: dict, sweep: dict) -> list[str]:
  from vbanana.tasks import common  # pylint: disable=g-import-not-at-top
  counts = list(b.label_counts) + [b.labelled]
  by = arms(results, b)
  base = results.get("pretrain", {})
  metrics = PERCEPTION_METRICS + GENERATION_METRICS
  fig = common.figure(figsize=(20, 8))
  axes = fig.subplots(2, 5).reshape(-1)
  fig.suptitle("Each metric against labelled scenes per task (seed means; dots: seeds)")
  styles = {"instruct": ("C0", "o", "instruct (pretrained)"), "scratch": ("C1", "s", "scratch"),
            "scratch_long": ("C2", "^", "scratch, equal compute"),
            "instruct_noedit": ("C3", "v", "instruct, pretrained without editing")}
  for ax, m in zip(axes, metrics):
    for arm, (color, marker, label) in styles.items():
      ns = [n for n in counts if (arm, n) in by]
      if not ns:
        continue
      for n in ns:
        ys = [_get(r, m) for r in by[arm, n]]
        ax.plot([n] * len(ys), ys, marker, color=color, alpha=0.5, ms=4)
      ax.plot(ns, [_mean([_get(r, m) for r in by[arm, n]]) for n in ns], marker + "-", color=color, label=label)
    if math.isfinite(_get(base, m)):
      ax.axhline(_get(base, m), color="gray", ls="--", lw=1, label="no vision training (pretrain)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(counts, [str(n) for n in counts])
    arrow = "higher" if m.higher_is_better else "lower"
    ax.set_title(f"{m.label}\n({arrow} is better)", fontsize=10)  # two lines: long names overlapped
    ax.set_xlabel("labelled scenes per task (N)")
  axes[0].legend(fontsize=7)
  paths = [_save(fig, out, "label_efficiency.png")]
  if sweep:
    fig = common.figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2)
    gs = sorted(sweep)
    ax1.plot(gs, [sweep[g].get("generation/quality/attr_balanced", float("nan")) for g in gs], "o-")
    ax1.axhline(TARGET_ATTR, color="gray", ls="--", lw=1)
    ax1.set(title="attribute accuracy (higher is better)", xlabel="guidance scale")
    ax2.plot(gs, [sweep[g].get("generation/quality/fd", float("nan")) for g in gs], "o-")
    ax2.axhline(TARGET_FD, color="gray", ls="--", lw=1)
    ax2.set(title="scenes FD (lower is better)", xlabel="guidance scale")
    fig.suptitle("The pretrained generator against the guidance scale")
    paths.append(_save(fig, out, "generation.png"))
  return paths


def _save(fig, out: str, name: str) -> str:
  path = os.path.join(out, name)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


# ----------------------------------------------------------------------------------------------------------
# Probes (item 1): short pretraining runs, each scored at every guidance scale of the sweep.
# ----------------------------------------------------------------------------------------------------------
def run_probes(b: Budget, out: str, timings: dict, names=None) -> str:
  rows = ["| probe | size | lr | steps | seconds | " + " | ".join(
      f"attr / FD at g={g:g}" for g in b.guidance_sweep) + " |", "|---|---|---|---|---|" + "---|" * len(b.guidance_sweep)]
  for name in names or PROBES:
    pb = dataclasses.replace(b, **{"pretrain_steps": b.probe_steps, **PROBES[name]})
    run = Run(f"probe_{name}", "pretrain", steps=pb.pretrain_steps)
    workdir = os.path.join(out, "runs", run.name)
    fresh = not os.path.exists(os.path.join(workdir, "le_metrics.json"))
    t0 = time.perf_counter()
    train_run(run, pb, out)
    sweep = guidance_sweep(run, pb, out, b.guidance_sweep)
    if fresh or run.name not in timings:
      timings[run.name] = time.perf_counter() - t0
    rows.append(f"| {name} | {pb.size} | {pb.lr:g} | {pb.pretrain_steps} | {timings.get(run.name, float('nan')):.0f} | "
                + " | ".join(f"{_fmt(sweep[g].get('generation/quality/attr_balanced', float('nan')))} / "
                             f"{_fmt(sweep[g].get('generation/quality/fd', float('nan')))}" for g in b.guidance_sweep)
                + " |")
    print(f"[label_efficiency] probe {name}: {rows[-1]}", flush=True)
  return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Main: data, runs in plan order (each resumed and cached), the sweep, the report.
# ----------------------------------------------------------------------------------------------------------
class Clock:
  """Wall and CPU seconds of every invocation (this process and its finished children, the render workers),
  in OUT/clock.json: the compute of a budget that was stopped and resumed adds up, and the CPU seconds say
  what the wall seconds cost whatever else the shared machine was running."""

  def __init__(self, path: str):
    self.path, self.key = path, f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    self.t0, self.c0 = time.time(), self.cpu()
    self.log = recipe._cached(path, dict)  # pylint: disable=protected-access

  @staticmethod
  def cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system

  def save(self) -> None:
    self.log[self.key] = {"wall_s": time.time() - self.t0, "cpu_s": self.cpu() - self.c0}
    recipe._write_json(self.path, self.log)  # pylint: disable=protected-access

  def totals(self) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, invocations) over every invocation so far."""
    return (sum(v["wall_s"] for v in self.log.values()), sum(v["cpu_s"] for v in self.log.values()),
            len(self.log))


def parse_budget(name: str, overrides: list[str], error) -> Budget:
  b = BUDGETS[name]
  for item in overrides:
    key, _, value = item.partition("=")
    if key not in Budget.__dataclass_fields__:
      error(f"--override: unknown budget field '{key}' (fields: {', '.join(Budget.__dataclass_fields__)})")
    current = getattr(b, key)
    if isinstance(current, tuple):
      kind = type(current[0]) if current else int
      parsed = tuple(kind(v) for v in value.split(",") if v)
    else:
      parsed = type(current)(value)
    b = dataclasses.replace(b, **{key: parsed})
  return b


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vbanana.experiments.label_efficiency",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="output folder (data, runs, results.md, plots)")
  parser.add_argument("--budget", default="quick", choices=sorted(BUDGETS))
  parser.add_argument("--override", action="append", default=[], help="budget field=value, e.g. steps=5")
  parser.add_argument("--probes", action="store_true", help="run the pretraining probes (item 1) instead")
  parser.add_argument("--probe_names", default="", help=f"comma-separated subset of {sorted(PROBES)}")
  parser.add_argument("--max_runs", type=int, default=0,
                      help="stop after this many runs (0: all; -1: none, only the sweeps and the report, "
                           "for a budget cut short); the same command continues")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: report the finished runs (e.g. while the budget runs elsewhere)")
  parser.add_argument("--guidance_probe", default="",
                      help="evaluate this run's newest checkpoint at each guidance scale and stop (item 1)")
  parser.add_argument("--images", default="", help="also copy the plots here (e.g. docs/images)")
  args = parser.parse_args(argv)
  b = parse_budget(args.budget, args.override, parser.error)
  out = os.path.abspath(args.out)  # Orbax wants absolute checkpoint paths
  os.makedirs(out, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  timings_path = os.path.join(out, "timings.json")
  timings = recipe._cached(timings_path, dict)  # pylint: disable=protected-access
  clock = Clock(os.path.join(out, "clock.json"))

  def save_timings():
    recipe._write_json(timings_path, timings)  # pylint: disable=protected-access
    clock.save()
  build_data(datasets(b, out), timings)
  save_timings()
  command = "python -m vbanana.experiments.label_efficiency " + " ".join(sys.argv[1:] if argv is None else argv)

  if args.guidance_probe:
    text = guidance_probe(args.guidance_probe, b, out)
    with open(os.path.join(out, f"guidance_probe_{args.guidance_probe}.md"), "a") as f:
      f.write(text + "\n")
    print(text)
    return 0

  if args.probes:
    names = [n for n in args.probe_names.split(",") if n] or None
    try:
      table = run_probes(b, out, timings, names)
    except Stopped as e:
      print(f"[label_efficiency] {e}", flush=True)
      return 3
    save_timings()
    text = (f"# Pretraining probes ({args.budget} budget)\n\nCommand: `{command}`  \nBudget: "
            f"{dataclasses.asdict(b)}\n\nEach probe: pretrain (generation 0.7, editing 0.3, the pool), then the "
            f"generation evaluation ({b.eval_limit} test scenes, {b.gen_steps} Euler steps) at each guidance "
            f"scale: balanced attribute accuracy / scenes FD.\n\n{table}")
    with open(os.path.join(out, "probes.md"), "w") as f:
      f.write(text)
    print(text)
    return 0

  results, pending = {}, []
  try:
    for _ in _train_all(b, out, -1 if args.report_only else args.max_runs, timings, save_timings, results, pending):
      pass
  except Stopped as e:
    print(f"[label_efficiency] {e}", flush=True)
    return 3
  return _report(b, out, args, results, pending, timings, save_timings, command)


def _train_all(b, out, max_runs, timings, save_timings, results, pending):
  """Trains the plan's runs in order (each resumes from its checkpoint). A SIGTERM stops the experiment: the
  run in training saves and stops (the trainer's handler), and one arriving after a run's last step (during
  its evaluation, or between runs) stops it before the next run starts."""
  signalled = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: signalled.set())
  try:
    yield from _train_runs(b, out, max_runs, timings, save_timings, results, pending, signalled)
  finally:
    signal.signal(signal.SIGTERM, previous)


def _train_runs(b, out, max_runs, timings, save_timings, results, pending, signalled):
  done = 0
  for run in plan(b):
    workdir = os.path.join(out, "runs", run.name)
    fresh = not os.path.exists(os.path.join(workdir, "le_metrics.json"))  # not trained and scored yet
    if fresh and (max_runs < 0 or (max_runs and done >= max_runs)):
      pending.append(run.name)
      continue
    if signalled.is_set() and fresh:
      raise Stopped(f"stopped by a signal before {run.name}; the same command continues with it")
    t0 = time.perf_counter()
    try:
      results[run.name] = train_run(run, b, out)
    finally:
      # A run's seconds add up over the invocations that trained it (a SIGTERM-stopped part counts too;
      # the part a SIGKILL cut off after its last checkpoint is lost, and redone, so roughly counted).
      if fresh:
        timings[run.name] = timings.get(run.name, 0.0) + time.perf_counter() - t0
        save_timings()
    done += fresh
    print(f"[label_efficiency] {run.name}: {timings.get(run.name, float('nan')):.0f}s", flush=True)
    yield run.name


def _report(b, out, args, results, pending, timings, save_timings, command) -> int:
  sweep = {}
  cached_only = lambda path: args.report_only and not os.path.exists(path)  # report_only computes nothing
  if "pretrain" in results and not cached_only(
      os.path.join(out, "runs", "pretrain", f"le_guidance_{b.guidance_sweep[-1]:g}.json")):
    t0 = time.perf_counter()
    fresh = not os.path.exists(os.path.join(out, "runs", "pretrain", f"le_guidance_{b.guidance_sweep[-1]:g}.json"))
    sweep = guidance_sweep(plan(b)[0], b, out, b.guidance_sweep)
    if fresh:
      timings["guidance_sweep"] = time.perf_counter() - t0
      save_timings()
  steps_sweep = {}
  first_instruct = next(r for r in plan(b) if r.kind == "instruct")
  if first_instruct.name in results and not cached_only(
      os.path.join(out, "runs", first_instruct.name, f"le_steps_{b.sweep_steps[-1]}.json")):
    t0 = time.perf_counter()
    fresh = not os.path.exists(os.path.join(out, "runs", first_instruct.name, f"le_steps_{b.sweep_steps[-1]}.json"))
    steps_sweep = sampler_sweep(first_instruct, b, out)
    if fresh:
      timings["sampler_steps_sweep"] = time.perf_counter() - t0
      save_timings()
  text, data = build_report(b, results, sweep, timings, args.budget, command, pending, out)
  if steps_sweep:
    text += (f"\n## Sampler steps ({first_instruct.name}, {b.sweep_limit} test scenes per task, Euler)\n\n"
             + recipe.steps_table(steps_sweep))
    data["sampler_steps"] = {str(k): v for k, v in steps_sweep.items()}
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  recipe._write_json(os.path.join(out, "results.json"), data)  # pylint: disable=protected-access
  paths = write_plots(out, b, results, sweep)
  if args.images:
    os.makedirs(args.images, exist_ok=True)
    for p in paths:
      shutil.copy(p, os.path.join(args.images, "le_" + os.path.basename(p)))
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
