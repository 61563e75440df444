"""Throughput of the built-in scenes dataset: rendering, the TFDS ArrayRecord build, and pod-scale estimates.

  PYTHONPATH=. python benchmarks/scenes_build.py --num=500 --workers=1,2
  PYTHONPATH=. python benchmarks/scenes_build.py --resolutions=128,256 --num=40 --workers=2 --beam

Prints scenes/s, scenes/s per core (per worker process) and scenes per CPU-second (this process and its
workers, start-up included) per resolution: for rendering one sample (`make_sample`: image, ground truth,
text and the edit target) in this process, for `scenes_tfds.build` with 1 and 2 worker processes (PNG + zlib
encoding and ArrayRecord writing included) and, with --beam, for the same build on Apache Beam's
DirectRunner (multi-processing, one worker per --workers entry); then the time a 10,000-scene split would
take, extrapolated linearly from `--num` scenes. Last, the wall time of `--pod_scenes` scenes on the CPUs of
a pod slice's hosts and of N Dataflow workers, at the scenes per CPU-second of the 1-worker (in-process)
build: rendering is independent per scene, so it scales with the cores, and CPU time is what other load on
this machine changes least. The estimate leaves out start-up, the shuffle that orders the records and any
difference between these cores and those. The load average is printed beside the numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time

import common  # noqa: F401  (puts the repository root on sys.path)
import tensorflow_datasets as tfds

from vbanana.data import scenes, scenes_tfds


def _cpu_seconds() -> float:
  """CPU time of this process and of its finished children (the build's worker processes)."""
  t = os.times()
  return t.user + t.system + t.children_user + t.children_system


def timed(fn, num: int) -> tuple[float, float]:
  """(scenes per wall-clock second, scenes per CPU-second) of fn(), which makes `num` scenes."""
  wall, cpu = time.perf_counter(), _cpu_seconds()
  fn()
  return num / (time.perf_counter() - wall), num / (_cpu_seconds() - cpu)


def render_rate(resolution: int, num: int) -> tuple[float, float]:
  return timed(lambda: [scenes.make_sample("train", i, resolution) for i in range(num)], num)


def build_rate(resolution: int, num: int, workers: int, beam: bool = False) -> tuple[float, float]:
  data_dir = tempfile.mkdtemp(prefix="scenes_bench_")
  options = (f"runner=DirectRunner,direct_running_mode=multi_processing,direct_num_workers={workers}"
             if beam else None)
  try:
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints two lines per build
      return timed(lambda: scenes_tfds.build(data_dir, resolution, num, 0, 0, num_workers=workers,
                                             beam_options=options), num)
  finally:
    shutil.rmtree(data_dir)


def load_average() -> str:
  return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=500, help="scenes per measurement")
  parser.add_argument("--resolutions", default="32,64")
  parser.add_argument("--workers", default="1,2", help="worker counts for the build")
  parser.add_argument("--no_render", action="store_true", help="time only the TFDS build")
  parser.add_argument("--beam", action="store_true", help="also time the build on Beam's DirectRunner")
  parser.add_argument("--pod_scenes", type=int, default=1_000_000, help="scenes of the pod-scale estimate")
  parser.add_argument("--pod_hosts", type=int, default=8, help="hosts of the slice (v5p-64: 8)")
  parser.add_argument("--pod_vcpus", type=int, default=208, help="vCPUs per host (v5p: 208)")
  parser.add_argument("--dataflow_workers", default="16,32,64", help="Dataflow worker counts to estimate")
  parser.add_argument("--dataflow_vcpus", type=int, default=32, help="vCPUs per Dataflow worker (n2-highcpu-32)")
  args = parser.parse_args()
  tfds.disable_progress_bar()
  resolutions = [int(r) for r in args.resolutions.split(",")]
  workers = [int(w) for w in args.workers.split(",")]
  print(f"{os.cpu_count()} CPUs, {args.num} scenes per measurement, load average {load_average()} (1/5/15 min)")
  extrapolated = " (extrapolated)" if args.num != 10_000 else ""
  header = (f"{'res':>5} {'what':<28} {'scenes/s':>9} {'per core':>9} {'per CPU-s':>10} "
            f"{'10k split' + extrapolated:>26}")
  print(header)
  print("-" * len(header))
  per_core = {}
  for r in resolutions:
    rows = [] if args.no_render else [("render (1 process)", 1, render_rate(r, args.num))]
    rows += [(f"TFDS build, {w} worker{'s' if w > 1 else ''}", w, build_rate(r, args.num, w)) for w in workers]
    if args.beam:
      rows += [(f"Beam DirectRunner, {w} worker{'s' if w > 1 else ''}", w, build_rate(r, args.num, w, beam=True))
               for w in workers]
    for what, cores, (rate, per_cpu) in rows:
      print(f"{r:>5} {what:<28} {rate:>9.2f} {rate / cores:>9.2f} {per_cpu:>10.2f} {10_000 / rate / 60:>22.1f} min",
            flush=True)
    # Per core: scenes per CPU-second of the in-process build (rendering, encoding and writing, no worker
    # start-up to amortise over a few scenes), which other load on the machine lowers less than the
    # wall-clock rate; the render alone when that build was not timed.
    per_core[r] = next((row for row in rows if row[1] == 1 and row[0].startswith("TFDS")), rows[0])[2][1]
  print(f"load average after: {load_average()}")

  pod_cores = args.pod_hosts * args.pod_vcpus
  flows = [int(n) for n in args.dataflow_workers.split(",")]
  print(f"\n{args.pod_scenes:,} scenes: wall time at the scenes per CPU-second of the 1-worker build above, "
        "every vCPU busy (no start-up, no shuffle)")
  header = (f"{'res':>5} {'scenes/CPU-s':>13} {'core-hours':>11} "
            f"{f'{args.pod_hosts} hosts x {args.pod_vcpus} vCPUs':>22}"
            + "".join(f"{f'Dataflow {n} x {args.dataflow_vcpus} vCPUs':>26}" for n in flows))
  print(header)
  print("-" * len(header))
  for r, rate in per_core.items():
    core_seconds = args.pod_scenes / rate
    cells = "".join(f"{core_seconds / (n * args.dataflow_vcpus) / 60:>22.1f} min" for n in flows)
    print(f"{r:>5} {rate:>13.2f} {core_seconds / 3600:>11.0f} {core_seconds / pod_cores / 60:>18.1f} min{cells}")


if __name__ == "__main__":
  main()
