"""What a person sees while a run goes: one line per event on stdout, the libraries' logs in DIR/log.txt.

`say(line)` prints a line for people (process 0 only) and keeps it in the log file. `configure(verbose=False)`
(vbanana.main calls it) keeps every log record of every library (Orbax's saves, Grain, TFDS, clu's metric
dumps, absl INFO of vbanana's own modules) for DIR/log.txt, which `open_log(workdir)` starts once the run has
accepted its workdir, and lets only warnings and errors through to the console, unless the command line asks
for more with --verbosity.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import logging

LOG_FILE = "log.txt"
_LOGGER = std_logging.getLogger("vbanana.console")
_LOGGER.propagate = False  # its lines are printed by `say`; only the log file handler receives them
_LOGGER.setLevel(std_logging.INFO)


def _process_index() -> int:
  if "jax" not in sys.modules:
    return 0
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def say(line: str) -> None:
  """A line for people: printed by process 0 and kept in the log file (every process's)."""
  if _process_index() == 0:
    print(line, flush=True)
  _LOGGER.info(line)


class _Pending(std_logging.Handler):
  """Keeps the records logged before the run's log file may be written (the workdir is checked first: a
  refused run leaves the workdir as it was)."""

  def __init__(self):
    super().__init__(std_logging.INFO)
    self.records: list[std_logging.LogRecord] = []

  def emit(self, record):
    self.records.append(record)


_PENDING = _Pending()
_FILE: list[std_logging.Handler] = []  # the open log file's handler (a new run in this process replaces it)


def configure(*, verbose: bool = False) -> None:
  """Every library's log records are kept for the run's log file (`open_log`); the console keeps warnings
  and errors unless `verbose`."""
  root = std_logging.getLogger()
  root.setLevel(std_logging.INFO)
  root.addHandler(_PENDING)
  _LOGGER.addHandler(_PENDING)
  if not verbose:
    logging.get_absl_handler().setLevel(std_logging.WARNING)
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      tfds.disable_progress_bar()
    except ImportError:  # pragma: no cover - tfds is a dependency
      pass


def open_log(workdir: str) -> str | None:
  """Starts DIR/log.txt (process p > 0: log.<p>.txt) with the records kept so far; returns its path (None
  for a remote workdir, whose logs stay with absl's handler). Call it once the workdir is accepted."""
  if "://" in str(workdir):
    return None
  os.makedirs(workdir, exist_ok=True)
  index = _process_index()
  path = os.path.join(workdir, LOG_FILE if index == 0 else f"log.{index}.txt")
  handler = std_logging.FileHandler(path)
  handler.setLevel(std_logging.INFO)
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] "
                                             "%(message)s"))
  for record in _PENDING.records:
    handler.handle(record)
  _PENDING.records.clear()
  for logger in (std_logging.getLogger(), _LOGGER):
    for old in [_PENDING] + _FILE:
      logger.removeHandler(old)
    logger.addHandler(handler)
  for old in _FILE:
    old.close()
  _FILE[:] = [handler]
  say(f"Logs of every library: {path} (--verbosity=0 shows them here too)")
  return path
