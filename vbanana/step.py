"""The jitted programs of a run: state init, the train step and the sampler, each built from a `Setup`.

The state is a plain dict of arrays, so Orbax saves it as is:
    params      the model parameters (nested dict, float32)
    opt_state   the optax AdamW state (moments sharded like the parameters)
    ema_params  exponential moving average of params (what evaluation and export use)
    step        int32, train steps taken (skipped ones included, so the data iterator and step agree)
    rng         uint32 (2,) raw key data, split every step
    skipped     int32, steps whose loss or gradients were not finite (their update was dropped)

Everything model-specific goes through the setup's family (vbanana.families): its image codec turns the
batch's images into what the model denoises, its text conditioner the instruction into what the model
reads, `apply` runs the module. Use them through `vbanana.setup.Setup` (`init_state`, `train_step`,
`sampler`), which builds each once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from vbanana import flow, optim, parallel, tasks

if TYPE_CHECKING:
  from vbanana.setup import Setup


def raw_key(seed: int) -> jax.Array:
  return jax.random.key_data(jax.random.key(seed))


def init_fn(setup: "Setup") -> Callable:
  """`raw_key -> state`: the module built from the setup's family and config, optimizer state, EMA copy."""
  tx = optim.make_optimizer(setup.optim_cfg)

  def init(key_data):
    key = jax.random.wrap_key_data(key_data)
    model = setup.family.build(setup.model_cfg, nnx.Rngs(params=jax.random.fold_in(key, 0)),
                               attention=setup.attention)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return dict(params=params, opt_state=tx.init(params), ema_params=jax.tree.map(jnp.copy, params),
                step=jnp.zeros((), jnp.int32), rng=jax.random.key_data(jax.random.fold_in(key, 1)),
                skipped=jnp.zeros((), jnp.int32))
  return init


def network(setup: "Setup", params, frozen=None) -> Callable:
  """`net(x_t, t, cond, inputs, input_mask)`: the family's forward of the module with `params` and the
  module's frozen variables of `frozen` when it has any (LoRA's base weights), merged at each call, so
  inside a sampler's loop the module is built in the loop's trace."""
  def net(x_t, t, cond, inputs, input_mask):
    return setup.family.apply(setup.model(params, {} if frozen is None else frozen), x_t, t, cond, inputs,
                              input_mask)
  return net


def make_train_step(setup: "Setup") -> Callable:
  """jitted `(state, batch, frozen) -> (state, metrics)`; the state is donated.

  Inside: the family encodes the images and the instruction, condition dropout, flow-matching loss,
  gradients, clipping, AdamW, EMA (with the usual warm-up: decay = min(ema_decay, (1 + n) / (10 + n)) after n
  updates). A step whose loss or gradient norm is not finite changes nothing but `step` and `skipped`.
  Metrics (replicated scalars): loss, grad_norm, lr, nonfinite, per task `loss/<task>` (mean over the
  batch's examples of that task, NaN when it has none) and `count/<task>`, and `data/skipped_records` when
  the batch carries the pipeline's per-row `skipped` counts.
  """
  family, fcfg, ocfg = setup.family, setup.flow_cfg, setup.optim_cfg
  tx, lr_fn = optim.make_optimizer(ocfg), optim.learning_rate(ocfg)
  names = tasks.TASKS

  def train_step(state, batch, frozen):
    with parallel.sharding_context(setup.mesh, setup.rules):
      rng, step_rng = jax.random.split(jax.random.wrap_key_data(state["rng"]))
      cond = family.condition(frozen, batch)

      def loss_fn(params):
        x0 = family.encode_images(frozen, batch["target"])
        inputs = family.encode_images(frozen, batch["inputs"])
        shape_fcfg = family.train_flow(setup.model_cfg, fcfg, x0.shape[1:])  # klein: shifted by the image size
        return flow.loss(network(setup, params, frozen), x0, inputs, batch["input_mask"], cond, step_rng,
                         shape_fcfg, null_cond=family.null_condition(frozen, cond), weights=batch.get("weight"))

      (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      grad_norm = global_norm(grads)
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
      if "skipped" in batch:  # records the input pipeline replaced to make this batch (every worker, process)
        metrics["data/skipped_records"] = jnp.sum(batch["skipped"]).astype(jnp.float32)
    return new_state, metrics

  replicated = NamedSharding(setup.mesh, PartitionSpec())
  return jax.jit(train_step, in_shardings=(setup.state_shardings, setup.batch_sharding, None),
                 out_shardings=(setup.state_shardings, replicated), donate_argnums=0)


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_sample_fn(setup: "Setup", *, steps: int, method: str = "euler", text_scale: float = 1.0,
                   image_scale: float = 1.0) -> Callable:
  """jitted `(params, frozen, noise, batch) -> images` float (B, H, W, 3) in about [-1, 1] (unclipped): the
  whole sampling loop is one program; params stay sharded on the mesh, the batch is split over the batch
  axes. `noise` has the family's denoised shape (`denoised_shape`); `batch` holds text, inputs (uint8 or
  float in [-1, 1]), input_mask and, when the data has them, text_embeddings. The network's output kind is
  the setup's config.flow.prediction."""
  flow.check_prediction(setup.flow_cfg.prediction)
  family = setup.family

  def sample(params, frozen, noise, batch):
    with parallel.sharding_context(setup.mesh, setup.rules):
      cond = family.condition(frozen, batch)
      x0 = flow.sample(network(setup, params, frozen), noise, cond, family.encode_images(frozen, batch["inputs"]),
                       batch["input_mask"], steps=steps, method=method, text_scale=text_scale,
                       image_scale=image_scale, null_cond=family.null_condition(frozen, cond),
                       prediction=setup.flow_cfg.prediction,
                       times=family.sample_times(setup.model_cfg, steps, noise.shape[1:]))
      return family.decode_images(frozen, x0)

  data = setup.batch_sharding
  return jax.jit(sample, in_shardings=(setup.param_shardings, None, data, data), out_shardings=data)
