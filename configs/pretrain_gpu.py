r"""Pretraining on one host of 8 NVIDIA H100s (SXM, 80 GB): the XL model at 256 px, FSDP over the 8 GPUs.

Check before you rent the host (no GPU needed: the CUDA plugin's compiler runs on any machine):

  pip install -e ".[gpu]"
  python -m vbanana.aot --config=configs/pretrain_gpu.py --topology=h100:8
  python -m vbanana.aot --config=configs/pretrain_gpu.py:slice=h200-1 --topology=h200:1   # one H200

Then, on the host (data: docs/data.md builds the scenes at 256 px; a smaller `scenes=` builds faster):

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false \
      python -m vbanana.main --config=configs/pretrain_gpu.py:data_dir=/data/scenes --workdir=runs/pretrain_gpu

The fit, printed by those commands on a 2-core CPU with no GPU (jax 0.10.2, jax[cuda12]; docs/performance.md):
  h100:8   train step 56.8 GB of 84.9 GB per GPU (33 % headroom), sampler (28 steps) 0.9 GB; 429.6 TFLOP/step
  h200:1   train step 67.1 GB of 150.8 GB (55 % headroom), sampler 3.3 GB; 53.7 TFLOP/step

The defaults, and why:
  * The model, resolution, patch, prediction target and mixture of configs/pretrain_tpu.py (XL, 256 px, patch
    16: 256 tokens per image, a 568-token joint sequence; the network predicts the clean image), so a GPU run
    and a TPU run are the same experiment. bf16 activations, float32 parameters and AdamW state.
  * Mesh fsdp=-1: parameters, gradients and optimizer state sharded 8 ways over NVLink (ZeRO-3), the same
    rules table as the pod configs. One host: no data axis is needed.
  * Attention by platform: cuDNN's fused attention on the GPU (bf16; vbanana.model.layers.resolve_attention),
    the written-out one when the same config runs on a CPU (the tests do), so the config names no kernel.
  * Remat and batch per slice, picked by compiling the candidates on h100:8 (python benchmarks/gpu_check.py
    --candidates; GB per GPU, hardware TFLOP per step): none at 256 56.8 GB, 430; none at 384 83.8 GB (1 %
    headroom), none at 512 111 GB (does not fit); save_dots_no_batch at 512 32.1 GB, 881 (2.6 % recompute);
    full at 512 7.1 GB, 1146 (33 % recompute). No remat at 256 recomputes nothing and keeps 32 examples
    (18k tokens) per GPU, what the TPU configs give a chip; a larger batch changes the optimisation, not the
    speed per example. h200-1 is one GPU at that per-GPU batch.
  * XLA_FLAGS=--xla_gpu_enable_triton_gemm=false: cuBLAS for the matmuls, the setting every fit above was
    compiled with (vbanana.accelerators.GPU_COMPILER_OPTIONS says why). XLA_PYTHON_CLIENT_MEM_FRACTION: JAX
    takes 75 % of the GPU by default; the fit leaves 15 % free, so let it take 90 %.
Arguments (config_lib.POD_ARGS): slice (h100-8, or h200-1: one H200, the GPU check's), size, res, patch,
remat, steps, batch (0: the slice's), scenes, workers, data_dir, data, fsdp, tensor, peak (0: the chip's).
"""

from vbanana import config_lib

# Per slice (GPUs of one host): the remat policy and global batch the fit above was shown with. h200-1 is one
# H200 at the per-GPU batch of h100-8 (benchmarks/gpu_check.sh trains it for a step on a lent GPU).
REMAT = {"h100-8": "none", "h200-1": "none"}
BATCH = {"h100-8": 256, "h200-1": 32}
GPU_ARGS = dict(config_lib.POD_ARGS, slice="h100-8", batch=0, data_dir="data/scenes")
WEIGHTS = dict(generation=0.7, editing=0.3)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **GPU_ARGS)
  arg.batch = arg.batch or BATCH.get(arg.slice, 0)
  c = config_lib.pod_config(arg, WEIGHTS, REMAT)
  c.train.eval_every = 10000
  c.checkpoint.keep_every = 20000
  c.evals = {task: dict(type=task, split="validation", limit=1024, steps=28, batch_size=arg.batch)
             for task in WEIGHTS}
  return c
