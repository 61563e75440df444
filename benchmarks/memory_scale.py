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


def analyse(model_cfg, mesh_shape: dict, global_batch: int) -> dict:
  """Compiles the train step for abstract, sharded inputs and returns per-device byte counts."""
  import jax
  import numpy as np
  from vbanana import config_lib, parallel, step as step_lib
  from vbanana.model import flops as flops_lib
  import train_step as bench
  config = config_lib.base_config()
  mesh = parallel.make_mesh(mesh_shape, devices=jax.devices())
  rules = tuple(tuple(r) for r in config.sharding_rules)
  captured = {}

  def build():
    graphdef, state = step_lib.create_train_state(model_cfg, config.optim, mesh, rules, 0)
    captured["graphdef"] = graphdef
    return state

  shapes = jax.eval_shape(build)
  # eval_shape drops the shardings: put the trainer's state shardings back on the abstract state, so the
  # per-device bytes below are those of the mesh.
  shardings = step_lib.state_shardings(model_cfg, config.optim, mesh, rules)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  step = step_lib.make_train_step(captured["graphdef"], model_cfg, config.flow, config.optim, mesh, rules)
  host_batch = bench.random_batch(model_cfg, global_batch, model_cfg.text_len)  # the layout FLOPs count
  batch_sharding = parallel.batch_sharding(mesh, rules)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding) for k, v in host_batch.items()}
  compiled = step.lower(state, batch).compile()
  mem = compiled.memory_analysis()
  params = tree_bytes_per_device(state["params"])
  opt = tree_bytes_per_device({k: v for k, v in state.items() if k != "params"})
  total = (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
           - mem.alias_size_in_bytes)
  return dict(params=params, opt=opt, temps=mem.temp_size_in_bytes, total=total,
              num_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"])),
              flops=float(flops_lib.train_flops_per_example(model_cfg)) * global_batch)


def model_at(size: str, **overrides):
  from vbanana import model as model_lib
  return model_lib.config_for(size, **overrides)


def main():
  import jax
  print(common.machine())
  gb = lambda x: x / GB

  # 1. One mid-size model under each mesh.
  cfg = model_at("S", image_size=64, patch_size=4)
  rows = []
  for name, shape in MESHES:
    r = analyse(cfg, shape, global_batch=16)
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
    c = model_at("S", image_size=res, patch_size=4)
    r = analyse(c, dict(data=1, fsdp=8, tensor=1), global_batch=8)
    rows.append([f"res {res}", c.seq_len(), c.depth, r["flops"] / 1e12,
                 gb(r["total"])])
  for depth in (6, 12, 24):
    c = model_at("S", image_size=64, patch_size=4, depth=depth)
    r = analyse(c, dict(data=1, fsdp=8, tensor=1), global_batch=8)
    rows.append([f"depth {depth}", c.seq_len(), depth, r["flops"] / 1e12, gb(r["total"])])
  common.print_table("Growth: train TFLOP/step (global batch 8) and GB/device (FSDP 8)",
                     ["setting", "tokens", "depth", "TFLOP/step", "GB/device"], rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
