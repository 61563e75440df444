r"""The recipe end to end: does generative pretraining make a better generalist vision model?

  python -m vbanana.experiments.recipe --out=runs/recipe --budget=quick     # a few minutes on a 2-core CPU
  python -m vbanana.experiments.recipe --out=runs/recipe_full --budget=full # under 2 hours on a 2-core CPU

On the built-in scenes data (built once under OUT/data), through the real trainer (`train.train_and_evaluate`,
in this process, one workdir per run under OUT/runs, so a stopped recipe resumes where it stopped):
  pretrain     generation + editing only (also scored on perception: the no-vision-training baseline).
  instruct     from pretrain's EMA params, the mixture with vision tasks at 10% of examples, S steps.
  scratch      the same model, data stream and S steps as instruct, from random init.
  share_2, share_50   instruct with the vision share at 2% and 50% (instruct itself is the 10% point).
Every run is evaluated on the held-out test split (`eval_limit` scenes per task): depth AbsRel and delta1,
normals mean angular error and % under 11.25 deg, semantic mIoU, instance AP/PQ, referring gIoU, and the
generation-quality metric (scenes FD and caption-attribute accuracy of vbanana.quality). The instruct
model is also evaluated at 1, 2, 4, 8, 25 and 50 sampler steps.
Writes OUT/results.md (tables; three claims each marked confirmed / refuted / inconclusive by the rules in
`judge_*`, from the numbers), OUT/results.json and OUT/{steps,share,loss}.png.

Budgets. quick: the tiny model (width 64, depth 2) at 32x32, 30 + 30 steps of batch 8 on 64 training scenes,
4 test scenes per task (2 in the steps sweep): a smoke test of the whole pipeline whose numbers mean little.
full: the `small` model (width 128, depth 4, 1.8M parameters) at 32x32, batch 16, 6000 pretrain steps and
3000 steps per mixture run on 2048 training scenes, 64 test scenes per task (32 in the steps sweep). Why: on
a 2-core CPU `small` trains at about 3.3 steps/s (0.28 s/step, benchmarks/train_step.py --sizes=small), so
6000 + 4 x 3000 steps take about 90 minutes and the evaluations a few more, inside the 2-hour limit. At equal
steps `small` learned the semantic palette code that `tiny` did not (quickstart mixture, 2000 steps: mIoU
0.15 vs 0.11), and `tiny` at 4x the steps (the same compute) did not catch up on it (0.11 at 8000 steps);
64 px would cost 4x per step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

from absl import app
from absl import flags

VISION_TASKS = ("depth", "normals", "semantic", "instance", "referring")
STAGES = ("pretrain", "instruct", "scratch")
SAMPLER_STEPS = (1, 2, 4, 8, 25, 50)
SHARES = (0.02, 0.1, 0.5)


@dataclasses.dataclass(frozen=True)
class Budget:
  size: str
  res: int
  batch: int
  pretrain_steps: int
  steps: int               # per mixture run (instruct, scratch, each share)
  num_train: int
  num_test: int
  eval_limit: int          # test scenes per task
  eval_steps: int          # sampler steps of the main evaluation
  sweep_limit: int         # test scenes per task in the sampler-steps sweep
  sweep_steps: tuple[int, ...] = SAMPLER_STEPS
  lr: float = 1e-3


BUDGETS = {
    "quick": Budget(size="tiny", res=32, batch=8, pretrain_steps=30, steps=30, num_train=64, num_test=8,
                    eval_limit=4, eval_steps=4, sweep_limit=2),
    "full": Budget(size="small", res=32, batch=16, pretrain_steps=6000, steps=3000, num_train=2048,
                   num_test=64, eval_limit=64, eval_steps=4, sweep_limit=32),
}


# ----------------------------------------------------------------------------------------------------------
# Configs: one per run, all reading the same scenes dataset.
# ----------------------------------------------------------------------------------------------------------
def mixture(stage: str, vision_share: float) -> dict[str, float]:
  """Task weights (summing to 1): vision tasks split `vision_share` equally, generation:editing 7:3."""
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
  share = 0.0 if stage == "pretrain" else float(vision_share)
  if not 0.0 <= share <= 1.0:
    raise ValueError(f"vision_share must be in [0, 1], got {vision_share!r}")
  weights = dict(generation=0.7 * (1 - share), editing=0.3 * (1 - share))
  weights.update({task: share / len(VISION_TASKS) for task in VISION_TASKS})
  return {k: v for k, v in weights.items() if v > 0}


def make_config(stage: str, *, vision_share: float = 0.1, init_from: str = "", size: str = "tiny",
                res: int = 32, steps: int = 200, batch: int = 16, lr: float = 1e-3,
                data_dir: str = "runs/data/scenes", num_train: int = 512, num_test: int = 32,
                eval_limit: int = 16, eval_steps: int = 4, seed: int = 0):
  """The training config of one recipe run (configs/recipe.py exposes it on the command line)."""
  from vbanana import config_lib  # pylint: disable=g-import-not-at-top
  if stage == "instruct" and not init_from:
    raise ValueError("stage=instruct needs init_from=<the pretrain workdir>")
  weights = mixture(stage, vision_share)
  every_task = {task: 0.0 for task in ("generation", "editing") + VISION_TASKS}
  c = config_lib.base_config()
  c.seed = seed
  c.init_from = init_from if stage == "instruct" else ""
  c.model.size = size
  c.model.image_size = res
  c.data.resolution = res
  c.data.global_batch = batch
  c.data.seed = seed
  # Weight-0 components are not trained on but can be evaluated: pretrain is scored on perception too,
  # as the no-vision-training baseline.
  c.data.components = config_lib.scenes_components(data_dir, res, {**every_task, **weights},
                                                   num_train=num_train, num_validation=8, num_test=num_test)
  c.optim.lr = lr
  # Short runs: warm up over 5% of the steps and keep the EMA's time constant at 10% of the run, so the
  # evaluated EMA parameters reflect the training rather than the initialisation.
  c.optim.warmup_steps = max(1, steps // 20)
  c.optim.ema_decay = max(0.0, min(0.999, 1.0 - 10.0 / steps))
  c.train.steps = steps
  c.train.log_every = max(1, min(10, steps // 10))
  c.train.tensorboard = False
  c.checkpoint.every = max(1, steps // 2)
  c.checkpoint.keep = 1
  c.evals = {task: dict(type=task, split="test", limit=eval_limit, steps=eval_steps) for task in every_task}
  return c


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  stage: str
  vision_share: float


RUNS = (Run("pretrain", "pretrain", 0.0), Run("instruct", "instruct", 0.1), Run("scratch", "scratch", 0.1),
        Run("share_2", "instruct", 0.02), Run("share_50", "instruct", 0.5))
SHARE_RUNS = {0.02: "share_2", 0.1: "instruct", 0.5: "share_50"}


def run_config(run: Run, budget: Budget, out: str):
  return make_config(
      run.stage, vision_share=run.vision_share,
      init_from=os.path.join(out, "runs", "pretrain") if run.stage == "instruct" else "",
      size=budget.size, res=budget.res, batch=budget.batch, lr=budget.lr,
      steps=budget.pretrain_steps if run.stage == "pretrain" else budget.steps,
      data_dir=os.path.join(out, "data"), num_train=budget.num_train, num_test=budget.num_test,
      eval_limit=budget.eval_limit, eval_steps=budget.eval_steps)


# ----------------------------------------------------------------------------------------------------------
# Metrics: which scalar of the evaluators each table column is, and which way is better.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Metric:
  task: str
  key: str            # the metric's name in vbanana.evaluate's scalars, under the task
  label: str
  higher_is_better: bool


PERCEPTION_METRICS = (
    Metric("depth", "abs_rel", "depth AbsRel", False),
    Metric("depth", "delta1", "depth delta1", True),
    Metric("normals", "mean_angle", "normals mean angle (deg)", False),
    Metric("normals", "within_11.25", "normals % < 11.25 deg", True),
    Metric("semantic", "miou", "semantic mIoU", True),
    Metric("instance", "ap", "instance AP", True),
    Metric("instance", "pq", "instance PQ", True),
    Metric("referring", "giou", "referring gIoU", True),
)
GENERATION_METRICS = (
    Metric("generation", "quality/fd", "generation scenes FD", False),
    Metric("generation", "quality/attr_balanced", "generation caption-attribute accuracy (balanced)", True),
)


def lookup(scalars: dict[str, float], metric: Metric) -> float:
  """The scalar of `metric` in vbanana.evaluate's output ('<evaluator>/<metric>'); NaN when absent."""
  value = scalars.get(f"{metric.task}/{metric.key}")
  return float("nan") if value is None else float(value)


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def final_eval_scalars(workdir: str, evaluators) -> dict[str, float]:
  """The last value of each scalar of the named evaluators that the trainer wrote to metrics.jsonl."""
  out: dict[str, float] = {}
  for row in read_jsonl(os.path.join(workdir, "metrics.jsonl")):
    out.update({k: float(v) for k, v in row.items() if k.split("/")[0] in evaluators})
  return out


