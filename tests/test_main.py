"""The command line and configs: argument parsing, overrides, clear errors that change nothing on disk."""
import os
import pathlib
import subprocess
import sys

import pytest

from vbanana import config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.py"))


def run_main(*args, timeout=120):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  return subprocess.run([sys.executable, "-m", "vbanana.main", *args], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env)


def test_parse_arg_types_and_unknown_keys():
  a = config_lib.parse_arg("steps=5,lr=1,name=x,flag", steps=1, lr=0.1, name="y", flag=False)
  assert (a.steps, a.lr, a.name, a.flag) == (5, 1.0, "x", True)
  assert isinstance(a.lr, float)
  with pytest.raises(ValueError, match="Unknown config argument 'stpes'.*known arguments: lr, steps"):
    config_lib.parse_arg("stpes=3", steps=1, lr=0.1)
  with pytest.raises(ValueError, match="'steps' expects int"):
    config_lib.parse_arg("steps=many", steps=1)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_loads_and_documents_its_command(path):
  config = config_lib.load_config(str(path))
  for section in ("model", "mesh", "sharding_rules", "flow", "optim", "data", "train", "checkpoint", "evals"):
    assert section in config, section
  module = config_lib.load_module(str(path))
  assert f"configs/{path.name}" in module.__doc__  # the docstring holds the exact command
  if hasattr(module, "sweep"):
    for overrides in module.sweep():
      config_lib.apply_overrides(config, {k: v for k, v in overrides.items() if k.split(".")[0] != "optim"})


def test_apply_overrides_names_unknown_keys():
  config = config_lib.load_config(str(ROOT / "configs" / "quickstart.py") + ":steps=7")
  assert config.train.steps == 7
  new = config_lib.apply_overrides(config, {"train.log_every": 3})
  assert new.train.log_every == 3 and config.train.log_every != 3
  with pytest.raises(KeyError, match="'trian' is not in the config"):
    config_lib.apply_overrides(config, {"trian.steps": 1})


def test_write_config_keeps_earlier_versions(tmp_path):
  config = config_lib.load_config(str(ROOT / "configs" / "quickstart.py"))
  config_lib.write_config(config, str(tmp_path))
  config_lib.write_config(config, str(tmp_path))  # same config: nothing new
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
  changed = config_lib.apply_overrides(config, {"train.steps": 11})
  config_lib.write_config(changed, str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.1.json", "config.json"]
  assert config_lib.read_config(str(tmp_path)).train.steps == 11


@pytest.mark.slow
def test_cli_unknown_keys_fail_clearly_and_write_nothing(tmp_path):
  workdir = tmp_path / "run"
  r = run_main("--config=configs/quickstart.py", f"--workdir={workdir}", "--config.train.bogus=3")
  assert r.returncode != 0
  assert "Unknown config key 'train.bogus'" in r.stderr and "config.train" in r.stderr
  r = run_main("--config=configs/quickstart.py:stpes=3", f"--workdir={workdir}")
  assert r.returncode != 0 and "Unknown config argument 'stpes'" in r.stderr
  r = run_main("--config=configs/nope.py", f"--workdir={workdir}")
  assert r.returncode != 0 and "nope.py" in r.stderr
  assert not workdir.exists()


@pytest.mark.slow
def test_sweep_prints_one_command_per_entry(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  r = subprocess.run([sys.executable, "-m", "vbanana.sweep", "--config=configs/quickstart.py:steps=5",
                      f"--workdir_root={tmp_path}", "--print"], capture_output=True, text=True, cwd=ROOT,
                     env=env, timeout=120)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  module = config_lib.load_module(str(ROOT / "configs" / "quickstart.py"))
  assert len(lines) == len(module.sweep())
  for line, overrides in zip(lines, module.sweep()):
    assert "-m vbanana.main --config=configs/quickstart.py:steps=5" in line
    for k, v in overrides.items():
      assert f"--config.{k}={v}" in line
    assert f"--workdir={tmp_path}/" in line
