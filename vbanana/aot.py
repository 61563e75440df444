r"""Check before you pay for the slice: compile a config's programs for an accelerator it names, with no
accelerator, and say whether they fit.

  python -m vbanana.aot --config=configs/pretrain_tpu.py --topology=v5p:4x4x2
  python -m vbanana.aot --config=configs/instruct_tpu.py --topology=v6e-64 --config.data.global_batch=256
  python -m vbanana.aot --config=configs/pretrain_gpu.py --topology=h100:8      # pip install -e ".[gpu]" first
  python -m vbanana.aot --model=klein-4b --topology=v6e-1      # FLUX.2 [klein]'s forward (vbanana.flux2.aot)

With the config's own mesh, sharding rules, model, optimizer and global batch, it compiles the train step and
each distinct evaluation sampler (the config's eval steps and guidance) for the named topology with the real
compiler (libtpu's for a TPU, the CUDA plugin's XLA:GPU for one host of NVIDIA GPUs, on any CPU machine),
then prints one row per program: per-device memory (arguments, temporaries, outputs, total) against the
chip's HBM, the headroom, the analytic FLOPs per step and per chip (vbanana.model.flops: the compiler's own
count sees a scanned stack once), a roofline estimate of the step time and the MFU that would follow (an
estimate from the chip's peak and bandwidths, never a measurement), the collectives of the optimized
program per step, and the compile seconds. The last line says FIT or DOES NOT FIT; a misfit exits 1 with
one line naming the config, topology, the shortfall and the knobs that would help.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import time
from typing import Any, Sequence

MIN_HEADROOM = 0.15  # the project's rule: a config leaves at least this share of the chip's memory free


@dataclasses.dataclass
class Row:
  """One compiled program on one device of the target."""
  program: str
  argument_bytes: int = 0
  temp_bytes: int = 0
  output_bytes: int = 0
  alias_bytes: int = 0
  resident_bytes: int = 0     # arrays kept on the device beside the program (klein's Qwen3), counted in total
  flops: float = 0.0          # useful (model) FLOPs of the whole program, all devices
  hardware_flops: float = 0.0  # what the chips execute, remat included
  collectives: dict = dataclasses.field(default_factory=dict)
  custom_calls: dict = dataclasses.field(default_factory=dict)  # kernels in the program (splash: tpu_custom_call)
  compile_seconds: float = 0.0
  error: str = ""             # the compiler's refusal, when it refused

  @property
  def total_bytes(self) -> int:
    """Bytes one device holds at the peak: inputs, temporaries and outputs not aliased to donated inputs,
    and what stays resident beside the program."""
    return (self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes +
            self.resident_bytes)


@dataclasses.dataclass
class Report:
  config_name: str
  target: Any
  rows: list
  min_headroom: float = MIN_HEADROOM
  setup: Any = None  # the vbanana.setup.Setup the programs were built from

  def headroom(self, row: Row) -> float:
    return 1.0 - row.total_bytes / self.target.chip.hbm_bytes

  def fits(self, row: Row) -> bool:
    return not row.error and self.headroom(row) >= self.min_headroom

  @property
  def fit(self) -> bool:
    return all(self.fits(r) for r in self.rows)

  def roofline_seconds(self, row: Row) -> float:
    """max(compute at bf16 peak, the state read and written once over HBM, collectives over the
    interconnect): a lower bound on the step time of one device."""
    chip, n = self.target.chip, len(self.target.devices)
    compute = row.hardware_flops / n / chip.bf16_flops
    memory = (row.argument_bytes + row.output_bytes) / chip.hbm_bandwidth
    network = sum(c["bytes"] for c in row.collectives.values()) / chip.interconnect
    return max(compute, memory, network)

  def mfu_estimate(self, row: Row) -> float:
    seconds = self.roofline_seconds(row)
    return row.flops / len(self.target.devices) / (seconds * self.target.chip.bf16_flops) if seconds else 0.0


# ----------------------------------------------------------------------------------------------------------
# Abstract inputs: shapes and shardings only; nothing is allocated.
# ----------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------
# Compiling.
# ----------------------------------------------------------------------------------------------------------
def _compile(program: str, lower, flops: float, hardware_flops: float, compiler_options=None) -> Row:
  from vbanana import hlo_stats  # pylint: disable=g-import-not-at-top
  row = Row(program, flops=flops, hardware_flops=hardware_flops)
  t0 = time.perf_counter()
  try:
    compiled = lower().compile(compiler_options)
  except Exception as e:  # pylint: disable=broad-except  (the compiler's refusal is the answer)
    row.compile_seconds = time.perf_counter() - t0
    if "RESOURCE_EXHAUSTED" not in str(e) and "exceeds" not in str(e):
      raise
    row.error = _first_line(str(e))
    row.temp_bytes = _refused_bytes(str(e))
    return row
  row.compile_seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  row.argument_bytes, row.temp_bytes = int(mem.argument_size_in_bytes), int(mem.temp_size_in_bytes)
  row.output_bytes, row.alias_bytes = int(mem.output_size_in_bytes), int(mem.alias_size_in_bytes)
  text = compiled.as_text()
  row.collectives, row.custom_calls = hlo_stats.collectives(text), hlo_stats.custom_calls(text)
  return row


def _first_line(message: str) -> str:
  line = next((l for l in message.splitlines() if "exceeds" in l or "RESOURCE_EXHAUSTED" in l), message)
  return line.strip()[:300]


_SIZE = re.compile(r"\(([\d.]+)([KMGT])\) exceeds available")


def _refused_bytes(message: str) -> int:
  """The size the compiler said it needed ('HLO temporaries (4.80T) exceeds available HBM'), or 0."""
  m = _SIZE.search(message)
  return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2))) if m else 0


def _sampler_specs(config) -> list:
  """The distinct samplers of config.evals: (steps, method, text_scale, image_scale, batch size)."""
  from vbanana import evaluate  # pylint: disable=g-import-not-at-top
  seen: dict[tuple, list[str]] = {}
  for spec in evaluate.parse_specs(config):
    key = (spec.steps, spec.sampler, float(spec.text_scale), float(spec.image_scale),
           int(spec.batch_size or config.data.global_batch))
    seen.setdefault(key, []).append(spec.name)
  return [(", ".join(names), key) for key, names in seen.items()]


def check(config, topology: str, *, programs: Sequence[str] = ("train", "sample"),
          min_headroom: float = MIN_HEADROOM, config_name: str = "config") -> Report:
  """Compiles the config's programs for `topology` and returns the report (nothing runs, nothing is
  allocated: every input is abstract)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana import accelerators, setup as setup_lib  # pylint: disable=g-import-not-at-top
  target = accelerators.target(topology)
  options = accelerators.compiler_options(target.platform)
  try:
    setup = setup_lib.create(config, target.devices)
  except ValueError as e:
    if not str(e).startswith("config.mesh"):
      raise
    raise SystemExit(f"vbanana.aot: {str(e).splitlines()[0]} on {target.name} (each mesh axis must be a "
                     "product of the slice's own axes)") from None
  family, model_cfg, state = setup.family, setup.model_cfg, setup.abstract_state
  rows = []

  # One program per aspect-ratio bucket (a model without buckets has one shape, the square). FLOPs are
  # counted at the token budget, which every bucket stays within.
  shapes = model_cfg.shapes
  where = (lambda shape: f" {shape[0]}x{shape[1]}") if len(shapes) > 1 else (lambda shape: "")
  if "train" in programs:
    batch_size = setup.global_batch
    for shape in shapes:
      batch = setup.abstract_batch(batch_size, shape)
      rows.append(_compile("train step" + where(shape),
                           lambda batch=batch: setup.train_step.lower(state, batch, setup.frozen),
                           family.train_flops_per_example(model_cfg) * batch_size,
                           family.hardware_train_flops(model_cfg) * batch_size, options))

  for shape in (shapes if "sample" in programs else ()):
    for name, (steps, method, text_scale, image_scale, batch_size) in _sampler_specs(setup.config):
      fn = setup.sampler(steps=steps, method=method, text_scale=text_scale, image_scale=image_scale)
      batch = setup.abstract_batch(batch_size, shape)
      inputs = {k: batch[k] for k in ("text", "inputs", "input_mask")}
      noise = jax.ShapeDtypeStruct((batch_size, *family.denoised_shape(model_cfg, shape)), "float32",
                                   sharding=setup.batch_sharding)
      passes = 1 if text_scale == image_scale == 1.0 else (2 if image_scale == 1.0 else 3)
      sample_flops = family.sample_flops(model_cfg, steps, method, passes) * batch_size
      lower = lambda fn=fn, inputs=inputs, noise=noise: fn.lower(state["ema_params"], setup.frozen, noise, inputs)
      label = f"sample{where(shape)} ({name}: {steps} {method} steps" + (
          f", guidance {text_scale:g}/{image_scale:g})" if passes > 1 else ")")
      rows.append(_compile(label, lower, sample_flops, sample_flops, options))
  # A family's arrays that live on the devices beside every program (klein's Qwen3 text conditioner).
  resident = getattr(family, "resident_bytes", None)
  resident = resident(model_cfg, setup.mesh, setup.rules) if resident else 0
  for row in rows:
    row.resident_bytes = resident
  return Report(config_name=config_name, target=target, rows=rows, min_headroom=min_headroom, setup=setup)


