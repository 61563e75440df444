"""Shared helpers for the benchmark scripts: timing, the measured matmul peak, tables, the machine.

Every figure a benchmark prints is a ratio of two things timed in the same run (this machine is noisy and
shared), so the helpers here time both sides the same way: warm up, then the minimum over repeats.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

# Benchmarks run as `python benchmarks/X.py` from the repository root: make `vbanana` and `configs`
# importable without installing the package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

# No XLA flags: the benchmarks measure what the trainer gets, XLA's defaults. On this AVX-512 (bf16) CPU the
# default YNNPACK dot fusions are faster than Eigen for this model (docs/performance.md, log); the earlier
# `--xla_cpu_experimental_ynn_fusion_type=` (measured on an AVX2 machine) is slower here. To compare flags,
# set XLA_FLAGS in the environment: `machine()` prints them with every table.


def block(tree: Any) -> Any:
  """Waits for every array in `tree` (JAX dispatch is asynchronous)."""
  import jax
  return jax.block_until_ready(tree)


def time_it(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> dict[str, float]:
  """Seconds per call of `fn()` (which must block on its own result): min, median and all repeats."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {"min": min(times), "median": statistics.median(times), "all": times}


def time_loop(step: Callable[[Any], Any], carry: Any, *, repeats: int = 5, warmup: int = 1):
  """Times `carry = step(carry)` (a train step with donated state); returns (times, final carry)."""
  for _ in range(warmup):
    carry = block(step(carry))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    carry = block(step(carry))
    times.append(time.perf_counter() - start)
  return {"min": min(times), "median": statistics.median(times), "all": times}, carry


def matmul_peak(dtype: str | None = None, n: int = 2048, repeats: int = 5) -> dict[str, Any]:
  """The machine's measured matmul rate in FLOP/s: a large square matmul, float32 on CPU, bf16 elsewhere.

  This is the denominator of every MFU figure here: what this machine actually reaches on the one
  operation a transformer should spend its time in, timed in the same run as the step it is compared to.
  """
  import jax
  import jax.numpy as jnp
  platform_name = jax.devices()[0].platform
  if dtype is None:
    dtype = "float32" if platform_name == "cpu" else "bfloat16"
  if platform_name != "cpu":
    n = max(n, 8192)
  keys = jax.random.split(jax.random.key(0))
  a = jax.random.normal(keys[0], (n, n), dtype)
  b = jax.random.normal(keys[1], (n, n), dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  t = time_it(lambda: block(matmul(a, b)), repeats=repeats, warmup=2)
  return {"flops_per_s": 2 * n**3 / t["min"], "dtype": dtype, "n": n, "platform": platform_name}


def machine() -> str:
  """One line naming the machine and software that produced a table."""
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  device = jax.devices()[0]
  return (f"{device.platform}:{device.device_kind} x{jax.device_count()}, host {cpu}, "
          f"{os.cpu_count()} cores, jax {jax.__version__}, python {platform.python_version()}, "
          f"XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}'")


def fmt(value: Any) -> str:
  """Short, aligned formatting for table cells."""
  if isinstance(value, float):
    if value == 0:
      return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-2:
      return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
  return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Prints a Markdown table (so it pastes into docs/performance.md as is) and returns its text."""
  cells = [[fmt(c) for c in row] for row in rows]
  widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
  line = lambda items: "| " + " | ".join(s.rjust(w) for s, w in zip(items, widths)) + " |"
  text = "\n".join([f"\n{title}", line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                    *(line(r) for r in cells)])
  print(text, flush=True)
  return text


def gflops(x: float) -> float:
  return x / 1e9
