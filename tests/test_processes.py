"""No process outlives the one that started it (vbanana/procs.py): the scenes builder's Pool workers, the
processes of launch/local_cluster.sh and of a sweep, killed outright or sent SIGTERM; and the test session's
own check for strays fails when a test leaves one. (The trainer's Grain workers: tests/test_train.py.)"""
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from vbanana import procs

pytestmark = pytest.mark.slow  # subprocesses that are killed on purpose

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Stands for a trainer: records its pid, and on SIGTERM takes a while to "save" before it stops.
PROBE = """
import os, signal, sys, time

out = sys.argv[1]
def term(*_):
  time.sleep(1.5)
  open(os.path.join(out, f"saved_{os.getpid()}"), "w").close()
  sys.exit(0)
signal.signal(signal.SIGTERM, term)
open(os.path.join(out, f"pid_{os.getpid()}"), "w").close()
while True:
  time.sleep(0.05)
"""


def wait_until(predicate, timeout_s=60):
  end = time.monotonic() + timeout_s
  while time.monotonic() < end:
    if predicate():
      return True
    time.sleep(0.05)
  return False


def probe_pids(out, n):
  assert wait_until(lambda: len(list(out.glob("pid_*"))) == n), list(out.iterdir())
  return [int(p.name[4:]) for p in out.glob("pid_*")]


