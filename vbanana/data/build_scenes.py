r"""Builds the scenes dataset ahead of training: on local processes, or at pod scale on Apache Beam.

  # here, on this machine's cores (no Beam needed)
  python -m vbanana.data.build_scenes --data_dir=runs/data/scenes --resolution=64 --num_train=10000 \
      --num_validation=500 --num_test=500 --num_workers=2

  # a million scenes at 256 px on Google Cloud Dataflow (pip install ".[beam]"; see docs/data.md)
  pip wheel --no-deps . -w dist
  OPTIONS=runner=DataflowRunner,project=PROJECT,region=REGION,temp_location=gs://BUCKET/tmp
  OPTIONS=$OPTIONS,extra_package=dist/vbanana-0.1.0-py3-none-any.whl,machine_type=n2-highcpu-32,max_num_workers=32
  python -m vbanana.data.build_scenes --data_dir=gs://BUCKET/scenes --resolution=256 --num_train=1000000 \
      --num_validation=1024 --num_test=1024 --beam_pipeline_options=$OPTIONS

Beam is TFDS's own distributed build (`download_and_prepare` with Beam options): the renders are spread
over the runner's workers, each output file is written to a temporary name and moved into place when
complete, and the driver writes dataset_info.json once at the end. The result reads back exactly like the
local build (same records, same order: record i is scene i). `--beam_pipeline_options` takes Beam's
flags without their dashes, comma-separated, as `tfds build` does; `runner=DirectRunner` runs the same
pipeline on this machine.
"""
from __future__ import annotations

import os
import time

from absl import app
from absl import flags


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  d = dict(flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Where the dataset is written (local or gs://).", required=True, **d)
  flags.DEFINE_integer("resolution", None, "Image side in pixels (the config's data.resolution).", required=True,
                       **d)
  flags.DEFINE_list("shapes", [], "Non-square cameras: HxW pixel shapes the records cycle through (e.g. "
                    "28x36,36x28,32x32; the config's data.shapes); empty: resolution x resolution.", **d)
  flags.DEFINE_integer("num_train", 2048, "Training scenes.", **d)
  flags.DEFINE_integer("num_validation", 128, "Validation scenes.", **d)
  flags.DEFINE_integer("num_test", 128, "Test scenes.", **d)
  flags.DEFINE_integer("seed", 0, "Dataset seed (the config's source seed).", **d)
  flags.DEFINE_integer("supersample", 2, "RGB rays per pixel side.", **d)
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1, "Local render processes (without "
                       "--beam_pipeline_options).", **d)
  flags.DEFINE_integer("num_shards", None, "Files per split (default: TFDS's choice, files of 64 MiB to 1 GiB).",
                       **d)
  flags.DEFINE_string("beam_pipeline_options", "", "Build on Apache Beam with these pipeline options, e.g. "
                      "runner=DirectRunner or runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,"
                      "...; empty: local processes.", **d)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from vbanana.data import scenes_tfds  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  resolution = scenes_tfds.check_resolution(f.resolution, "--resolution")
  try:
    shapes = scenes_tfds.check_shapes([tuple(int(v) for v in s.lower().split("x")) for s in f.shapes],
                                      "--shapes")
  except ValueError as e:
    raise app.UsageError(f"--shapes: expected HxW pairs such as 28x36,36x28 ({e})") from None
  for name in ("num_train", "num_validation", "num_test"):
    if f[name].value < 0:
      raise app.UsageError(f"--{name} must be >= 0, got {f[name].value}")
  if f.num_workers < 1:
    raise app.UsageError(f"--num_workers must be >= 1, got {f.num_workers}")
  if f.num_shards is not None and f.num_shards < 1:
    raise app.UsageError(f"--num_shards must be >= 1, got {f.num_shards}")
  total = f.num_train + f.num_validation + f.num_test
  start = time.perf_counter()
  path = scenes_tfds.build(f.data_dir, resolution, f.num_train, f.num_validation, f.num_test,
                           seed=f.seed, supersample=f.supersample, num_workers=f.num_workers,
                           beam_options=f.beam_pipeline_options or None, num_shards=f.num_shards, shapes=shapes)
  seconds = time.perf_counter() - start
  where = ", ".join(f"{h}x{w}" for h, w in shapes) if shapes else f"{resolution}x{resolution}"
  print(f"{path}: {total} scenes at {where} in {seconds:.1f} s ({total / seconds:.1f} scenes/s; "
        "an existing build is only checked)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
