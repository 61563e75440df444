"""The gated MLP's two input matmuls: separate (x W_gate, x W_up) or fused (one x [W_gate W_up], then split).

    PYTHONPATH=. python benchmarks/swiglu.py          # the MLP of cpu_s and cpu_m at the quickstart layout

Times forward + backward of both forms at the same shapes in one run and prints their ratio. This decided
that `vbanana.model.layers.SwiGLU` keeps two separate input matmuls (docs/performance.md, log).
"""
from __future__ import annotations

import argparse

import common


def mlp_time(width: int, hidden: int, rows: int, fused: bool, repeats: int) -> float:
  import jax
  import jax.numpy as jnp
  k = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(k[0], (rows, width))
  w_down = jax.random.normal(k[3], (hidden, width)) / hidden ** 0.5
  if fused:
    w_in = (jax.random.normal(k[1], (width, 2, hidden)) / width ** 0.5,)
    def mlp(w, x):
      gu = jnp.einsum("rw,wgh->rgh", x, w[0])
      return (jax.nn.silu(gu[:, 0]) * gu[:, 1]) @ w_down
  else:
    w_in = (jax.random.normal(k[1], (width, hidden)) / width ** 0.5,
            jax.random.normal(k[2], (width, hidden)) / width ** 0.5)
    def mlp(w, x):
      return (jax.nn.silu(x @ w[0]) * (x @ w[1])) @ w_down
  grad = jax.jit(jax.grad(lambda w, x: jnp.sum(mlp(w, x) ** 2), argnums=(0, 1)))
  return common.time_it(lambda: common.block(grad(w_in, x)), repeats=repeats)["min"]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(common.machine())
  rows = []
  for name, width in (("cpu_s", 256), ("cpu_m", 384)):
    hidden = -(-int(2 / 3 * 4 * width) // 8) * 8
    tokens = 16 * 192  # batch 16 x (64 text + 64 input + 64 target tokens)
    separate = mlp_time(width, hidden, tokens, False, args.repeats)
    fused = mlp_time(width, hidden, tokens, True, args.repeats)
    rows.append([name, f"{width}->{hidden}", tokens, separate * 1e3, fused * 1e3, fused / separate])
  common.print_table("Gated MLP forward + backward (min ms), float32", ["size", "width->hidden", "rows",
                     "separate ms", "fused ms", "fused/separate"], rows)


if __name__ == "__main__":
  main()