def loss_curve(workdir: str) -> tuple[list[int], list[float]]:
  """Training loss by step. A resumed run writes the steps after its last checkpoint again: the last wins."""
  by_step = {int(r["step"]): float(r["loss"])
             for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "loss" in r}
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]


# ----------------------------------------------------------------------------------------------------------
# The claims, judged from the numbers. A difference within `tie` (relative) is a tie: with one seed and a
# few dozen test scenes, smaller differences are noise.
# ----------------------------------------------------------------------------------------------------------
def better(a: float, b: float, higher_is_better: bool, tie: float = 0.02) -> int | None:
  """+1 when a is better than b, -1 when worse, 0 within the tie margin, None when either is missing."""
  if not (math.isfinite(a) and math.isfinite(b)):
    return None
  scale = max(abs(a), abs(b), 1e-8)
  if abs(a - b) <= tie * scale:
    return 0
  return 1 if (a > b) == higher_is_better else -1


def _verdict(votes: list[int | None], rule: str) -> tuple[str, str]:
  votes = [v for v in votes if v is not None]
  if not votes:
    return "inconclusive", "no metric could be compared"
  wins, losses = sum(v > 0 for v in votes), sum(v < 0 for v in votes)
  n = len(votes)
  counts = f"better on {wins}, worse on {losses}, tied on {n - wins - losses} of {n} metrics"
  if wins >= 0.75 * n:
    return "confirmed", counts
  if losses >= 0.75 * n:
    return "refuted", counts
  return "inconclusive", counts + f" ({rule})"


