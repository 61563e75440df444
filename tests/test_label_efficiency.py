"""The label-efficiency experiment: the first two runs of its quick budget through the real trainer (a
cut-short budget that the same command continues), the report of a whole plan, its data design, and the
rules that turn numbers into verdicts. The whole quick budget (all 14 runs) is a command, not a test:
`python -m vbanana.experiments.label_efficiency --out=/tmp/le_quick --budget=quick`."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from vbanana.experiments import label_efficiency as le

from cli_helpers import one_device_xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


# The quick budget, smaller still for CI: a pool of 32 scenes, the generator scored at the budget's own
# guidance only (its final evaluation, reused), instruct's sampler sweep at one step count.
OVERRIDES = ("pool=32", "guidance_sweep=2", "sweep_steps=1")
BUDGET = le.parse_budget("quick", OVERRIDES, pytest.fail)


def run_experiment(out, *extra):
  return subprocess.run([sys.executable, "-m", "vbanana.experiments.label_efficiency", f"--out={out}",
                         "--budget=quick", *[f"--override={o}" for o in OVERRIDES], *extra],
                        capture_output=True, text=True, timeout=900, cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": one_device_xla_flags()})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  """The quick budget stopped after its first run (pretrain), then continued by the same command for one
  more (instruct at the smallest N, from pretrain's params), then reported with no run more (--max_runs=-1)."""
  out = tmp_path_factory.mktemp("le_quick")
  first = run_experiment(out, "--max_runs=1")
  assert first.returncode == 0, first.stderr[-4000:]
  partial = json.loads((out / "results.json").read_text())
  pretrain_marker = out / "runs" / "pretrain" / "le_metrics.json"
  mtime = pretrain_marker.stat().st_mtime
  second = run_experiment(out, "--max_runs=1")
  assert second.returncode == 0, second.stderr[-4000:]
  # A budget cut short for good: no run trained, the finished runs reported (with their sweeps).
  report_only = run_experiment(out, "--max_runs=-1")
  assert report_only.returncode == 0, report_only.stderr[-4000:]
  return out, partial, mtime, second


@pytest.mark.slow
def test_a_cut_short_budget_reports_what_ran_and_continues(two_runs):
  out, partial, mtime, second = two_runs
  b = BUDGET
  names = [r.name for r in le.plan(b)]
  assert list(partial["results"]) == ["pretrain"] and partial["pending"] == names[1:]
  # The second invocation trained the next run only; pretrain's cached result was read, not recomputed.
  data = json.loads((out / "results.json").read_text())
  assert list(data["results"]) == names[:2] and data["pending"] == names[2:]
  assert (out / "runs" / "pretrain" / "le_metrics.json").stat().st_mtime == mtime
  assert "[label_efficiency] pretrain" in second.stdout
  assert not (out / "runs" / names[2]).exists()  # --max_runs=-1 (the last invocation) trained nothing
  config = json.loads((out / "runs" / names[1] / "config.json").read_text())
  assert config["init_from"] == str(out / "runs" / "pretrain")
  for run in names[:2]:
    for m in le.PERCEPTION_METRICS + le.GENERATION_METRICS:
      assert math.isfinite(le.recipe.lookup(data["results"][run], m)), (run, m.label)
  # The generator at each guidance scale; the budget's own scale is pretrain's final evaluation.
  sweep = {float(g): v for g, v in data["guidance_sweep"].items()}
  assert sorted(sweep) == sorted(b.guidance_sweep)
  fd = le.GENERATION_METRICS[0]
  assert le.recipe.lookup(sweep[b.guidance], fd) == le.recipe.lookup(data["results"]["pretrain"], fd)
  assert data["pretrain_curve"] and sorted(data["sampler_steps"]) == sorted(str(s) for s in b.sweep_steps)
  report = (out / "results.md").read_text()
  assert "Not run yet" in report and names[2] in report
  assert f"{le.recipe.lookup(data['results'][names[1]], le.PERCEPTION_METRICS[0]):.4g}" in report
  assert "**not reached**" in report or "**reached**" in report
  for name in ("label_efficiency.png", "generation.png"):
    assert (out / name).stat().st_size > 5000, name


def fake_results(b):
  """Scalars for every run of the plan: instruct better than scratch, the gap shrinking with N."""
  results = {}
  for run in le.plan(b):
    if run.kind == "mask":
      results[run.name] = {"instance/ap": 0.4, "instance/pq": 0.3, "referring/giou": 0.2, "referring/ciou": 0.2}
      continue
    quality = 1.0 if run.kind == "pretrain" else 2.0 + (run.init != "") / math.log2(run.n + 1) + 0.01 * run.seed
    scalars = {f"{m.task}/{m.key}": (0.1 * quality if m.higher_is_better else 1.0 / quality)
               for m in le.PERCEPTION_METRICS}
    scalars.update({"generation/quality/fd": 300.0, "generation/quality/attr_balanced": 0.8})
    results[run.name] = scalars
  return results


def test_the_report_of_a_whole_plan_judges_every_claim(tmp_path):
  b = le.BUDGETS["full"]
  results = fake_results(b)
  sweep = {g: results["pretrain"] for g in b.guidance_sweep}
  text, data = le.build_report(b, results, sweep, {"pretrain": 60.0}, "full", "CMD", [], str(tmp_path))
  claims = {"generator": "reached", "pretraining_small_n": "confirmed", "generation_kept": "confirmed",
            "not_just_steps": "confirmed", "grows": "confirmed", "editing_copy": "refuted",
            "mask_instance": "learnable", "mask_referring": "not shown"}
  assert {k: v[0] for k, v in data["claims"].items()} == claims
  for verdict in claims.values():
    assert f"**{verdict}**" in text
  assert set(data["labels_saved"]) == set(le.PRIMARY)
  assert all(n > b.label_counts[0] for n in data["labels_saved"].values())
  assert f"{1 / (2.0 + 1 / math.log2(33)):.4g}" in text  # instruct N=32 seed 0's depth AbsRel, in the table
  for path in le.write_plots(str(tmp_path), b, results, sweep):
    assert os.path.getsize(path) > 5000, path


def test_every_run_of_the_full_plan_has_a_valid_config(tmp_path):
  from vbanana import config_lib, evaluate
  b = le.BUDGETS["full"]
  for run in le.plan(b):
    c = le.make_config(run, b, str(tmp_path))
    model = config_lib.model_config(c)
    specs = evaluate.parse_specs(c)
    assert c.train.steps == run.steps and specs, run.name
    if run.kind == "mask":  # 64 px, objects more than a few pixels wide; the same tokens as 32 px / patch 4
      assert (model.image_size, model.patch_size, c.flow.prediction) == (b.mask_res, b.mask_patch, "x")
      assert [s.type for s in specs] == [run.task]
    else:
      assert model.image_size == b.res and {s.type for s in specs} == {"generation", *le.VISION_TASKS}


def test_instruct_and_scratch_share_everything_but_init(tmp_path):
  b = le.BUDGETS["full"]
  runs = {r.name: r for r in le.plan(b)}
  n0 = b.label_counts[0]
  for n, s in ((n0, 0), (n0, 1), (b.label_counts[1], 1), (b.labelled, 0)):
    a = le.make_config(runs[f"instruct_n{n}_s{s}"], b, str(tmp_path))
    c = le.make_config(runs[f"scratch_n{n}_s{s}"], b, str(tmp_path))
    assert a.data.to_dict() == c.data.to_dict() and a.train.steps == c.train.steps and a.seed == c.seed
    assert a.init_from.endswith("pretrain") and not c.init_from
  long = le.make_config(runs[f"scratch_long_n{n0}_s0"], b, str(tmp_path))
  assert long.train.steps == b.pretrain_steps + b.steps
  assert long.data.to_dict() == le.make_config(runs[f"scratch_n{n0}_s0"], b, str(tmp_path)).data.to_dict()
  # 2 seeds at the two smallest N, one above; the equal-compute and no-editing arms at the smallest N.
  counts = list(b.label_counts) + [b.labelled]
  assert len(counts) >= 4 and set(b.label_counts) >= {32, 128, 512}
  assert {(r.n, r.seed) for r in runs.values() if r.kind == "instruct" and r.init == "pretrain"} == {
      (n, s) for n in counts for s in range(b.small_seeds if n in counts[:2] else 1)}
  assert b.small_seeds >= 2
  noedit = le.make_config(runs["pretrain_noedit"], b, str(tmp_path))
  assert {k for k, v in noedit.data.components.items() if v.weight > 0} == {"generation"}
  assert noedit.train.steps == b.pretrain_steps


def test_labels_are_scarce_and_the_pool_is_separate(tmp_path):
  b = le.BUDGETS["full"]
  out = str(tmp_path)
  n0 = b.label_counts[0]
  c = le.make_config(next(r for r in le.plan(b) if r.name == f"instruct_n{n0}_s1"), b, out)
  comps = c.data.components
  pool = le.pool_data(b, out)
  assert comps.generation.source.data_dir == pool.path and comps.generation.source.seed == le.POOL_SEED
  assert pool.num_train >= 5 * b.labelled  # unlabelled images are plentiful, labels scarce
  for task in le.VISION_TASKS:
    assert comps[task].source.num_train == n0 and comps[task].source.seed not in (le.POOL_SEED,)
    assert comps[f"{task}_test"].weight == 0 and comps[f"{task}_test"].source.data_dir.endswith("labelled")
  assert math.isclose(sum(v.weight for v in comps.values()), 1.0)
  assert math.isclose(sum(comps[t].weight for t in le.VISION_TASKS), b.vision_share)
  # Replicate 0 at N reads the first N scenes of the labelled pool (same render seed); replicate 1 others.
  assert le.labelled_data(b, out, n0, 0).seed == le.labelled_data(b, out).seed
  assert le.labelled_data(b, out, n0, 1).seed not in (le.POOL_SEED, le.labelled_data(b, out).seed)
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
  # Generation kept: on instruct's seed means, the first experiment's thresholds.
  assert le.judge_generation_kept(gen(300.0, 0.8), [gen(310.0, 0.79), gen(320.0, 0.77)])[0] == "confirmed"
  assert le.judge_generation_kept(gen(300.0, 0.8), [gen(400.0, 0.8), gen(390.0, 0.8)])[0] == "refuted"
  assert le.judge_generation_kept(gen(300.0, 0.54), [gen(300.0, 0.54)])[0] == "inconclusive"  # at chance
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
  assert math.isclose(n, 128)


def test_a_run_stopped_by_a_signal_caches_nothing(tmp_path, monkeypatch):
  # The trainer returns early (a checkpoint saved) on SIGTERM: such a run must resume, not count as done.
  import numpy as np
  from vbanana import train
  monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir, final_eval=True: {"step": np.int32(3)})
  b = BUDGET
  with pytest.raises(le.Stopped, match="stopped at step 3"):
    le.train_run(le.plan(b)[0], b, str(tmp_path))
  assert not (tmp_path / "runs" / "pretrain" / "le_metrics.json").exists()


def test_a_signal_after_a_run_ends_stops_before_the_next_run(tmp_path, monkeypatch):
  # A SIGTERM during a run's final evaluation (the trainer's loop is over) must not be lost: the run finishes
  # and is cached, the next one does not start, and the trainer's own handler hears it too (checkpoint.py).
  import signal
  from vbanana import checkpoint
  names, trained = [r.name for r in le.plan(BUDGET)], []

  def train_run(run, b, out):
    del b, out
    preemption = checkpoint.Preemption()  # what the trainer installs for its loop
    os.kill(os.getpid(), signal.SIGTERM)
    preemption.restore_handlers()
    assert preemption.reached(0)
    trained.append(run.name)
    return {}

  monkeypatch.setattr(le, "train_run", train_run)
  before = signal.getsignal(signal.SIGTERM)
  with pytest.raises(le.Stopped, match=f"before {names[1]}"):
    for _ in le._train_all(BUDGET, str(tmp_path), 0, {}, lambda: None, {}, []):  # pylint: disable=protected-access
      pass
  assert trained == names[:1]
  assert signal.getsignal(signal.SIGTERM) is before
