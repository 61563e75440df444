"""Checkpoints: one Orbax manager for the train state and the data iterator.

The train state is a pytree of arrays (params, opt_state, ema_params, step, rng, skipped) and is saved as is;
the Grain iterator state rides along as a second item of the same Composite checkpoint, so the two always
belong to the same step. Saves are async and atomic (Orbax writes into a temporary directory and renames it
when complete). Restores take an abstract target (`jax.ShapeDtypeStruct` with shardings), so a checkpoint
written on one mesh restores onto any other.

The model config is recorded next to the checkpoints (`model_config.json`): a workdir that holds another
model's checkpoints is refused with a message naming the differing fields instead of an opaque shape error.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any, Sequence

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as preservation
from etils import epath

STATE = "state"
DATA = "data"
MODEL_CONFIG_FILE = "model_config.json"
CORRUPT_DIR = "corrupt"

# Orbax copies a replicated array to host in slices, one per replica, each a small program compiled once per
# array shape at the first save: worth it for large arrays on a pod, a loss for small ones (each array of a
# small model; biases and norms of a large one), which one replica copies whole (the first save of the
# quickstart model went from ~150 slice compiles to none).
MIN_REPLICA_SLICE_BYTES = 1 << 20
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES),
    override=True)


class CheckpointMismatchError(ValueError):
  """The workdir holds checkpoints of a different model."""


class NoValidCheckpointError(RuntimeError):
  """Every checkpoint in the directory failed to restore."""


def checkpoint_dir(workdir: str) -> epath.Path:
  """workdir/checkpoints, a local workdir made absolute (Orbax refuses a relative path when it saves)."""
  workdir = os.fspath(workdir)
  return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir)) / "checkpoints"


def abstract_like(tree: Any) -> Any:
  """Abstract target (shape, dtype, sharding) of a tree of arrays."""
  def one(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
  return jax.tree.map(one, tree)


# ----------------------------------------------------------------------------------------------------------
# The model config recorded next to the checkpoints.
# ----------------------------------------------------------------------------------------------------------
def _jsonable(d: Any) -> Any:
  return json.loads(json.dumps(d, default=str, sort_keys=True))


# Model fields that change how the step runs, not the parameters: a workdir may resume with other values.
EXECUTION_ONLY_FIELDS = ("scan", "remat", "dtype", "attention")


def check_model_config(workdir: str, model_config: dict, *, write: bool = True) -> None:
  """Refuses a workdir whose checkpoints belong to another model; records the config otherwise.

  Raises CheckpointMismatchError naming the workdir and each differing field. Writes nothing on a mismatch.
  """
  path = checkpoint_dir(workdir) / MODEL_CONFIG_FILE
  current = _jsonable(model_config)
  if path.exists():
    recorded = json.loads(path.read_text())
    keys = sorted(set(recorded) | set(current))
    diffs = [k for k in keys if recorded.get(k) != current.get(k) and k not in EXECUTION_ONLY_FIELDS]
    if diffs:
      lines = [f"  model.{k}: checkpoints have {recorded.get(k)!r}, this config has {current.get(k)!r}"
               for k in diffs]
      raise CheckpointMismatchError(
          f"workdir {workdir} holds checkpoints of another model (recorded in {path}):\n"
          + "\n".join(lines)
          + "\nUse a new --workdir, or set the config to match the checkpoints. Nothing was changed.")
    return
  if write and jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / (MODEL_CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
    tmp.rename(path)


# ----------------------------------------------------------------------------------------------------------
# Preemption: save at the current step and stop, with no collective per step.
# ----------------------------------------------------------------------------------------------------------
class Preemption:
  """Whether the loop should save and stop at `step` (a SIGTERM: what Cloud TPU and most schedulers send
  before preempting).

  One process: a SIGTERM handler sets a flag that each step reads (no communication). Several processes
  (`jax.distributed`): JAX's preemption sync manager, the mechanism Orbax's
  `CheckpointManager.reached_preemption` uses: a SIGTERM to any process makes every process reach the same
  sync-point step, and the per-step check is local (tens of microseconds, no collective). Where that service
  is off (`jax_enable_preemption_service`), the processes compare their flags every `check_every` steps
  (one small all-gather each time).
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,), check_every: int = 10):
    self._event = threading.Event()
    self._previous = {}
    self._multi = jax.process_count() > 1
    self._service = self._multi and _preemption_service_on()
    self.check_every = max(int(check_every), 1)
    # With the service, JAX's own handler receives the signal; a Python handler would replace it.
    if not self._service and threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._handle)

  def _handle(self, signum, frame):
    logging.warning("Received signal %d: will save a checkpoint and stop.", signum)
    self._event.set()
    previous = self._previous.get(signum)
    if callable(previous):  # a caller's own handler (e.g. an experiment running several trainings) hears it too
      previous(signum, frame)

  def set(self):
    """Asks for a stop as a signal would (this process)."""
    self._event.set()

  def reached(self, step: int) -> bool:
    """True at the step where every process saves and stops."""
    if not self._multi:
      return self._event.is_set()
    if self._service:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return bool(multihost_utils.reached_preemption_sync_point(step))
    if step % self.check_every:
      return False
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array([self._event.is_set()], np.int32))
    return bool(np.any(flags))

  def restore_handlers(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _preemption_service_on() -> bool:
  """Whether JAX's preemption sync manager runs (jax.distributed starts it unless configured off)."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  try:
    multihost_utils.reached_preemption_sync_point(0)
  except RuntimeError:
    return False
  return True


# ----------------------------------------------------------------------------------------------------------
# The manager.
# ----------------------------------------------------------------------------------------------------------
class Checkpointer:
  """Saves and restores {state, data iterator} in `workdir/checkpoints/<step>`.

  keep: how many of the latest checkpoints to keep; keep_every: also keep every step divisible by this
  (0 = none). Nothing is deleted but by that policy: a checkpoint that fails to restore is moved to
  `checkpoints/corrupt/` and the previous one is used.
  """

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0, async_save: bool = True):
    self.workdir = workdir
    self.directory = checkpoint_dir(workdir)
    policies = [preservation.LatestN(n=keep)]
    if keep_every:
      policies.append(preservation.EveryNSteps(interval_steps=keep_every))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save,
        create=True,
        cleanup_tmp_directories=True,  # a save cut short by a crash leaves only a tmp dir; it is removed
    )
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for args in (ocp.args.StandardSave, ocp.args.StandardRestore):
      registry.add(STATE, args, ocp.StandardCheckpointHandler)
    for args in (grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore):
      registry.add(DATA, args, grain.checkpoint.CheckpointHandler)
    self.manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=registry)

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any = None, *, force: bool = False) -> bool:
    """Starts an async save; returns whether a save was started."""
    if step in self.manager.all_steps():
      return False
    items = {STATE: ocp.args.StandardSave(state)}
    if data_iter is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iter)
    return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, data_iter: Any = None, step: int | None = None):
    """Restores the given step (default: the latest that restores); returns (state, step) or (None, None).

    A checkpoint that fails to restore is reported in the log, moved aside to `checkpoints/corrupt/` (kept,
    not deleted) and the previous one is tried.
    """
    steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
    errors = []
    for s in steps:
      items = {STATE: ocp.args.StandardRestore(abstract_state)}
      if data_iter is not None and (self.directory / str(s) / DATA).exists():
        items[DATA] = grain.checkpoint.CheckpointRestore(data_iter)
      try:
        restored = self.manager.restore(s, args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        errors.append((s, e))
        logging.error("Checkpoint %s/%d failed to restore (%s: %s); falling back to the previous one.",
                      self.directory, s, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self._move_aside(s)
        continue
      if errors:
        logging.warning("Restored step %d after %d unreadable checkpoint(s) %s (moved to %s).", s,
                        len(errors), [e[0] for e in errors], self.directory / CORRUPT_DIR)
      return restored[STATE], s
    if errors:
      s, e = errors[0]
      raise NoValidCheckpointError(
          f"No checkpoint in {self.directory} restores (tried steps {[x for x, _ in errors]}; they were "
          f"moved to {self.directory / CORRUPT_DIR}). First error, step {s}: {type(e).__name__}: {e}") from e
    return None, None

  def _move_aside(self, step: int):
    """Moves an unreadable checkpoint out of the manager's view, keeping its files."""
    self.manager.wait_until_finished()
    if jax.process_index() == 0:
      dst_root = self.directory / CORRUPT_DIR
      dst_root.mkdir(parents=True, exist_ok=True)
      dst = dst_root / f"{step}.{int(time.time())}"
      (self.directory / str(step)).rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
    self.manager.reload()

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


# ----------------------------------------------------------------------------------------------------------
# Params-only init from another run (init_from): a workdir or one checkpoint step directory. (An exported
# file is read by vbanana.export, which builds on this module: `export.load_params` takes all three.)
# ----------------------------------------------------------------------------------------------------------
def load_params(path: str, abstract_params: Any, key: str = "ema_params") -> Any:
  """Reads parameters from `path` onto the shardings of `abstract_params`.

  path: a workdir (its latest checkpoint) or a checkpoint directory (`.../checkpoints` or
  `.../checkpoints/<step>`). `key` picks `params` or `ema_params` from a train state.
  """
  p = epath.Path(path)
  if p.is_file():
    raise ValueError(f"init_from={path} is a file, not a checkpoint directory: exported .safetensors files "
                     "load with vbanana.export.load_params")
  step_dir = find_step_dir(p)
  if step_dir is None:
    raise FileNotFoundError(f"init_from={path}: no checkpoint found (expected a workdir, a checkpoints "
                            "directory, a checkpoint step directory or an exported .safetensors file)")
  state_dir = step_dir / STATE
  restored = restore_entry(state_dir, key, lambda _: (
      abstract_params, ocp.checkpoint_utils.construct_restore_args(abstract_params)), where=f"init_from={path}: ")
  logging.info("Initialised %s from %s", key, state_dir)
  return restored


def restore_entry(state_dir: epath.Path, key: str, make_target, *, where: str = "") -> Any:
  """Restores only `state[key]` of a saved train state (a partial restore: nothing else is read).

  `make_target(metadata tree of state[key]) -> (target tree, restore_args tree)` decides where and as what
  the arrays land (shardings onto a mesh, or plain host numpy).
  """
  ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
  meta = ckptr.metadata(state_dir)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  if key not in tree:
    raise KeyError(f"{where}checkpoint {state_dir} has no '{key}' (has {sorted(tree)})")
  target, restore_args = make_target(tree[key])
  restored = ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(
      item={key: target}, restore_args={key: restore_args}, partial_restore=True))
  return restored[key]


def complete_steps(ckpt_dir) -> list[int]:
  """The complete checkpoint steps of a checkpoints directory, ascending (Orbax renames a step directory
  into place only when it is written, so a listed step with its state is whole)."""
  ckpt_dir = epath.Path(ckpt_dir)
  if not ckpt_dir.is_dir():
    return []
  return sorted(int(c.name) for c in ckpt_dir.iterdir() if c.name.isdigit() and (c / STATE).is_dir())


def find_step_dir(p) -> epath.Path | None:
  """The checkpoint step directory named by `p`: itself, or the latest of a checkpoints directory or a
  workdir; None when there is none."""
  p = epath.Path(p)
  if (p / STATE).is_dir():
    return p
  for root in (p / "checkpoints", p):
    steps = complete_steps(root)
    if steps:
      return root / str(steps[-1])
  return None
