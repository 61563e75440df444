"""The GPU check: what benchmarks/gpu_check.sh runs on a lent GPU, and the same programs compiled without one.

    bash benchmarks/gpu_check.sh                   # on the GPU machine: install, then this script, one table
    python benchmarks/gpu_check.py --deviceless    # on any CPU (pip install -e ".[gpu]"): every program the check
                                                   # runs, compiled by XLA:GPU for one H200 (h200:1)
    python benchmarks/gpu_check.py --candidates    # configs/pretrain_gpu.py's remat x batch candidates, h100:8

On the GPU (no flag) it runs, each in its own process (so each starts with the whole GPU):
  1. benchmarks/gpu_mfu.py: the measured bf16 matmul rate and a DiT-B-size train step, cuDNN attention on and off;
  2. a real train step of configs/pretrain_gpu.py at one device (`:slice=h200-1`: the trainer's init and step,
     the config's model, optimizer, flow, mesh and rules, a batch of random data in the trainer's layout), then
     its EMA parameters exported with vbanana.export;
  3. `python -m vbanana.predict` on one image with that export (depth, the 4-step sampler);
and prints one table. `--deviceless` compiles exactly those jitted programs (gpu_mfu's matmul and random
inputs, each train state's init and train step, predict's sampler) for h200:1 and prints their memory, so
that the only unknown left for the GPU is speed. Times are wall seconds of each step, compiles included.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

ROOT = common._ROOT  # pylint: disable=protected-access
CONFIG = "configs/pretrain_gpu.py:slice=h200-1"  # one H200 at the per-GPU batch of the 8-GPU config
TRAIN_STEPS = 3        # timed after the first (compiling) step
PREDICT_TASK = "depth"  # the 4-step perception sampler, guidance 1, one image
TARGET = "h200:1"


# ----------------------------------------------------------------------------------------------------------
# On the GPU.
# ----------------------------------------------------------------------------------------------------------
def train_check(out_dir: str, spec: str = CONFIG) -> dict:
  """The GPU config's train state and step on one device; writes out_dir/model.safetensors and train.json."""
  import jax
  import train_step as bench
  from vbanana import config_lib, export, setup as setup_lib, trees
  config = config_lib.load_config(os.path.join(ROOT, spec))
  t0 = time.perf_counter()
  run = setup_lib.create(config, jax.devices()[:1])
  state = common.block(run.init_state())
  init_s = time.perf_counter() - t0
  model_cfg, batch_size = run.model_cfg, run.global_batch
  step = lambda state, batch: run.train_step(state, batch, run.frozen)
  batch = run.shard_batch(bench.random_batch(model_cfg, batch_size, model_cfg.text_len))
  t0 = time.perf_counter()
  state, metrics = common.block(step(state, batch))
  first_s = time.perf_counter() - t0
  losses = [float(metrics["loss"])]
  times = []
  for _ in range(TRAIN_STEPS):
    t0 = time.perf_counter()
    state, metrics = common.block(step(state, batch))
    times.append(time.perf_counter() - t0)
    losses.append(float(metrics["loss"]))
  flops = run.family.train_flops_per_example(model_cfg) * batch_size
  stats = jax.devices()[0].memory_stats() or {}
  path = os.path.join(out_dir, "model.safetensors")
  t0 = time.perf_counter()
  export.write(path, trees.flatten(jax.device_get(state["ema_params"])), model_cfg.to_dict(),
               prediction=run.flow_cfg.prediction, family=run.family.name)
  result = dict(config=spec, batch=batch_size, init_s=init_s, first_step_s=first_s, step_s=min(times),
                flops=flops, losses=losses, peak_gb=stats.get("peak_bytes_in_use", 0) / 1e9,
                export_s=time.perf_counter() - t0, export=path)
  with open(os.path.join(out_dir, "train.json"), "w") as f:
    json.dump(result, f, indent=1)
  return result


def _run(argv: list[str], log: str) -> tuple[int, float, str]:
  """Runs a step in its own process (output shown and kept); (exit status, wall seconds, last lines)."""
  t0 = time.perf_counter()
  with open(log, "w") as f:
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
      sys.stdout.write(line)
      f.write(line)
      lines.append(line)
    proc.wait()
  return proc.returncode, time.perf_counter() - t0, "".join(lines[-3:]).strip()


