"""The training loop, top to bottom: logging, mesh, input pipeline, model and optimizer, restore, train step,
evaluators, loop. Called by `vbanana.main`; everything it does is decided by the config.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vbanana import checkpoint
from vbanana import config_lib
from vbanana import export
from vbanana import metrics_writer


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, final_eval: bool | None = None):
  """Trains (resuming from workdir if it holds checkpoints), evaluating as the config says. Returns the state."""
  from vbanana import data as data_lib  # pylint: disable=g-import-not-at-top
  from vbanana.model import flops  # pylint: disable=g-import-not-at-top
  from vbanana import parallel  # pylint: disable=g-import-not-at-top
  from vbanana import step as step_lib  # pylint: disable=g-import-not-at-top
  tcfg = config.train

  # ---------------------------------------------------------------------------------------------------------
  # Mesh: built and checked before anything touches the workdir, so a bad mesh changes nothing.
  # ---------------------------------------------------------------------------------------------------------
  mesh = make_mesh(parallel, config.mesh)
  rules = tuple(tuple(r) for r in config.sharding_rules)
  logging.info("Mesh %s over %d devices", dict(mesh.shape), mesh.size)

  # ---------------------------------------------------------------------------------------------------------
  # Model config and the workdir: refuse another model's checkpoints before writing anything.
  # ---------------------------------------------------------------------------------------------------------
  model_cfg = config_lib.model_config(config)
  checkpoint.check_model_config(workdir, model_cfg.to_dict())
  if jax.process_index() == 0:
    config_lib.write_config(config, workdir)

  # ---------------------------------------------------------------------------------------------------------
  # Logging: clu writers (log + TensorBoard) and metrics.jsonl on process 0.
  # ---------------------------------------------------------------------------------------------------------
  writer = metrics_writer.create_writer(workdir, tensorboard=tcfg.get("tensorboard", True))
  preempted = checkpoint.PreemptionFlag()

  # ---------------------------------------------------------------------------------------------------------
  # Input pipeline: per-process numpy batches from a checkpointable Grain iterator.
  # ---------------------------------------------------------------------------------------------------------
  global_batch = config.data.global_batch
  if global_batch % jax.process_count():
    raise ValueError(f"config.data.global_batch={global_batch} does not split over {jax.process_count()} "
                     "processes")
  train_iter = data_lib.make_train_iterator(config.data, process_index=jax.process_index(),
                                            process_count=jax.process_count())

  # ---------------------------------------------------------------------------------------------------------
  # Model and optimizer: the state is built sharded (shapes first, then a jitted init with out-shardings).
  # ---------------------------------------------------------------------------------------------------------
  # The learning-rate schedule spans the run unless the config says otherwise.
  optim_cfg = {"total_steps": tcfg.steps, **config.optim.to_dict()}
  graphdef, state = step_lib.create_train_state(model_cfg, optim_cfg, mesh, rules, config.seed)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  logging.info("Model %s: %.2fM parameters", config.model.size, num_params / 1e6)

  # ---------------------------------------------------------------------------------------------------------
  # Restore: the latest checkpoint of this workdir (onto this mesh), else params from init_from, else fresh.
  # ---------------------------------------------------------------------------------------------------------
  ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep, keep_every=config.checkpoint.keep_every,
                                 async_save=config.checkpoint.get("async_save", True))
  restored, restored_step = ckpt.restore(checkpoint.abstract_like(state), train_iter)
  if restored is not None:
    state = restored
    logging.info("Resumed from %s at step %d", ckpt.directory, restored_step)
  elif config.get("init_from"):
    params = export.load_params(config.init_from, checkpoint.abstract_like(state["params"]))
    state = dict(state, params=params, ema_params=jax.tree.map(jnp.copy, params))
    logging.info("Initialised params and EMA params from %s; optimizer state is fresh", config.init_from)
  first_step = int(jax.device_get(state["step"]))

  # ---------------------------------------------------------------------------------------------------------
  # Train step: jitted, donated state; metrics stay on device until logged.
  # ---------------------------------------------------------------------------------------------------------
  train_step = step_lib.make_train_step(graphdef, model_cfg, config.flow, optim_cfg, mesh, rules)
  flops_per_step = flops.train_flops_per_example(model_cfg) * global_batch
  peak_flops = tcfg.get("peak_flops_per_device") or measure_peak_flops()
  logging.info("Analytic train FLOPs/step %.3g; peak FLOP/s per device %.3g", flops_per_step, peak_flops)

  def next_device_batch():
    t0 = time.perf_counter()
    batch = next(train_iter)
    batch = parallel.shard_batch(batch, mesh)
    return batch, time.perf_counter() - t0

  # ---------------------------------------------------------------------------------------------------------
  # Evaluators: per task, from config.evals; run every eval_every steps and at the end.
  # ---------------------------------------------------------------------------------------------------------
  def run_evals(step):
    if not config.get("evals"):
      return
    from vbanana import evaluate  # pylint: disable=g-import-not-at-top
    t0 = time.perf_counter()
    scalars, images = evaluate.run_all(config, graphdef, state["ema_params"], mesh, rules, step=step)
    writer.write_scalars(step, scalars)
    if images:
      writer.write_images(step, {k: np.asarray(v)[None] if np.ndim(v) == 3 else v for k, v in images.items()})
    writer.flush()
    logging.info("Evaluated at step %d in %.1fs", step, time.perf_counter() - t0)

  # ---------------------------------------------------------------------------------------------------------
  # Loop.
  # ---------------------------------------------------------------------------------------------------------
  total_steps = tcfg.steps
  log_every, ckpt_every = tcfg.log_every, config.checkpoint.every
  eval_every = tcfg.get("eval_every", 0)
  if first_step >= total_steps:
    logging.info("Nothing to train: step %d >= train.steps %d", first_step, total_steps)
  pending, data_wait, t_last, step_last = [], 0.0, time.perf_counter(), first_step
  batch, wait = (next_device_batch() if first_step < total_steps else (None, 0.0))
  data_wait += wait
  step = first_step

  def log_train_metrics(step):
    """Writes the metrics of the steps since the last write (throughput over the same interval)."""
    nonlocal pending, data_wait, t_last, step_last
    now = time.perf_counter()
    summary = _summarize(jax.device_get(pending))
    steps_per_s = (step - step_last) / (now - t_last)
    summary.update({
        "steps_per_sec": steps_per_s,
        "examples_per_sec": steps_per_s * global_batch,
        "mfu": flops_per_step * steps_per_s / (peak_flops * jax.device_count()),
        "data_wait_fraction": data_wait / (now - t_last),
        "skipped_total": float(jax.device_get(state["skipped"])),
    })
    writer.write_scalars(step, summary)
    eta = (total_steps - step) / max(steps_per_s, 1e-9)
    logging.info("step %d/%d loss %.4f, %.2f steps/s, ETA %s", step, total_steps, summary.get("loss", np.nan),
                 steps_per_s, _hms(eta))
    pending, data_wait, t_last, step_last = [], 0.0, now, step

  # An evaluation that a kill or preemption cut short after its step's checkpoint committed: the restored
  # run starts past it, so it is run here, once (metrics.jsonl has no evaluation row of that step).
  if (restored is not None and eval_every and first_step % eval_every == 0 and first_step < total_steps
      and not evaluation_logged(workdir, first_step)):
    logging.info("The evaluation of step %d did not finish before the run stopped: running it now", first_step)
    run_evals(first_step)

  with jax.set_mesh(mesh):
    while step < total_steps:
      state, metrics = train_step(state, batch)
      step += 1
      pending.append(metrics)

      stop = preempted.is_set()
      if stop or step % ckpt_every == 0 or step == total_steps:
        # Saved before the next batch is fetched, so the iterator state matches the train state.
        ckpt.save(step, state, train_iter, force=True)
        if stop:
          if pending:
            log_train_metrics(step)
          logging.warning("Preempted: saved step %d; stopping.", step)
          break

      if step < total_steps:  # prefetch the next batch while the step runs
        batch, wait = next_device_batch()
        data_wait += wait

      if step % log_every == 0 or step == total_steps:
        log_train_metrics(step)

      if eval_every and step % eval_every == 0 and step != total_steps:
        run_evals(step)

  ckpt.wait()
  if step == total_steps and (final_eval or (final_eval is None and tcfg.get("eval_at_end", True))):
    # A finished run started again evaluates only if its final evaluation is not logged yet.
    if step != first_step or not evaluation_logged(workdir, step):
      run_evals(step)
  ckpt.close()
  writer.flush()
  writer.close()
  preempted.restore_handlers()
  return state


def evaluation_logged(workdir: str, step: int) -> bool:
  """Whether DIR/metrics.jsonl holds the evaluation of `step` (its evaluators' `<name>/num_examples`), as
  process 0 sees it (the file is process 0's), on every process."""
  from vbanana import evaluate  # pylint: disable=g-import-not-at-top
  found = False
  path = os.path.join(workdir, "metrics.jsonl")
  if jax.process_index() == 0 and os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
          continue
        if row.get("step") == step and any(k.endswith("/num_examples") for k in row):
          found = True
  return bool(evaluate.agree(int(found)))


def make_mesh(parallel, mesh_cfg):
  """The config's mesh, or a clear error naming config.mesh when it does not fit these devices."""
  try:
    return parallel.make_mesh(dict(mesh_cfg))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"config.mesh={dict(mesh_cfg)} does not fit the {jax.device_count()} devices "
                     f"here ({e})") from e


def _summarize(metrics: list[dict]) -> dict:
  """Means over the steps since the last log; per-task entries average only the steps that had that task."""
  out = {}
  for key in metrics[0]:
    values = np.array([np.asarray(m[key], np.float64) for m in metrics])
    finite = values[np.isfinite(values)]
    out[key] = float(finite.mean()) if finite.size else float("nan")
  return out


def measure_peak_flops(n: int = 1024, repeats: int = 3) -> float:
  """Matmul FLOP/s of one device (f32), the MFU denominator when the config gives no peak."""
  x = jnp.ones((n, n), jnp.float32, device=jax.local_devices()[0])
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  t0 = time.perf_counter()
  for _ in range(repeats):
    f(x).block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - t0)


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
