"""What each accelerator chip has (HBM, bf16 peak, bandwidths) and how to get its abstract devices without one.

`target(name)` turns a topology name into the devices of that slice, abstract (nothing needs to be
attached): a TPU slice through libtpu's compiler (`jax.experimental.topologies`), so `jit(...).lower(...)
.compile()` runs the real TPU compiler on any machine; one host of NVIDIA GPUs ('h100:8', 'h200:1') through
the CUDA plugin's compiler (XLA:GPU, `pip install -e ".[gpu]"`) and an XLA target config of the GPU shipped in
vbanana/gpu_targets/. The chip table below is the only place these numbers live; each row names its public
source.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """One chip (one JAX device): what bounds a step on it."""
  name: str
  hbm_bytes: int          # HBM per chip
  bf16_flops: float       # dense bf16 peak FLOP/s per chip
  hbm_bandwidth: float    # bytes/s per chip
  interconnect: float     # bytes/s per chip, one direction (ICI for TPUs)
  source: str


# Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e), "key specifications" per
# chip: HBM capacity, peak bf16 compute, HBM bandwidth and the bidirectional inter-chip interconnect (ICI)
# bandwidth; the table holds ICI in one direction (half the bidirectional figure), bytes/s throughout.
# (v4's page gives ICI as 2400 Gbit/s = 300 GB/s.)
CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1200e9, 300e9 / 2, "cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", 16 * 10**9, 197e12, 819e9, 400e9 / 2, "cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 2765e9, 1200e9 / 2, "cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", 32 * 10**9, 918e12, 1638e9, 800e9 / 2, "cloud.google.com/tpu/docs/v6e"),
}

# NVIDIA's datasheets (nvidia.com/en-us/data-center/h100/ and /h200/, SXM columns): dense bf16 Tensor Core peak
# 989 TFLOP/s for both (the datasheets' 1,979 is with 2:4 sparsity), HBM bandwidth 3.35 and 4.8 TB/s, NVLink 900 GB/s
# bidirectional per GPU (450 GB/s one way, every pair of a host's 8 GPUs through NVSwitch). Memory: the bytes the
# device reports, as in its XLA target config (vbanana/gpu_targets/; the datasheets' 80 GB and 141 GB).
GPU_CHIPS: dict[str, Chip] = {
    "h100": Chip("NVIDIA H100 SXM 80GB", 84929347584, 989e12, 3.35e12, 900e9 / 2,
                 "nvidia.com/en-us/data-center/h100 (datasheet, SXM)"),
    "h200": Chip("NVIDIA H200 SXM 141GB", 150754820096, 989e12, 4.8e12, 900e9 / 2,
                 "nvidia.com/en-us/data-center/h200 (datasheet, SXM)"),
}
CHIPS.update(GPU_CHIPS)
# The XLA GPU target config of each GPU chip (text protos, package data).
GPU_TARGET_FILES = {"h100": "h100_80gb.txtpb", "h200": "h200_141gb.txtpb"}
GPUS_PER_HOST = 8  # one host: the mesh's devices share NVLink; hosts beyond one are not modelled here

# Slice names as Cloud TPU sells them -> the topology names libtpu knows. (v4 and v5p names count
# TensorCores, two per chip; v5e and v6e names count chips.)
SLICES = {
    "v4-8": "v4:2x2x1", "v4-16": "v4:2x2x2", "v4-32": "v4:2x2x4",
    "v5e-4": "v5e:2x2", "v5e-8": "v5e:2x4", "v5e-16": "v5e:4x4", "v5e-64": "v5e:8x8", "v5e-256": "v5e:16x16",
    "v5p-8": "v5p:2x2x1", "v5p-16": "v5p:2x2x2", "v5p-32": "v5p:2x2x4", "v5p-64": "v5p:2x4x4",
    "v5p-128": "v5p:4x4x4", "v5p-256": "v5p:4x4x8",
    "v6e-1": "v6e:1x1", "v6e-4": "v6e:2x2", "v6e-8": "v6e:2x4", "v6e-16": "v6e:4x4", "v6e-64": "v6e:8x8", "v6e-256": "v6e:16x16",
}


@dataclasses.dataclass(frozen=True)
class Target:
  """A named slice: its abstract devices and its chip."""
  name: str
  platform: str
  devices: Sequence
  chip: Chip

  @property
  def num_hosts(self) -> int:
    return len({d.process_index for d in self.devices})


def canonical(name: str) -> str:
  """'v5p-64' -> 'v5p:4x4x2'; a topology name passes through."""
  return SLICES.get(name.lower(), name)


def _drop_cpu_only_xla_flags():
  """Removes the host CPU backend's own flags (`--xla_cpu_*`) from XLA_FLAGS before libtpu loads.

  libtpu carries an XLA of its own that reads XLA_FLAGS too, and it exits the process on a flag it does not
  know (`Unknown flag in XLA_FLAGS: --xla_cpu_use_fusion_emitters=false`, a flag of jaxlib's newer XLA:CPU).
  Flags of the CPU backend mean nothing to a TPU compiler. XLA reads XLA_FLAGS once per process, so a CPU
  backend already started keeps them; processes started later from this one no longer get them.
  """
  flags = os.environ.get("XLA_FLAGS", "").split()
  kept = [f for f in flags if not f.startswith("--xla_cpu_")]
  if len(kept) != len(flags):
    os.environ["XLA_FLAGS"] = " ".join(kept)


def _tpu_target(name: str) -> Target:
  topology = canonical(name)
  match = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", topology)
  if not match:
    raise ValueError(f"--topology={name!r}: expected a TPU topology such as v5p:4x4x2 or v6e:8x8, a slice "
                     f"name ({', '.join(sorted(SLICES))}), or GPUs of one host (h100:8, h200:1)")
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise SystemExit("vbanana.aot: compiling for a TPU needs libtpu (the TPU compiler, no TPU needed): "
                     "pip install libtpu") from None
  # libtpu locks /tmp/libtpu_lockfile so that one process owns the chips; an abstract topology owns none,
  # so several compiles (tests, a sweep of configs) may load it at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  _drop_cpu_only_xla_flags()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
  return Target(name=topology, platform="tpu", devices=list(devices), chip=CHIPS[match.group(1)])


GPU_NAME = re.compile(r"(h100|h200)[:-](\d+)")


def gpu_target_config(chip: str) -> str:
  """The XLA GPU target config (text proto) shipped for `chip` ('h100', 'h200')."""
  from importlib import resources  # pylint: disable=g-import-not-at-top
  return resources.files("vbanana").joinpath("gpu_targets", GPU_TARGET_FILES[chip]).read_text()


def parse_gpu(name: str) -> tuple[str, int] | None:
  """'h100:8' (or 'h100-8') -> ('h100', 8); None when `name` names no GPU; a bad count raises."""
  match = GPU_NAME.fullmatch(name.lower())
  if not match:
    return None
  count = int(match.group(2))
  if not 1 <= count <= GPUS_PER_HOST:
    raise ValueError(f"--topology={name!r}: expected 1 to {GPUS_PER_HOST} GPUs of one host "
                     f"(e.g. {match.group(1)}:8), got {count}")
  return match.group(1), count


MISSING_CUDA = ('vbanana.aot: compiling for an NVIDIA GPU needs the CUDA plugin (XLA:GPU\'s compiler, no GPU '
                'needed, about 3 GB): pip install -e ".[gpu]" (or pip install "jax[cuda12]")')


def _installed(module: str) -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  try:
    return importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:  # the parent package (jax_plugins) is absent
    return False


def _gpu_target(chip: str, count: int) -> Target:
  if not any(_installed(f"jax_plugins.xla_cuda{v}") for v in (12, 13)):
    raise SystemExit(MISSING_CUDA)
  # No GPU is attached or wanted: the plugin only compiles. Hiding the GPUs keeps it from initialising a
  # device client where there is one, and the host's own work (tracing, eval_shape) stays on the CPU.
  os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  devices = topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(chip),
                                         topology=f"1x1x{count}").devices
  return Target(name=f"{chip}:{count}", platform="gpu", devices=list(devices), chip=GPU_CHIPS[chip])


# XLA:GPU options for every GPU program, on the device as in the deviceless check: cuBLAS for the matmuls,
# not Triton GEMM fusions. With no GPU to autotune on, jax 0.10's XLA:GPU fails to tile some of the train step's
# Triton dot fusions ("Couldn't find output tile sizes that satisfy hlo: ... dot"); cuBLAS needs no tiling at
# compile time (NVIDIA's JAX-Toolbox images set this flag by default for a while: "use cuBLAS instead of
# Triton GeMM kernels"). On the device: XLA_FLAGS=--xla_gpu_enable_triton_gemm=false (GPU_XLA_FLAGS), so it
# compiles the programs checked here.
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False}
GPU_XLA_FLAGS = "--xla_gpu_enable_triton_gemm=false"


def compiler_options(platform: str) -> dict | None:
  """Options for `Lowered.compile` of a program for `platform` (None: the compiler's defaults)."""
  return dict(GPU_COMPILER_OPTIONS) if platform == "gpu" else None


def memory_note(platform: str) -> str:
  """What to set so that a run may use the memory the fit is judged against ('' where nothing)."""
  if platform != "gpu":
    return ""
  return ("on the GPU run with XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 (JAX takes 75 % of the GPU's memory "
          f"by default; the fit leaves 15 % free) and XLA_FLAGS={GPU_XLA_FLAGS}, as checked here")


def target(name: str) -> Target:
  """The abstract devices and chip of a topology name: a TPU slice ('v5p:4x4x2', 'v5p-64') or one host of
  GPUs ('h100:8', 'h200:1')."""
  gpu = parse_gpu(name)
  return _gpu_target(*gpu) if gpu else _tpu_target(name)
