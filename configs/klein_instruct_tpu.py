r"""Instruction-tune FLUX.2 [klein] base 4B into a generalist on one Cloud TPU host: full fine-tuning.

Check before you pay for the slice (no TPU, no weights needed: random init, shapes only):

  python -m vbanana.aot --config=configs/klein_instruct_tpu.py --topology=v5p-8
  python -m vbanana.aot --config=configs/klein_instruct_tpu.py:slice=v6e-8 --topology=v6e-8

Then on the slice (one host either way), with the scenes data built at 512 px (docs/data.md): create it,
install vbanana, download klein onto the host (16 GB; `~` is the host's home), run:

  launch/tpu_create.sh --name=klein --zone=us-east5-a --accelerator=v5p-8
  launch/tpu_install.sh --name=klein --zone=us-east5-a
  gcloud compute tpus tpu-vm ssh klein --zone=us-east5-a --worker=all --command="~/venv/bin/pip install -q \
      huggingface_hub && ~/venv/bin/hf download black-forest-labs/FLUX.2-klein-base-4B --local-dir ~/FLUX.2-klein-base-4B"
  launch/tpu_run.sh --name=klein --zone=us-east5-a \
      --config=configs/klein_instruct_tpu.py:pretrained=~/FLUX.2-klein-base-4B,data_dir=gs://BUCKET/scenes \
      --workdir=gs://BUCKET/klein_instruct
  launch/tpu_logs.sh --name=klein --zone=us-east5-a

(v6e-8: `--accelerator=v6e-8` and `:slice=v6e-8,pretrained=...`.)

v5p-8 (4 chips, FSDP 4) and v6e-8 (8 chips, FSDP 8): the 4B transformer's f32 parameters, AdamW moments,
gradients and EMA sharded over the chips (ZeRO-3), bf16 activations, every block rematerialised, splash
attention; the frozen VAE (in the step) and Qwen3 (on the host side, through the prompt cache) in bf16. 512 px
edit pairs: 1,024 target + 1,024 reference + 512 text tokens per example. The fit at these defaults, printed
by the two commands above on a 2-core CPU (docs/performance.md, "klein instruction tuning"): v5p-8 train step
27.4 GB of 102 GB per chip (73 % free), v6e-8 13.4 GB of 32 GB (58 % free); the samplers less. Then export to
diffusers' layout: `python -m vbanana.export --workdir=... --out=klein-generalist --dtype=bfloat16`.
Arguments: pretrained (the download: VAE, Qwen3, tokenizer, scheduler and the starting transformer), init_from
(another starting transformer: `python -m vbanana.flux2.convert`'s copy, or a klein run), slice (v5p-8 | v6e-8),
res, batch, steps, lora, lora_alpha, remat, ema, lr, prompt_len, text_bytes, scenes, workers, evals,
eval_every, perception_steps, image_steps, guidance, data_dir, data, fsdp, tensor, peak, time_shift.
"""

from vbanana import config_lib
from vbanana.flux2 import configs

BATCH = {"v5p-8": 32, "v6e-8": 16}   # 8 examples per v5p chip (95 GB), 2 per v6e chip (32 GB)
REMAT = {"v5p-8": "full", "v6e-8": "full"}


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, **configs.ARGS)
  return configs.klein_config(arg, BATCH, REMAT, default_slice="v5p-8")