# ----------------------------------------------------------------------------------------------------------
# The table and the verdict.
# ----------------------------------------------------------------------------------------------------------
COLUMNS = ("program", "args GB", "temps GB", "outputs GB", "total GB/device", "of HBM GB", "headroom",
           "TFLOP/step", "TFLOP/chip", "roofline s/step (est.)", "MFU ceiling (est.)",
           "all-gather", "reduce-scatter", "all-reduce", "all-to-all", "permute", "compile s")


def _collective_cell(c: dict | None) -> str:
  if not c or not c["count"]:
    return "0"
  return f"{int(c['count'])} x / {c['bytes'] / 1e9:.2f} GB"


def table(report: Report) -> str:
  gb = lambda b: f"{b / 1e9:.2f}"
  n = len(report.target.devices)
  resident = any(r.resident_bytes for r in report.rows)  # a column only for families that keep arrays there
  columns = COLUMNS[:4] + ("resident GB",) + COLUMNS[4:] if resident else COLUMNS
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in report.rows:
    if r.error:
      cells = [r.program, "-", gb(r.temp_bytes) if r.temp_bytes else "-", "-", "refused",
               gb(report.target.chip.hbm_bytes), "-", f"{r.flops / 1e12:.1f}", f"{r.flops / n / 1e12:.2f}",
               "-", "-", "-", "-", "-", "-", "-", f"{r.compile_seconds:.0f}"]
    else:
      c = r.collectives
      cells = [r.program, gb(r.argument_bytes), gb(r.temp_bytes), gb(r.output_bytes), gb(r.total_bytes),
               gb(report.target.chip.hbm_bytes), f"{100 * report.headroom(r):.0f} %", f"{r.flops / 1e12:.1f}",
               f"{r.flops / n / 1e12:.2f}", f"{report.roofline_seconds(r):.3f}",
               f"{100 * report.mfu_estimate(r):.0f} %", _collective_cell(c.get("all-gather")),
               _collective_cell(c.get("reduce-scatter")), _collective_cell(c.get("all-reduce")),
               _collective_cell(c.get("all-to-all")), _collective_cell(c.get("collective-permute")),
               f"{r.compile_seconds:.0f}"]
    if resident:
      cells.insert(4, gb(r.resident_bytes))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


