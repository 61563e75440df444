"""The recipe experiment: the quick budget (shrunk further) end to end through the real trainer and evaluators,
its resumption, and the rules that turn numbers into verdicts."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from vbanana.experiments import recipe

from cli_helpers import one_device_xla_flags

pytestmark = pytest.mark.slow  # the recipe runs the trainer several times

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
SHRINK = ["--override=pretrain_steps=3", "--override=steps=3", "--override=num_train=16",
          "--override=num_test=2", "--override=eval_limit=2", "--override=sweep_limit=2",
          "--override=eval_steps=1", "--override=sweep_steps=1,2"]


def run_recipe(out, *extra):
  return subprocess.run([sys.executable, "-m", "vbanana.experiments.recipe", f"--out={out}", "--budget=quick",
                         *SHRINK, *extra], capture_output=True, text=True, timeout=400, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": one_device_xla_flags()})


def test_quick_recipe_writes_table_claims_and_plots(tmp_path):
  r = run_recipe(tmp_path)
  assert r.returncode == 0, r.stderr[-4000:]
  report = (tmp_path / "results.md").read_text()
  assert "quick budget" in report
  for claim in ("Generative pretraining beats", "keeps generation quality", "A low vision share suffices"):
    line = next(l for l in report.splitlines() if claim in l)
    assert any(f"**{v}**" in line for v in ("confirmed", "refuted", "inconclusive")), line
  data = json.loads((tmp_path / "results.json").read_text())
  assert set(data["results"]) == {r.name for r in recipe.RUNS}
  # Every perception metric of every mixture run, and generation quality of pretrain and instruct, is a
  # finite number.
  for run in ("pretrain", "instruct", "scratch", "share_2", "share_50"):
    for m in recipe.PERCEPTION_METRICS:
      assert math.isfinite(recipe.lookup(data["results"][run], m)), (run, m)
  for run in ("pretrain", "instruct"):
    for m in recipe.GENERATION_METRICS:
      assert math.isfinite(recipe.lookup(data["results"][run], m)), (run, m)
  assert sorted(data["sampler_steps"]) == ["1", "2"]
  for scalars in data["sampler_steps"].values():
    assert all(math.isfinite(recipe.lookup(scalars, m)) for m in recipe.PERCEPTION_METRICS)
  for name in ("steps.png", "share.png", "loss.png"):
    assert (tmp_path / name).stat().st_size > 5000, name
  # Numbers in the table are the measured ones.
  depth = recipe.lookup(data["results"]["scratch"], recipe.PERCEPTION_METRICS[0])
  assert f"{depth:.4g}" in report

  # A second run resumes: every run is finished, nothing is trained or evaluated again.
  mtimes = {p: p.stat().st_mtime for p in tmp_path.glob("runs/*/recipe_metrics.json")}
  r = run_recipe(tmp_path)
  assert r.returncode == 0, r.stderr[-4000:]
  assert {p: p.stat().st_mtime for p in tmp_path.glob("runs/*/recipe_metrics.json")} == mtimes
  assert json.loads((tmp_path / "results.json").read_text())["results"] == data["results"]


def perception(scale):
  """Perception scalars that are all better by `scale` (> 1) or worse (< 1) than scale 1."""
  out = {}
  for m in recipe.PERCEPTION_METRICS:
    base = 0.5
    out[f"{m.task}/{m.key}"] = base * scale if m.higher_is_better else base / scale
  return out


def test_verdicts_follow_the_numbers():
  results = {"instruct": perception(1.5), "scratch": perception(1.0)}
  assert recipe.judge_pretraining(results)[0] == "confirmed"
  results = {"instruct": perception(0.7), "scratch": perception(1.0)}
  assert recipe.judge_pretraining(results)[0] == "refuted"
  mixed = perception(1.0)
  mixed["depth/abs_rel"] = 0.1
  assert recipe.judge_pretraining({"instruct": mixed, "scratch": perception(1.0)})[0] == "inconclusive"
  assert recipe.judge_pretraining({"instruct": {}, "scratch": {}})[0] == "inconclusive"

  gen = lambda fd, acc: {"generation/quality/fd": fd, "generation/quality/attr_balanced": acc}
  verdict, detail = recipe.judge_generation_kept({"pretrain": gen(10.0, 0.8), "instruct": gen(10.5, 0.79)})
  assert verdict == "confirmed" and "+5.0%" in detail
  assert recipe.judge_generation_kept({"pretrain": gen(10.0, 0.8), "instruct": gen(14.0, 0.8)})[0] == "refuted"
  assert recipe.judge_generation_kept({"pretrain": gen(10.0, 0.8), "instruct": gen(11.8, 0.8)})[0] == \
      "inconclusive"

  assert recipe.judge_generation_kept({"pretrain": gen(10.0, 0.5), "instruct": gen(10.0, 0.5)})[0] == \
      "inconclusive"  # at chance: nothing to keep

  untrained = perception(0.5)
  assert recipe.judge_low_share({"instruct": perception(0.95), "share_50": perception(1.0),
                                 "pretrain": untrained})[0] == "confirmed"
  assert recipe.judge_low_share({"instruct": perception(0.5), "share_50": perception(1.0),
                                 "pretrain": untrained})[0] == "refuted"
  # Equal numbers prove nothing when no run learned the tasks.
  assert recipe.judge_low_share({"instruct": untrained, "share_50": untrained, "pretrain": untrained})[0] == \
      "inconclusive"


@pytest.mark.parametrize("share", [0.02, 0.1, 0.5])
def test_mixture_vision_share(share):
  weights = recipe.mixture("instruct", share)
  assert math.isclose(sum(weights.values()), 1.0)
  assert math.isclose(sum(weights[t] for t in recipe.VISION_TASKS), share)
  assert set(recipe.mixture("pretrain", share)) == {"generation", "editing"}
  # scratch trains on exactly the data of instruct; only the initialisation differs.
  a, b = (recipe.run_config(recipe.Run(n, s, share), recipe.BUDGETS["quick"], "/tmp/x")
          for n, s in (("i", "instruct"), ("s", "scratch")))
  assert a.data.to_dict() == b.data.to_dict() and a.train.steps == b.train.steps
  assert a.init_from.endswith("pretrain") and not b.init_from


def test_loss_curve_of_a_resumed_run_keeps_one_point_per_step(tmp_path):
  # A run killed at step 3 after a checkpoint at step 1 writes steps 2-3 again when it resumes.
  rows = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}, {"step": 3, "loss": 0.8},
          {"step": 2, "loss": 0.7}, {"step": 3, "loss": 0.6}, {"step": 3, "depth/absrel": 0.5},
          {"step": 4, "loss": 0.5}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert recipe.loss_curve(str(tmp_path)) == ([1, 2, 3, 4], [1.0, 0.7, 0.6, 0.5])
