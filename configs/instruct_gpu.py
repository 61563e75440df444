r"""Instruction tuning on one host of 8 NVIDIA H100s, from configs/pretrain_gpu.py's run.

Check before you rent the host (no GPU needed; pip install -e ".[gpu]"):

  python -m vbanana.aot --config=configs/instruct_gpu.py --topology=h100:8

Then, on the host:

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false \
      python -m vbanana.main --config=configs/instruct_gpu.py:init_from=runs/pretrain_gpu,data_dir=/data/scenes \
      --workdir=runs/instruct_gpu

Same model, mesh, rules, attention and flags as configs/pretrain_gpu.py (see there for why); the mixture is
generation plus every vision task, and each task is evaluated with the 4-step sampler. Global batch 128: 16
examples per GPU, half the pretraining batch, as instruct_tpu.py gives a chip. The fit, printed by the
command above on a 2-core CPU with no GPU: train step 29.3 GB of 84.9 GB per GPU (65 % headroom), the
samplers 0.7 GB; 214.8 TFLOP/step. (`:slice=h200-1`: one H200 at 16 examples.)
Arguments: init_from, and those of configs/pretrain_gpu.py.
"""

from vbanana import config_lib

WEIGHTS = dict(generation=0.5, depth=0.1, normals=0.1, semantic=0.1, instance=0.1, referring=0.1)
REMAT = {"h100-8": "none", "h200-1": "none"}
BATCH = {"h100-8": 128, "h200-1": 16}  # 16 examples per GPU, as instruct_tpu.py per chip


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, init_from="", **dict(config_lib.POD_ARGS, slice="h100-8", batch=0, steps=50000,
                                                       data_dir="data/scenes"))
  arg.batch = arg.batch or BATCH.get(arg.slice, 0)
  c = config_lib.pod_config(arg, WEIGHTS, REMAT)
  c.init_from = arg.init_from
  c.train.eval_every = 5000
  c.checkpoint.keep_every = 10000
  c.evals = {task: dict(type=task, split="validation", limit=1024, steps=4, batch_size=arg.batch)
             for task in WEIGHTS}
  return c