KNOBS = ("model.dtype=bfloat16", "model.remat=full (or save_dots_no_batch)", "a smaller data.global_batch",
         "a larger model.patch_size (fewer tokens)", "a larger mesh.fsdp / mesh.tensor")


def verdict(report: Report) -> str:
  """One line: FIT, or DOES NOT FIT naming config, topology, the shortfall and the knobs."""
  where = f"{report.config_name} on {report.target.name} ({len(report.target.devices)} x {report.target.chip.name})"
  if report.fit:
    worst = min(report.headroom(r) for r in report.rows)
    return f"FIT: {where}: every program fits, least headroom {100 * worst:.0f} % (required {100 * report.min_headroom:.0f} %)"
  hbm = report.target.chip.hbm_bytes
  allowed = (1 - report.min_headroom) * hbm
  bad = [r for r in report.rows if not report.fits(r)]
  worst = max(bad, key=lambda r: r.total_bytes)
  need = worst.total_bytes if not worst.error else max(worst.temp_bytes, hbm)
  short = f"needs {need / 1e9:.1f} GB per device" + (" (refused by the compiler)" if worst.error else "")
  return (f"DOES NOT FIT: {where}: {worst.program} {short}, {max(need - allowed, 0) / 1e9:.1f} GB over the "
          f"{allowed / 1e9:.1f} GB allowed ({hbm / 1e9:.1f} GB HBM less {100 * report.min_headroom:.0f} % "
          f"headroom); try {', '.join(KNOBS)}")


