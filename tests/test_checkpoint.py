"""Checkpoints on a generic sharded train-state pytree: any-mesh restore, fallback, mismatch, data state."""
import json
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vbanana import checkpoint

AXES = ("data", "fsdp", "tensor")


def mesh_of(shape, n=None):
  devices = np.array(jax.devices()[: n or int(np.prod(shape))]).reshape(shape)
  return Mesh(devices, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


SPECS = {"w1": P("fsdp", "tensor"), "w2": P("tensor", "fsdp"), "b": P(None)}


def make_state(mesh, seed=0):
  """A train-state-like pytree: params, opt_state, ema_params, step, rng, skipped, sharded on `mesh`."""
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(size=(16, 8)).astype(np.float32),
            "w2": rng.normal(size=(8, 16)).astype(np.float32),
            "b": rng.normal(size=(16,)).astype(np.float32)}
  put = lambda tree: {k: jax.device_put(v, NamedSharding(mesh, SPECS[k])) for k, v in tree.items()}
  repl = NamedSharding(mesh, P())
  return {
      "params": put(params),
      "opt_state": {"mu": put({k: v * 0.5 for k, v in params.items()}), "count": jax.device_put(np.int32(7), repl)},
      "ema_params": put({k: v + 1 for k, v in params.items()}),
      "step": jax.device_put(np.int32(seed), repl),
      "rng": jax.device_put(np.array([0, seed], np.uint32), repl),
      "skipped": jax.device_put(np.int32(0), repl),
  }


def abstract_on(state, mesh):
  def one(path, x):
    name = path[-1].key if hasattr(path[-1], "key") else None
    spec = SPECS.get(name, P()) if x.ndim else P()
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, spec))
  return jax.tree_util.tree_map_with_path(one, state)


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def data_iter(seed=0):
  ds = grain.MapDataset.range(1000).shuffle(seed=seed).to_iter_dataset().batch(4)
  return iter(ds)


def test_restore_onto_any_mesh(tmp_path):
  state = make_state(mesh_of((2, 2, 2)), seed=3)
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  ckpt.save(3, state)
  ckpt.close()
  for shape, n in [((8, 1, 1), 8), ((1, 8, 1), 8), ((2, 2, 1), 4), ((1, 1, 1), 1)]:
    mesh = mesh_of(shape, n)
    restored, step = checkpoint.Checkpointer(str(tmp_path)).restore(abstract_on(state, mesh))
    assert step == 3
    assert_trees_equal(restored, state)
    w1 = restored["params"]["w1"]
    assert w1.sharding.mesh.shape == mesh.shape, shape
    assert len(w1.sharding.device_set) == n


def test_data_iterator_resumes_with_state(tmp_path):
  mesh = mesh_of((8, 1, 1))
  it = data_iter()
  for _ in range(5):
    next(it)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(5, make_state(mesh, 5), it)
  ckpt.close()
  expected = [next(it) for _ in range(3)]

  fresh = data_iter()
  _, step = checkpoint.Checkpointer(str(tmp_path)).restore(abstract_on(make_state(mesh), mesh), fresh)
  assert step == 5
  for want in expected:
    np.testing.assert_array_equal(next(fresh), want)


def test_keep_last_n_plus_every_mth(tmp_path):
  mesh = mesh_of((8, 1, 1))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, keep_every=4, async_save=False)
  for step in range(1, 11):
    ckpt.save(step, make_state(mesh, step))
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [4, 8, 9, 10]


def test_corrupt_latest_falls_back_and_keeps_files(tmp_path, caplog):
  mesh = mesh_of((2, 2, 2))
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=5)
  ckpt.save(1, make_state(mesh, 1))
  ckpt.save(2, make_state(mesh, 2))
  ckpt.close()
  # Damage every data file of the latest checkpoint's state.
  state_dir = tmp_path / "checkpoints" / "2" / "state"
  damaged = 0
  for root, _, files in os.walk(state_dir):
    for f in files:
      if f.startswith("_") or f.endswith(".json"):
        continue
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"garbage")
      damaged += 1
  assert damaged > 0
  with caplog.at_level("WARNING"):
    restored, step = checkpoint.Checkpointer(str(tmp_path)).restore(abstract_on(make_state(mesh), mesh))
  assert step == 1
  assert_trees_equal(restored, make_state(mesh, 1))
  assert "failed to restore" in caplog.text and "falling back" in caplog.text
  moved = list((tmp_path / "checkpoints" / "corrupt").iterdir())
  assert [m.name.split(".")[0] for m in moved] == ["2"]  # kept, not deleted
  # Training can go on and save step 2 again.
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  assert ckpt.save(2, make_state(mesh, 2))
  ckpt.close()
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [1, 2]


def test_other_models_workdir_is_refused(tmp_path):
  checkpoint.check_model_config(str(tmp_path), {"width": 64, "depth": 2})
  checkpoint.check_model_config(str(tmp_path), {"width": 64, "depth": 2})  # same model: fine
  recorded = (tmp_path / "checkpoints" / "model_config.json").read_text()
  with pytest.raises(checkpoint.CheckpointMismatchError) as e:
    checkpoint.check_model_config(str(tmp_path), {"width": 128, "depth": 2})
  msg = str(e.value)
  assert str(tmp_path) in msg and "model.width" in msg and "64" in msg and "128" in msg
  assert "depth" not in msg.split("\n", 1)[1].split("Use")[0]
  assert (tmp_path / "checkpoints" / "model_config.json").read_text() == recorded
  # How the step runs (scan or unrolled, remat, activation dtype) does not change the parameters: resumable.
  checkpoint.check_model_config(str(tmp_path), {"width": 64, "depth": 2, "scan": False, "remat": "full"})


def test_load_params_only(tmp_path):
  mesh = mesh_of((2, 2, 2))
  state = make_state(mesh, 4)
  ckpt = checkpoint.Checkpointer(str(tmp_path))
  ckpt.save(4, state)
  ckpt.close()
  target = abstract_on(state, mesh_of((1, 8, 1)))["params"]
  for path in [tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "4"]:
    ema = checkpoint.load_params(str(path), target)
    assert_trees_equal(ema, state["ema_params"])
  params = checkpoint.load_params(str(tmp_path), target, key="params")
  assert_trees_equal(params, state["params"])
  with pytest.raises(FileNotFoundError, match="init_from"):
    checkpoint.load_params(str(tmp_path / "nothing"), target)


def test_a_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  """`--workdir=runs/x` (the README's form): Orbax refuses relative paths, so the workdir is made absolute."""
  monkeypatch.chdir(tmp_path)
  mesh = mesh_of((2, 2, 2))
  ckpt = checkpoint.Checkpointer("runs/relative", async_save=True)
  assert ckpt.save(3, make_state(mesh, 3), force=True)
  ckpt.close()
  assert (tmp_path / "runs" / "relative" / "checkpoints" / "3").is_dir()
  restored, step = checkpoint.Checkpointer("runs/relative").restore(abstract_on(make_state(mesh), mesh))
  assert step == 3
  assert_trees_equal(restored, make_state(mesh, 3))
