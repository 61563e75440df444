r"""Instruction-tune FLUX.2 [klein] base 4B into a generalist on one NVIDIA H200: full fine-tuning.

Check before you rent the GPU (no GPU, no weights needed; the CUDA plugin: pip install -e ".[gpu]"):

  python -m vbanana.aot --config=configs/klein_instruct_gpu.py --topology=h200:1

Then, on the GPU host, with klein downloaded and the scenes data built (docs/klein.md, docs/data.md):

  XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 XLA_FLAGS=--xla_gpu_enable_triton_gemm=false python -m vbanana.main \
      --config=configs/klein_instruct_gpu.py:pretrained=FLUX.2-klein-base-4B,data_dir=data/scenes \
      --workdir=runs/klein_instruct

One H200 (141 GB): f32 parameters, AdamW moments, gradients and the EMA of the 4B transformer (77.5 GB), bf16
activations, every block rematerialised, cuDNN attention, 512 px edit pairs (1,024 target + 1,024 reference +
512 text tokens per example) at batch 8. The frozen VAE runs in the step, Qwen3 (6.2 GB in bf16) beside it
through the prompt cache. Compiled for h200:1: 88.8 GB per GPU with Qwen3 (41 % free); the two samplers
24.7 and 24.9 GB (docs/performance.md, "klein instruction tuning"). The flags are the ones the fit was compiled
with (configs/pretrain_gpu.py says why). Export:
`python -m vbanana.export --workdir=runs/klein_instruct --out=klein-generalist`.
Arguments: those of configs/klein_instruct_tpu.py (vbanana/flux2/configs.py); slice: h200-1.
"""

from vbanana import config_lib
from vbanana.flux2 import configs

BATCH = {"h200-1": 8}
REMAT = {"h200-1": "full"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **dict(configs.ARGS, data_dir="data/scenes", workers=4))
  return configs.klein_config(arg, BATCH, REMAT, default_slice="h200-1")
