r"""Instruction tuning: start from a pretrained model (params only, fresh optimizer) and train on generation
plus the vision tasks, whose targets are the RGB encodings of depth, normals and masks.

  python -m vbanana.main --config=configs/instruct.py:init_from=runs/pretrain,size=small,res=64 \
      --workdir=runs/instruct

init_from: a workdir, a checkpoint directory, or a file written by `python -m vbanana.export`.
The model size and resolution must match the pretrained run's.
"""

from vbanana import config_lib

WEIGHTS = dict(generation=0.5, depth=0.1, normals=0.1, semantic=0.1, instance=0.1, referring=0.1)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, init_from="", size="small", res=64, steps=10000, batch=64,
                             data_dir="runs/data/scenes")
  c = config_lib.base_config()
  c.init_from = arg.init_from
  c.model.size = arg.size
  c.model.image_size = arg.res
  c.data.resolution = arg.res
  c.data.global_batch = arg.batch
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, WEIGHTS)
  c.train.steps = arg.steps
  c.train.eval_every = 2500
  c.checkpoint.every = 1000
  c.checkpoint.keep_every = 5000
  c.evals = {task: dict(type=task, split="validation", limit=64, steps=4) for task in WEIGHTS}
  return c
