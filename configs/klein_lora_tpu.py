r"""LoRA-tune FLUX.2 [klein] base 4B on one TPU v6e chip (a Colab TPU): the adapters train, klein stays frozen.

Check before you start (no TPU, no weights needed):

  python -m vbanana.aot --config=configs/klein_lora_tpu.py --topology=v6e:1x1

Then, on the TPU VM (or colabs/klein_tpu.ipynb, which runs this config):

  python -m vbanana.main --config=configs/klein_lora_tpu.py:pretrained=FLUX.2-klein-base-4B,data_dir=data/scenes \
      --workdir=runs/klein_lora

One v6e chip (32 GB): the pretrained transformer frozen in bf16 (7.75 GB), LoRA adapters of rank 32 on every
linear layer of the blocks (f32, with their AdamW state and EMA: the only thing trained and checkpointed),
the VAE in the step and Qwen3 (6.2 GB, bf16) beside it through the prompt cache; 512 px edit pairs at batch
4, every block rematerialised, splash attention. Compiled for v6e:1x1: the train step 19.0 GB with Qwen3 (41 %
free), the samplers 20.3 and 21.1 GB (docs/performance.md, "klein instruction tuning"). Export merges the
adapters into klein's weights:
`python -m vbanana.export --workdir=runs/klein_lora --out=klein-lora-merged --dtype=bfloat16`.
Arguments: those of configs/klein_instruct_tpu.py (vbanana/flux2/configs.py); lora is the rank (default 32).
"""

from vbanana import config_lib
from vbanana.flux2 import configs

BATCH = {"v6e-1": 4}
REMAT = {"v6e-1": "full"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **dict(configs.ARGS, lora=32, steps=2000, data_dir="data/scenes", workers=2,
                                         evals=64, eval_every=500, scenes=20000))
  if arg.lora < 1:
    raise ValueError("Config argument 'lora': this config trains LoRA adapters; give a rank >= 1 (full "
                     "fine-tuning: configs/klein_instruct_tpu.py)")
  c = configs.klein_config(arg, BATCH, REMAT, default_slice="v6e-1")
  c.mesh = dict(data=1, fsdp=1, tensor=1)
  return c
