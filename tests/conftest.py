"""Test set-up: 8 simulated CPU devices (set before jax is imported) and parsed absl flags.

Grain worker processes read absl flags; outside `absl.app.run` they must be marked parsed.
The session fails if a process started by a test (a trainer's data workers, a Pool) outlives it.
"""
import gc
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

from vbanana import procs  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def no_stray_processes():
  """At the end of the session no descendant of the pytest process may still run (listed if one does).

  The pytest process becomes a child subreaper, so orphans (the workers of a trainer that a test killed)
  are re-parented to it rather than to init and stay visible here. This process's own multiprocessing
  resource tracker is expected: it ends with this process.
  """
  procs.become_subreaper()
  yield
  gc.collect()  # Grain closes the workers of iterators nobody holds any more
  from multiprocessing import resource_tracker
  tracker = getattr(resource_tracker._resource_tracker, "_pid", None)  # pylint: disable=protected-access
  stray = procs.wait_gone([p for p in procs.descendants(os.getpid()) if p.pid != tracker], timeout_s=3)
  if stray:
    pytest.fail(f"processes started during the tests still run after them ({len(stray)}): "
                f"{procs.describe(stray)}", pytrace=False)


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
  """The scenes dataset at 32x32, built once per test session (every split the runs read)."""
  from cli_helpers import RES
  from vbanana import config_lib
  from vbanana.data import sources
  data_dir = str(tmp_path_factory.mktemp("scenes"))
  spec = config_lib.scenes_components(data_dir, RES, {"generation": 1.0}, num_train=64, num_validation=8,
                                      num_test=8)["generation"]["source"]
  for split in ("train", "validation"):
    sources.make_source(spec, split)
  return data_dir


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, scenes_dir):
  """8 steps of the quickstart config (batch 8) in one process on 8 devices, checkpoints every 2 steps."""
  from cli_helpers import run_main, tiny_args
  workdir = tmp_path_factory.mktemp("reference")
  r = run_main(*tiny_args(workdir, scenes_dir), timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir
