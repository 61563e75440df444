"""GPU MFU: a DiT-B-like train step in bf16 against the measured bf16 matmul rate, cuDNN attention on and off.

    python benchmarks/gpu_mfu.py            # on a machine with a GPU; on a CPU it says so and exits 0

Attention follows the model's `attention` setting: 'cudnn' is `jax.nn.dot_product_attention`'s cuDNN kernel,
'xla' the written-out softmax attention of `vbanana.model.layers.attention`. MFU = analytic train FLOPs
per step / step time / (bf16 matmul FLOP/s measured in the same run). No number here was measured on this
project's CPU machines: run it where a GPU is.
"""
from __future__ import annotations

import argparse
import sys

import common


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="B", help="a SIZES name (DiT-B-like: width 768, depth 12, 12 heads)")
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--patch_size", type=int, default=8)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  import jax
  if jax.devices()[0].platform != "gpu":
    print(f"gpu_mfu.py: no GPU here (jax sees {jax.devices()[0].platform}); skipping. "
          "Run it on a machine with an NVIDIA GPU.")
    return 0
  import train_step as bench
  print(common.machine())
  peak = common.matmul_peak("bfloat16")
  rows = []
  for implementation in ("cudnn", "xla"):
    try:
      s = bench.setup(args.size, batch_size=args.batch, image_size=args.image_size,
                      patch_size=args.patch_size, dtype="bfloat16", attention=implementation)
    except Exception as e:  # cuDNN may refuse a shape or a dtype: report it rather than crash the table
      rows.append([implementation, "-", "-", "-", f"failed: {type(e).__name__}: {str(e)[:60]}"])
      continue
    times = bench.time_step(s, args.repeats)
    achieved = s.flops / times["min"]
    rows.append([implementation, times["min"], common.gflops(s.flops), common.gflops(achieved) / 1e3,
                 f"{100 * achieved / peak['flops_per_s']:.1f}%"])
    del s
    jax.clear_caches()
  print(f"measured bf16 matmul {peak['n']}^3: {common.gflops(peak['flops_per_s']) / 1e3:.1f} TFLOP/s")
  common.print_table(f"GPU train step, size {args.size}, {args.image_size}px, patch {args.patch_size}, "
                     f"batch {args.batch}, bf16", ["attention", "s/step", "GFLOP/step", "TFLOP/s", "MFU"], rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
