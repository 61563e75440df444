"""configs/eval_paper.py end to end with a real tiny trained checkpoint (conftest's shared one): fixture data in real layouts and TFDS mock records, paper_table.md with the paper's rows, our
numbers and a skip line for every absent dataset; then the README command itself as a subprocess."""

import os
import pathlib
import subprocess
import sys

import tensorflow_datasets as tfds

import bench_fixtures
from cli_helpers import ROOT
from vbanana import config_lib
from vbanana.bench import benchmarks, options, paper, runner

import pytest

pytestmark = pytest.mark.slow  # the shared trained tiny model


PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="module")
def tiny(tiny_model):
  """conftest's shared tiny model: (workdir, exported file)."""
  return str(tiny_model[0]), str(tiny_model[1])


def test_eval_paper_config_writes_the_table(tiny, tmp_path):
  data = tmp_path / "data"
  bench_fixtures.kitti(str(data))
  bench_fixtures.dsine(str(data), "nyuv2")
  bench_fixtures.reasonseg(str(data))
  bench_fixtures.nuscenes(str(data))
  bench_fixtures.sa_co_gold(str(data))
  (data / "nyu_depth_v2").mkdir()  # the TFDS dataset's folder: its records come from the mock
  config = config_lib.load_config(f"configs/eval_paper.py:checkpoint={tiny[1]},data_dir={data},limit=2,steps=1")
  lines = []
  with tfds.testing.mock_data(num_examples=3):
    outcome = runner.run(runner.settings_from_config(config.bench), str(tmp_path / "out"), log=lines.append)
  results = outcome["results"]
  assert set(results) == {"depth_kitti", "normals_nyuv2", "reasonseg", "depth_nyu", "depth_nuscenes", "sa_co_gold"}
  assert results["depth_nyu"]["count"] == 2  # the limit
  assert results["reasonseg"]["count"] == 1  # its one image, scored on its first text (the authors' protocol)
  assert results["depth_nuscenes"]["count"] == 2 and 0 <= results["depth_nuscenes"]["delta1"] <= 1
  assert results["sa_co_gold"]["count"] == 2 and 0 <= results["sa_co_gold"]["pmf1"] <= 1
  assert results["depth_kitti"]["count"] == 1 and 0 <= results["depth_kitti"]["delta1"] <= 1
  assert 0 <= results["normals_nyuv2"]["mean_angle"] <= 180
  absent = {b.name for b in benchmarks.BENCHMARKS} - set(results)
  assert set(outcome["skipped"]) == absent and not outcome["errors"]
  for name in absent:  # one line each, naming the path expected
    [line] = [l for l in lines if l.startswith(f"skipped {name}: ")]
    assert str(data) in line
  table = pathlib.Path(outcome["table"]).read_text()
  assert outcome["table"] == str(tmp_path / "out" / "paper_table.md")
  for row in paper.TABLE1:
    assert f"| {row.capability} | {row.benchmark} | {row.paper} | {row.counterpart} ({row.counterpart_name}) |" in table
  assert f"{results['reasonseg']['giou']:.3f}" in table
  assert f"| SA-Co/Gold (pmF1) | 0.540* | 0.552 (DINO-X) | {results['sa_co_gold']['pmf1']:.3f} |" in table
  assert f"| nuScenes | 0.643 | not printed in the paper | {results['depth_nuscenes']['delta1']:.3f} |" in table
  # Two of the four depth sets ran: the average is marked partial, never passed off as the paper's mean.
  assert "(partial: nyu, kitti of nyu, eth3d, diode_indoor, kitti)" in table
  assert "| KITTI | 0.915 | 0.953 |" in table and "| NYUv2 | 17.778 | 16.9 |" in table
  assert "Eigen crop [45:471, 41:601]" in table and "not run: no TFDS dataset at" in table
  # The protocol options the run used, in the log and at the top of the table.
  assert lines[0] == "protocol options: " + ", ".join(f"{k}={v}" for k, v in options.DEFAULTS.items())
  assert "- `kitti_crop=garg` (default; depth_kitti): Garg crop of the full frame (monodepth2)" in table


def test_readme_command_and_a_wrong_layout(tiny, tmp_path):
  data = tmp_path / "data"
  bench_fixtures.dsine(str(data), "nyuv2")
  (data / "eth3d").mkdir(parents=True)  # present but empty: the wrong layout
  workdir = tmp_path / "work"
  r = subprocess.run([sys.executable, "-m", "vbanana.main",
                      f"--config=configs/eval_paper.py:checkpoint={tiny[0]},data_dir={data},limit=1,steps=1",
                      "--mode=eval", f"--workdir={workdir}"], capture_output=True, text=True, timeout=240,
                     cwd=ROOT, env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 1, r.stderr[-3000:]  # the layout error makes the run fail, after the table is written
  assert f"skipped cityscapes: no TFDS dataset at {data}/cityscapes" in r.stdout
  assert f"error: eth3d: no images in {data}/eth3d/*/images/dslr_images_undistorted" in r.stdout
  table = (workdir / "paper_table.md").read_text()
  assert "| NYUv2 | 17.778 | 16.9 |" in table and "not run" not in table.split("| NYUv2 |")[1].split("\n")[0]