def judge_pretraining(results: dict[str, dict[str, float]]) -> tuple[str, str]:
  """Instruct vs scratch, same data and steps: confirmed when instruct is better on >= 75% of the
  perception metrics (ties count against), refuted when worse on >= 75%."""
  votes = [better(lookup(results["instruct"], m), lookup(results["scratch"], m), m.higher_is_better)
           for m in PERCEPTION_METRICS]
  return _verdict(votes, "neither reaches 75%")


CHANCE_ATTRIBUTES = 0.55  # balanced attribute accuracy: 0.5 is what an image-blind generator scores


def judge_generation_kept(results: dict[str, dict[str, float]]) -> tuple[str, str]:
  """Pretrain vs instruct on generation quality: confirmed when the FD rises by at most 10% and the
  attribute accuracy drops by at most 0.05; refuted when the FD rises by more than 25% or the accuracy drops
  by more than 0.10; inconclusive in between, when a number is missing, or when pretrain itself generates
  at chance (balanced attribute accuracy <= 0.55): there is no quality to keep."""
  fd0, fd1 = (lookup(results[r], GENERATION_METRICS[0]) for r in ("pretrain", "instruct"))
  acc0, acc1 = (lookup(results[r], GENERATION_METRICS[1]) for r in ("pretrain", "instruct"))
  if not all(math.isfinite(x) for x in (fd0, fd1, acc0, acc1)):
    return "inconclusive", "a generation-quality number is missing"
  fd_change = (fd1 - fd0) / max(abs(fd0), 1e-8)
  acc_change = acc1 - acc0
  change = (f"scenes FD {fd0:.3g} -> {fd1:.3g} ({100 * fd_change:+.1f}%), attribute accuracy "
            f"{acc0:.3f} -> {acc1:.3f} ({acc_change:+.3f})")
  if acc0 <= CHANCE_ATTRIBUTES:
    return "inconclusive", change + f"; pretrain generates at chance (attribute accuracy <= {CHANCE_ATTRIBUTES})"
  if fd_change <= 0.10 and acc_change >= -0.05:
    return "confirmed", change
  if fd_change > 0.25 or acc_change < -0.10:
    return "refuted", change
  return "inconclusive", change


