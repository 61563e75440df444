"""Train-step speed and MFU: the quickstart model and two larger CPU sizes, against this machine's matmul rate.

    python benchmarks/train_step.py                       # quickstart, cpu_s, cpu_m (about 2 min on 2 cores)
    python benchmarks/train_step.py --sizes=quickstart --profile=/tmp/trace   # + a jax.profiler trace
    python benchmarks/train_step.py --sizes=quickstart --variants=scan=False,remat=dots  # side-by-side rows

Per size: step time (min over repeats), the analytic train FLOPs per step (`vbanana.model.flops`), achieved
FLOP/s, and MFU = achieved / measured peak, where the peak is a large float32 matmul (bf16 on an
accelerator) timed in the same run, before and after the steps (the better of the two is used, so a busy
neighbour lowers the MFU rather than raising it). The step is the trainer's own `make_train_step` on a
one-device mesh: XLA's CPU client runs one device on all cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

import common
import numpy as np

QUICKSTART = "quickstart"
# Larger CPU sizes: wider, so that the matmuls (not the norms, softmax and copies) dominate the step.
CPU_SIZES = ("cpu_s", "cpu_m")


@dataclasses.dataclass
class Setup:
  name: str
  model_cfg: Any
  batch_size: int
  text_length: int
  num_params: int
  flops: float          # analytic train FLOPs of one step
  step: Any             # jitted (state, batch) -> (state, metrics), donated state
  state: Any
  batch: Any


def size_settings(name: str) -> tuple[str, dict, int, int]:
  """(model size, model overrides, batch size, text length) for `name`: quickstart or a SIZES entry."""
  from vbanana import config_lib
  config = config_lib.load_config(os.path.join(common._ROOT, "configs", "quickstart.py"))
  overrides = {k: v for k, v in config.model.to_dict().items() if k != "size"}
  if name == QUICKSTART:
    return config.model.size, overrides, config.data.global_batch, config.data.text_length
  return name, overrides, config.data.global_batch, config.data.text_length


def random_batch(model_cfg, batch_size: int, text_length: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch in the trainer's format (docs/interfaces.md): uint8 images, token ids, task ids."""
  rng = np.random.default_rng(seed)
  s, k = model_cfg.image_size, model_cfg.max_inputs
  return dict(
      text=rng.integers(2, 258, (batch_size, text_length), dtype=np.int32),
      inputs=rng.integers(0, 256, (batch_size, k, s, s, 3), dtype=np.uint8),
      input_mask=np.ones((batch_size, k), bool),
      target=rng.integers(0, 256, (batch_size, s, s, 3), dtype=np.uint8),
      task=rng.integers(0, 7, (batch_size,), dtype=np.int32),
  )


def setup(name: str, batch_size: int | None = None, **model_overrides) -> Setup:
  """Builds the sharded train state and the jitted step for `name` on a one-device mesh, compiled."""
  import jax
  from vbanana import config_lib, model as model_lib, parallel, step as step_lib
  from vbanana.model import flops as flops_lib
  size, overrides, default_batch, text_length = size_settings(name)
  batch_size = batch_size or default_batch
  model_cfg = model_lib.config_for(size, **{**overrides, **model_overrides})
  config = config_lib.base_config()
  mesh = parallel.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  rules = tuple(tuple(r) for r in config.sharding_rules)
  graphdef, state = step_lib.create_train_state(model_cfg, config.optim, mesh, rules, 0)
  step = step_lib.make_train_step(graphdef, model_cfg, config.flow, config.optim, mesh, rules)
  batch = parallel.shard_batch(random_batch(model_cfg, batch_size, text_length), mesh)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  flops = float(flops_lib.train_flops_per_example(model_cfg)) * batch_size
  state, _ = common.block(step(state, batch))  # compile + one step
  return Setup(name, model_cfg, batch_size, text_length, num_params, flops, step, state, batch)


def time_step(s: Setup, repeats: int = 5) -> dict[str, float]:
  """Seconds per train step (the state is donated and carried from step to step)."""
  times, s.state = common.time_loop(lambda state: s.step(state, s.batch)[0], s.state, repeats=repeats,
                                    warmup=1)
  return times


def profile_step(s: Setup, directory: str) -> None:
  import jax
  with jax.profiler.trace(directory):
    s.state, metrics = s.step(s.state, s.batch)
    common.block(metrics)
  print(f"wrote a jax.profiler trace of one {s.name} step to {directory} (open with xprof / TensorBoard)")


def _parse_override(text: str) -> tuple[str, object]:
  key, _, value = text.partition("=")
  parsed = {"True": True, "False": False}.get(value, value)
  if isinstance(parsed, str):
    try:
      parsed = int(value)
    except ValueError:
      pass
  return key, parsed


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default=",".join((QUICKSTART,) + CPU_SIZES))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--profile", default="", help="write a jax.profiler trace of one step of the first size")
  parser.add_argument("--variants", default="",
                      help="comma-separated model overrides key=value; each adds a row per size beside the default")
  args = parser.parse_args()
  variants = [("", {})] + [(v, dict([_parse_override(v)])) for v in args.variants.split(",") if v]
  import jax
  print(common.machine())
  peak = common.matmul_peak()
  rows = []
  for i, (name, (label, overrides)) in enumerate(
      (n, v) for n in args.sizes.split(",") for v in variants):
    s = setup(name, **overrides)
    if args.profile and i == 0:
      profile_step(s, args.profile)
    times = time_step(s, args.repeats)
    achieved = s.flops / times["min"]
    rows.append([f"{name} {label}".strip(), f"{s.num_params / 1e6:.2f}M", f"{s.model_cfg.width}x{s.model_cfg.depth}",
                 s.batch_size, times["min"], times["median"], common.gflops(s.flops), common.gflops(achieved)])
    del s
    jax.clear_caches()
  peak_after = common.matmul_peak()
  best = max(peak["flops_per_s"], peak_after["flops_per_s"])
  print(f"measured {peak['dtype']} matmul {peak['n']}^3: {common.gflops(peak['flops_per_s']):.1f} GFLOP/s "
        f"before, {common.gflops(peak_after['flops_per_s']):.1f} after; MFU uses {common.gflops(best):.1f}")
  for row in rows:
    row.append(f"{100 * row[-1] * 1e9 / best:.1f}%")
  common.print_table(
      "Train step (AdamW, float32 on CPU), MFU against the measured matmul rate",
      ["size", "params", "width x depth", "batch", "s/step (min)", "s/step (median)", "GFLOP/step",
       "GFLOP/s", "MFU"], rows)


if __name__ == "__main__":
  main()
