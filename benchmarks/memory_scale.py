"""Memory and FLOPs at scale, from compiled memory analysis of abstract inputs (nothing is allocated).

    python benchmarks/memory_scale.py          # 8 simulated CPU devices; 5-10 min on 2 cores

Tables:
1. Per-device bytes of parameters, optimizer state and activations (the executable's temp buffers) of one
   train step of a mid-size model under a replicated mesh, FSDP 2/4/8 and tensor 2.
2. The largest model (width x depth family below) whose train step fits 16 GB per device at sequence
   length 1024 on FSDP 8, with and without remat.
3. How analytic step FLOPs and per-device memory grow with resolution (sequence length) and with depth.
Per-device bytes = arguments (state + batch shards) + temps + outputs not aliased to donated inputs, as
XLA's `memory_analysis()` reports them for a CPU device; accelerators lay out differently, so read these as
the shape of the curve, and as an upper bound on what the sharding leaves per device.
"""
from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import common  # noqa: E402

GB = 1e9
BUDGET = 16 * GB
# A family of sizes for the fit search: (width, depth, heads); MLP width as the model's default ratio.
FAMILY = ((768, 12, 12), (1024, 24, 16), (1536, 24, 16), (2048, 24, 16), (2048, 32, 16), (3072, 32, 24),
          (4096, 32, 32), (4096, 48, 32), (6144, 48, 48))
MESHES = (("replicated", dict(data=8, fsdp=1, tensor=1)), ("fsdp 2", dict(data=4, fsdp=2, tensor=1)),
          ("fsdp 4", dict(data=2, fsdp=4, tensor=1)), ("fsdp 8", dict(data=1, fsdp=8, tensor=1)),
          ("tensor 2", dict(data=4, fsdp=1, tensor=2)))


def tree_bytes_per_device(tree) -> int:
  """Bytes one device holds of an abstract tree with shardings (its largest shard of each leaf)."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if getattr(leaf, "sharding", None) else leaf.shape
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def analyse(config, mesh_shape: dict, global_batch: int) -> dict:
  """Compiles the trainer's train step (its run setup on `mesh_shape`) for abstract, sharded inputs and
  returns per-device byte counts."""
  import jax
  import numpy as np
  from vbanana import setup as setup_lib
  config.mesh = dict(mesh_shape)
  config.data.global_batch = global_batch
  run = setup_lib.create(config, jax.devices())
  state = run.abstract_state
  compiled = run.train_step.lower(state, run.abstract_batch(global_batch), run.frozen).compile()
  mem = compiled.memory_analysis()
  params = tree_bytes_per_device(state["params"])
  opt = tree_bytes_per_device({k: v for k, v in state.items() if k != "params"})
  total = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
           - mem.alias_size_in_bytes)
  return dict(params=params, opt=opt, temps=mem.temp_size_in_bytes, total=total, model_cfg=run.model_cfg,
              num_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"])),
              flops=float(run.family.train_flops_per_example(run.model_cfg)) * global_batch)


def model_at(size: str, **overrides):
  """The benchmark config (the quickstart's, benchmarks/train_step.py) with model `size` and `overrides`."""
  import train_step as bench
  return bench.bench_config(size, **overrides)


def main():
  import jax
  print(common.machine())
  gb = lambda x: x / GB

  # 1. One mid-size model under each mesh.
  rows = []
  for name, shape in MESHES:
    r = analyse(model_at("S", image_size=64, patch_size=4), shape, global_batch=16)
    cfg = r["model_cfg"]
    rows.append([name, gb(r["params"]), gb(r["opt"]), gb(r["temps"]), gb(r["total"])])
  common.print_table(f"Per-device GB, size S ({cfg.width}x{cfg.depth}), 64px patch 4, global batch 16, "
                     "8 devices", ["mesh", "params", "opt + EMA state", "activations (temps)", "total"], rows)

  # 2. Largest model that fits 16 GB/device at sequence length 1024 (FSDP 8, one example per device).
  # ~1024 tokens, kept simple: no input image slot, 224 text bytes (56 tokens at text_stride 4) + a 124px
  # target at patch 4 (961 tokens) = 1017.
  rows = []
  for remat in ("none", "full"):
    best = None
    for width, depth, heads in FAMILY:
      c = model_at("S", width=width, depth=depth, num_heads=heads, image_size=124, patch_size=4, max_inputs=0,
                   remat=remat)
      r = analyse(c, dict(data=1, fsdp=8, tensor=1), global_batch=8)
      fits = r["total"] <= BUDGET
      rows.append([remat, f"{width}x{depth}", f"{r['num_params'] / 1e9:.2f}B", gb(r["total"]),
                   "yes" if fits else "no"])
      if fits:
        best = (width, depth)
      else:
        break
    jax.clear_caches()
  common.print_table("Fit at sequence length ~1024, FSDP 8, 1 example per device, 16 GB/device budget",
                     ["remat", "width x depth", "params", "GB/device", "fits"], rows)

  # 3. Growth with resolution (sequence length) and depth.
  rows = []
  for res in (32, 64, 128):
    r = analyse(model_at("S", image_size=res, patch_size=4), dict(data=1, fsdp=8, tensor=1), global_batch=8)
    c = r["model_cfg"]
    rows.append([f"res {res}", c.seq_len(), c.depth, r["flops"] / 1e12,
                 gb(r["total"])])
  for depth in (6, 12, 24):
    r = analyse(model_at("S", image_size=64, patch_size=4, depth=depth), dict(data=1, fsdp=8, tensor=1),
                global_batch=8)
    rows.append([f"depth {depth}", r["model_cfg"].seq_len(), depth, r["flops"] / 1e12, gb(r["total"])])
  common.print_table("Growth: train TFLOP/step (global batch 8) and GB/device (FSDP 8)",
                     ["setting", "tokens", "depth", "TFLOP/step", "GB/device"], rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
