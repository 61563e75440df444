"""Train-step speed and MFU: the quickstart model and two larger CPU sizes, against this machine's matmul rate.

    python benchmarks/train_step.py                       # quickstart, cpu_s, cpu_m (about 2 min on 2 cores)
    python benchmarks/train_step.py --sizes=quickstart --profile=/tmp/trace   # + a jax.profiler trace
    python benchmarks/train_step.py --sizes=quickstart --variants=scan=False,remat=dots  # side-by-side rows

Per size: step time (min over repeats), the analytic train FLOPs per step (`vbanana.model.flops`), achieved
FLOP/s, and MFU = achieved / measured peak, where the peak is a large float32 matmul (bf16 on an
accelerator) timed in the same run, before and after the steps (the better of the two is used, so a busy
neighbour lowers the MFU rather than raising it). The step is the trainer's own (`vbanana.setup`'s train_step) on a
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
class Bench:
  name: str
  run: Any              # the vbanana.setup.Setup of the benchmark's config, on one device
  batch_size: int
  text_length: int
  flops: float          # analytic train FLOPs of one step
  state: Any
  batch: Any

  @property
  def model_cfg(self):
    return self.run.model_cfg

  def step(self, state, batch):
    return self.run.train_step(state, batch, self.run.frozen)


def bench_config(name: str, batch_size: int | None = None, **model_overrides):
  """configs/quickstart.py with `name`'s model (quickstart, or a SIZES entry), `model_overrides` and the
  batch size: the config the benchmark builds its run setup from."""
  from vbanana import config_lib
  config = config_lib.load_config(os.path.join(common._ROOT, "configs", "quickstart.py"))
  if name != QUICKSTART:
    config.model.size = name
  layout = dict(image_size="resolution", text_len="text_length", max_inputs="max_inputs")
  for key, value in model_overrides.items():
    config.model[key] = value
    if key in layout:  # the data decides the sequence layout: the model follows it
      config.data[layout[key]] = value
  if batch_size:
    config.data.global_batch = batch_size
  return config


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


def setup(name: str, batch_size: int | None = None, **model_overrides) -> Bench:
  """The trainer's own sharded train state and jitted step (vbanana.setup) for `name` on a one-device mesh,
  compiled by one step."""
  import jax
  from vbanana import setup as setup_lib
  config = bench_config(name, batch_size, **model_overrides)
  run = setup_lib.create(config, jax.devices()[:1])
  batch_size, text_length = run.global_batch, int(config.data.text_length)
  batch = run.shard_batch(random_batch(run.model_cfg, batch_size, text_length))
  flops = float(run.family.train_flops_per_example(run.model_cfg)) * batch_size
  b = Bench(name, run, batch_size, text_length, flops, run.init_state(), batch)
  b.state, _ = common.block(b.step(b.state, batch))  # compile + one step
  return b


def time_step(s: Bench, repeats: int = 5) -> dict[str, float]:
  """Seconds per train step (the state is donated and carried from step to step)."""
  times, s.state = common.time_loop(lambda state: s.step(state, s.batch)[0], s.state, repeats=repeats,
                                    warmup=1)
  return times


def profile_step(s: Bench, directory: str) -> None:
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
    rows.append([f"{name} {label}".strip(), f"{s.run.num_params / 1e6:.2f}M", f"{s.model_cfg.width}x{s.model_cfg.depth}",
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