def describe(report: Report) -> str:
  from vbanana import accelerators  # pylint: disable=g-import-not-at-top
  setup, t = report.setup, report.target
  note = accelerators.memory_note(t.platform)
  return (f"{report.config_name} on {t.name}: {len(t.devices)} x {t.chip.name} ({t.num_hosts} hosts; "
          f"{t.chip.hbm_bytes / 1e9:.1f} GB HBM, {t.chip.bf16_flops / 1e12:.0f} TFLOP/s bf16 per chip; "
          f"{t.chip.source}); mesh {dict(setup.config.mesh)}; model {setup.config.model.size}: "
          f"{setup.family.describe(setup.model_cfg)}, attention {setup.attention}; global batch "
          f"{setup.global_batch}" + (f"; {note}" if note else ""))


# ----------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------
def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f"vbanana.aot: unexpected arguments {argv[1:]}")
  if flags.FLAGS.model:  # a pretrained model's forward at its reference size, no config (vbanana.flux2.aot)
    from vbanana.flux2 import aot as flux2_aot  # pylint: disable=g-import-not-at-top
    return flux2_aot.main(flags.FLAGS.model, flags.FLAGS.topology, min_headroom=flags.FLAGS.min_headroom)
  if not flags.FLAGS["config"].present:
    raise SystemExit("vbanana.aot: --config=configs/NAME.py (or --model=klein-4b) is required")
  from vbanana import cli  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  report = check(config, flags.FLAGS.topology, programs=flags.FLAGS.programs,
                 min_headroom=flags.FLAGS.min_headroom, config_name=cli.config_spec())
  print(describe(report))
  print(table(report))
  print(verdict(report), flush=True)
  return 0 if report.fit else 1


def define_flags(fv=None) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vbanana import cli  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS if fv is None else fv
  cli.define_config_flag(flag_values=fv)
  flags.DEFINE_string("topology", None, "TPU topology (v5p:4x4x2, v6e:8x8, ...), slice name (v5p-64), or GPUs "
                      "of one host (h100:8, h200:1).", required=True, flag_values=fv)
  flags.DEFINE_list("programs", ["train", "sample"], "Programs to compile: train, sample.", flag_values=fv)
  flags.DEFINE_float("min_headroom", MIN_HEADROOM, "Share of the chip's memory that must stay free.", flag_values=fv)
  flags.DEFINE_string("model", None, "Instead of --config: compile a pretrained model's forward at its reference "
                      "size (klein-4b: FLUX.2 [klein] 4B at 1024x1024, vbanana.flux2.aot).", flag_values=fv)


def run():
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host runs on its CPU; the target is abstract
  from absl import app  # pylint: disable=g-import-not-at-top
  from vbanana import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
