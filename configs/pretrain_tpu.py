r"""Pretraining at scale on a Cloud TPU pod slice (v5p-64 or v6e-64): FSDP over hosts, tensor parallel in a host.

  launch/tpu_create.sh --name=vb --zone=us-east5-a --accelerator=v5p-64 --spot
  launch/tpu_install.sh --name=vb --zone=us-east5-a
  launch/tpu_run.sh --name=vb --zone=us-east5-a --config=configs/pretrain_tpu.py --workdir=gs://BUCKET/pretrain

v5p-64 = 32 chips (64 TensorCores counted by the name; JAX sees 32 devices): mesh data=2 x fsdp=16 x tensor=1
by default (`:tensor=4` for tensor parallelism inside a host's 4 chips). The built-in scenes data at 256x256
is written once to data_dir (a gs:// path shared by all hosts). Arguments: size, res, steps, batch, data_dir,
data, fsdp, tensor, peak (per-chip bf16 peak FLOP/s for MFU: v5p 459e12, v6e 918e12).
"""

from vbanana import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, size="xl", res=256, steps=200000, batch=1024, data_dir="gs://BUCKET/scenes",
                             data=2, fsdp=-1, tensor=1, peak=459e12)
  c = config_lib.base_config()
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
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, dict(generation=0.7, editing=0.3),
                                                   num_train=1_000_000, num_validation=1024, num_test=1024)
  c.train.steps = arg.steps
  c.train.log_every = 100
  c.train.eval_every = 10000
  c.train.peak_flops_per_device = arg.peak
  c.checkpoint.every = 2000
  c.checkpoint.keep = 3
  c.checkpoint.keep_every = 20000
  c.evals = {task: dict(type=task, split="validation", limit=1024, steps=28) for task in ("generation", "editing")}
  return c
