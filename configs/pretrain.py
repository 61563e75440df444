r"""Pretraining: generation and editing only, on the built-in scenes data.

  python -m vbanana.main --config=configs/pretrain.py:size=small,res=64 --workdir=runs/pretrain

Arguments: size (a vbanana.model size name), res, steps, batch, data_dir. The checkpoint is the starting
point of configs/instruct.py (init_from=runs/pretrain).
"""

from vbanana import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size="small", res=64, steps=20000, batch=64, data_dir="runs/data/scenes")
  c = config_lib.base_config()
  c.model.size = arg.size
  c.model.image_size = arg.res
  c.data.resolution = arg.res
  c.data.global_batch = arg.batch
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, dict(generation=0.7, editing=0.3))
  c.train.steps = arg.steps
  c.train.log_every = 50
  c.train.eval_every = 5000
  c.checkpoint.every = 1000
  c.checkpoint.keep = 3
  c.checkpoint.keep_every = 5000
  c.evals = {task: dict(type=task, split="validation", limit=64, steps=20) for task in ("generation", "editing")}
  return c


def sweep():
  return [{"data.global_batch": b} for b in (32, 64)]
