"""The label-efficiency experiment: its quick budget end to end (one shared run), its resumption, its data
design, and the rules that turn numbers into verdicts."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from vbanana.experiments import label_efficiency as le

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def run_experiment(out, *extra):
  return subprocess.run([sys.executable, "-m", "vbanana.experiments.label_efficiency", f"--out={out}",
                         "--budget=quick", *extra], capture_output=True, text=True, timeout=900, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  """The whole quick budget, run once for every test below: first stopped after 3 runs, then continued by
  the same command (the resumption of a cut-short budget)."""
  out = tmp_path_factory.mktemp("le_quick")
  first = run_experiment(out, "--max_runs=3")
  assert first.returncode == 0, first.stderr[-4000:]
  partial = json.loads((out / "results.json").read_text())
  partial["report"] = (out / "results.md").read_text()
  second = run_experiment(out)
  assert second.returncode == 0, second.stderr[-4000:]
  return out, partial, second


def test_quick_budget_runs_every_arm_and_reports(quick):
  out, partial, _ = quick
  b = le.BUDGETS["quick"]
  # The cut-short invocation reported what ran and named what had not.
  assert len(partial["results"]) == 3 and partial["pending"]
  assert "Not run yet" in partial["report"] and partial["pending"][0] in partial["report"]
  data = json.loads((out / "results.json").read_text())
  assert not data["pending"]
  assert set(data["results"]) == {r.name for r in le.plan(b)}
  for run in le.plan(b):
    scalars = data["results"][run.name]
    if run.kind == "mask":
      key = le.MASK_TARGETS[run.task][0]
      assert math.isfinite(scalars[f"{run.task}/{key}"]), run.name
      continue
    for m in le.PERCEPTION_METRICS + le.GENERATION_METRICS:
      assert math.isfinite(le.recipe.lookup(scalars, m)), (run.name, m.label)
  assert sorted(float(g) for g in data["guidance_sweep"]) == sorted(b.guidance_sweep)
  report = (out / "results.md").read_text()
  for claim in ("generator reaches", "beats scratch at the smallest", "total compute", "grows as labels",
                "editing-copy", "Instance segmentation is learnable", "Referring segmentation is learnable"):
    line = next(l for l in report.splitlines() if claim in l)
    assert any(f"**{v}**" in line for v in ("confirmed", "refuted", "inconclusive", "reached", "not reached",
                                             "learnable", "not shown")), line
  assert "Labels saved" in report and set(data["labels_saved"]) == set(le.PRIMARY)
  depth = le.recipe.lookup(data["results"]["scratch_n4_s0"], le.PERCEPTION_METRICS[0])
  assert f"{depth:.4g}" in report  # the table holds the measured numbers
  for name in ("label_efficiency.png", "generation.png"):
    assert (out / name).stat().st_size > 5000, name


def test_quick_budget_resumes_without_retraining(quick):
  out, _, _ = quick
  mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/le_metrics.json")}
  r = run_experiment(out)
  assert r.returncode == 0, r.stderr[-4000:]
  assert {p: p.stat().st_mtime for p in out.glob("runs/*/le_metrics.json")} == mtimes
  assert "[label_efficiency] pretrain" in r.stdout


def test_instruct_and_scratch_share_everything_but_init(tmp_path):
  b = le.BUDGETS["full"]
  runs = {r.name: r for r in le.plan(b)}
  for n, s in ((32, 0), (32, 1), (128, 1), (2048, 0)):
    a = le.make_config(runs[f"instruct_n{n}_s{s}"], b, str(tmp_path))
    c = le.make_config(runs[f"scratch_n{n}_s{s}"], b, str(tmp_path))
    assert a.data.to_dict() == c.data.to_dict() and a.train.steps == c.train.steps and a.seed == c.seed
    assert a.init_from.endswith("pretrain") and not c.init_from
  long = le.make_config(runs["scratch_long_n32_s0"], b, str(tmp_path))
  assert long.train.steps == b.pretrain_steps + b.steps
  assert long.data.to_dict() == le.make_config(runs["scratch_n32_s0"], b, str(tmp_path)).data.to_dict()
  # 2 seeds at the two smallest N, one above; the equal-compute and no-editing arms at the smallest N.
  assert {r.seed for r in runs.values() if r.n == 512} == {0}
  assert {(r.n, r.seed) for r in runs.values() if r.kind == "instruct" and r.init == "pretrain"} == {
      (32, 0), (32, 1), (128, 0), (128, 1), (512, 0), (2048, 0)}
  noedit = le.make_config(runs["pretrain_noedit"], b, str(tmp_path))
  assert {k for k, v in noedit.data.components.items() if v.weight > 0} == {"generation"}


def test_labels_are_scarce_and_the_pool_is_separate(tmp_path):
  b = le.BUDGETS["full"]
  out = str(tmp_path)
  c = le.make_config(next(r for r in le.plan(b) if r.name == "instruct_n32_s1"), b, out)
  comps = c.data.components
  pool = le.pool_data(b, out)
  assert comps.generation.source.data_dir == pool.path and comps.generation.source.seed == le.POOL_SEED
  for task in le.VISION_TASKS:
    assert comps[task].source.num_train == 32 and comps[task].source.seed not in (le.POOL_SEED,)
    assert comps[f"{task}_test"].weight == 0 and comps[f"{task}_test"].source.data_dir.endswith("labelled")
  assert math.isclose(sum(v.weight for v in comps.values()), 1.0)
  assert math.isclose(sum(comps[t].weight for t in le.VISION_TASKS), b.vision_share)
  # Replicate 0 at N reads the first N scenes of the labelled pool (same render seed); replicate 1 others.
  assert le.labelled_data(b, out, 32, 0).seed == le.labelled_data(b, out).seed
  assert le.labelled_data(b, out, 32, 1).seed not in (le.POOL_SEED, le.labelled_data(b, out).seed)
  assert len({d.path for d in le.datasets(b, out)}) == len(le.datasets(b, out))


def scalars(scale, **extra):
  out = {}
  for m in le.PERCEPTION_METRICS:
    out[f"{m.task}/{m.key}"] = 0.5 * scale if m.higher_is_better else 0.5 / scale
  out.update(extra)
  return out


def test_verdict_rules():
  base = scalars(0.25)
  # Every seed better than every seed of the other arm: a win; overlapping seeds: a tie.
  assert le.compare_seeds([0.6, 0.7], [0.4, 0.5], True) == 1
  assert le.compare_seeds([0.45, 0.7], [0.4, 0.5], True) == 0
  assert le.compare_seeds([0.3], [0.4, 0.5], True) == -1
  assert le.compare_seeds([0.2, 0.25], [0.4, 0.5], False) == 1
  assert le.judge_arms([scalars(2.0), scalars(1.8)], [scalars(1.0), scalars(1.1)], base, "x")[0] == "confirmed"
  assert le.judge_arms([scalars(1.0)], [scalars(2.0), scalars(1.8)], base, "x")[0] == "refuted"
  assert le.judge_arms([scalars(1.5), scalars(0.9)], [scalars(1.0)], base, "x")[0] == "inconclusive"
  # Metrics neither arm learned are not counted; nothing learned at all is inconclusive.
  assert le.judge_arms([base], [base], base, "x")[0] == "inconclusive"
  half = dict(scalars(0.25), **{"depth/abs_rel": 0.1})
  verdict, detail = le.judge_arms([half], [base], base, "x")
  assert verdict == "confirmed" and "of 1 learned" in detail
  # A hypothesis with no improvement is refuted.
  assert le.judge_hypothesis([scalars(1.0)], [scalars(1.0)], base, "x")[0] == "refuted"
  assert le.judge_hypothesis([scalars(2.0)], [scalars(1.0)], base, "x")[0] == "confirmed"
  labels = [m.label for m in le.PERCEPTION_METRICS]
  assert le.judge_grows({l: 0.3 for l in labels}, {l: 0.05 for l in labels}, labels)[0] == "confirmed"
  assert le.judge_grows({l: 0.0 for l in labels}, {l: 0.2 for l in labels}, labels)[0] == "refuted"
  gen = lambda fd, acc: {"generation/quality/fd": fd, "generation/quality/attr_balanced": acc}
  assert le.judge_generator(gen(200.0, 0.8))[0] == "reached"
  assert le.judge_generator(gen(400.0, 0.8))[0] == "not reached"
  assert le.judge_generator(gen(200.0, 0.7))[0] == "not reached"
  assert le.judge_mask("instance", {"instance/ap": 0.35})[0] == "learnable"
  assert le.judge_mask("referring", {"referring/giou": 0.2})[0] == "not shown"


def test_labels_saved_interpolates_in_log_n():
  counts = [32, 128, 512, 2048]
  scratch = {32: [0.1], 128: [0.2], 512: [0.4], 2048: [0.5]}
  n, _ = le.labels_saved(counts, [0.3, 0.3], scratch, True)
  assert math.isclose(n, math.exp((math.log(128) + math.log(512)) / 2), rel_tol=1e-6)
  assert le.labels_saved(counts, [0.05], scratch, True)[0] == 32  # scratch already as good: nothing saved
  assert le.labels_saved(counts, [0.9], scratch, True)[0] == math.inf
  # Lower is better (depth AbsRel).
  n, _ = le.labels_saved(counts, [0.3], {32: [0.6], 128: [0.3], 512: [0.2], 2048: [0.1]}, False)
  assert n == 128
