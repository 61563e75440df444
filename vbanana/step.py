"""The train state and the jitted train / sample functions, sharded on the mesh by the rules table.

The state is a plain dict of arrays, so Orbax saves it as is:
    params      the model parameters (nested dict, float32)
    opt_state   the optax AdamW state (moments sharded like the parameters)
    ema_params  exponential moving average of params (what evaluation and export use)
    step        int32, train steps taken (skipped ones included, so the data iterator and step agree)
    rng         uint32 (2,) raw key data, split every step
    skipped     int32, steps whose loss or gradients were not finite (their update was dropped)

Typical use (see vbanana/train.py):
    graphdef, state = create_train_state(model_cfg, config.optim, mesh, rules, seed)
    train_step = make_train_step(graphdef, model_cfg, config.flow, config.optim, mesh, rules)
    state, metrics = train_step(state, parallel.shard_batch(batch, mesh, rules))
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vbanana import flow, optim, parallel
from vbanana.model import dit
from vbanana.model.config import ModelConfig


# ----------------------------------------------------------------------------------------------------------
# Shapes and shardings, without building anything.
# ----------------------------------------------------------------------------------------------------------
def abstract_model(model_cfg: ModelConfig):
  """(graphdef, abstract params as nnx.State of Variables carrying logical names)."""
  model = nnx.eval_shape(lambda: dit.DiT(model_cfg, rngs=nnx.Rngs(0)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  if jax.tree.leaves(rest):
    raise ValueError("DiT holds state other than nnx.Param; the train state only carries parameters")
  return graphdef, params


def param_shardings(model_cfg: ModelConfig, mesh, rules) -> dict:
  """Nested dict (the layout of state['params']) of NamedShardings from the parameters' logical names."""
  _, params = abstract_model(model_cfg)
  table = parallel.resolve_rules(rules)
  out: dict = {}
  for path, var in nnx.to_flat_state(params):
    names = var.get_metadata().get("out_sharding") or (None,) * len(var.shape)
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = parallel.named_sharding(mesh, tuple(names), table, var.shape)
  return out


