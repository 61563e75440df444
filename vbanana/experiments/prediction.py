r"""v- or x-prediction for large pixel patches: which one learns when a token is a 16x16x3 = 768-value patch?

  python -m vbanana.experiments.prediction --out=runs/prediction                   # 768: 128 px, patch 16
  python -m vbanana.experiments.prediction --out=runs/prediction --points=768,192  # and 192: 64 px, patch 8

Pixel-space diffusion with high-dimensional patches is known to fail when the network predicts the noise or
the velocity and to work when it predicts the clean image (x-prediction, loss kept in velocity space: Li & He
2025, "Back to Basics: Let Denoising Generative Models Denoise", JiT). The TPU configs use 256 px images in
patches of 16 (768 values a token) or 8 (192). This trains both arms, `config.flow.prediction` = 'v' and 'x',
with the same model, data, steps and seed, at a CPU-sized resolution with those patch dimensions and 64
tokens per image (128 px / patch 16, 64 px / patch 8), on the built-in scenes (generation 0.6, editing 0.2,
depth 0.2), through the real trainer (`train.train_and_evaluate`, one workdir per arm under OUT/runs, so a
stopped experiment resumes), and scores each on the test split with the vbanana.evaluate evaluators:
generation quality (vbanana.quality: scenes FD and caption-attribute accuracy; Euler, 20 steps, so every
sampler time is >= 0.05 and the x-prediction clamp never acts) and depth (AbsRel, delta1; 4 Euler steps),
plus the final training loss (the velocity MSE in both arms, so comparable). Writes OUT/results.md and
OUT/results.json.

Budget (defaults): the `small` model (width 128, depth 4: a token of 768 values passes through 128
channels), batch 16, 500 steps, lr 1e-3 cosine, 2048 training scenes, 64 test scenes per task. On the
project's 2-core CPU an arm trains at about 1.3 steps/s alone (about 8 minutes with its evaluation), and at
0.2-0.7 steps/s when other jobs share the cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time

from absl import app
from absl import flags

from vbanana.experiments import recipe

PREDICTIONS = ("v", "x")
# Patch dimension -> (resolution, patch size): 64 tokens per image at each point.
POINTS = {768: (128, 16), 192: (64, 8), 48: (32, 4)}
WEIGHTS = dict(generation=0.6, editing=0.2, depth=0.2)
METRICS = (
    recipe.Metric("generation", "quality/fd", "generation scenes FD", False),
    recipe.Metric("generation", "quality/attr_balanced", "generation attribute accuracy (balanced)", True),
    recipe.Metric("generation", "quality/count_acc", "generation object-count accuracy", True),
    # Against the caption's own image: another sample of the caption is another scene, so this mostly
    # measures what is left of the noise.
    recipe.Metric("generation", "psnr", "generation PSNR vs the caption's image (dB)", True),
    recipe.Metric("depth", "abs_rel", "depth AbsRel", False),
    recipe.Metric("depth", "delta1", "depth delta1", True),
    recipe.Metric("depth", "affine_abs_rel", "depth AbsRel after scale-and-shift alignment", False),
)


@dataclasses.dataclass(frozen=True)
class Budget:
  size: str = "small"
  batch: int = 16
  steps: int = 500
  lr: float = 1e-3
  num_train: int = 2048
  num_test: int = 64
  eval_limit: int = 64
  generation_steps: int = 20
  depth_steps: int = 4
  seed: int = 0


def make_config(prediction: str, patch_dim: int, budget: Budget, data_dir: str):
  """The training config of one arm: everything but `flow.prediction` is shared by the two arms."""
  from vbanana import config_lib  # pylint: disable=g-import-not-at-top
  res, patch = POINTS[patch_dim]
  c = config_lib.base_config()
  c.seed = budget.seed
  c.model.size = budget.size
  c.model.image_size = res
  c.model.patch_size = patch
  c.data.resolution = res
  c.data.global_batch = budget.batch
  c.data.seed = budget.seed
  c.data.components = config_lib.scenes_components(data_dir, res, WEIGHTS, num_train=budget.num_train,
                                                   num_validation=8, num_test=budget.num_test)
  c.flow.prediction = prediction
  c.optim.lr = budget.lr
  c.optim.warmup_steps = max(1, budget.steps // 20)
  c.optim.ema_decay = max(0.0, min(0.999, 1.0 - 10.0 / budget.steps))  # as the recipe: EMA over ~10% of the run
  c.train.steps = budget.steps
  c.train.log_every = max(1, min(50, budget.steps // 20))
  c.train.tensorboard = False
  c.checkpoint.every = max(1, budget.steps // 4)
  c.checkpoint.keep = 1
  c.evals = dict(
      generation=dict(type="generation", split="test", limit=budget.eval_limit, steps=budget.generation_steps),
      depth=dict(type="depth", split="test", limit=budget.eval_limit, steps=budget.depth_steps))
  return c


def run_arm(prediction: str, patch_dim: int, budget: Budget, out: str) -> dict:
  """Trains one arm (resuming its workdir) and returns its test metrics, final loss and timing (cached)."""
  from vbanana import train  # pylint: disable=g-import-not-at-top
  workdir = os.path.join(out, "runs", f"p{patch_dim}_{prediction}")
  path = os.path.join(workdir, "prediction_metrics.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  config = make_config(prediction, patch_dim, budget, os.path.join(out, "data"))
  t0 = time.perf_counter()
  train.train_and_evaluate(config, workdir, final_eval=True)
  seconds = time.perf_counter() - t0
  steps, losses = recipe.loss_curve(workdir)
  tail = losses[-max(1, len(losses) // 10):]  # the mean of the last tenth of the logged losses
  result = dict(scalars=recipe.final_eval_scalars(workdir, set(config.evals)), seconds=seconds,
                final_loss=sum(tail) / max(len(tail), 1), first_loss=losses[0] if losses else float("nan"),
                logged_steps=steps[-1] if steps else 0)
  recipe._write_json(path, result)  # pylint: disable=protected-access
  return result


def _fmt(x) -> str:
  return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def table(results: dict[tuple[int, str], dict]) -> str:
  points = sorted({p for p, _ in results}, reverse=True)
  cols = [(p, pred) for p in points for pred in PREDICTIONS if (p, pred) in results]
  header = ("| metric | " + " | ".join(f"{p} ({POINTS[p][0]} px, patch {POINTS[p][1]}) {pred}-pred"
                                       for p, pred in cols) + " |\n|---|" + "---|" * len(cols) + "\n")
  rows = []
  for m in METRICS:
    arrow = "higher is better" if m.higher_is_better else "lower is better"
    rows.append(f"| {m.label} ({arrow}) | "
                + " | ".join(_fmt(recipe.lookup(results[c]["scalars"], m)) for c in cols) + " |")
  rows.append("| final training loss (velocity MSE, mean of the last tenth of the logged steps) | "
              + " | ".join(_fmt(results[c]["final_loss"]) for c in cols) + " |")
  rows.append("| training + evaluation time (s, of the invocation that ran it) | " + " | ".join(f"{results[c]['seconds']:.0f}" for c in cols)
              + " |")
  return header + "\n".join(rows) + "\n"


def verdict(results: dict[tuple[int, str], dict], patch_dim: int) -> str:
  """Which arm is better on how many of the metrics (the recipe's 2% tie margin), and by how much."""
  if (patch_dim, "v") not in results or (patch_dim, "x") not in results:
    return f"patch dim {patch_dim}: one arm is missing"
  v, x = results[patch_dim, "v"]["scalars"], results[patch_dim, "x"]["scalars"]
  votes, parts = [], []
  for m in METRICS:
    a, b = recipe.lookup(x, m), recipe.lookup(v, m)
    votes.append(recipe.better(a, b, m.higher_is_better))
    parts.append(f"{m.label} {_fmt(b)} (v) vs {_fmt(a)} (x)")
  wins, losses = sum(1 for s in votes if s and s > 0), sum(1 for s in votes if s and s < 0)
  winner = "x" if wins > losses else "v" if losses > wins else "neither"
  return (f"patch dim {patch_dim}: x-prediction better on {wins}, worse on {losses} of {len(votes)} metrics "
          f"-> {winner}; " + "; ".join(parts))


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("out", None, "output folder (data, runs, results.md)", required=True, flag_values=fv)
  flags.DEFINE_list("points", ["768"], f"patch dimensions, comma-separated, of {sorted(POINTS)}", flag_values=fv)
  flags.DEFINE_multi_string("override", [], "budget field=value, e.g. --override=steps=20; repeatable",
                            flag_values=fv)


def main(argv) -> int:
  del argv
  args = flags.FLAGS
  budget = Budget()
  for item in args.override:
    key, _, value = item.partition("=")
    if key not in Budget.__dataclass_fields__:
      raise app.UsageError(f"--override: unknown budget field '{key}' (fields: "
                           f"{', '.join(Budget.__dataclass_fields__)})")
    budget = dataclasses.replace(budget, **{key: type(getattr(budget, key))(value)})
  points = [int(p) for p in args.points]
  if any(p not in POINTS for p in points):
    raise app.UsageError(f"--points: expected patch dimensions from {sorted(POINTS)}, got {args.points}")
  out = os.path.abspath(args.out)  # Orbax wants absolute checkpoint paths
  os.makedirs(out, exist_ok=True)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", os.path.join(out, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

  results = {}
  for p in points:
    for pred in PREDICTIONS:
      results[p, pred] = run_arm(pred, p, budget, out)
      print(f"[prediction] patch dim {p}, {pred}-prediction: {results[p, pred]['seconds']:.0f}s, "
            f"{results[p, pred]['scalars']}", flush=True)
  command = "python -m vbanana.experiments.prediction " + " ".join(sys.argv[1:])
  lines = ["# v- vs x-prediction at large patch dimensions", "", f"Command: `{command}`  ",
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; jax {jax.__version__}  ",
           f"Budget: {dataclasses.asdict(budget)}", "", table(results), ""]
  lines += [f"- {verdict(results, p)}" for p in points]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  recipe._write_json(os.path.join(out, "results.json"),  # pylint: disable=protected-access
                     {f"{p}_{pred}": r for (p, pred), r in results.items()})
  print(text)
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
