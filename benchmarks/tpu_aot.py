"""Every pod config compiled for the slices its docstring names, by libtpu's TPU compiler on this machine.

    python benchmarks/tpu_aot.py                               # every config x slice: docs/performance.md
    python benchmarks/tpu_aot.py --only=pretrain_tpu:v6e-64    # one of them

No TPU is needed (pip install libtpu); a full-size compile takes 2-10 minutes on 2 cores, so this is a
benchmark, not a test. For each config and slice it first compiles the train step with every remat policy
that recomputes less than the one the config's REMAT table names for that slice (they must not fit with
the required headroom, else the config is not choosing the least recompute that fits: printed as a
warning), then the config itself, train step and samplers. Roofline times and MFU ceilings are estimates
from the chip's peak and bandwidths (vbanana.aot), never measurements.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import common  # noqa: E402

# (config file, the slices its docstring offers)
RUNS = (
    ("configs/pretrain_tpu.py", ("v5p-64", "v6e-64")),
    ("configs/instruct_tpu.py", ("v5p-64", "v6e-64")),
    ("configs/pretrain_2b_tpu.py", ("v5p-256",)),
)
REMAT_ORDER = ("none", "save_dots", "save_dots_no_batch", "full")  # less recompute first


def _config(path: str, slice_name: str, remat: str = ""):
  from vbanana import config_lib
  return config_lib.load_config(f"{path}:slice={slice_name}" + (f",remat={remat}" if remat else ""))


def _cells(report, r):
  ok = not r.error
  return [f"{r.total_bytes / 1e9:.1f}" if ok else "refused", f"{100 * report.headroom(r):.0f} %" if ok else "-",
          f"{r.flops / 1e12:.0f}", f"{report.roofline_seconds(r):.3f}" if ok else "-",
          f"{100 * report.mfu_estimate(r):.0f} %" if ok else "-", f"{r.compile_seconds:.0f}"]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="", help="comma-separated config:slice names, e.g. pretrain_tpu:v5p-64")
  args = parser.parse_args()
  import jax
  from absl import flags
  from vbanana import aot
  flags.FLAGS.mark_as_parsed()
  print(common.machine())
  only = set(filter(None, args.only.split(",")))
  candidates, programs, fits = [], [], []
  for path, slices in RUNS:
    for slice_name in slices:
      name = f"{os.path.basename(path)[:-3]}:{slice_name}"
      if only and name not in only:
        continue
      chosen = _config(path, slice_name).model.remat
      for remat in REMAT_ORDER[:REMAT_ORDER.index(chosen)]:
        report = aot.check(_config(path, slice_name, remat), slice_name, programs=("train",), config_name=name)
        candidates.append([name, remat, *_cells(report, report.rows[0]),
                           "fits: the config should choose it" if report.fit else "does not fit"])
        print(candidates[-1], flush=True)
        jax.clear_caches()
      report = aot.check(_config(path, slice_name), slice_name, config_name=name)
      candidates.append([name, chosen, *_cells(report, report.rows[0]), "chosen"])
      print(aot.describe(report))
      print(aot.table(report))
      fits.append(aot.verdict(report))
      print(fits[-1], flush=True)
      for r in report.rows:
        programs.append([name, r.program, report.target.name, *_cells(report, r)])
      jax.clear_caches()
  common.print_table("Remat candidates, train step: each policy with less recompute than the chosen one, then the "
                     "chosen one", ["config:slice", "remat", "GB/device", "headroom", "TFLOP/step",
                                    "roofline s/step (est.)", "MFU ceiling (est.)", "compile s", ""], candidates)
  common.print_table("Pod configs compiled for their slices (python benchmarks/tpu_aot.py)",
                     ["config:slice", "program", "topology", "GB/device", "headroom", "TFLOP/step",
                      "roofline s/step (est.)", "MFU ceiling (est.)", "compile s"], programs)
  print("\n".join(fits))
  return 0 if all(f.startswith("FIT") for f in fits) else 1


if __name__ == "__main__":
  sys.exit(main())
