"""What the klein configs share (configs/klein_*.py): the family, the pretrained folder, the mixture, the mesh.

    c = vbanana.flux2.configs.klein_config(arg, batch_by_slice, remat_by_slice)

The model is FLUX.2 [klein] read from `arg.pretrained` (a diffusers folder; '' = random init, which is what
`python -m vbanana.aot` compiles), fine-tuned in full (f32 parameters, AdamW state and EMA, bf16 activations;
`ema=False` turns the averaging off, the copy stays) or with LoRA adapters (`lora` > 0: the pretrained weights
frozen, stored in bf16). The data is the built-in scenes at `res` px: generation and editing, and a small share
of the vision tasks as RGB images (the paper's recipe); each task is evaluated with its sampler (4 steps for
perception, 28 guided steps for generation and editing).
"""

from __future__ import annotations

import os

from vbanana import accelerators, config_lib

# Generation and editing, and 30 % of the rows for the five vision tasks.
WEIGHTS = dict(generation=0.45, editing=0.25, depth=0.06, normals=0.06, semantic=0.06, instance=0.06,
               referring=0.06)
PERCEPTION_STEPS, IMAGE_STEPS, IMAGE_GUIDANCE = 4, 28, 4.0
# The arguments every klein config takes (`:key=value,...`).
ARGS = dict(pretrained="", init_from="", slice="", res=512, batch=0, steps=20000, lora=0, lora_alpha=0.0,
            remat="", ema=True, lr=0.0, prompt_len=512, text_bytes=1024, scenes=1_000_000, workers=8, evals=256,
            eval_every=2000, data_dir="gs://BUCKET/scenes", data=1, fsdp=-1, tensor=1, peak=0.0, time_shift=True,
            perception_steps=PERCEPTION_STEPS, image_steps=IMAGE_STEPS, guidance=IMAGE_GUIDANCE)


def klein_config(arg, batch_by_slice: dict[str, int], remat_by_slice: dict[str, str], *,
                 default_slice: str):
  """The config of `arg` (ARGS parsed) for the slice it names, whose batch and remat policy are the
  config's fitted ones unless `batch` / `remat` are given."""
  slice_ = arg.slice or default_slice
  if slice_ not in batch_by_slice:
    raise ValueError(f"Config argument 'slice'={slice_!r}: this config is sized for {sorted(batch_by_slice)}")
  c = config_lib.base_config("flux2")
  c.model.size = "klein-4b"
  # `~` is the home of the host that runs the config (launch/tpu_run.sh passes the argument as written).
  pretrained, init_from = (os.path.expanduser(a) if a else a for a in (arg.pretrained, arg.init_from))
  c.model.pretrained = pretrained
  c.model.dtype = "bfloat16"
  c.model.remat = arg.remat or remat_by_slice[slice_]
  c.model.prompt_len = arg.prompt_len
  c.model.lora_rank = arg.lora
  c.model.lora_alpha = float(arg.lora_alpha)
  c.model.time_shift = bool(arg.time_shift)
  # LoRA leaves the pretrained weights frozen: bf16 halves them (the adapters train in f32 either way).
  c.model.param_dtype = "bfloat16" if arg.lora else "float32"
  # Full fine-tuning starts from the pretrained transformer (params only, fresh optimizer): `init_from` (a
  # copy `python -m vbanana.flux2.convert` wrote, a klein run) or else the pretrained folder's. LoRA reads
  # the pretrained transformer as its frozen base and starts its adapters at zero.
  if arg.lora and arg.init_from:
    raise ValueError("Config arguments: init_from is for full fine-tuning; LoRA's base is `pretrained`")
  c.init_from = "" if arg.lora else (init_from or pretrained)
  c.mesh = dict(data=arg.data, fsdp=arg.fsdp, tensor=arg.tensor)
  c.sharding_rules = config_lib.TPU_RULES
  c.optim.lr = arg.lr or (1e-4 if arg.lora else 1e-5)
  c.optim.warmup_steps = 200
  c.optim.weight_decay = 0.0
  c.optim.ema_decay = 0.999 if arg.ema else 0.0
  c.data.resolution = arg.res
  c.data.text_length = arg.text_bytes
  c.data.global_batch = arg.batch or batch_by_slice[slice_]
  c.data.num_workers = arg.workers
  c.data.components = config_lib.scenes_components(arg.data_dir, arg.res, WEIGHTS, num_train=arg.scenes,
                                                   num_validation=min(1024, arg.scenes),
                                                   num_test=min(1024, arg.scenes))
  c.train.steps = arg.steps
  c.train.log_every = 50
  c.train.eval_every = arg.eval_every
  chip = slice_.split("-")[0].split(":")[0]
  c.train.peak_flops_per_device = arg.peak or accelerators.CHIPS[chip].bf16_flops
  c.checkpoint.every = 1000
  c.checkpoint.keep = 3
  c.evals = {}
  for task in WEIGHTS:
    image = task in ("generation", "editing")
    c.evals[task] = dict(type=task, split="validation", limit=arg.evals,
                         steps=arg.image_steps if image else arg.perception_steps,
                         text_scale=float(arg.guidance) if image else 1.0)
  return c


__all__ = ["klein_config", "ARGS", "WEIGHTS"]
