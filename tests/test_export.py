"""Export: EMA params + model config -> one safetensors file that loads without a mesh, and back into training."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding

from vbanana import checkpoint
from vbanana import export

from test_checkpoint import SPECS, abstract_on, assert_trees_equal, make_state, mesh_of

pytestmark = pytest.mark.slow  # a saved run and the export command


@pytest.fixture
def saved_run(tmp_path):
  """A workdir with a recorded model config and two checkpoints written on a (2, 2, 2) mesh."""
  mesh = mesh_of((2, 2, 2))
  checkpoint.check_model_config(str(tmp_path), {"size": "toy", "width": 16})
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(1, make_state(mesh, 1))
  ckpt.save(2, make_state(mesh, 2))
  ckpt.close()
  return tmp_path, make_state(mesh, 2)


def test_export_holds_ema_params_and_config(saved_run, tmp_path):
  workdir, state = saved_run
  out = str(tmp_path / "out" / "model.safetensors")
  export.export_workdir(str(workdir), out)
  cfg, flat = export.read(out)
  assert cfg == {"size": "toy", "width": 16}
  assert set(flat) == {"w1", "w2", "b"}
  for k, v in flat.items():
    assert isinstance(v, np.ndarray)  # host arrays: no mesh, no devices involved
    np.testing.assert_array_equal(v, np.asarray(state["ema_params"][k]))
  # The file is plain safetensors: no pickle anywhere.
  assert b"pickle" not in open(out, "rb").read()[:4096]


def test_export_cli_and_init_from_file(saved_run, tmp_path):
  workdir, state = saved_run
  out = tmp_path / "cli.safetensors"
  r = subprocess.run([sys.executable, "-m", "vbanana.export", f"--workdir={workdir}", f"--out={out}",
                      "--step=1"], capture_output=True, text=True, timeout=120,
                     env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": "."})
  assert r.returncode == 0, r.stderr[-2000:]
  _, flat = export.read(str(out))
  np.testing.assert_array_equal(flat["w1"], np.asarray(make_state(mesh_of((1, 1, 1), 1), 1)["ema_params"]["w1"]))
  # init_from=<exported file> places the params on the training mesh's shardings.
  mesh = mesh_of((1, 8, 1))
  target = abstract_on(state, mesh)["params"]
  params = export.load_params(str(out), target)
  assert_trees_equal(params, make_state(mesh, 1)["ema_params"])
  assert params["w1"].sharding == NamedSharding(mesh, SPECS["w1"])
  # The same entry point takes a workdir (delegated to vbanana.checkpoint); checkpoint itself takes no files.
  assert_trees_equal(export.load_params(str(workdir), target), make_state(mesh, 2)["ema_params"])
  with pytest.raises(ValueError, match="export.load_params"):
    checkpoint.load_params(str(out), target)


def test_export_records_what_the_network_predicts(saved_run, tmp_path):
  """The run's config.flow.prediction (its config.json) rides in the file's metadata; 'v' when unset."""
  workdir, _ = saved_run
  out = str(tmp_path / "v.safetensors")
  export.export_workdir(str(workdir), out)  # no config.json: the default
  assert export.read_prediction(out) == "v"
  (workdir / "config.json").write_text(json.dumps({"flow": {"prediction": "x"}, "seed": 0}))
  out = str(tmp_path / "x.safetensors")
  export.export_workdir(str(workdir), out)
  assert export.read_prediction(out) == "x"
  cfg, _ = export.read(out)
  assert cfg == {"size": "toy", "width": 16}  # the model config is unchanged by it
  (workdir / "config.json").write_text(json.dumps({"flow": {"prediction": "eps"}}))
  with pytest.raises(ValueError, match=r"config.json: flow.prediction='eps'; expected 'v'"):
    export.export_workdir(str(workdir), out)


def test_checkpoint_does_not_import_export():
  """export builds on checkpoint, never the other way round (no import cycle)."""
  import ast
  import pathlib
  tree = ast.parse(pathlib.Path(checkpoint.__file__).read_text())
  names = [a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
           for a in node.names] + [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
  assert not [n for n in names if n.split(".")[-1] == "export"], names


def test_export_refuses_mismatch_and_foreign_files(saved_run, tmp_path):
  workdir, state = saved_run
  out = str(tmp_path / "m.safetensors")
  export.export_workdir(str(workdir), out)
  wrong = {"w1": jax.ShapeDtypeStruct((4, 4), np.float32), "w2": jax.ShapeDtypeStruct((8, 16), np.float32),
           "b": jax.ShapeDtypeStruct((16,), np.float32)}
  with pytest.raises(ValueError, match="w1 has shape"):
    export.load_params_onto(out, wrong)
  with pytest.raises(ValueError, match="missing"):
    export.load_params_onto(out, {"other": jax.ShapeDtypeStruct((1,), np.float32)})
  from safetensors.numpy import save_file
  foreign = str(tmp_path / "foreign.safetensors")
  save_file({"x": np.zeros(2, np.float32)}, foreign)
  with pytest.raises(ValueError, match="not a vbanana export"):
    export.read(foreign)
  with pytest.raises(FileNotFoundError, match="no vbanana checkpoints"):
    export.export_workdir(str(tmp_path / "empty"), out)
