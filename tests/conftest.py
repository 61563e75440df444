"""Test set-up: 8 simulated CPU devices (set before jax is imported) and parsed absl flags.

Grain worker processes read absl flags; outside `absl.app.run` they must be marked parsed.
The session fails if a process started by a test (a trainer's data workers, a Pool) outlives it.
"""
import gc
import os
import pathlib

# The tests compile far more than they compute (tiny models, a few steps each), so XLA's CPU backend skips
# LLVM's optimisation of the generated code and uses its older fusion emitters: compiles take a sixth of the
# time (the quickstart's train step 35 s -> 19 s at level 0, -> 6 s with the older emitters; docs/performance.md
# log entries 23 and 24), the numbers agree with the default build to float32 rounding (losses of an 8-step
# quickstart run within 1e-7), and every process of the test run, its subprocesses included
# (launch/local_cluster.sh and the rest through the environment), compiles the same way. The processes that
# load libtpu drop the `--xla_cpu_*` flag first (vbanana.accelerators: libtpu's XLA does not know it).
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if "VBANANA_TEST_XLA_FLAGS" not in os.environ:  # the controller (or a run without xdist); workers inherit it
  os.environ["VBANANA_TEST_XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()
# VBANANA_TEST_XLA_FLAGS: for the subprocesses on one device (cli_helpers.one_device_xla_flags); this process
# and the subprocesses that inherit its environment have 8.
os.environ["XLA_FLAGS"] = os.environ["VBANANA_TEST_XLA_FLAGS"] + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent compilation cache for the whole test run: the xdist workers and every trainer, predict or
# cluster process a test starts compile the same small programs; the first compile of each is shared by the
# rest (the cache key holds the program, the devices and the XLA flags, so nothing differs but the time).
# The controller makes it before the workers start (they inherit the environment) and removes it at the end.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vbanana-tests-jax-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import pytest  # noqa: E402

from vbanana import procs  # noqa: E402

# CI runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`, README). The work units are files:
# a file stays on one worker (its module fixtures are built once), and the files that share an expensive
# session fixture form one unit, so that fixture is built once too. The units start heaviest first (the
# order below, from `--durations`; the rest follow in collection order), so no long unit starts last.
# (pytest 9 keeps node ids apart from `item._nodeid`, where xdist 3.8 writes `xdist_group` marks: the units are
# made here, by xdist's scheduler hook.)
SHARED_FIXTURE_GROUPS = {"tiny_model": ("test_aspect", "test_bench", "test_flow", "test_predict"),
                         "reference_run": ("test_multihost", "test_train")}
HEAVIEST_FIRST = ("reference_run", "tiny_model", "test_parallel", "test_tpu", "test_klein_train", "test_model",
                  "test_recipe", "test_colabs", "test_label_efficiency", "test_gpu", "test_evaluate",
                  "test_flux2_pipeline", "test_step", "test_pipeline")
_GROUP_OF = {module: group for group, modules in SHARED_FIXTURE_GROUPS.items() for module in modules}


def work_unit(path: str) -> str:
  module = pathlib.PurePath(path).stem
  return _GROUP_OF.get(module, module)


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE and "PYTEST_XDIST_WORKER" not in os.environ:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Heaviest work units first (a stable sort: the order inside a file is kept)."""
  del config
  rank = {unit: i for i, unit in enumerate(HEAVIEST_FIRST)}
  items.sort(key=lambda item: rank.get(work_unit(str(item.path)), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class FileGroups(LoadScopeScheduling):
    def _split_scope(self, nodeid):
      return work_unit(nodeid.split("::")[0])

  config.option.loadscopereorder = False  # keep the order made above
  return FileGroups(config, log)


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


@pytest.fixture(autouse=True)
def restore_xla_flags():
  """Every test starts its subprocesses with the test run's XLA_FLAGS, also after a test that compiled for a
  TPU in this process (vbanana.accelerators drops the `--xla_cpu_*` flags from the environment for libtpu)."""
  flags = os.environ["XLA_FLAGS"]
  yield
  os.environ["XLA_FLAGS"] = flags


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
  r = run_main(*tiny_args(workdir, scenes_dir), timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
  """The one trained tiny model that the predict, aspect-ratio and benchmark tests share: the quickstart
  model at three aspect-ratio buckets (3:4, 1:1, 4:3 at 32 px, patch 4), 6 steps of batch 8 on 24 scenes,
  evaluated at the end on depth and semantic. (workdir, exported .safetensors), as pathlib.Paths."""
  from cli_helpers import ROOT
  from vbanana import config_lib, export, train
  base = tmp_path_factory.mktemp("tiny_model")
  config = config_lib.load_config(f"{ROOT}/configs/quickstart.py:steps=6,batch=8,aspect=3:4+1:1+4:3,"
                                  f"data_dir={base / 'data'}")
  for comp in config.data.components.values():
    comp.source.num_train, comp.source.num_validation, comp.source.num_test = 24, 6, 0
  config.data.num_workers = 0
  config.evals = {t: dict(type=t, split="validation", limit=6, steps=2) for t in ("depth", "semantic")}
  config.train.tensorboard = False
  config.train.peak_flops_per_device = 1e11
  workdir = base / "run"
  train.train_and_evaluate(config, str(workdir))
  export.export_workdir(str(workdir), str(base / "model.safetensors"))
  return workdir, base / "model.safetensors"
