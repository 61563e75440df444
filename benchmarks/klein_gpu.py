"""klein-4B full fine-tuning step on one GPU: vbanana (JAX) against diffusers' transformer (PyTorch), same shapes.

    bash benchmarks/klein_gpu.sh                          # on the GPU machine: install what is missing, both sides
    python benchmarks/klein_gpu.py                        # both sides, each in its own process, one table
    python benchmarks/klein_gpu.py --side=jax             # one side
    python benchmarks/klein_gpu.py --tiny --steps=2       # a CPU dry run with a 1 + 1-block klein at 32 px

The step (issue 22, item 6): FLUX.2 [klein] base 4B at random init (3.88 B parameters, no weights needed),
512x512 edit pairs: 1,024 target + 1,024 reference + 512 text tokens per example, batch 8, float32 master
parameters and AdamW state, bf16 activations, every block rematerialised.
  * JAX: `configs/klein_instruct_gpu.py` as the trainer runs it (`vbanana.setup`: the config's train step, EMA
    included, cuDNN attention; the frozen VAE encodes the batch's target and reference images inside the step,
    about 3 % of the step's FLOPs; the prompt embeddings come precomputed in the batch, as the prompt cache
    gives them).
  * PyTorch: `diffusers.Flux2Transformer2DModel` with the same config, on the same token shapes (the latents
    given directly: no VAE), `torch.autocast(bfloat16)`, `enable_gradient_checkpointing()`, SDPA attention,
    fused AdamW, the same gradient clipping; no EMA.
MFU = the transformer's analytic train FLOPs (3x the forward, `families.get('flux2').train_flops_per_example`)
per second over the chip's bf16 peak (`vbanana.accelerators`); tokens/s counts every token of the joint sequence.
Times: the median of `--steps` steps after two warm-up steps (compiles excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

SIDES = ("jax", "torch")
# The CPU dry run: a 1 + 1-block transformer (klein's own random VAE: 16 px per token, 128 channels).
TINY = dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
            timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), prompt_len=32)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--side", choices=SIDES, default=None, help="one side (default: both, each in its own process)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--res", type=int, default=512)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--tiny", action="store_true", help="a tiny klein at 32 px (CPU dry run)")
  p.add_argument("--json", default="", help="(one side) write its row here")
  return p.parse_args(argv)


def klein_config(args):
  """The resolved config of the step: configs/klein_instruct_gpu.py at random init (or its tiny version)."""
  from vbanana import config_lib
  spec = f"{common._ROOT}/configs/klein_instruct_gpu.py:batch={args.batch},res={args.res}"
  config = config_lib.load_config(spec + (",prompt_len=32,text_bytes=64" if args.tiny else ""))
  if args.tiny:
    for k, v in TINY.items():
      config.model[k] = v
    config.mesh = dict(data=1, fsdp=1, tensor=1)
  return config


def row(side, model_cfg, batch, times, extra=""):
  from vbanana import accelerators, families
  family = families.get("flux2")
  seconds = times["median"]
  flops = family.train_flops_per_example(model_cfg) * batch
  tokens = batch * ((1 + model_cfg.max_inputs) * model_cfg.tokens_per_image + model_cfg.prompt_len)
  peak = accelerators.GPU_CHIPS["h200"].bf16_flops
  return dict(side=side, seconds=seconds, all=times["all"], tokens_per_s=tokens / seconds,
              tflops_per_s=flops / seconds / 1e12, mfu=flops / seconds / peak, model_tflop_per_step=flops / 1e12,
              note=extra)


def run_jax(args):
  import jax
  import numpy as np
  from vbanana import setup as setup_lib
  s = setup_lib.create(klein_config(args), jax.devices()[:1])
  rng = np.random.default_rng(0)
  layout = s.family.batch_layout(s.model_cfg, args.batch)
  batch = {}
  for k, (shape, dtype) in layout.items():
    if dtype == "uint8":
      batch[k] = rng.integers(0, 256, shape, np.uint8)
    elif dtype == "bool":
      batch[k] = np.ones(shape, bool)
    elif dtype == "int32":
      batch[k] = rng.integers(0, 7, shape).astype(np.int32) if k == "task" else rng.integers(
          2, 100, shape).astype(np.int32)
    else:
      batch[k] = rng.standard_normal(shape).astype(np.float32).astype(dtype)
  batch = s.shard_batch(batch)
  t0 = time.perf_counter()
  state = s.init_state()
  state, metrics = s.train_step(state, batch, s.frozen)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  times, state = common.time_loop(lambda st: s.train_step(st, batch, s.frozen)[0], state, repeats=args.steps,
                                  warmup=1)
  print(f"jax: {s.describe()}; init + compile + first step {first:.1f} s", flush=True)
  return row("vbanana (JAX)", s.model_cfg, args.batch, times, f"attention {s.attention}, VAE in the step, EMA")


def run_torch(args):
  import numpy as np
  import torch
  from diffusers import Flux2Transformer2DModel
  from vbanana import config_lib, families
  from vbanana.flux2 import transformer as tr
  config = config_lib.resolve(klein_config(args))
  model_cfg = families.get("flux2").model_config(config)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  kwargs = {k: v for k, v in model_cfg.flux2_config().to_diffusers_config().items() if not k.startswith("_")}
  torch.manual_seed(0)
  model = Flux2Transformer2DModel(**kwargs).to(device).train()
  model.enable_gradient_checkpointing()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0, fused=device == "cuda")
  h = w = args.res // model_cfg.patch_size
  n, b = h * w, args.batch
  img_ids, txt_ids = tr.position_ids((h, w), [(h, w)] * model_cfg.max_inputs, model_cfg.prompt_len)
  g = torch.Generator().manual_seed(0)
  hidden = torch.randn(b, (1 + model_cfg.max_inputs) * n, model_cfg.in_channels, generator=g).to(device)
  text = torch.randn(b, model_cfg.prompt_len, model_cfg.joint_attention_dim, generator=g).to(device)
  target = torch.randn(b, n, model_cfg.in_channels, generator=g).to(device)
  t = torch.rand(b, generator=g).to(device)
  img_ids, txt_ids = torch.from_numpy(np.asarray(img_ids)).to(device), torch.from_numpy(np.asarray(txt_ids)).to(device)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def step(_):
    with torch.autocast(device, dtype=torch.bfloat16):
      out = model(hidden_states=hidden, encoder_hidden_states=text, timestep=t, img_ids=img_ids, txt_ids=txt_ids,
                  return_dict=False)[0]
    loss = torch.mean((out[:, :n].float() - target) ** 2)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return None
  t0 = time.perf_counter()
  step(None)
  first = time.perf_counter() - t0
  times, _ = common.time_loop(step, None, repeats=args.steps, warmup=1)
  memory = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else float("nan")
  print(f"torch {torch.__version__} on {device}: first step {first:.1f} s, peak memory {memory:.1f} GB", flush=True)
  return row("diffusers (PyTorch)", model_cfg, args.batch, times,
             f"SDPA, autocast bf16, checkpointing, no VAE, no EMA; peak {memory:.1f} GB")


def main(argv=None):
  args = parse(argv)
  if args.side:
    result = run_jax(args) if args.side == "jax" else run_torch(args)
    print(json.dumps(result), flush=True)
    if args.json:
      with open(args.json, "w") as f:
        json.dump(result, f)
    return 0
  rows, out = [], os.environ.get("OUT") or "/tmp"
  os.makedirs(out, exist_ok=True)
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_gpu_enable_triton_gemm=false").strip()
  for side in SIDES:  # each side alone on the GPU (JAX preallocates)
    path = os.path.join(out, f"klein_gpu_{side}.json")
    cmd = [sys.executable, __file__, f"--side={side}", f"--batch={args.batch}", f"--res={args.res}",
           f"--steps={args.steps}", f"--json={path}"] + (["--tiny"] if args.tiny else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env)
    print(f"{side}: exit {r.returncode} after {time.perf_counter() - t0:.0f} s", flush=True)
    if r.returncode == 0 and os.path.exists(path):
      with open(path) as f:
        rows.append(json.load(f))
  print(common.machine())
  if not rows:
    return 1
  common.print_table(
      f"klein-4B full fine-tuning step, batch {args.batch}, {args.res}^2 edit pairs" + (" (tiny)" if args.tiny else ""),
      ["side", "s/step (median)", "tokens/s", "TFLOP/s (model)", "MFU (bf16 peak)", "note"],
      [[r["side"], f"{r['seconds']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['tflops_per_s']:.1f}",
        f"{100 * r['mfu']:.1f} %", r["note"]] for r in rows])
  if len(rows) == 2:
    print(f"JAX / PyTorch step time: {rows[0]['seconds'] / rows[1]['seconds']:.2f}")
  return 0 if len(rows) == 2 else 1


if __name__ == "__main__":
  sys.exit(main())
