r"""One run's setup, built once from its config: the config -> mesh -> rules -> model -> shardings chain.

    setup = vbanana.setup.create(config)                  # this host's devices
    setup = vbanana.setup.create(config, target.devices)  # abstract TPU / GPU devices (vbanana.aot)
    state = setup.init_state()                            # built sharded: a jitted init with out-shardings
    state, metrics = setup.train_step(state, setup.shard_batch(batch), setup.frozen)
    images = setup.sampler(steps=4)(state["ema_params"], setup.frozen, noise, batch)

Train, evaluation (in training and following a workdir), the recipe, aot, predict, export, the GPU check and
the benchmarks start from `create`; nothing else builds a mesh, resolves rules or derives shardings.

What it holds (a frozen dataclass; everything is computed once, in `create`):
  config          the resolved config: every default filled in (config_lib.resolve), what config.json records
  mesh, rules     the (data, fsdp, tensor) mesh over the devices and the resolved logical-axis table
  family          the model family (vbanana.families) and `model_cfg`, its config as checkpoints record it
  flow_cfg, optim_cfg   flow.FlowConfig and optim.OptimConfig (optim.total_steps set)
  attention       the attention kernel for the devices' platform (written-out on CPU, splash on TPU, cuDNN
                  on GPU for bf16), resolved here and given to the module when it is built
  graphdef, abstract_params, param_shardings, state_shardings, abstract_state, batch_sharding
  frozen          the family's frozen arrays on the mesh (klein: its VAE, the encoding of '', LoRA's base
                  weights as frozen['module']); an argument of every program, never in the train state
  conditioner     the family's host-side text conditioner (klein: Qwen3 behind a prompt cache), or None
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vbanana import config_lib, families, flow, optim, parallel, trees


@dataclasses.dataclass(frozen=True, eq=False)
class Setup:
  config: ml_collections.ConfigDict
  mesh: Mesh
  rules: Mapping[str, Any]
  family: Any
  model_cfg: Any
  flow_cfg: flow.FlowConfig
  optim_cfg: optim.OptimConfig
  attention: str
  graphdef: Any
  abstract_params: Any           # nested dict of ShapeDtypeStructs carrying the parameters' shardings
  param_shardings: Any           # nested dict (the layout of state['params']) of NamedShardings
  state_shardings: Any           # the train state's, leaf by leaf
  abstract_state: Any            # the train state as ShapeDtypeStructs carrying the trainer's shardings
  batch_sharding: NamedSharding  # every batch array: the leading (example) dim over the 'act_batch' axes
  frozen: Any = None             # the family's frozen arrays on the mesh ({} for the DiT)
  conditioner: Any = None        # the family's host-side text conditioner (klein's Qwen3 prompt cache) or None
  _programs: dict = dataclasses.field(default_factory=dict, repr=False)  # jitted programs, built on first use

  # --------------------------------------------------------------------------------------------------------
  # Programs.
  # --------------------------------------------------------------------------------------------------------
  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def init_state(self, seed: int | None = None) -> dict:
    """The train state with every array created directly in its shard (nothing whole on one device)."""
    from vbanana import step  # pylint: disable=g-import-not-at-top
    seed = int(self.config.seed) if seed is None else seed
    init = jax.jit(step.init_fn(self), out_shardings=self.state_shardings)
    with parallel.sharding_context(self.mesh, self.rules):
      return init(step.raw_key(seed))

  @property
  def train_step(self):
    """The jitted `(state, batch, frozen) -> (state, metrics)` (state donated); built once."""
    if "train" not in self._programs:
      from vbanana import step  # pylint: disable=g-import-not-at-top
      self._programs["train"] = step.make_train_step(self)
    return self._programs["train"]

  def sampler(self, *, steps: int, method: str = "euler", text_scale: float = 1.0, image_scale: float = 1.0):
    """The jitted `(params, frozen, noise, batch) -> float images in [-1, 1]` for these settings (one per
    settings, compiled once per image shape); `batch` holds text, inputs, input_mask[, text_embeddings]."""
    key = ("sample", int(steps), method, float(text_scale), float(image_scale))
    if key not in self._programs:
      from vbanana import step  # pylint: disable=g-import-not-at-top
      fn = step.make_sample_fn(self, steps=steps, method=method, text_scale=text_scale, image_scale=image_scale)
      self._programs[key] = _Prepared(fn, self) if self.family.host_conditioned else fn
    return self._programs[key]

  def shard_batch(self, local_batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """This process's numpy rows -> global arrays split like the jitted programs expect (the config's
    'act_batch' rule: the same sharding as the programs' in_shardings). A family whose text conditioner
    runs on the host (klein) adds what the programs read (the instructions' embeddings) first."""
    if self.family.host_conditioned:
      local_batch = self.family.prepare_batch(self.model_cfg, self.conditioner, local_batch)
    return parallel.shard_batch(local_batch, self.mesh, self.rules)

  def abstract_batch(self, batch_size: int, shape: tuple[int, int] | None = None) -> dict:
    """A training batch of `batch_size` images of `shape` as ShapeDtypeStructs (ahead-of-time compiles)."""
    layout = self.family.batch_layout(self.model_cfg, batch_size, shape)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=self.batch_sharding) for k, (s, d) in layout.items()}

  def model(self, params, frozen=None) -> nnx.Module:
    """The family's module with `params` (a nested dict, e.g. state['ema_params']) and, when the module has
    frozen variables (LoRA's base weights), those of `frozen` (default: the setup's)."""
    frozen = self.frozen if frozen is None else frozen
    module = frozen.get("module") if isinstance(frozen, dict) else None
    return nnx.merge(self.graphdef, params) if module is None else nnx.merge(self.graphdef, params, module)

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.abstract_params))

  @property
  def global_batch(self) -> int:
    return int(self.config.data.global_batch)

  def describe(self) -> str:
    """One line for people: mesh, model, parameters, attention kernel."""
    return (f"mesh {dict(self.mesh.shape)} over {self.mesh.size} {self.mesh.devices.flat[0].platform} "
            f"device(s); {self.family.name} {self.config.model.size}: {self.family.describe(self.model_cfg)}; "
            f"{self.num_params / 1e6:.2f}M parameters; attention {self.attention}")


