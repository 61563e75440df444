"""Throughput of the built-in scenes dataset: rendering alone and the full TFDS ArrayRecord build.

  PYTHONPATH=. python benchmarks/scenes_build.py --num=500 --workers=1,2

Prints scenes/s per resolution for rendering one sample (`make_sample`: image, ground truth, text and the
edit target) in this process, and for `scenes_tfds.build` with 1 and 2 worker processes (PNG + zlib
encoding and ArrayRecord writing included), then the time a 10,000-scene split would take, extrapolated
linearly from `--num` scenes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import common  # noqa: F401  (puts the repository root on sys.path)

from vbanana.data import scenes, scenes_tfds


def render_rate(resolution: int, num: int) -> float:
  start = time.perf_counter()
  for i in range(num):
    scenes.make_sample("train", i, resolution)
  return num / (time.perf_counter() - start)


def build_rate(resolution: int, num: int, workers: int) -> float:
  data_dir = tempfile.mkdtemp(prefix="scenes_bench_")
  try:
    start = time.perf_counter()
    scenes_tfds.build(data_dir, resolution, num, 0, 0, num_workers=workers)
    return num / (time.perf_counter() - start)
  finally:
    shutil.rmtree(data_dir)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num", type=int, default=500, help="scenes per measurement")
  parser.add_argument("--resolutions", default="32,64")
  parser.add_argument("--workers", default="1,2", help="worker counts for the build")
  parser.add_argument("--no_render", action="store_true", help="time only the TFDS build")
  args = parser.parse_args()
  resolutions = [int(r) for r in args.resolutions.split(",")]
  workers = [int(w) for w in args.workers.split(",")]
  print(f"{os.cpu_count()} CPUs, {args.num} scenes per measurement")
  header = f"{'res':>5} {'what':<22} {'scenes/s':>9} {'10k split' + (' (extrapolated)' if args.num != 10_000 else ''):>26}"
  print(header)
  print("-" * len(header))
  for r in resolutions:
    rows = [] if args.no_render else [("render (1 process)", render_rate(r, args.num))]
    rows += [(f"TFDS build, {w} worker{'s' if w > 1 else ''}", build_rate(r, args.num, w)) for w in workers]
    for what, rate in rows:
      print(f"{r:>5} {what:<22} {rate:>9.1f} {10_000 / rate / 60:>22.1f} min")


if __name__ == "__main__":
  main()
