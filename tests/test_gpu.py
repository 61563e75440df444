"""The GPU path on a CPU machine with no CUDA plugin (as in CI): GPU topology names, the shipped XLA target
configs against the chip table, the one-line refusal without the plugin, and the GPU configs training on
the CPU with only their size arguments. The compiles for GPUs need the plugin (`pip install -e ".[gpu]"`,
3 GB): benchmarks/gpu_check.py --deviceless and `python -m vbanana.aot --topology=h100:8` run them."""
import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from cli_helpers import ROOT
from vbanana import accelerators, config_lib, evaluate


def test_gpu_topology_names_parse_and_bad_counts_are_refused():
  assert accelerators.parse_gpu("h100:8") == ("h100", 8)
  assert accelerators.parse_gpu("H200-1") == ("h200", 1)
  assert accelerators.parse_gpu("v5p:4x4x2") is None and accelerators.parse_gpu("v5p-64") is None
  for bad in ("h100:0", "h100:16"):
    with pytest.raises(ValueError, match=r"--topology='h100:\d+': expected 1 to 8 GPUs of one host"):
      accelerators.parse_gpu(bad)
  with pytest.raises(ValueError, match="or GPUs of one host"):
    accelerators.target("a100:8")  # not a chip the table knows: the TPU parser's message names the GPU form


def _field(text: str, name: str) -> float:
  return float(re.search(rf"^\s*{name}:\s*([\d.]+)", text, re.M).group(1))


@pytest.mark.parametrize("chip", sorted(accelerators.GPU_TARGET_FILES))
def test_gpu_target_configs_ship_as_package_data_and_agree_with_the_chip_table(chip):
  text = accelerators.gpu_target_config(chip)
  table = accelerators.CHIPS[chip]
  assert _field(text, "device_memory_size") == table.hbm_bytes
  assert _field(text, "memory_bandwidth") == pytest.approx(table.hbm_bandwidth, rel=0.01)
  assert _field(text, "core_count") == 132 and "cuda_compute_capability { major: 9 }" in text  # Hopper
  assert "source" in text.lower() or "Sources" in text  # each file names where its numbers come from
  # The wheel carries the files: pyproject's package-data patterns match them.
  patterns = tomllib.load(open(os.path.join(ROOT, "pyproject.toml"), "rb"))["tool"]["setuptools"]["package-data"]
  assert any(fnmatch.fnmatch(f"gpu_targets/{accelerators.GPU_TARGET_FILES[chip]}", p) for p in patterns["vbanana"])


@pytest.mark.slow
def test_gpu_topology_without_the_cuda_plugin_says_in_one_line_what_to_install():
  """The default install has no CUDA plugin (the real situation here and in CI); where one is installed the
  subprocess hides it, so the message is checked either way."""
  hide = "" if importlib.util.find_spec("jax_plugins") is None else "sys.modules['jax_plugins'] = None; "
  code = (f"import sys; {hide}sys.argv = ['aot'] + sys.argv[1:]; from vbanana import aot; aot.run()")
  r = subprocess.run([sys.executable, "-c", code, "--config=configs/pretrain_gpu.py:size=tiny,res=32,patch=4",
                      "--topology=h100:8"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                     env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
  assert r.returncode == 1, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == accelerators.MISSING_CUDA, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert 'pip install -e ".[gpu]"' in accelerators.MISSING_CUDA


def test_gpu_configs_are_sized_per_slice_with_the_gpus_peak():
  for name in ("pretrain_gpu", "instruct_gpu"):
    c = config_lib.load_config(f"configs/{name}.py")
    assert c.train.peak_flops_per_device == accelerators.CHIPS["h100"].bf16_flops
    assert c.model.dtype == "bfloat16" and c.model.param_dtype == "float32"
    assert c.model.get("attention") is None  # by platform: cuDNN on a GPU, the written-out kernel on a CPU
    assert dict(c.mesh) == dict(data=1, fsdp=-1, tensor=1)
    one = config_lib.load_config(f"configs/{name}.py:slice=h200-1")
    assert one.data.global_batch * 8 == c.data.global_batch  # one H200 at the 8-GPU config's per-GPU batch
    with pytest.raises(ValueError, match=r"'slice'='v5p-64': this config is sized for \['h100-8', 'h200-1'\]"):
      config_lib.load_config(f"configs/{name}.py:slice=v5p-64")
    assert config_lib.model_config(c).seq_len() == 568  # XL at 256 px, patch 16: the TPU configs' sequence
    assert {s.name for s in evaluate.parse_specs(c)} == set(c.evals)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pretrain_gpu"])
def test_gpu_config_trains_and_evaluates_on_cpu_with_only_its_size_arguments(name, scenes_dir, tmp_path):
  """The GPU config itself (its fsdp mesh over 8 CPU devices, rules, bf16, x-prediction, mixture,
  evaluators), sized down by its own arguments; attention resolves to the written-out kernel on the CPU.
  (instruct_gpu.py has instruct_tpu.py's mixture and evaluators, which tests/test_tpu.py trains.)"""
  from cli_helpers import losses, run_main
  r = run_main(f"--config=configs/{name}.py:size=tiny,res=32,patch=4,batch=8,steps=2,scenes=64,workers=1,"
               f"data_dir={scenes_dir}", f"--workdir={tmp_path}", "--config.train.log_every=1", timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(losses(tmp_path)) == [1, 2] and all(np.isfinite(list(losses(tmp_path).values())))
  from vbanana import metrics_writer
  final = {k for row in metrics_writer.read_metrics(str(tmp_path)) for k in row}
  for task in config_lib.load_config(f"configs/{name}.py").evals:
    assert any(k.startswith(f"{task}/") for k in final), (task, sorted(final))
