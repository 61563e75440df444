r"""Instruction tuning at scale on a Cloud TPU pod slice, from configs/pretrain_tpu.py's run.

Check before you pay for the slice (no TPU needed):

  python -m vbanana.aot --config=configs/instruct_tpu.py --topology=v5p-64
  python -m vbanana.aot --config=configs/instruct_tpu.py:slice=v6e-64 --topology=v6e-64

Then:

  launch/tpu_run.sh --name=vb --zone=us-east5-a \
      --config=configs/instruct_tpu.py:init_from=gs://BUCKET/pretrain --workdir=gs://BUCKET/instruct

Same model, mesh, rules and slices as configs/pretrain_tpu.py (see there for why); the mixture is generation
plus every vision task, and each task is evaluated with the 4-step sampler. At half pretraining's batch (512:
16 examples per v5p chip, 8 per v6e chip) no remat is needed on either slice (benchmarks/tpu_aot.py): v5p-64
35.4 GB of 102 GB per chip (65 % free), v6e-64 17.1 GB of 32 GB (46 % free); the samplers need under 1 GB.
Arguments: init_from, slice, size, res, patch, remat, steps, batch, scenes, workers, evals, data_dir, data, fsdp,
tensor, peak.
"""

from vbanana import config_lib

WEIGHTS = dict(generation=0.5, depth=0.1, normals=0.1, semantic=0.1, instance=0.1, referring=0.1)
REMAT = {"v5p-64": "none", "v6e-64": "none"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **dict(config_lib.POD_ARGS, init_from="", steps=50000, batch=512))
  c = config_lib.pod_config(arg, WEIGHTS, REMAT)
  c.init_from = arg.init_from
  c.train.eval_every = 5000
  c.checkpoint.keep_every = 10000
  c.evals = {task: dict(type=task, split="validation", limit=arg.evals, steps=4) for task in WEIGHTS}
  return c