def _like_params(tree: Any, params_sharding: dict, mesh) -> Any:
  """Shardings for an optimizer-state tree: a leaf whose path ends with a parameter's path (and has its
  shape) is sharded like that parameter; everything else (counts) is replicated."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params_sharding)
  by_path = {tuple(_key(k) for k in path): s for path, s in flat}
  replicated = NamedSharding(mesh, PartitionSpec())

  def one(path, leaf):
    keys = tuple(_key(k) for k in path)
    for i in range(len(keys)):
      if keys[i:] in by_path:
        return by_path[keys[i:]]
    return replicated
  return jax.tree_util.tree_map_with_path(one, tree)


def _key(k) -> Any:
  return getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))


def _init_fn(model_cfg: ModelConfig, tx):
  def init(raw_key):
    key = jax.random.wrap_key_data(raw_key)
    model = dit.DiT(model_cfg, rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=tx.init(params), ema_params=jax.tree.map(jnp.copy, params),
                step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.fold_in(key, 1)),
                skipped=jnp.zeros((), jnp.int32))
  return init


def _raw_key(seed: int) -> jax.Array:
  return jax.random.key_data(jax.random.key(seed))


def state_shardings(model_cfg: ModelConfig, optim_cfg: Any, mesh, rules) -> dict:
  """The sharding of every leaf of the train state."""
  tx = optim.make_optimizer(optim_cfg)
  abstract = jax.eval_shape(_init_fn(model_cfg, tx), _raw_key(0))
  ps = param_shardings(model_cfg, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  return dict(params=ps, opt_state=_like_params(abstract["opt_state"], ps, mesh), ema_params=ps,
              step=replicated, rng=replicated, skipped=replicated)


def create_train_state(model_cfg: ModelConfig, optim_cfg: Any, mesh, rules, seed: int):
  """(graphdef, state) with every array created directly in its shard (a jitted init with out-shardings;
  nothing is materialised whole on one device)."""
  tx = optim.make_optimizer(optim_cfg)
  graphdef, _ = abstract_model(model_cfg)
  shardings = state_shardings(model_cfg, optim_cfg, mesh, rules)
  init = jax.jit(_init_fn(model_cfg, tx), out_shardings=shardings)
  with parallel.sharding_context(mesh, rules):
    state = init(_raw_key(seed))
  return graphdef, state


# ----------------------------------------------------------------------------------------------------------
# Train step.
# ----------------------------------------------------------------------------------------------------------
# The task order of docs/interfaces.md; `vbanana.tasks.TASKS` is the source when it is importable.
_DOCUMENTED_TASKS = ("generation", "editing", "depth", "normals", "semantic", "instance", "referring")


def task_names(num_tasks: int) -> tuple[str, ...]:
  try:
    from vbanana.tasks import TASKS  # pylint: disable=g-import-not-at-top
  except (ImportError, AttributeError):
    TASKS = _DOCUMENTED_TASKS  # pylint: disable=invalid-name
  if len(TASKS) == num_tasks:
    return tuple(TASKS)
  return tuple(f"task{i}" for i in range(num_tasks))


def make_train_step(graphdef, model_cfg: ModelConfig, flow_cfg: Any, optim_cfg: Any, mesh, rules,
                    num_tasks: int | None = None) -> Callable:
  """jitted `(state, batch) -> (state, metrics)`; the state is donated.

  Inside: uint8 images -> [-1, 1], condition dropout, flow-matching loss, gradients, clipping, AdamW, EMA
  (with the usual warm-up: decay = min(ema_decay, (1 + n) / (10 + n)) after n updates). A step whose loss or
  gradient norm is not finite changes nothing but `step` and `skipped`.
  Metrics (replicated scalars): loss, grad_norm, lr, nonfinite, and per task `loss/<task>` (mean over the
  batch's examples of that task, NaN when it has none) and `count/<task>`.
  """
  fcfg, ocfg = flow.FlowConfig.create(flow_cfg), optim.OptimConfig.create(optim_cfg)
  tx, lr_fn = optim.make_optimizer(ocfg), optim.learning_rate(ocfg)
  names = task_names(7 if num_tasks is None else num_tasks)
  shardings = state_shardings(model_cfg, ocfg, mesh, rules)

  def train_step(state, batch):
    with parallel.sharding_context(mesh, rules):
      rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))

      def loss_fn(params):
        model = nnx.merge(graphdef, params)
        return flow.loss(model, batch, step_rng, fcfg, weights=batch.get("weight"))

      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      grad_norm = optax_global_norm(grads)
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), state["params"], updates)
      applied = state["step"] - state["skipped"]  # updates applied so far
      decay = jnp.minimum(ocfg.ema_decay, (1.0 + applied) / (10.0 + applied))
      ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state["ema_params"], params)

      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
      new_state = dict(
          params=keep(params, state["params"]), opt_state=keep(opt_state, state["opt_state"]),
          ema_params=keep(ema, state["ema_params"]), step=state["step"] + 1, rng=jax.random.key_data(rng),
          skipped=state["skipped"] + (~finite).astype(jnp.int32))

      per_example = aux["per_example"]
      onehot = jax.nn.one_hot(batch["task"], len(names), dtype=jnp.float32)
      counts = onehot.sum(0)
      per_task = jnp.where(counts > 0, onehot.T @ per_example / jnp.maximum(counts, 1), jnp.nan)
      metrics = dict(loss=loss, grad_norm=grad_norm, lr=lr_fn(applied), nonfinite=(~finite).astype(jnp.float32))
      for i, name in enumerate(names):
        metrics[f"loss/{name}"] = per_task[i]
        metrics[f"count/{name}"] = counts[i]
    return new_state, metrics

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(train_step, in_shardings=(shardings, parallel.batch_sharding(mesh, rules)),
                 out_shardings=(shardings, replicated), donate_argnums=0)


def optax_global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------------------------------------
# Sampling.
# ----------------------------------------------------------------------------------------------------------
def make_sample_fn(graphdef, model_cfg: ModelConfig, mesh, rules, *, steps: int, method: str = "euler",
                   text_scale: float = 1.0, image_scale: float = 1.0, prediction: str = "v") -> Callable:
  """jitted `(params, noise, text, inputs, input_mask, text_embeddings=None) -> x_0` float (B, H, W, C):
  the whole sampling loop is one program; params stay sharded on the mesh, the batch is split over the
  batch axes. `inputs` may be uint8 or float in [-1, 1]. `prediction` is config.flow.prediction, what the
  network was trained to output ('v' or 'x')."""
  flow.check_prediction(prediction)
  ps = param_shardings(model_cfg, mesh, rules)
  data = parallel.batch_sharding(mesh, rules)

  def sample(params, noise, text, inputs, input_mask, text_embeddings=None):
    with parallel.sharding_context(mesh, rules):
      model = nnx.merge(graphdef, params)
      return flow.sample(model, noise, text, flow.to_float(inputs), input_mask, steps=steps, method=method,
                         text_scale=text_scale, image_scale=image_scale, text_embeddings=text_embeddings,
                         prediction=prediction)

  jitted = jax.jit(sample, in_shardings=(ps, data, data, data, data, data), out_shardings=data)

  def sample_fn(params, noise, text, inputs, input_mask, text_embeddings=None):
    return jitted(params, noise, text, inputs, input_mask, text_embeddings)
  return sample_fn


def num_params(state: dict) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
