r"""Instruction tuning at scale on a Cloud TPU pod slice, from configs/pretrain_tpu.py's run.

  launch/tpu_run.sh --name=vb --zone=us-east5-a \
      --config=configs/instruct_tpu.py:init_from=gs://BUCKET/pretrain --workdir=gs://BUCKET/instruct

Same model, mesh and sharding rules as pretrain_tpu (see there); generation plus the vision tasks.
Arguments: init_from, size, res, steps, batch, data_dir, data, fsdp, tensor, peak.
"""

from vbanana import config_lib

WEIGHTS = dict(generation=0.5, depth=0.1, normals=0.1, semantic=0.1, instance=0.1, referring=0.1)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, init_from="", size="xl", res=256, steps=50000, batch=512,
                             data_dir="gs://BUCKET/scenes", data=2, fsdp=-1, tensor=1, peak=459e12)
  c = config_lib.base_config()
  c.init_from = arg.init_from
  c.model.size = arg.size
  c.model.image_size = arg.res
  c.mesh = dict(data=arg.data, fsdp=arg.fsdp, tensor=arg.tensor)
  c.sharding_rules = (
      # activations: batch over data and fsdp; heads and MLP hidden over tensor
      ("act_batch", ("data", "fsdp")),
      ("act_seq", None),
      ("act_embed", None),
      ("act_heads", "tensor"),
      ("act_mlp", "tensor"),
      ("act_head_dim", None),
      # parameters: the embedding dim over fsdp (ZeRO-3 style), heads and MLP hidden over tensor
      ("embed", "fsdp"),
      ("embed_out", None),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("head_dim", None),
      ("vocab", None),
      ("layers", None),
      ("patch", None),
      ("segment", None),
  )
  c.data.resolution = arg.res
  c.data.global_batch = arg.batch
  c.data.num_workers = 8
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, WEIGHTS, num_train=1_000_000,
                                                   num_validation=1024, num_test=1024)
  c.train.steps = arg.steps
  c.train.log_every = 100
  c.train.eval_every = 5000
  c.train.peak_flops_per_device = arg.peak
  c.checkpoint.every = 2000
  c.checkpoint.keep_every = 10000
  c.evals = {task: dict(type=task, split="validation", limit=1024, steps=4) for task in WEIGHTS}
  return c
