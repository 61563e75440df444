"""The training loop, top to bottom: setup, workdir, logging, input pipeline, state, restore, evaluators,
loop. Called by `vbanana.main`; everything it does is decided by the config.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vbanana import checkpoint
from vbanana import config_lib
from vbanana import console
from vbanana import metrics_writer
from vbanana import setup as setup_lib


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, final_eval: bool | None = None):
  """Trains (resuming from workdir if it holds checkpoints), evaluating as the config says. Returns the state."""
  from vbanana import data as data_lib  # pylint: disable=g-import-not-at-top
  from vbanana import evaluate  # pylint: disable=g-import-not-at-top

  # ---------------------------------------------------------------------------------------------------------
  # Setup: mesh, rules, model family, shardings, built once and checked before anything touches the workdir.
  # ---------------------------------------------------------------------------------------------------------
  setup = setup_lib.create(config)
  config = setup.config  # every default filled in: what config.json records
  tcfg = config.train
  console.say(f"Run: {setup.describe()}")

  # ---------------------------------------------------------------------------------------------------------
  # Workdir: refuse another model's checkpoints before writing anything; record the resolved config.
  # ---------------------------------------------------------------------------------------------------------
  checkpoint.check_model_config(workdir, setup.model_cfg.to_dict())
  if jax.process_index() == 0:
    config_lib.write_config(config, workdir)
  console.open_log(workdir)

  # ---------------------------------------------------------------------------------------------------------
  # Logging: clu writers (log + TensorBoard) and metrics.jsonl on process 0.
  # ---------------------------------------------------------------------------------------------------------
  writer = metrics_writer.create_writer(workdir, tensorboard=tcfg.tensorboard)
  preemption = checkpoint.Preemption()

  # ---------------------------------------------------------------------------------------------------------
  # Input pipeline: per-process numpy batches from a checkpointable Grain iterator.
  # ---------------------------------------------------------------------------------------------------------
  global_batch = setup.global_batch
  if global_batch % jax.process_count():
    raise ValueError(f"config.data.global_batch={global_batch} does not split over {jax.process_count()} "
                     "processes")
  train_iter = data_lib.make_train_iterator(config.data, process_index=jax.process_index(),
                                            process_count=jax.process_count())

  # ---------------------------------------------------------------------------------------------------------
  # State: built sharded (shapes first, then a jitted init with out-shardings).
  # ---------------------------------------------------------------------------------------------------------
  state = setup.init_state()

  # ---------------------------------------------------------------------------------------------------------
  # Restore: the latest checkpoint of this workdir (onto this mesh), else params from init_from, else fresh.
  # ---------------------------------------------------------------------------------------------------------
  ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep, keep_every=config.checkpoint.keep_every,
                                 async_save=config.checkpoint.async_save)
  restored, restored_step = ckpt.restore(setup.abstract_state, train_iter)
  if restored is not None:
    state = restored
    console.say(f"Resumed from {ckpt.directory} at step {restored_step}")
  elif config.init_from:
    from vbanana import export  # pylint: disable=g-import-not-at-top
    params = export.load_params(config.init_from, setup.abstract_params)
    state = dict(state, params=params, ema_params=jax.tree.map(jnp.copy, params))
    console.say(f"Initialised params and EMA params from {config.init_from}; optimizer state is fresh")
  first_step = int(jax.device_get(state["step"]))

  # ---------------------------------------------------------------------------------------------------------
  # Train step: jitted, donated state; metrics stay on device until logged.
  # ---------------------------------------------------------------------------------------------------------
  train_step = setup.train_step
  flops_per_step = setup.family.train_flops_per_example(setup.model_cfg) * global_batch
  peak_flops = tcfg.peak_flops_per_device or measure_peak_flops()
  logging.info("Analytic train FLOPs/step %.3g; peak FLOP/s per device %.3g", flops_per_step, peak_flops)

  def next_device_batch():
    t0 = time.perf_counter()
    batch = setup.shard_batch(next(train_iter))
    return batch, time.perf_counter() - t0

  # ---------------------------------------------------------------------------------------------------------
  # Evaluators: built once (at the first evaluation), run every eval_every steps and at the end.
  # ---------------------------------------------------------------------------------------------------------
  evaluators = []

  def run_evals(step):
    if not config.evals:
      return
    if not evaluators:
      evaluators.extend(evaluate.build_evaluators(setup))
    t0 = time.perf_counter()
    scalars, images = evaluate.run_evaluators(evaluators, state["ema_params"], step, final_step=tcfg.steps)
    writer.write_scalars(step, scalars)
    if images:
      writer.write_images(step, {k: np.asarray(v)[None] if np.ndim(v) == 3 else v for k, v in images.items()})
    writer.flush()
    console.say(f"eval step {step} ({time.perf_counter() - t0:.0f} s): {evaluate.headline(evaluators, scalars)}")

  # ---------------------------------------------------------------------------------------------------------
  # Loop.
  # ---------------------------------------------------------------------------------------------------------
  total_steps = tcfg.steps
  log_every, ckpt_every, eval_every = tcfg.log_every, config.checkpoint.every, tcfg.eval_every
  if first_step >= total_steps:
    console.say(f"Nothing to train: step {first_step} >= train.steps {total_steps}")
  pending, data_wait, t_last, step_last = [], 0.0, time.perf_counter(), first_step
  batch, wait = (next_device_batch() if first_step < total_steps else (None, 0.0))
  data_wait += wait
  step = first_step

  def log_train_metrics(step):
    """Writes the metrics of the steps since the last write (throughput over the same interval)."""
    nonlocal pending, data_wait, t_last, step_last
    now = time.perf_counter()
    summary = summarize(jax.device_get(pending))
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
    console.say(f"step {step}/{total_steps}  loss {summary.get('loss', np.nan):.4f}  {steps_per_s:.2f} steps/s  "
                f"ETA {_hms(eta)}")
    pending, data_wait, t_last, step_last = [], 0.0, now, step

  # An evaluation that a kill or preemption cut short after its step's checkpoint committed: the restored
  # run starts past it, so it is run here, once (metrics.jsonl has no evaluation row of that step).
  if (restored is not None and eval_every and first_step % eval_every == 0 and first_step < total_steps
      and not evaluation_logged(workdir, first_step)):
    console.say(f"The evaluation of step {first_step} did not finish before the run stopped: running it now")
    run_evals(first_step)

  with jax.set_mesh(setup.mesh):
    while step < total_steps:
      state, metrics = train_step(state, batch, setup.frozen)
      step += 1
      pending.append(metrics)

      stop = preemption.reached(step)
      if stop or step % ckpt_every == 0 or step == total_steps:
        # Saved before the next batch is fetched, so the iterator state matches the train state.
        ckpt.save(step, state, train_iter, force=True)
        if stop:
          if pending:
            log_train_metrics(step)
          console.say(f"Preempted: saved step {step}; stopping (the same command resumes).")
          break

      if step < total_steps:  # prefetch the next batch while the step runs
        batch, wait = next_device_batch()
        data_wait += wait

      if step % log_every == 0 or step == total_steps:
        log_train_metrics(step)

      if eval_every and step % eval_every == 0 and step != total_steps:
        run_evals(step)

  ckpt.wait()
  if step == total_steps and (final_eval or (final_eval is None and tcfg.eval_at_end)):
    # A finished run started again evaluates only if its final evaluation is not logged yet.
    if step != first_step or not evaluation_logged(workdir, step):
      run_evals(step)
  ckpt.close()
  if hasattr(train_iter, "close"):
    train_iter.close()  # stops the data workers and frees their shared memory
  writer.flush()
  writer.close()
  preemption.restore_handlers()
  console.say(f"Files in {workdir}: metrics.jsonl, samples/, checkpoints/, tensorboard/, config.json")
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


def summarize(metrics: list[dict]) -> dict:
  """Means over the steps since the last log (per-task entries average only the steps that had that task);
  `data/skipped_records` is summed: the records the input pipeline skipped in the interval."""
  out = {}
  for key in metrics[0]:
    values = np.array([np.asarray(m[key], np.float64) for m in metrics])
    finite = values[np.isfinite(values)]
    reduce = np.sum if key == "data/skipped_records" else np.mean
    out[key] = float(reduce(finite)) if finite.size else float("nan")
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