def judge_low_share(results: dict[str, dict[str, float]]) -> tuple[str, str]:
  """The 10% run against the 50% run (5x the vision examples): confirmed when the 10% run is within 10%
  (relative) of it or better on >= 75% of the perception metrics, refuted when it is more than 25% worse
  on >= 75% of them. Inconclusive whatever the gap when the 50% run does not beat pretrain (no vision
  training) on >= 75% of the metrics: then neither share has learned the tasks, and equal is not enough."""
  learned = [better(lookup(results["share_50"], m), lookup(results["pretrain"], m), m.higher_is_better)
             for m in PERCEPTION_METRICS]
  learned = [v for v in learned if v is not None]
  if not learned or sum(v > 0 for v in learned) < 0.75 * len(learned):
    return "inconclusive", (f"the 50% run beats the no-vision pretrain model on only "
                            f"{sum(v > 0 for v in learned)} of {len(learned)} perception metrics: the vision "
                            "tasks were not learned, so the shares cannot be compared")
  close, far, n = 0, 0, 0
  for m in PERCEPTION_METRICS:
    a, b = lookup(results["instruct"], m), lookup(results["share_50"], m)
    if not (math.isfinite(a) and math.isfinite(b)):
      continue
    n += 1
    gap = (b - a if m.higher_is_better else a - b) / max(abs(b), 1e-8)  # > 0: the 10% run is worse
    close += gap <= 0.10
    far += gap > 0.25
  if not n:
    return "inconclusive", "no metric could be compared"
  counts = f"10% within 10% of 50% on {close}, more than 25% worse on {far} of {n} metrics"
  if close >= 0.75 * n:
    return "confirmed", counts
  if far >= 0.75 * n:
    return "refuted", counts
  return "inconclusive", counts


# ----------------------------------------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
  return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def results_table(results: dict[str, dict[str, float]]) -> str:
  names = [r.name for r in RUNS if r.name in results]
  header = "| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
  rows = []
  for m in PERCEPTION_METRICS + GENERATION_METRICS:
    arrow = "higher is better" if m.higher_is_better else "lower is better"
    rows.append(f"| {m.label} ({arrow}) | " + " | ".join(_fmt(lookup(results[n], m)) for n in names) + " |")
  return header + "\n".join(rows) + "\n"


def steps_table(sweep: dict[int, dict[str, float]]) -> str:
  steps = sorted(sweep)
  header = "| metric | " + " | ".join(f"{s} steps" for s in steps) + " |\n|---|" + "---|" * len(steps) + "\n"
  return header + "\n".join(
      f"| {m.label} | " + " | ".join(_fmt(lookup(sweep[s], m)) for s in steps) + " |"
      for m in PERCEPTION_METRICS) + "\n"


