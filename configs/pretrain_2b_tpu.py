r"""Pod-scale pretraining: the 2B model at 256 px on a v5p-256 (128 chips, 32 hosts).

Check before you pay for the slice (no TPU needed):

  python -m vbanana.aot --config=configs/pretrain_2b_tpu.py --topology=v5p-256

Then, as configs/pretrain_tpu.py (launch/tpu_create.sh --accelerator=v5p-256 ...). The same choices as
there, at the next size: the 2B model (width 2048, depth 36, 16 heads of 128: the TPU's lane width, so the
splash kernel needs no head-dim padding) at 256 px, patch 16, clean-image prediction, bf16 activations,
FSDP over the whole slice (fsdp=-1), global batch 2048 (16 per chip).
remat: save_dots (keeps every matmul output; XL at 16 examples per chip needed it on v6e-64), NOT YET
compile-checked for v5p-256 (docs/performance.md, TPU): run the command above first.
Arguments (config_lib.POD_ARGS): slice, size, res, patch, remat, steps, batch, scenes, workers, evals, data_dir,
data, fsdp, tensor, peak.
"""

from vbanana import config_lib

REMAT = {"v5p-256": "save_dots"}


def get_config(arg=None):
  defaults = dict(config_lib.POD_ARGS, slice="v5p-256", size="2b", batch=2048, steps=300000)
  arg = config_lib.parse_arg(arg, **defaults)
  c = config_lib.pod_config(arg, dict(generation=0.7, editing=0.3), REMAT)
  c.train.eval_every = 10000
  c.checkpoint.keep_every = 20000
  c.evals = {task: dict(type=task, split="validation", limit=arg.evals, steps=28, batch_size=min(512, arg.batch))
             for task in ("generation", "editing")}
  return c
