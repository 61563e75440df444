"""Sampling speed: images/s per task at 1, 4 and 25 steps, with and without guidance, and the sampler overhead.

    python benchmarks/sampling.py                 # quickstart model, batch 8, Euler; about 1-2 min on 2 cores
    python benchmarks/sampling.py --method=heun

Sampler overhead = sample time / (network evaluations x one forward time) - 1: the share of time spent
outside the network (the loop, guidance mixing, clipping), both timed in the same run. The whole loop runs
inside one jit (`vbanana.flow.sample`), so this should be a few percent; it is negative when XLA hoists
loop-invariant work out of the loop (the text encoder and the input images' patch embedding run once per
sample, not once per step), so a step costs less than a forward. Tasks differ only in whether an
input image is given (generation: none; editing and the five perception tasks: one); the model's shapes are
fixed by the config, so all tasks of a group share one compiled program and one row.
"""
from __future__ import annotations

import argparse
import sys

import common
import numpy as np

GROUPS = (("generation", 0), ("editing, depth, normals, semantic, instance, referring", 1))
GUIDANCE = dict(text_scale=4.0, image_scale=1.5)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="quickstart")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--method", default="euler")
  parser.add_argument("--steps", default="1,4,25")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  import jax
  import jax.numpy as jnp
  from vbanana import setup as setup_lib, step as step_lib
  import train_step as bench

  # The run setup's own programs (what the evaluators and predict run): its sampler, and a jitted forward of
  # the same network.
  run = setup_lib.create(bench.bench_config(args.size, args.batch), jax.devices()[:1])
  cfg = run.model_cfg
  state = run.init_state()["params"]
  host = bench.random_batch(cfg, args.batch, cfg.text_len)
  cond = {"text": jnp.asarray(host["text"])}
  inputs = jnp.asarray(host["inputs"], jnp.float32) / 127.5 - 1
  noise = jax.random.normal(jax.random.key(0), (args.batch, cfg.image_size, cfg.image_size, 3))
  t = jnp.full((args.batch,), 0.5)

  @jax.jit
  def forward(state, x, mask):
    return step_lib.network(run, state)(x, t, cond, inputs, mask)

  def sample(state, noise, mask, steps, text_scale, image_scale):
    fn = run.sampler(steps=steps, method=args.method, text_scale=text_scale, image_scale=image_scale)
    return fn(state, run.frozen, noise, dict(text=cond["text"], inputs=inputs, input_mask=mask))

  print(common.machine())
  print(f"model {args.size} ({cfg.width}x{cfg.depth}, {cfg.image_size}px), batch {args.batch}, {args.method}; "
        f"guidance: text_scale={GUIDANCE['text_scale']}, image_scale={GUIDANCE['image_scale']} (image tasks)")
  rows = []
  evals_per_step = 2 if args.method == "heun" else 1
  for group, num_inputs in GROUPS:
    mask = jnp.asarray(np.arange(cfg.max_inputs)[None, :] < num_inputs).repeat(args.batch, 0)
    fwd = common.time_it(lambda: common.block(forward(state, noise, mask)), repeats=args.repeats * 2)["min"]
    for steps in map(int, args.steps.split(",")):
      for guided in (False, True):
        scales = dict(text_scale=GUIDANCE["text_scale"], image_scale=GUIDANCE["image_scale"] if num_inputs else 1.0) \
            if guided else dict(text_scale=1.0, image_scale=1.0)
        passes = 1 + (scales["text_scale"] != 1.0) + (scales["image_scale"] != 1.0)
        network_evals = (steps * evals_per_step - (evals_per_step - 1)) * passes
        t_sample = common.time_it(lambda: common.block(sample(state, noise, mask, steps, **scales)),
                                  repeats=args.repeats * 2)["min"]  # as many repeats as the forward
        rows.append([group if steps == 1 and not guided else "", steps, "yes" if guided else "no", network_evals,
                     args.batch / t_sample, t_sample / fwd, f"{100 * (t_sample / (network_evals * fwd) - 1):.1f}%"])
  common.print_table("Sampling: images/s, cost in forward passes, and the sampler's overhead",
                     ["tasks", "steps", "guidance", "network evals", "images/s", "sample / forward",
                      "overhead"], rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