def write_report(out: str, budget_name: str, budget: Budget, results, sweep, claims, timings, command: str):
  import platform  # pylint: disable=g-import-not-at-top
  lines = [f"# Recipe results ({budget_name} budget)", "",
           f"Command: `{command}`  ", f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
           f"{platform.platform()}; compute time {sum(timings.values()) / 60:.1f} min (the runs and the "
           "sweep, summed over the invocations that computed them).  ",
           f"Budget: {dataclasses.asdict(budget)}", "",
           "Single seed, test split of the built-in scenes data; vision share = fraction of training "
           "examples that are depth / normals / semantic / instance / referring.", "",
           "## Every run on the test split", "", results_table(results),
           f"## Sampler steps (instruct model, {budget.sweep_limit} test scenes per task)", "", steps_table(sweep),
           "## Claims", ""]
  texts = {
      "pretraining": "Generative pretraining beats training from scratch on perception at equal vision steps "
                     "(instruct vs scratch).",
      "generation": "Instruction tuning keeps generation quality (pretrain vs instruct; note instruct has "
                    "also trained longer in total).",
      "low_share": "A low vision share suffices (10% vs 50% of examples at equal steps).",
  }
  for key, (verdict, detail) in claims.items():
    lines.append(f"- **{verdict}**: {texts[key]} {detail}.")
  lines += ["", "Plots: `steps.png` (metric vs sampler steps), `share.png` (metric vs vision share), "
            "`loss.png` (training loss curves).", "",
            "Run times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
  text = "\n".join(lines)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"budget": budget_name, "results": results, "sampler_steps": {str(k): v for k, v in sweep.items()},
               "claims": claims, "timings_s": timings}, f, indent=2, default=str)
  return text


def write_plots(out: str, results, sweep, losses) -> list[str]:
  from vbanana.tasks import common  # pylint: disable=g-import-not-at-top
  paths = []

  def grid(title):
    fig = common.figure(figsize=(16, 7))
    axes = fig.subplots(2, 4)
    fig.suptitle(title)
    return fig, axes.reshape(-1)

  fig, axes = grid("Perception metrics vs sampler steps (instruct model)")
  steps = sorted(sweep)
  for ax, m in zip(axes, PERCEPTION_METRICS):
    ax.plot(steps, [lookup(sweep[s], m) for s in steps], "o-")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set(title=m.label, xlabel="sampler steps")
  paths.append(_save(fig, out, "steps.png"))

  fig, axes = grid("Perception metrics vs vision share of training examples (equal steps)")
  shares = [s for s in SHARES if SHARE_RUNS[s] in results]
  for ax, m in zip(axes, PERCEPTION_METRICS):
    ax.plot([100 * s for s in shares], [lookup(results[SHARE_RUNS[s]], m) for s in shares], "o-")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([100 * s for s in shares], [f"{100 * s:g}%" for s in shares])
    ax.set(title=m.label, xlabel="vision share")
  paths.append(_save(fig, out, "share.png"))

  fig = common.figure(figsize=(8, 5))
  ax = fig.subplots()
  for name, (xs, ys) in losses.items():
    ax.plot(xs, ys, label=name)
  ax.set(title="Training loss (flow matching)", xlabel="step", ylabel="loss", yscale="log")
  ax.legend()
  paths.append(_save(fig, out, "loss.png"))
  return paths


def _save(fig, out: str, name: str) -> str:
  path = os.path.join(out, name)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  return path