# ----------------------------------------------------------------------------------------------------------
# Building it.
# ----------------------------------------------------------------------------------------------------------
def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The config's mesh over `devices` (default: all), or one clear error naming config.mesh."""
  devices = list(jax.devices() if devices is None else devices)
  try:
    return parallel.make_mesh(dict(config.mesh), devices=devices)
  except (ValueError, NotImplementedError) as e:
    raise ValueError(f"config.mesh={dict(config.mesh)} does not fit the {len(devices)} "
                     f"{devices[0].platform if devices else ''} devices here: {str(e).splitlines()[0]}") from e


def create(config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None, *,
           frozen: Any = None) -> Setup:
  """The setup of `config` on `devices` (default: every device of this job; abstract devices of an
  ahead-of-time target work too). `frozen` overrides the family's frozen arrays (already placed)."""
  from vbanana.model import layers  # pylint: disable=g-import-not-at-top
  config = config_lib.resolve(config)
  mesh = make_mesh(config, devices)
  rules = parallel.resolve_rules(config.sharding_rules)
  family = families.get(config.model.family)
  model_cfg = family.model_config(config)
  flow_cfg = flow.FlowConfig.create(config.flow)
  optim_cfg = optim.OptimConfig.create(config.optim)
  attention = layers.resolve_attention(getattr(model_cfg, "attention", None), getattr(model_cfg, "dtype", None),
                                       platform=mesh.devices.flat[0].platform)

  # Shapes first: the module built abstractly, its parameters' logical names -> shardings.
  abstract_model = nnx.eval_shape(lambda: family.build(model_cfg, nnx.Rngs(0), attention=attention))
  graphdef, params, rest = nnx.split(abstract_model, nnx.Param, ...)
  param_shardings = _param_shardings(params, mesh, rules)
  abstract_params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                 nnx.to_pure_dict(params), param_shardings)
  # The module's other variables (LoRA's frozen base weights) are frozen: the family fills them, placed.
  module_state = None
  if jax.tree.leaves(rest):
    module_state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                nnx.to_pure_dict(rest), _param_shardings(rest, mesh, rules))
  abstract = _abstract_devices(mesh)
  conditioner = None if abstract else family.text_conditioner(model_cfg, mesh, rules)
  if frozen is None:
    frozen = family.frozen_params(model_cfg, mesh, rules, abstract=abstract, module=module_state,
                                  conditioner=conditioner)
  if module_state is not None and "module" not in frozen:
    raise ValueError(f"the {family.name} module holds state other than nnx.Param, and its frozen arrays do "
                     "not give it back (frozen['module']); the train state only carries parameters")
  setup = Setup(config=config, mesh=mesh, rules=rules, family=family, model_cfg=model_cfg, flow_cfg=flow_cfg,
                optim_cfg=optim_cfg, attention=attention, graphdef=graphdef, abstract_params=abstract_params,
                param_shardings=param_shardings, state_shardings=None, abstract_state=None,
                batch_sharding=parallel.batch_sharding(mesh, rules), frozen=frozen, conditioner=conditioner)
  state_shardings, abstract_state = _state_shardings(setup)  # the optimizer's state needs the setup
  return dataclasses.replace(setup, state_shardings=state_shardings, abstract_state=abstract_state)


