"""`paper_table.md`: the paper's Table 1 rows with the paper's number, the best counterpart's and ours side by
side, the per-dataset rows behind its two averages (the paper's Tables 3 and 4), the protocol of each row
under the options the run used (listed at the top), and the benchmarks skipped for want of data.

Why averages are only filled when complete: the paper's "average of 4 datasets" is a mean over four named
sets; a mean over fewer is not that number, so it is shown as partial, naming the sets it covers.
"""

from __future__ import annotations

import numpy as np

from vbanana.bench import benchmarks as bench_lib
from vbanana.bench import options, paper

_SHOWN = ("delta1", "abs_rel", "affine_delta1", "affine_abs_rel", "mean_angle", "median_angle", "within_11.25",
          "within_30", "miou", "pixel_acc", "ciou", "giou", "pmf1", "pmf1_subsets", "pmf1_pooled", "il_mcc", "cgf1",
          "count")


def format_metrics(metrics: dict) -> str:
  return ", ".join(f"{k} {metrics[k]:.4g}" if k != "count" else f"{metrics[k]} examples"
                   for k in _SHOWN if k in metrics)


def _average(results, names, metric, prefix):
  have = [n for n in names if f"{prefix}{n}" in results and metric in results[f"{prefix}{n}"]]
  if not have:
    return "not run (no data)"
  value = float(np.mean([results[f"{prefix}{n}"][metric] for n in have]))
  if len(have) == len(names):
    return f"{value:.3f}"
  return f"{value:.3f} (partial: {', '.join(have)} of {', '.join(names)})"


def _ours(row, results, skipped, errors, settings) -> tuple[str, str]:
  """(our number, protocol) for a Table 1 row."""
  if row.key == "depth_avg4":
    return (_average(results, paper.DEPTH_AVG4, "delta1", "depth_"),
            "mean over the four sets of each set's delta1 (metric, no alignment); per-set protocols below")
  if row.key == "normals_avg4":
    return (_average(results, paper.NORMALS_AVG4, "mean_angle", "normals_"),
            "mean over the four sets of each set's mean angular error; per-set protocols below")
  if row.metric is None:
    return "not evaluated", row.note
  b = bench_lib.by_name(row.key)
  if row.key in results:
    return f"{results[row.key][row.metric]:.3f}", b.protocol_for(settings)
  return ("not run: " + (errors.get(row.key) or skipped.get(row.key, "not selected")), b.protocol_for(settings))


def _cell(value) -> str:
  return "not printed in the paper" if value is None else value


def markdown(results: dict, skipped: dict, errors: dict, settings) -> str:
  lines = ["# The paper's Table 1 beside this model", "",
           f"Paper: {paper.SOURCE}. Model: `{settings.checkpoint}`, {settings.steps} {settings.sampler} sampler "
           f"steps, text guidance {settings.text_scale:g}, "
           f"{'all examples' if not settings.limit else f'the first {settings.limit} examples'} per benchmark.",
           "", "Protocol options (where the peers' evaluation code splits; docs/benchmarks.md has the table of "
           "every choice, and the defaults are the choices comparable with the paper's counterpart column):", ""]
  lines += options.describe(settings)
  lines += ["", "| Capability | Benchmark (metric) | Vision Banana (paper) | Best counterpart (paper) | ours | "
            "protocol |", "|---|---|---|---|---|---|"]
  for row in paper.TABLE1:
    ours, protocol = _ours(row, results, skipped, errors, settings)
    note = f" ({row.note})" if row.note and row.metric is not None and row.key not in ("depth_avg4",) else ""
    lines.append(f"| {row.capability} | {row.benchmark} | {row.paper} | {row.counterpart} ({row.counterpart_name})"
                 f" | {ours} | {protocol}{note} |")
  lines += ["", "## Metric depth per dataset (the paper's Table 3; counterpart: Depth Anything 3)", "",
            "| Dataset | delta1 paper | delta1 DA3 | delta1 ours | AbsRel paper | AbsRel DA3 | AbsRel ours | "
            "affine delta1 / AbsRel ours | protocol |", "|---|---|---|---|---|---|---|---|---|"]
  for key, p in paper.DEPTH.items():
    name = f"depth_{key}"
    r = results.get(name)
    if r:
      ours = (f"{r['delta1']:.3f}", f"{r['abs_rel']:.3f}", f"{r['affine_delta1']:.3f} / {r['affine_abs_rel']:.3f}")
      protocol = bench_lib.by_name(name).protocol_for(settings)
    else:
      ours = ("not run",) * 2 + ("",)
      protocol = errors.get(name) or skipped.get(name, "")
    lines.append(f"| {p['name']} | {p['delta1']} | {_cell(p['da3_delta1'])} | {ours[0]} | {p['abs_rel']} | "
                 f"{_cell(p['da3_abs_rel'])} | {ours[1]} | {ours[2]} | {protocol} |")
  lines += ["", "## Surface normals per dataset (the paper's Table 4; counterpart: Lotus-2-Normal)", "",
            "| Dataset | mean paper | mean Lotus-2 | mean ours | median paper | median Lotus-2 | median ours | "
            "% < 11.25 / 30 deg ours | protocol |", "|---|---|---|---|---|---|---|---|---|"]
  for key, p in paper.NORMALS.items():
    name = f"normals_{key}"
    r = results.get(name)
    if r:
      ours = (f"{r['mean_angle']:.3f}", f"{r['median_angle']:.3f}", f"{r['within_11.25']:.1f} / {r['within_30']:.1f}")
      protocol = bench_lib.by_name(name).protocol_for(settings)
    else:
      ours = ("not run",) * 2 + ("",)
      protocol = errors.get(name) or skipped.get(name, "")
    lines.append(f"| {p['name']} | {p['mean']} | {_cell(p['lotus2_mean'])} | {ours[0]} | {p['median']} | "
                 f"{_cell(p['lotus2_median'])} | {ours[1]} | {ours[2]} | {protocol} |")
  lines += ["", "## Every benchmark run", ""]
  lines += [f"- {n}: {format_metrics(m)}" for n, m in results.items()] or ["- none"]
  if skipped or errors:
    lines += ["", "## Skipped", ""]
    lines += [f"- {n}: {line}" for n, line in {**skipped, **errors}.items()]
  return "\n".join(lines) + "\n"
