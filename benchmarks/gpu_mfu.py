"""GPU MFU: a DiT-B-size train step in bf16 against the measured bf16 matmul rate, cuDNN attention on and off.

    python benchmarks/gpu_mfu.py            # on a machine with a GPU; on a CPU it says so and exits 0
    python benchmarks/gpu_mfu.py --json=/tmp/mfu.json   # also writes the rows (benchmarks/gpu_check.py reads them)

Attention follows the model's `attention` setting: 'cudnn' is `jax.nn.dot_product_attention`'s cuDNN kernel,
'xla' the written-out softmax attention of `vbanana.model.layers.attention`. MFU = analytic train FLOPs
per step / step time / (bf16 matmul FLOP/s measured in the same run). The step is benchmarks/train_step.py's
(the trainer's own `make_train_step` on a one-device mesh). Every program it runs was compiled for an H200
with no GPU attached (python benchmarks/gpu_check.py --deviceless); its speed waits for a GPU.
Run it with XLA_FLAGS=--xla_gpu_enable_triton_gemm=false, as benchmarks/gpu_check.sh does (the flag the
deviceless check compiles with: vbanana.accelerators.GPU_COMPILER_OPTIONS).
"""
from __future__ import annotations

import argparse
import json
import sys

import common

# The step measured (and compiled deviceless by gpu_check.py): DiT-B (width 768, depth 12, 12 heads) at 256 px,
# patch 8 (1,024 tokens per image, a 2,104-token joint sequence). Batch 16: the 'xla' row keeps every layer's
# (B, heads, S, S) scores for the backward pass (no remat at size B): 99.8 GB of an H200's 150.8 GB at 16 against
# 30.8 GB with cuDNN (python benchmarks/gpu_check.py --deviceless); its temporaries grow with the batch.
DEFAULTS = dict(size="B", image_size=256, patch_size=8, batch=16, repeats=10)
ATTENTIONS = ("cudnn", "xla")


def model_overrides(args, attention: str) -> dict:
  return dict(image_size=args.image_size, patch_size=args.patch_size, dtype="bfloat16", attention=attention)


def parse(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default=DEFAULTS["size"], help="a SIZES name (DiT-B: width 768, depth 12)")
  parser.add_argument("--image_size", type=int, default=DEFAULTS["image_size"])
  parser.add_argument("--patch_size", type=int, default=DEFAULTS["patch_size"])
  parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
  parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
  parser.add_argument("--json", default="", help="also write the peak and the rows to this file")
  return parser.parse_args(argv)


def main():
  args = parse()
  import jax
  if jax.devices()[0].platform != "gpu":
    print(f"gpu_mfu.py: no GPU here (jax sees {jax.devices()[0].platform}); skipping. "
          "Run it on a machine with an NVIDIA GPU.")
    return 0
  import train_step as bench
  print(common.machine())
  peak = common.matmul_peak("bfloat16")
  rows, results = [], []
  for implementation in ATTENTIONS:
    try:
      s = bench.setup(args.size, batch_size=args.batch, **model_overrides(args, implementation))
      times = bench.time_step(s, args.repeats)
    except Exception as e:  # pylint: disable=broad-except  (cuDNN may refuse a shape: report it, keep the table)
      rows.append([implementation, "-", "-", "-", "-", f"failed: {type(e).__name__}: {str(e)[:80]}"])
      results.append(dict(attention=implementation, error=f"{type(e).__name__}: {str(e)[:300]}"))
      jax.clear_caches()
      continue
    achieved = s.flops / times["min"]
    stats = jax.devices()[0].memory_stats() or {}
    memory = stats.get("peak_bytes_in_use", 0) / 1e9
    rows.append([implementation, times["min"], common.gflops(s.flops), common.gflops(achieved) / 1e3,
                 f"{memory:.1f}", f"{100 * achieved / peak['flops_per_s']:.1f}%"])
    results.append(dict(attention=implementation, seconds=times["min"], flops=s.flops, flops_per_s=achieved,
                        mfu=achieved / peak["flops_per_s"], peak_gb=memory))
    del s
    jax.clear_caches()
  print(f"measured bf16 matmul {peak['n']}^3: {common.gflops(peak['flops_per_s']) / 1e3:.1f} TFLOP/s")
  common.print_table(f"GPU train step, size {args.size}, {args.image_size}px, patch {args.patch_size}, "
                     f"batch {args.batch}, bf16", ["attention", "s/step", "GFLOP/step", "TFLOP/s",
                                                   "peak GB (process)", "MFU"], rows)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(machine=common.machine(), matmul_flops_per_s=peak["flops_per_s"],
                     matmul_n=peak["n"], batch=args.batch, rows=results), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
