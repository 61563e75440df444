"""Building the scenes data at any resolution, on Apache Beam, and who builds it (tests/test_scenes.py: the rest)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vbanana import config_lib
from vbanana.data import scenes, scenes_tfds, sources

pytestmark = pytest.mark.slow  # dataset builds (Beam, worker pools)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _same(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(
      (x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()) if isinstance(x, np.ndarray)
      else x == y for x, y in ((a[k], b[k]) for k in a))


def _spec(data_dir, resolution, **sizes):
  return config_lib.scenes_components(str(data_dir), resolution, {"generation": 1.0}, **sizes)["generation"]["source"]


def _run(*args, timeout=240, **env):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **env})


@pytest.mark.parametrize("resolution", [256, 48])  # a declared config and one made on request
def test_any_resolution_builds_and_reads_back(tmp_path, resolution):
  path = scenes_tfds.build(str(tmp_path), resolution, 1, 1, 0)
  assert path.endswith(f"vbanana_scenes/r{resolution}/1.0.0")
  for split in ("train", "validation"):
    got = scenes_tfds.load(str(tmp_path), resolution, split)[0]
    assert got["image"].shape == (resolution, resolution, 3)
    assert _same(got, scenes.make_sample(split, 0, resolution))


@pytest.mark.parametrize("resolution", [0, -32, 8, 2048, 64.0, "64", True])
def test_a_bad_resolution_is_one_line_naming_the_config_field(tmp_path, resolution):
  with pytest.raises(ValueError, match=r"config\.data\.resolution .* from 16 to 1024 .*got") as e:
    sources.make_source(_spec(tmp_path, resolution, num_train=2, num_validation=0, num_test=0))
  assert "\n" not in str(e.value)
  assert not any(tmp_path.iterdir())


def test_beam_build_reads_back_like_the_local_build(tmp_path):
  """The documented command on Beam's DirectRunner, two files per split: the same records in the same order."""
  beam_dir, local_dir = tmp_path / "beam", tmp_path / "local"
  r = _run("-m", "vbanana.data.build_scenes", f"--data_dir={beam_dir}", "--resolution=32", "--num_train=5",
           "--num_validation=3", "--num_test=0", "--num_shards=2", "--beam_pipeline_options=runner=DirectRunner")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "8 scenes at 32x32" in r.stdout
  path = pathlib.Path(scenes_tfds.prepared_dir(str(beam_dir), 32))
  assert len(list(path.glob("vbanana_scenes-train.array_record-*-of-00002"))) == 2
  assert not list(beam_dir.rglob("*incomplete*"))
  scenes_tfds.build(str(local_dir), 32, 5, 3, 0)
  for split, n in (("train", 5), ("validation", 3)):
    beam, local = scenes_tfds.load(str(beam_dir), 32, split), scenes_tfds.load(str(local_dir), 32, split)
    assert len(beam) == len(local) == n
    assert [beam[i]["key"] for i in range(n)] == [f"scenes/{split}/{i}" for i in range(n)]
    for i in range(n):
      assert _same(beam[i], local[i]), (split, i)


def test_build_command_rejects_bad_flags(tmp_path):
  r = _run("-m", "vbanana.data.build_scenes", f"--data_dir={tmp_path}", "--resolution=12")
  assert r.returncode != 0 and "--resolution must be an integer number of pixels from 16 to 1024" in r.stderr


@pytest.mark.parametrize("config", ["pretrain_tpu", "instruct_tpu"])
def test_pod_configs_refuse_to_build_a_million_scenes_inline(tmp_path, config):
  cfg = config_lib.load_config(f"configs/{config}.py:data_dir={tmp_path}")
  spec = next(iter(cfg.data.components.values()))["source"].to_dict()
  with pytest.raises(sources.ScenesNotBuiltError) as e:
    sources.make_source(spec, "train")
  message = str(e.value)
  assert "\n" not in message and scenes_tfds.prepared_dir(str(tmp_path), spec["resolution"]) in message
  assert (f"python -m vbanana.data.build_scenes --data_dir={tmp_path} --resolution={spec['resolution']} "
          f"--num_train={spec['num_train']} ") in message and "DataflowRunner" in message
  assert not any(tmp_path.iterdir())


def test_large_data_that_exists_is_read(tmp_path):
  scenes_tfds.build(str(tmp_path), 32, 3, 0, 0)
  source = sources.make_source(_spec(tmp_path, 32, num_train=1_000_000, num_validation=0, num_test=0), "train")
  assert len(source) == 3 and _same(source[2], scenes.make_sample("train", 2, 32))


PROBE = """
from absl import app, flags

flags.DEFINE_string("coordinator_address", None, "")
flags.DEFINE_integer("num_processes", 1, "")
flags.DEFINE_integer("process_id", 0, "")
flags.DEFINE_string("data_dir", None, "")
F = flags.FLAGS
def main(_):
  import jax
  jax.distributed.initialize(F.coordinator_address, F.num_processes, F.process_id)
  from vbanana import config_lib
  from vbanana.data import sources
  spec = config_lib.scenes_components(F.data_dir, 32, {"generation": 1.0}, num_train=4, num_validation=2,
                                      num_test=0)["generation"]["source"]
  for split in ("train", "validation"):
    source = sources.make_source(spec, split)
    print(f"READ process={jax.process_index()} {split} {[source[i]['key'] for i in range(len(source))]}",
          flush=True)
app.run(main)
"""


def test_two_hosts_one_builds_the_other_waits(tmp_path):
  probe = tmp_path / "probe.py"
  probe.write_text(PROBE)
  env = {**os.environ, "VBANANA_MAIN": str(probe), "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs"),
         "PYTHONPATH": str(ROOT), "DEVICES": "2"}
  data_dir = tmp_path / "data"
  r = subprocess.run(["bash", str(ROOT / "launch" / "local_cluster.sh"), "2", f"--data_dir={data_dir}"],
                     capture_output=True, text=True, timeout=240, env=env)
  logs = [(tmp_path / "logs" / f"process_{i}.log").read_text() for i in range(2)]
  assert r.returncode == 0, r.stderr[-3000:]
  for i, log in enumerate(logs):
    # Process 1 never builds: it can only have read the data after process 0's build, at the barrier.
    assert ("Building the scenes dataset once" in log) == (i == 0), log[-2000:]
    assert f"READ process={i} train ['scenes/train/0', 'scenes/train/1', 'scenes/train/2', 'scenes/train/3']" in log
    assert f"READ process={i} validation ['scenes/validation/0', 'scenes/validation/1']" in log
  assert not list(data_dir.rglob("*incomplete*"))
