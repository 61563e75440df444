"""The Colab notebooks run headless top to bottom with small parameters (nbclient, a kernel of this venv)."""
import json
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from cli_helpers import one_device_xla_flags

pytestmark = pytest.mark.slow  # each notebook trains or predicts

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL = "vbanana-test"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
  """A kernel spec that starts this interpreter with the repository importable (vbanana is not installed)."""
  path = tmp_path_factory.mktemp("jupyter")
  spec_dir = path / "kernels" / KERNEL
  spec_dir.mkdir(parents=True)
  pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
  env = {"PYTHONPATH": pythonpath, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": one_device_xla_flags(),
         "TF_CPP_MIN_LOG_LEVEL": "3"}
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "vbanana test", "language": "python", "env": env}))
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = str(path)
  yield KERNEL
  if old is None:
    os.environ.pop("JUPYTER_PATH", None)
  else:
    os.environ["JUPYTER_PATH"] = old


def execute(name: str, kernel: str, cwd: pathlib.Path, **params) -> nbformat.NotebookNode:
  """Runs colabs/<name> with `params` injected after its `parameters` cell; raises on any cell's error."""
  nb = nbformat.read(ROOT / "colabs" / name, as_version=4)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
  source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
  NotebookClient(nb, kernel_name=kernel, timeout=240, resources={"metadata": {"path": str(cwd)}}).execute()
  return nb


def outputs_of(nb) -> str:
  text = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      text.append(out.get("text", "") + json.dumps(out.get("data", {}).get("text/plain", "")))
  return "\n".join(text)


def images_shown(nb) -> int:
  return sum("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


@pytest.fixture(scope="module")
def quickstart(kernel, tmp_path_factory):
  cwd = tmp_path_factory.mktemp("quickstart")
  nb = execute("quickstart.ipynb", kernel, cwd, WORKDIR=str(cwd / "run"), DATA_DIR=str(cwd / "data"), STEPS=3,
               BATCH=8, NUM_TRAIN=16, SHOW=2, PERCEPTION_STEPS=1, GENERATION_STEPS=2,
               EXPORT_PATH=str(cwd / "quickstart.safetensors"))
  return nb, cwd


def test_quickstart_trains_shows_every_task_and_exports(quickstart):
  nb, cwd = quickstart
  assert (cwd / "quickstart.safetensors").exists()
  assert (cwd / "run" / "checkpoints").is_dir()
  # Loss curve + 7 task grids + generated + edited images.
  assert images_shown(nb) >= 10
  assert "vbanana from" in outputs_of(nb)  # the install cell saw vbanana importable and skipped pip
  assert len(list((cwd / "colab_outputs").glob("generated_*/*.png"))) == 4


def test_predict_notebook_runs_every_task_on_an_image(quickstart, kernel, tmp_path):
  from PIL import Image
  from vbanana.data import scenes
  _, qs = quickstart
  image = tmp_path / "photo.jpg"
  Image.fromarray(scenes.make_sample("test", 1, 64)["image"]).save(image)
  nb = execute("predict.ipynb", kernel, tmp_path, CHECKPOINT=str(qs / "quickstart.safetensors"),
               IMAGE_PATH=str(image), STEPS=1, GENERATION_STEPS=2, OUT=str(tmp_path / "preds"))
  out = tmp_path / "preds"
  for suffix in ("depth.npy", "normals.npy", "semantic.png", "instance.png", "referring.png", "edit.png"):
    assert (out / f"photo.{suffix}").exists(), suffix
  assert images_shown(nb) >= 2
  assert "depth: (64, 64)" in outputs_of(nb)


def test_klein_notebook_predicts_tunes_with_lora_and_exports(kernel, scenes_dir, tmp_path):
  """colabs/klein_tpu.ipynb with a tiny random klein (diffusers builds it here) in place of the download."""
  import flux2_fixtures as fx
  from PIL import Image
  from vbanana.data import scenes
  fx.tiny_klein_pipeline(str(tmp_path / "klein"))
  photo = tmp_path / "photo.png"
  Image.fromarray(scenes.make_sample("test", 2, 48)["image"]).save(photo)
  tiny = dict(dtype="float32", param_dtype="float32", remat="none", prompt_len=32, text_layers=(1, 2, 3),
              image_size=32)
  nb = execute("klein_tpu.ipynb", kernel, tmp_path, MODEL=str(tmp_path / "klein"), PHOTO=str(photo),
               WORKDIR=str(tmp_path / "run"), DATA_DIR=scenes_dir, EXPORT=str(tmp_path / "merged"), STEPS=2,
               BATCH=2, RES=32, RANK=4, NUM_TRAIN=64, PERCEPTION_STEPS=1, MODEL_OVERRIDES=tiny)
  for when in ("before", "after"):
    for suffix in ("depth.npy", "normals.npy", "semantic.png"):
      assert (tmp_path / "outputs" / when / f"photo.{suffix}").exists(), (when, suffix)
  assert (tmp_path / "merged" / "transformer" / "diffusion_pytorch_model.safetensors").exists()
  assert (tmp_path / "merged" / "model_index.json").exists()
  assert images_shown(nb) >= 2  # the loss curve and the before / after grid
  assert "loss " in outputs_of(nb)
