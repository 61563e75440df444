"""Sharding: mesh construction and errors, the rules table, and the same numbers on 1 and 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vbanana import config_lib
from vbanana import model as model_lib
from vbanana import parallel
from vbanana import setup as setup_lib

MODEL = dict(size="tiny", patch_size=4, width=32, depth=2, num_heads=2, text_width=32, text_heads=2, text_depth=1)
# Adam's first update is lr * g / (|g| + eps): for gradients near eps (the adaLN modulation biases get
# ~1e-9 here) it multiplies float rounding by 1/eps. eps = 1e-6 keeps the update a smooth function of the
# gradient, so the 1-vs-8-device comparison tests the sharding rather than that ill-conditioning.
OPTIM = dict(lr=1e-3, schedule="constant", warmup_steps=0, eps=1e-6)
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]


def tiny_config(mesh_shape, rules=()):
  c = config_lib.base_config()
  c.model.update(MODEL)
  c.data.update(dict(resolution=8, text_length=8, max_inputs=1, global_batch=8))
  c.optim.update(OPTIM)
  c.flow.update(dict(text_dropout=0.1))
  c.mesh = dict(zip(parallel.MESH_AXES, mesh_shape))
  c.sharding_rules = rules
  return c


CFG = config_lib.model_config(tiny_config((1, 1, 1)))


# ----------------------------------------------------------------------------------------------------------
# Mesh and rules.
# ----------------------------------------------------------------------------------------------------------
def test_mesh_shapes_and_rest():
  assert jax.device_count() == 8
  mesh = parallel.make_mesh(dict(data=-1, fsdp=2, tensor=2))
  assert dict(mesh.shape) == dict(data=2, fsdp=2, tensor=2)
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert dict(parallel.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]).shape)["data"] == 1


@pytest.mark.parametrize("mesh_cfg, words", [
    (dict(data=3, fsdp=1, tensor=1), ["config.mesh", "data", "3", "8 devices"]),
    (dict(data=-1, fsdp=3, tensor=1), ["config.mesh", "fsdp", "3", "8 devices"]),
    (dict(data=-1, fsdp=-1, tensor=1), ["config.mesh", "-1"]),
    (dict(data=2, fsdp=2, pipeline=2), ["config.mesh", "pipeline"]),
])
def test_mesh_that_does_not_fit_fails_naming_it(mesh_cfg, words):
  with pytest.raises(ValueError) as e:
    parallel.make_mesh(mesh_cfg)
  for w in words:
    assert w in str(e.value), str(e.value)


def test_rules_table():
  assert parallel.logical_to_spec(("layers", "embed", "mlp")) == P(None, "fsdp", "tensor")
  assert parallel.logical_to_spec(("act_batch", "act_seq", "act_embed")) == P(("data", "fsdp"), None, None)
  rules = (("act_batch", "data"), ("embed", None), ("mlp", ("fsdp", "tensor")))
  assert parallel.logical_to_spec(("embed", "mlp"), rules) == P(None, ("fsdp", "tensor"))
  # A mesh axis is used once per array: the second dim asking for it gets nothing.
  assert parallel.logical_to_spec(("embed", "embed")) == P("fsdp", None)
  with pytest.raises(ValueError, match="'batchh'"):
    parallel.resolve_rules((("batchh", "data"),))
  with pytest.raises(ValueError, match="'model'"):
    parallel.resolve_rules((("embed", "model"),))
  # Dims a mesh axis does not divide stay whole.
  mesh = parallel.make_mesh(dict(data=1, fsdp=8, tensor=1))
  assert parallel.named_sharding(mesh, ("embed", "mlp"), shape=(12, 16)).spec == P(None, "tensor")  # tensor=1


def test_shard_batch():
  mesh = parallel.make_mesh(dict(data=2, fsdp=2, tensor=2))
  batch = parallel.shard_batch(dict(task=np.arange(8, dtype=np.int32), text=np.ones((8, 3), np.int32)), mesh)
  assert batch["text"].sharding.spec == P(("data", "fsdp"))
  assert len(batch["task"].addressable_shards[0].data) == 2  # 8 examples over data*fsdp = 4 (tensor replicas)
  np.testing.assert_array_equal(np.asarray(batch["task"]), np.arange(8))


# ----------------------------------------------------------------------------------------------------------
# 1 device vs 8 devices: same parameters, same forward, same train step.
# ----------------------------------------------------------------------------------------------------------
def host_batch(b=8, seed=0):
  rng = np.random.default_rng(seed)
  s = CFG.image_size
  return dict(text=model_lib.tokenize([f"task {i}" for i in range(b)], CFG.text_len),
              inputs=rng.integers(0, 256, (b, 1, s, s, 3), dtype=np.uint8),
              input_mask=(np.arange(b) % 2 == 0)[:, None],
              target=rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
              task=(np.arange(b) % 3).astype(np.int32))


def perturbed(params):
  """Init params + noise (zero-initialised gates and readout would make forward and grads trivial)."""
  leaves, tree = jax.tree.flatten(jax.device_get(params))
  rng = np.random.default_rng(0)
  return jax.tree.unflatten(tree, [x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype) for x in leaves])


@functools.lru_cache(maxsize=None)
def run_on(mesh_shape):
  """(init params, forward output, params after one train step, loss) on a mesh of that shape, on host."""
  run = setup_lib.create(tiny_config(mesh_shape), jax.devices()[:int(np.prod(mesh_shape))])
  state = run.init_state()
  init = jax.device_get(state["params"])
  params = jax.device_put(perturbed(init), run.param_shardings)
  batch = run.shard_batch(host_batch())

  @functools.partial(jax.jit, in_shardings=(run.param_shardings, run.batch_sharding))
  def forward(params, batch):
    with parallel.sharding_context(run.mesh, run.rules):
      t = jnp.linspace(0.1, 0.9, batch["task"].shape[0])
      x = batch["target"].astype(jnp.float32) / 127.5 - 1
      return run.model(params)(x, t, batch["text"], batch["inputs"] / 127.5 - 1, batch["input_mask"])

  out = jax.device_get(forward(params, batch))
  state, metrics = run.train_step(dict(state, params=params), batch, run.frozen)
  return init, out, jax.device_get(state["params"]), float(metrics["loss"]), state


def rel_diff(a, b):
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  return max(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape", MESHES)
def test_same_numbers_on_one_and_eight_devices(mesh_shape):
  init1, out1, new1, loss1, _ = run_on((1, 1, 1))
  init8, out8, new8, loss8, state8 = run_on(mesh_shape)
  assert rel_diff(init8, init1) == 0.0  # the same seed gives the same parameters on any mesh
  assert np.abs(out1).max() > 0.1       # a non-trivial output
  assert rel_diff(out8, out1) < 1e-5
  assert abs(loss8 - loss1) < 1e-5 * abs(loss1)
  assert rel_diff(new8, new1) < 1e-5
  assert rel_diff(new1, perturbed(init1)) > 1e-4  # the step did change the parameters
  assert state8["params"]["blocks"]["mlp"]["gate"]["kernel"].sharding.mesh.size == 8


def shard_bytes(tree, device):
  total = 0
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      if shard.device == device:
        total += shard.data.nbytes
  return total


@pytest.mark.slow
def test_fsdp_splits_parameters_and_optimizer_state():
  *_, state = run_on((1, 8, 1))
  device = jax.devices()[0]
  for part in ("params", "opt_state"):
    whole = sum(x.nbytes for x in jax.tree.leaves(state[part]))
    mine = shard_bytes(state[part], device)
    print(f"{part}: {whole} bytes, device 0 holds {mine} ({8 * mine / whole:.2f} / 8)")
    assert whole / 8 <= mine <= 1.25 * whole / 8


@pytest.mark.slow
def test_a_config_that_moves_act_batch_trains(scenes_dir, tmp_path):
  """config.sharding_rules decides the batch's sharding everywhere: the trainer shards each batch with the
  same table as the step's in_shardings (here the batch over fsdp only, replicated over data)."""
  from vbanana import train
  c = config_lib.load_config(f"configs/quickstart.py:steps=2,batch=8,data_dir={scenes_dir}")
  c.mesh = dict(data=2, fsdp=4, tensor=1)
  c.sharding_rules = (("act_batch", "fsdp"),)
  c.data.num_workers = 0
  c.evals = {}
  c.train.update(dict(tensorboard=False, log_every=1, peak_flops_per_device=1e11))
  run = setup_lib.create(c)
  assert run.batch_sharding.spec == P("fsdp")
  assert run.shard_batch(host_batch())["text"].sharding == run.batch_sharding
  state = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert int(state["step"]) == 2
