r"""Pretraining at scale on a Cloud TPU pod slice: the XL model at 256 px, FSDP over the slice.

Check before you pay for the slice (no TPU needed: libtpu's compiler runs on any machine):

  python -m vbanana.aot --config=configs/pretrain_tpu.py --topology=v5p-64
  python -m vbanana.aot --config=configs/pretrain_tpu.py:slice=v6e-64 --topology=v6e-64

Then:

  launch/tpu_create.sh --name=vb --zone=us-east5-a --accelerator=v5p-64 --spot
  launch/tpu_install.sh --name=vb --zone=us-east5-a
  launch/tpu_run.sh --name=vb --zone=us-east5-a --config=configs/pretrain_tpu.py --workdir=gs://BUCKET/pretrain

The defaults, and why (each fit is printed by the commands above; docs/performance.md has the tables):
  * Slices: v5p-64 (32 chips, 8 hosts) and v6e-64 (64 chips, 8 hosts). The mesh is fsdp=-1 (every chip):
    parameters, gradients and AdamW state are sharded 32 or 64 ways (ZeRO-3), so a chip holds a few hundred
    MB of state and its memory goes to activations. (A data axis must be a product of the torus's own axes:
    data=2 x fsdp=32 has no layout on v6e's 8x8; `:data=2` works on v5p's 2x4x4, `:tensor=4` splits heads
    and MLP inside a host.)
  * XL (width 1152, depth 28, 16 heads) at 256 px with patch 16: 256 tokens per image, the range pixel-space
    DiTs use at 256 px (JiT); the joint sequence (instruction + input slot + target) is 568 tokens.
    16 x 16 x 3 = 768 values per patch: the model predicts the clean image (config.flow.prediction),
    which is what learns at that patch dimension (docs/results.md, v against x).
  * bf16 activations, float32 parameters and AdamW state; attention by platform: the splash kernel in
    shard_map on TPU (the written-out one when the same config runs on a CPU).
  * remat per slice, the least recompute that leaves 15 % of HBM free, picked by compiling the candidates
    (benchmarks/tpu_aot.py): v5p-64 none (70.1 GB of 102 GB per chip, 31 % free); v6e-64 save_dots (none is
    refused by the compiler at 16 examples per chip; save_dots keeps every matmul output and recomputes only
    elementwise work: 9.5 GB of 32 GB, 70 % free).
  * global batch 1024: 32 examples per v5p chip (16 per v6e chip), 18k tokens per chip per step, enough
    rows per matmul to keep the MXUs busy.
Arguments (config_lib.POD_ARGS): slice, size, res, patch, remat, steps, batch, scenes, workers, evals, data_dir,
data, fsdp, tensor, peak (0: the slice's chip).
"""

from vbanana import config_lib

REMAT = {"v5p-64": "none", "v6e-64": "save_dots"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **config_lib.POD_ARGS)
  c = config_lib.pod_config(arg, dict(generation=0.7, editing=0.3), REMAT)
  c.train.eval_every = 10000
  c.checkpoint.keep_every = 20000
  c.evals = {task: dict(type=task, split="validation", limit=arg.evals, steps=28, batch_size=min(256, arg.batch))
             for task in ("generation", "editing")}
  return c