# ----------------------------------------------------------------------------------------------------------
# Running: train (resuming), evaluate, and cache each result in its workdir so a rerun skips finished work.
# ----------------------------------------------------------------------------------------------------------
def _write_json(path: str, value) -> None:
  """Written whole or not at all: a recipe killed mid-write leaves the previous file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def _cached(path: str, compute):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  value = compute()
  _write_json(path, value)
  return value


def train_run(run: Run, budget: Budget, out: str) -> dict[str, float]:
  """Trains one run through the real trainer (resuming its workdir) and returns its test metrics."""
  from vbanana import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(out, "runs", run.name)

  def compute():
    import jax  # pylint: disable=g-import-not-at-top
    config = run_config(run, budget, out)
    state = train.train_and_evaluate(config, workdir, final_eval=True)
    step = int(jax.device_get(state["step"]))
    if step < config.train.steps:  # stopped by a signal after a checkpoint: cache nothing, resume next time
      raise SystemExit(f"[recipe] {run.name} stopped at step {step} of {config.train.steps}; the same command "
                       "resumes it")
    return final_eval_scalars(workdir, set(config.evals))

  return _cached(os.path.join(workdir, "recipe_metrics.json"), compute)


def evaluate_workdir(config, workdir: str) -> dict[str, float]:
  """Runs config.evals on the EMA params of the workdir's latest checkpoint (what `evaluate.follow` does
  for each checkpoint, once, without following)."""
  from vbanana import checkpoint, evaluate, setup as setup_lib  # pylint: disable=g-import-not-at-top
  setup = setup_lib.create(config)
  params = checkpoint.load_params(workdir, setup.abstract_params)
  evaluators = evaluate.build_evaluators(setup)
  scalars, _ = evaluate.run_evaluators(evaluators, params, int(config.train.steps))
  return scalars


def sweep_sampler_steps(budget: Budget, out: str) -> dict[int, dict[str, float]]:
  """The instruct model's perception metrics at each sampler step count."""
  run = next(r for r in RUNS if r.name == "instruct")
  workdir = os.path.join(out, "runs", run.name)
  config = run_config(run, budget, out)
  result = {}
  for steps in budget.sweep_steps:
    config.evals = {task: dict(type=task, split="test", limit=budget.sweep_limit, steps=steps)
                    for task in VISION_TASKS}
    path = os.path.join(workdir, f"recipe_steps_{steps}.json")
    result[steps] = _cached(path, lambda: evaluate_workdir(config, workdir))
  return result


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("out", None, "output folder (data, runs, results.md, plots)", required=True, flag_values=fv)
  flags.DEFINE_enum("budget", "quick", sorted(BUDGETS), "the experiment's size", flag_values=fv)
  flags.DEFINE_multi_string("override", [], "budget field=value, e.g. --override=steps=5 (to shrink a run "
                            "further); repeatable", flag_values=fv)


def main(argv) -> int:
  del argv
  args = flags.FLAGS
  budget = BUDGETS[args.budget]
  for item in args.override:
    key, _, value = item.partition("=")
    if key not in Budget.__dataclass_fields__:
      raise app.UsageError(f"--override: unknown budget field '{key}' (fields: "
                           f"{', '.join(Budget.__dataclass_fields__)})")
    current = getattr(budget, key)
    parsed = tuple(int(v) for v in value.split(",")) if isinstance(current, tuple) else type(current)(value)
    budget = dataclasses.replace(budget, **{key: parsed})
  os.makedirs(args.out, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  # Runs of one budget share shapes: a persistent compile cache makes every run after the first start fast.
  jax.config.update("jax_compilation_cache_dir", os.path.join(args.out, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  results, losses = {}, {}
  timings_path = os.path.join(args.out, "timings.json")
  timings = _cached(timings_path, dict)  # seconds of each part, from the invocation that computed it

  def timed(name, done_marker, compute):
    """compute(), and its seconds unless done_marker existed (then an earlier invocation measured it)."""
    fresh = not os.path.exists(done_marker)
    t0 = time.perf_counter()
    value = compute()
    if fresh or name not in timings:
      timings[name] = time.perf_counter() - t0
      _write_json(timings_path, timings)
    return value

  for run in RUNS:
    workdir = os.path.join(args.out, "runs", run.name)
    results[run.name] = timed(run.name, os.path.join(workdir, "recipe_metrics.json"),
                              lambda run=run: train_run(run, budget, args.out))
    losses[run.name] = loss_curve(workdir)
    print(f"[recipe] {run.name}: done in {timings[run.name]:.0f}s", flush=True)
  last_sweep = os.path.join(args.out, "runs", "instruct", f"recipe_steps_{budget.sweep_steps[-1]}.json")
  sweep = timed("sampler_steps_sweep", last_sweep, lambda: sweep_sampler_steps(budget, args.out))
  claims = {"pretraining": judge_pretraining(results), "generation": judge_generation_kept(results),
            "low_share": judge_low_share(results)}
  command = "python -m vbanana.experiments.recipe " + " ".join(sys.argv[1:])
  print(write_report(args.out, args.budget, budget, results, sweep, claims, timings, command))
  write_plots(args.out, results, sweep, losses)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
