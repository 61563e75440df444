r"""Quickstart: a tiny model on the built-in scenes data at 32x32, all seven tasks, on a CPU in minutes.

  python -m vbanana.main --config=configs/quickstart.py --workdir=runs/quickstart

Builds the scenes dataset once into data_dir (default runs/data/scenes), trains on the full mixture
(generation, editing, depth, normals, semantic, instance, referring), evaluates every task at the end and
writes sample grids to runs/quickstart/samples/. Reaches (2-core CPU, about 3.5 min): loss 1.44 -> 0.21,
depth AbsRel 0.21, normals 33.6 degrees, semantic mIoU 0.11; the README has the whole measurement.
Arguments (`:key=value,...`): steps, batch, data_dir, res, aspect. `aspect=3:4+1:1+4:3` trains at those
aspect-ratio buckets (each at the square's token budget; the scenes are rendered with cameras of those
shapes, in a dataset of their own) instead of squares: docs/predict.md measures what it buys.
"""

from vbanana import config_lib
from vbanana.data import pipeline

WEIGHTS = pipeline.QUICKSTART_WEIGHTS  # generation 30 %, editing 15 %, each vision task 11 %


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, steps=2000, batch=16, data_dir="runs/data/scenes", res=32, aspect="")
  c = config_lib.base_config()
  c.model.size = "tiny"
  c.model.image_size = arg.res
  c.data.resolution = arg.res
  c.data.global_batch = arg.batch
  # One Grain worker process: 4.6x what the step consumes (benchmarks/data_pipeline.py --batch=16; 0: 4.4x).
  c.data.num_workers = 1
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, WEIGHTS, num_train=512,
                                                   num_validation=32, num_test=32)
  config_lib.set_aspect_ratios(c, arg.aspect)
  c.train.steps = arg.steps
  c.train.log_every = 10
  c.checkpoint.every = 500
  c.checkpoint.keep = 2
  c.evals = {task: dict(type=task, split="validation", limit=16, steps=4) for task in WEIGHTS}
  return c


def sweep():
  return [{"seed": s} for s in (0, 1, 2)]