def for_model(family, model_cfg, *, prediction: str = "v", devices: Sequence[jax.Device] | None = None) -> Setup:
  """The setup of a model known only by its recorded config (an export, a workdir's model_config.json):
  a base config holding it, with `prediction` (what the network outputs) and a data-parallel mesh."""
  config = config_lib.base_config(family.name)
  family.set_model(config, model_cfg)
  config.flow.prediction = prediction
  return create(config, devices)


def _abstract_devices(mesh: Mesh) -> bool:
  """Whether the mesh's devices are an ahead-of-time target's (no arrays can be placed on them)."""
  here = set(jax.devices())
  return any(d not in here for d in mesh.devices.flat)


class _Prepared:
  """A sampler of a family whose text conditioner runs on the host: the batch is completed first (the
  instructions' embeddings added), then the jitted program runs; `lower` does the same with abstract
  arrays, for ahead-of-time compiles."""

  def __init__(self, fn, setup: Setup):
    self.fn, self.setup = fn, setup

  def _batch(self, batch):
    s = self.setup
    return s.family.prepare_batch(s.model_cfg, s.conditioner, batch, s.batch_sharding)

  def __call__(self, params, frozen, noise, batch):
    return self.fn(params, frozen, noise, self._batch(batch))

  def lower(self, params, frozen, noise, batch):
    return self.fn.lower(params, frozen, noise, self._batch(batch))


def _param_shardings(params: nnx.State, mesh: Mesh, rules) -> dict:
  """Nested dict (the layout of state['params']) of NamedShardings from the parameters' logical names."""
  out: dict = {}
  for path, var in nnx.to_flat_state(params):
    names = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = parallel.named_sharding(mesh, tuple(names), rules, var.shape)
  return out


def _state_shardings(setup: Setup) -> tuple[dict, dict]:
  """(shardings, abstract arrays) of the whole train state: optimizer moments sharded like their
  parameters, counters replicated."""
  from vbanana import step  # pylint: disable=g-import-not-at-top
  shapes = jax.eval_shape(step.init_fn(setup), step.raw_key(0))
  ps, replicated = setup.param_shardings, setup.replicated
  shardings = dict(params=ps, opt_state=_like_params(shapes["opt_state"], ps, replicated), ema_params=ps,
                   step=replicated, rng=replicated, skipped=replicated)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return shardings, abstract


def _like_params(tree: Any, params_sharding: dict, replicated: NamedSharding) -> Any:
  """Shardings for an optimizer-state tree: a leaf whose path ends with a parameter's path is sharded like
  that parameter; everything else (counts) is replicated."""
  by_path = {trees.path_keys(p): s for p, s in jax.tree_util.tree_flatten_with_path(params_sharding)[0]}

  def one(path, leaf):
    del leaf
    keys = trees.path_keys(path)
    for i in range(len(keys)):
      if keys[i:] in by_path:
        return by_path[keys[i:]]
    return replicated
  return jax.tree_util.tree_map_with_path(one, tree)