def write_image(path: str, size: int = 320) -> None:
  """A 320x240 RGB test picture (a lit sphere on a floor): predict resizes it to the model's resolution."""
  import numpy as np
  from PIL import Image
  h, w = size * 3 // 4, size
  y, x = np.mgrid[0:h, 0:w].astype(np.float32)
  image = np.stack([40 + 120 * y / h, 60 + 80 * y / h, 90 + 60 * x / w], -1)
  r = np.hypot(x - w / 2, y - h / 2) / (h / 3)
  shade = np.clip(1.2 - r, 0, 1)[..., None] * np.array([200.0, 60.0, 50.0])
  image = np.where((r < 1)[..., None], 30 + shade, image)
  Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)


def device_check(out_dir: str, spec: str = CONFIG) -> int:
  """The three steps, each in its own process, then one table."""
  os.makedirs(out_dir, exist_ok=True)
  py = sys.executable
  rows, failures = [], 0

  mfu_json = os.path.join(out_dir, "mfu.json")
  rc, secs, tail = _run([py, "benchmarks/gpu_mfu.py", f"--json={mfu_json}"], os.path.join(out_dir, "mfu.log"))
  mfu = json.load(open(mfu_json)) if rc == 0 and os.path.exists(mfu_json) else {}
  peak = mfu.get("matmul_flops_per_s", 0.0)
  if peak:
    rows.append(["bf16 matmul", f"{mfu['matmul_n']}^3", f"{peak / 1e12:.0f} TFLOP/s measured", "", "ok"])
  for r in mfu.get("rows", []):
    name = f"DiT-B step, attention {r['attention']}, batch {mfu['batch']}"
    if "error" in r:
      rows.append([name, "-", r["error"][:90], "", "FAILED"])
      failures += 1
    else:
      rows.append([name, f"{r['seconds']:.3f} s/step", f"{r['flops_per_s'] / 1e12:.0f} TFLOP/s, MFU "
                   f"{100 * r['mfu']:.1f} %", f"{r['peak_gb']:.1f}", "ok"])
  if not mfu:
    rows.append(["gpu_mfu.py", f"{secs:.0f} s", tail[-90:], "", f"FAILED (exit {rc})"])
    failures += 1

  rc, secs, tail = _run([py, "benchmarks/gpu_check.py", f"--train={out_dir}", f"--config={spec}"],
                        os.path.join(out_dir, "train.log"))
  train_json = os.path.join(out_dir, "train.json")
  train = json.load(open(train_json)) if rc == 0 and os.path.exists(train_json) else {}
  if train:
    achieved = train["flops"] / train["step_s"]
    mfu_text = f", MFU {100 * achieved / peak:.1f} % of the matmul" if peak else ""
    finite = all(l == l and abs(l) < float("inf") for l in train["losses"])
    rows.append([f"{spec} train step, batch {train['batch']}", f"{train['step_s']:.3f} s/step",
                 f"{achieved / 1e12:.0f} TFLOP/s{mfu_text}; init {train['init_s']:.0f} s, first step "
                 f"{train['first_step_s']:.0f} s; losses {', '.join(f'{l:.3f}' for l in train['losses'])}",
                 f"{train['peak_gb']:.1f}", "ok" if finite else "FAILED (loss not finite)"])
    failures += not finite
    rows.append(["export (vbanana.export.write)", f"{train['export_s']:.1f} s", train["export"], "", "ok"])
  else:
    rows.append([f"{spec} train step", f"{secs:.0f} s", tail[-90:], "", f"FAILED (exit {rc})"])
    failures += 1

  if train:
    image, preds = os.path.join(out_dir, "photo.png"), os.path.join(out_dir, "preds")
    write_image(image)
    rc, secs, tail = _run([py, "-m", "vbanana.predict", f"--checkpoint={train['export']}",
                           f"--task={PREDICT_TASK}", f"--input={image}", f"--out={preds}"],
                          os.path.join(out_dir, "predict.log"))
    written = sorted(os.listdir(preds)) if os.path.isdir(preds) else []
    ok = rc == 0 and any(f.endswith(".depth.npy") for f in written)
    rows.append([f"vbanana.predict --task={PREDICT_TASK}, one 320x240 image", f"{secs:.0f} s (load, compile, "
                 "sample)", ", ".join(written)[:90] or tail[-90:], "", "ok" if ok else f"FAILED (exit {rc})"])
    failures += not ok

  print(mfu.get("machine", ""))
  common.print_table("GPU check (benchmarks/gpu_check.sh)", ["check", "time", "result", "peak GB", "status"],
                     rows)
  print(f"GPU check: {'all ok' if not failures else f'{failures} FAILED'}", flush=True)
  return 1 if failures else 0


