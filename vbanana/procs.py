r"""Processes that vbanana starts die with the process that started them, however that one ends.

A SIGKILL (or the out-of-memory killer) runs no cleanup in the process it kills, so each child has to notice
by itself that its parent is gone:

- Data workers (Grain's `mp_prefetch` workers, the scenes builder's Pool) run `DieWithParent()` first: a
  daemon thread polls `os.getppid()` and ends the worker (`os._exit`) as soon as the process that started it
  is gone (the worker is then re-parented to init or to a subreaper). Not `PR_SET_PDEATHSIG`: Linux sends that
  signal when the *thread* that started the child ends, and Grain starts its workers from pool threads that
  come and go while the trainer lives.
- Whole commands started by a launcher (the processes of launch/local_cluster.sh, the runs of vbanana.sweep
  through `run`) go through `python -m vbanana.procs --parent=PID -- CMD ARGS...`, which asks the kernel for
  a SIGKILL when the launcher ends (`PR_SET_PDEATHSIG`; launchers start commands from their only or main
  thread) and then execs CMD in the same process. A SIGTERM to the launcher is passed on and waited for.
- The multiprocessing resource tracker needs nothing: it exits when the last holder of its pipe (the parent
  and every spawned worker) is gone.

`snapshot`, `descendants` and `alive` find processes by their parent links in /proc (Linux), for the tests
and scripts/soak.py that check that nothing is left behind.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys
import threading
import time

POLL_S = 0.25  # how often a child checks its parent: it ends at most this long after the parent
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# ----------------------------------------------------------------------------------------------------------
# In a child: end with the parent.
# ----------------------------------------------------------------------------------------------------------
def watch_parent(parent_pid: int, poll_s: float = POLL_S) -> None:
  """Ends this process within `poll_s` seconds of `parent_pid` ceasing to be its parent (already gone: now)."""
  if os.getppid() != parent_pid:
    _exit_orphaned(parent_pid)
  threading.Thread(target=_watch, args=(parent_pid, poll_s), name="vbanana-die-with-parent",
                   daemon=True).start()


def _watch(parent_pid: int, poll_s: float) -> None:
  while os.getppid() == parent_pid:
    time.sleep(poll_s)
  _exit_orphaned(parent_pid)


def _exit_orphaned(parent_pid: int) -> None:
  try:
    os.write(2, f"vbanana: process {os.getpid()} ends: its parent {parent_pid} has ended\n".encode())
  except OSError:  # the parent's end of a pipe may be gone with it
    pass
  os._exit(1)  # no cleanup on purpose: nothing in this process is worth keeping without the parent


class DieWithParent:
  """A picklable initializer, made in the parent and called first in each child with any arguments: Grain's
  `mp_prefetch(worker_init_fn=DieWithParent())`, `Pool(initializer=DieWithParent())`."""

  def __init__(self):
    self.parent_pid = os.getpid()

  def __call__(self, *unused) -> None:
    watch_parent(self.parent_pid)


# ----------------------------------------------------------------------------------------------------------
# Whole commands: the kernel kills them when their launcher ends.
# ----------------------------------------------------------------------------------------------------------
def _prctl(option: int, value: int) -> bool:
  """prctl(2) on Linux; False where there is none."""
  if not sys.platform.startswith("linux"):
    return False
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(option, value, 0, 0, 0) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"prctl({option}, {value}): {os.strerror(errno)}")
  return True


def become_subreaper() -> bool:
  """Orphans below this process are re-parented to it instead of init, so they stay its descendants (the
  test session uses it to see the workers of a trainer it killed). Linux only: False elsewhere."""
  return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def command_dying_with(parent_pid: int, argv: list[str]) -> list[str]:
  """`argv` run through this module's launcher, so the command gets SIGKILL when `parent_pid` ends."""
  return [sys.executable, "-m", "vbanana.procs", f"--parent={parent_pid}", "--", *argv]