def start_cluster(tmp_path, n=2):
  (tmp_path / "probe.py").write_text(PROBE)
  out = tmp_path / "out"
  out.mkdir()
  env = {**os.environ, "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
         "VBANANA_MAIN": f"{tmp_path / 'probe.py'} {out}"}
  proc = subprocess.Popen(["bash", str(ROOT / "launch" / "local_cluster.sh"), str(n)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  pids = probe_pids(out, n)
  table = procs.snapshot()
  return proc, out, [table[pid] for pid in pids if pid in table]


def test_killed_scenes_build_takes_its_pool_workers_with_it(tmp_path):
  script = textwrap.dedent(f"""
      from vbanana.data import scenes_tfds
      if __name__ == "__main__":
        scenes_tfds.build({str(tmp_path / 'data')!r}, 128, 100_000, 0, 0, num_workers=2)
  """)
  (tmp_path / "build.py").write_text(script)
  log = tmp_path / "build.log"  # a file, not a pipe: a worker left running would keep a pipe open
  with open(log, "w") as f:
    proc = subprocess.Popen([sys.executable, str(tmp_path / "build.py")], stdout=f, stderr=f,
                            start_new_session=True)
  try:
    # Both workers up for a while: past their start-up, rendering scenes.
    assert wait_until(lambda: len(procs.descendants(proc.pid)) >= 2, 120)
    time.sleep(3)
    workers = procs.descendants(proc.pid)
    assert len(workers) >= 2, procs.describe(workers)
  finally:
    proc.kill()
    proc.wait()
  left = procs.wait_gone(workers + procs.in_session(proc.pid), timeout_s=10)
  err = log.read_text()
  assert not left, f"still running 10 s after the build was killed: {procs.describe(left)}\n{err[-2000:]}"
  # Each worker saw its parent go (a chunk of 16 scenes at 128 px takes seconds): it did not wait to find
  # out by failing to send its results to no one.
  assert err.count(f"its parent {proc.pid} has ended") == 2, err[-3000:]


def test_killed_launcher_takes_its_processes_with_it(tmp_path):
  proc, _, started = start_cluster(tmp_path)
  assert len(started) == 2
  proc.kill()  # SIGKILL: the script's trap never runs
  proc.wait()
  left = procs.wait_gone(started, timeout_s=10)
  assert not left, procs.describe(left)


def test_terminated_launcher_passes_sigterm_on_and_waits_for_the_saves(tmp_path):
  proc, out, started = start_cluster(tmp_path)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode == 143
  # The launcher left only after each process had finished its (1.5 s) save: none was cut short.
  assert sorted(p.name for p in out.glob("saved_*")) == sorted(f"saved_{p.pid}" for p in started)
  assert not procs.alive(started)


def sweep_like(tmp_path):
  """A process running the probe through procs.run, as vbanana.sweep runs each training."""
  (tmp_path / "probe.py").write_text(PROBE)
  out = tmp_path / "out"
  out.mkdir()
  code = f"from vbanana import procs; procs.run([{sys.executable!r}, {str(tmp_path / 'probe.py')!r}, {str(out)!r}])"
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  pids = probe_pids(out, 1)
  table = procs.snapshot()
  return proc, out, [table[pid] for pid in pids if pid in table]


def test_killed_sweep_takes_its_run_with_it(tmp_path):
  proc, _, started = sweep_like(tmp_path)
  assert len(started) == 1 and started[0].ppid == proc.pid
  proc.kill()
  proc.wait()
  assert not procs.wait_gone(started, timeout_s=10), procs.describe(procs.alive(started))


def test_terminated_sweep_passes_sigterm_on_and_waits(tmp_path):
  proc, out, started = sweep_like(tmp_path)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=60)
  assert proc.returncode == 143
  assert [p.name for p in out.glob("saved_*")] == [f"saved_{started[0].pid}"]


def test_procs_launcher_refuses_bad_arguments_and_a_gone_parent():
  run = lambda *args: subprocess.run([sys.executable, "-m", "vbanana.procs", *args], capture_output=True,
                                     text=True, cwd=ROOT)
  r = run("--parent=x", "--", "true")
  assert r.returncode == 2 and "--parent: expected a process id, got 'x'" in r.stderr
  assert run("true").returncode == 2
  r = run("--parent=1", "--", "true")  # pid 1 is not our parent: as if the launcher had already ended
  assert r.returncode == 1 and "has already ended" in r.stderr
  assert run(f"--parent={os.getpid()}", "--", "sh", "-c", "exit 7").returncode == 7  # exec'd: its status


def test_session_check_fails_on_a_process_left_behind(tmp_path):
  shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
  (tmp_path / "test_leak.py").write_text(textwrap.dedent("""
      import subprocess
      def test_leaks():
        subprocess.run(["sh", "-c", "sleep 120 & echo $!"], check=True)  # an orphan of an ended child
  """))
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                     capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
  try:
    assert r.returncode != 0, r.stdout
    assert "processes started during the tests still run after them (1)" in r.stdout, r.stdout[-3000:]
    assert "sleep 120" in r.stdout
  finally:  # the orphan came back to this session (a subreaper too): end it
    for p in procs.descendants(os.getpid()):
      if p.cmdline == "sleep 120":
        os.kill(p.pid, signal.SIGKILL)


@pytest.mark.parametrize("parent_alive", [True, False])
def test_die_with_parent_in_a_child(tmp_path, parent_alive):
  """A child that runs DieWithParent() made for its parent ends when that parent ends (at once when the
  parent is no longer its parent by the time it starts)."""
  log = tmp_path / "child.log"
  code = textwrap.dedent(f"""
      import os, pickle, subprocess, sys, time
      from vbanana import procs
      init = procs.DieWithParent()
      init.parent_pid = os.getpid() if {parent_alive} else 1  # 1: as if the parent had already ended
      with open({str(log)!r}, "w") as log:
        child = subprocess.Popen([sys.executable, "-c",
            "import pickle, sys, time; pickle.loads(sys.stdin.buffer.read())(); time.sleep(120)"],
            stdin=subprocess.PIPE, stdout=log, stderr=log)
      child.stdin.write(pickle.dumps(init))
      child.stdin.close()
      print(child.pid, flush=True)
      time.sleep(1.0)
  """)
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                     env={**os.environ, "PYTHONPATH": str(ROOT)})
  assert r.returncode == 0, r.stderr
  child = procs._read(int(r.stdout))  # pylint: disable=protected-access
  assert child is None or not procs.wait_gone([child], timeout_s=10), procs.describe([child])
  assert "has ended" in log.read_text()