# ----------------------------------------------------------------------------------------------------------
# Without a GPU: the same programs, compiled by XLA:GPU for h200:1.
# ----------------------------------------------------------------------------------------------------------
def _compiled_row(name: str, lower, hbm: float) -> list:
  import re
  from vbanana import accelerators
  t0 = time.perf_counter()
  try:
    compiled = lower().compile(accelerators.compiler_options("gpu"))
  except Exception as e:  # pylint: disable=broad-except  (a refusal is the answer: report it)
    message = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
    return [name, "-", "-", "-", "-", "-", f"{time.perf_counter() - t0:.0f}", f"FAILED: {message}"]
  seconds = time.perf_counter() - t0
  m = compiled.memory_analysis()
  total = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
  text = compiled.as_text()
  kernels = []
  for label, pattern in (("cuDNN attention", r'custom_call_target="__cudnn\$fmha'), ("cuBLAS", r'"__cublas'),
                         ("Triton", r'"__triton')):
    count = len(re.findall(pattern, text))
    if count:
      kernels.append(f"{label} x{count}")
  return [name, f"{m.argument_size_in_bytes / 1e9:.2f}", f"{m.temp_size_in_bytes / 1e9:.2f}", f"{total / 1e9:.2f}",
          f"{100 * (1 - total / hbm):.0f} %", ", ".join(kernels) or "-", f"{seconds:.0f}", "compiled"]


def _init_and_step(label: str, run, hbm: float) -> list:
  """Rows for the trainer's jitted init (the setup's init_state) and its train step."""
  import jax
  from vbanana import parallel, step as step_lib
  init = jax.jit(step_lib.init_fn(run), out_shardings=run.state_shardings)
  key = jax.ShapeDtypeStruct((2,), "uint32", sharding=run.replicated)
  batch = run.abstract_batch(run.global_batch)
  with parallel.sharding_context(run.mesh, run.rules):
    init_row = _compiled_row(f"{label}: init", lambda: init.lower(key), hbm)
  return [init_row, _compiled_row(f"{label}: train step, batch {run.global_batch}",
                                  lambda: run.train_step.lower(run.abstract_state, batch, run.frozen), hbm)]


def _predict_sampler(config, target, hbm: float) -> list:
  """vbanana.predict's sampler for the config's model, one image, the task's default steps and guidance:
  the setup `predict.load` builds (vbanana.setup.for_model on one device of the target, so the attention
  resolves for the GPU as it does on the device), and its jitted sampler."""
  import jax
  import numpy as np
  from vbanana import config_lib, families, predict, setup as setup_lib
  family = families.get(config.model.family)
  model_cfg = config_lib.model_config(config)
  run = setup_lib.for_model(family, model_cfg, prediction=config.flow.prediction, devices=target.devices[:1])
  name = predict.TASKS[PREDICT_TASK]
  steps = predict.DEFAULT_STEPS.get(name, predict.DEFAULT_PERCEPTION_STEPS)
  guidance = 2.0 if name in ("generation", "editing") else 1.0
  sample = run.sampler(steps=steps, text_scale=guidance)
  batch = {k: v for k, v in run.abstract_batch(1).items() if k in ("text", "inputs", "input_mask")}
  noise = jax.ShapeDtypeStruct((1, *family.denoised_shape(model_cfg, model_cfg.shapes[0])), np.float32,
                               sharding=run.batch_sharding)
  return [_compiled_row(f"predict --task={PREDICT_TASK} sampler ({steps} steps, 1 image)",
                        lambda: sample.lower(run.abstract_params, run.frozen, noise, batch), hbm)]