def run(argv: list[str], *, check: bool = True) -> int:
  """Runs `argv` as a child that the kernel kills when this process ends, and waits for it.

  A SIGTERM to this process is passed on to the child and waited for (a trainer saves a checkpoint and
  stops), then this process exits too (status 143). `check`: a failing child raises CalledProcessError.
  """
  import subprocess  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(command_dying_with(os.getpid(), argv))
  received = []

  def forward(signum, frame):
    del frame
    received.append(signum)
    proc.send_signal(signum)

  on_main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, forward) if on_main_thread else None
  try:
    returncode = proc.wait()
  finally:
    if on_main_thread:
      signal.signal(signal.SIGTERM, previous)
  if received:
    raise SystemExit(128 + received[0])
  if check and returncode:
    raise subprocess.CalledProcessError(returncode, argv)
  return returncode


def main(argv: list[str]) -> int:
  """`python -m vbanana.procs --parent=PID -- CMD ARGS...`: CMD in this process, killed when PID ends."""
  usage = "usage: python -m vbanana.procs --parent=PID -- CMD [ARGS...]"
  if len(argv) < 3 or not argv[0].startswith("--parent=") or argv[1] != "--":
    print(usage, file=sys.stderr)
    return 2
  try:
    parent_pid = int(argv[0].partition("=")[2])
  except ValueError:
    print(f"--parent: expected a process id, got {argv[0].partition('=')[2]!r}; {usage}", file=sys.stderr)
    return 2
  _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
  if os.getppid() != parent_pid:  # the launcher ended before the kernel was asked to watch it
    print(f"vbanana.procs: parent {parent_pid} has already ended; not starting {argv[2]}", file=sys.stderr)
    return 1
  try:
    os.execvp(argv[2], argv[2:])
  except OSError as e:
    print(f"vbanana.procs: cannot run {argv[2]!r}: {e}", file=sys.stderr)
    return 127


# ----------------------------------------------------------------------------------------------------------
# Finding processes (Linux /proc): by parent links and session, never by name.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Proc:
  pid: int
  ppid: int
  session: int
  state: str  # 'Z' is a zombie: dead, waiting to be reaped
  start: int  # start time in clock ticks since boot: (pid, start) names one process even if the pid is reused

  @property
  def cmdline(self) -> str:
    try:
      with open(f"/proc/{self.pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
      return "?"


def _read(pid: int) -> Proc | None:
  try:
    with open(f"/proc/{pid}/stat") as f:
      text = f.read()
  except OSError:
    return None
  fields = text[text.rindex(")") + 2:].split()  # the command name in (...) may hold spaces
  return Proc(pid, int(fields[1]), int(fields[3]), fields[0], int(fields[19]))


def snapshot() -> dict[int, Proc]:
  """Every process now, by pid (empty where there is no /proc)."""
  if not os.path.isdir("/proc"):
    return {}
  procs = (_read(int(name)) for name in os.listdir("/proc") if name.isdigit())
  return {p.pid: p for p in procs if p is not None}


def descendants(pid: int, table: dict[int, Proc] | None = None) -> list[Proc]:
  """Live (non-zombie) processes below `pid`: children, their children, ..."""
  table = snapshot() if table is None else table
  children: dict[int, list[Proc]] = {}
  for p in table.values():
    children.setdefault(p.ppid, []).append(p)
  found, todo = [], [pid]
  while todo:
    for child in children.get(todo.pop(), []):
      found.append(child)
      todo.append(child.pid)
  return [p for p in found if p.state != "Z"]


def in_session(session: int, table: dict[int, Proc] | None = None) -> list[Proc]:
  """Live processes of a session (a process started with `start_new_session=True` leads one)."""
  table = snapshot() if table is None else table
  return [p for p in table.values() if p.session == session and p.state != "Z"]


def alive(procs) -> list[Proc]:
  """Those of `procs` still running (the same process: same pid and start time; zombies count as dead)."""
  result = []
  for p in procs:
    now = _read(p.pid)
    if now is not None and now.start == p.start and now.state != "Z":
      result.append(now)
  return result


def wait_gone(procs, timeout_s: float) -> list[Proc]:
  """Waits up to `timeout_s` for `procs` to end; returns those still alive then."""
  end = time.monotonic() + timeout_s
  left = alive(procs)
  while left and time.monotonic() < end:
    time.sleep(0.1)
    left = alive(left)
  return left


def describe(procs) -> str:
  return "; ".join(f"pid {p.pid} (parent {p.ppid}, state {p.state}): {p.cmdline[:160]}" for p in procs)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