def deviceless() -> int:
  import jax
  import gpu_mfu
  import train_step as bench
  from vbanana import accelerators, config_lib, setup as setup_lib
  target = accelerators.target(TARGET)
  hbm = target.chip.hbm_bytes
  single = jax.sharding.SingleDeviceSharding(target.devices[0])
  rows = []
  # 1. gpu_mfu.py: common.matmul_peak's random operands and product (bf16, n = 8192 on a GPU).
  n = 8192
  key = jax.ShapeDtypeStruct((2,), "uint32", sharding=single)
  normal = jax.jit(lambda raw: jax.random.normal(jax.random.wrap_key_data(raw), (n, n), "bfloat16"))
  rows.append(_compiled_row(f"gpu_mfu: random bf16 {n}x{n}", lambda: normal.lower(key), hbm))
  a = jax.ShapeDtypeStruct((n, n), "bfloat16", sharding=single)
  rows.append(_compiled_row(f"gpu_mfu: bf16 matmul {n}^3", lambda: jax.jit(lambda a, b: a @ b).lower(a, a), hbm))
  # 2. gpu_mfu.py's DiT-B step, cuDNN attention on and off (train_step.setup's model, optimizer and mesh).
  args = gpu_mfu.parse([])
  for attention in gpu_mfu.ATTENTIONS:
    config = bench.bench_config(args.size, args.batch, **gpu_mfu.model_overrides(args, attention))
    config.mesh = dict(data=1, fsdp=1, tensor=1)
    rows += _init_and_step(f"gpu_mfu: DiT-{args.size}, attention {attention}",
                           setup_lib.create(config, target.devices), hbm)
    jax.clear_caches()
  # 3. The GPU config at one device, 4. predict's sampler on its model.
  config = config_lib.load_config(os.path.join(ROOT, CONFIG))
  rows += _init_and_step(CONFIG, setup_lib.create(config, target.devices), hbm)
  jax.clear_caches()
  rows += _predict_sampler(config, target, hbm)
  print(common.machine())
  common.print_table(f"benchmarks/gpu_check.sh's programs compiled for {TARGET} ({target.chip.name}, "
                     f"{hbm / 1e9:.1f} GB) with no GPU (python benchmarks/gpu_check.py --deviceless)",
                     ["program", "args GB", "temps GB", "total GB", "headroom", "kernels", "compile s", "status"],
                     rows)
  failed = sum(r[-1] != "compiled" for r in rows)
  print(f"deviceless check: {len(rows) - failed} of {len(rows)} programs compiled for {TARGET}"
        + (f", {failed} FAILED" if failed else ""), flush=True)
  return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------
# configs/pretrain_gpu.py's candidates (what its REMAT and BATCH tables were picked from).
# ----------------------------------------------------------------------------------------------------------
CANDIDATES = (("none", 256), ("none", 384), ("none", 512), ("save_dots_no_batch", 512), ("full", 512))


def candidates(only: str) -> int:
  import jax
  from vbanana import aot, config_lib
  rows = []
  path = "configs/pretrain_gpu.py"
  for remat, batch in CANDIDATES:
    if only and f"{remat}:{batch}" not in only.split(","):
      continue
    config = config_lib.load_config(os.path.join(ROOT, f"{path}:remat={remat},batch={batch}"))
    report = aot.check(config, "h100:8", programs=("train",), config_name=path)
    r = report.rows[0]
    rows.append([path, remat, batch, f"{r.total_bytes / 1e9:.1f}" if not r.error else "refused",
                 f"{100 * report.headroom(r):.0f} %" if not r.error else "-", f"{r.hardware_flops / 1e12:.0f}",
                 f"{report.roofline_seconds(r):.3f}" if not r.error else "-", "fits" if report.fit else "",
                 f"{r.compile_seconds:.0f}"])
    print(rows[-1], flush=True)
    jax.clear_caches()
  common.print_table("GPU config candidates, train step on h100:8 (python benchmarks/gpu_check.py --candidates)",
                     ["config", "remat", "global batch", "GB/device", "headroom", "hardware TFLOP/step",
                      "roofline s/step (est.)", "", "compile s"], rows)
  return 0


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--deviceless", action="store_true", help=f"compile the check's programs for {TARGET}")
  parser.add_argument("--candidates", action="store_true", help="compile pretrain_gpu's remat x batch candidates")
  parser.add_argument("--only", default="", help="with --candidates: remat:batch pairs, e.g. none:256")
  parser.add_argument("--train", default="", help=argparse.SUPPRESS)  # step 2, in its own process
  parser.add_argument("--out", default="/tmp/vbanana_gpu_check", help="folder for logs, the export, predictions")
  parser.add_argument("--config", default=CONFIG, help="the config of step 2 (a smaller one tries the script on a CPU)")
  args = parser.parse_args()
  if args.deviceless or args.candidates:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    return deviceless() if args.deviceless else candidates(args.only)
  if args.train:
    print(json.dumps(train_check(args.train, args.config), indent=1))
    return 0
  return device_check(args.out, args.config)


if __name__ == "__main__":
  sys.exit(main())
