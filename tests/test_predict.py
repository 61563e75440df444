"""vbanana.predict on a tiny model trained here (real trainer, real checkpoint, real export): every task's
files, any input size and mode, and a one-line error for each user mistake."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vbanana import predict

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
PERCEPTION = ("depth", "normals", "semantic", "instance", "referring")


def train_tiny(base: pathlib.Path) -> tuple[str, str]:
  """(workdir, exported file) of a tiny model trained 4 steps on a small scenes set; made once per session."""
  from vbanana import export, train
  from vbanana.experiments import recipe
  workdir, exported = base / "run", base / "model.safetensors"
  if not exported.exists():
    config = recipe.make_config("scratch", vision_share=0.5, steps=4, batch=8, num_train=16, num_test=8,
                                data_dir=str(base / "data"))
    config.train.eval_at_end = False
    train.train_and_evaluate(config, str(workdir), final_eval=False)
    export.export_workdir(str(workdir), str(exported))
  return str(workdir), str(exported)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
  return train_tiny(tmp_path_factory.getbasetemp() / "tiny_model")


@pytest.fixture(scope="module")
def loaded(tiny):
  return predict.load(tiny[1])


@pytest.fixture
def images(tmp_path):
  """A folder of odd inputs: an RGB scene of another size, a grayscale and an RGBA image."""
  from vbanana.data import scenes
  folder = tmp_path / "in"
  folder.mkdir()
  rgb = scenes.make_sample("test", 0, 64)["image"][:, 8:56]  # 64 x 48: not square, not the model's size
  Image.fromarray(rgb).save(folder / "scene.png")
  Image.fromarray(rgb[..., 0]).convert("L").save(folder / "gray.png")
  Image.fromarray(np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 200, np.uint8)], -1), "RGBA").save(
      folder / "alpha.png")
  return folder


def test_cli_depth_on_a_folder(tiny, images, tmp_path):
  out = tmp_path / "out"
  r = subprocess.run([sys.executable, "-m", "vbanana.predict", f"--checkpoint={tiny[1]}", "--task=depth",
                      f"--input={images}", f"--out={out}", "--steps=2", "--batch_size=2"],
                     capture_output=True, text=True, timeout=180, cwd=ROOT,
                     env={**os.environ, "PYTHONPATH": PYTHONPATH, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stderr[-3000:]
  assert "gray.png is a grayscale image: converted to RGB" in r.stderr
  assert "alpha.png is a RGBA image: converted to RGB (alpha dropped)" in r.stderr
  for name in ("scene", "gray", "alpha"):
    depth = np.load(out / f"{name}.depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (64, 48)  # back at the input's size
    assert np.isfinite(depth).all() and (depth >= 0).all()
    mm = np.asarray(Image.open(out / f"{name}.depth.png"))
    assert mm.dtype == np.uint16 and mm.shape == (64, 48)
    np.testing.assert_allclose(mm, np.clip(np.round(depth * 1000), 0, 65535), atol=1)
    vis = np.asarray(Image.open(out / f"{name}.depth.vis.png"))
    assert vis.shape == (64, 48 + 4 + 48, 3)  # the input beside the prediction


@pytest.mark.parametrize("task", ["normals", "semantic", "instance", "referring"])
def test_every_perception_task_writes_its_files(task, tiny, loaded, images, tmp_path):
  out = tmp_path / "out"
  prompt = "the red sphere" if task == "referring" else None
  written = predict.run(tiny[1], task, str(out), input_path=str(images / "scene.png"), prompt=prompt, steps=2,
                        loaded=loaded, progress=False)
  assert all(os.path.exists(p) for p in written)
  assert str(out / f"scene.{task}.vis.png") in written
  if task == "normals":
    normals = np.load(out / "scene.normals.npy")
    assert normals.shape == (64, 48, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-4)
    return
  mask = Image.open(out / f"scene.{task}.png")
  ids = np.asarray(mask)
  assert ids.shape == (64, 48)
  legend = json.load(open(out / f"scene.{task}.json"))
  assert sorted(int(i) for i in legend["ids"]) == sorted(np.unique(ids).tolist())
  assert mask.mode == "P"
  palette = np.asarray(mask.getpalette()[:3 * 256]).reshape(-1, 3)
  for i, entry in legend["ids"].items():  # the legend's colours are the PNG's palette colours
    assert palette[int(i)].tolist() == entry["color"]
  if task == "semantic":
    from vbanana.data import scenes
    assert {e["name"] for e in legend["ids"].values()} <= set(scenes.CLASS_NAMES) | {"unlabelled"}
  if task == "referring":
    assert "the red sphere" in legend["instruction"]


def test_generate_and_edit(tiny, loaded, images, tmp_path):
  made = predict.run(tiny[1], "generate", str(tmp_path / "gen"), prompt="a red sphere", steps=2,
                     num_samples=3, loaded=loaded)
  assert [os.path.basename(p) for p in made] == ["generated_000.png", "generated_001.png", "generated_002.png"]
  res = loaded.config.image_size
  assert np.asarray(Image.open(made[0])).shape == (res, res, 3)
  edited = predict.run(tiny[1], "edit", str(tmp_path / "edit"), input_path=str(images / "scene.png"),
                       prompt="make the sphere blue", steps=2, loaded=loaded)
  assert np.asarray(Image.open(edited[0])).shape == (64, 48, 3)


def test_workdir_and_export_give_the_same_model(tiny, loaded):
  import jax
  from flax import nnx
  from_workdir = predict.load(tiny[0])
  assert from_workdir.config == loaded.config
  a = jax.tree.leaves(nnx.state(from_workdir.model, nnx.Param))
  b = jax.tree.leaves(nnx.state(loaded.model, nnx.Param))
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  assert from_workdir.prediction == loaded.prediction == "v"  # the trained run's config.flow default


def test_an_x_predicting_export_samples_as_one(tmp_path):
  """The export's `prediction` decides how predict samples. An untrained DiT outputs exactly 0 (its final
  layer is zero-initialised): read as a clean image that is mid-grey everywhere after any number of steps;
  read as a velocity it leaves the noise as it was."""
  from flax import nnx
  from vbanana import export
  from vbanana import model as model_lib
  cfg = model_lib.config_for("tiny", image_size=16, text_len=16, max_inputs=1)
  with nnx.use_eager_sharding(False):
    params = export.flatten(nnx.to_pure_dict(nnx.state(model_lib.DiT(cfg, rngs=nnx.Rngs(0)), nnx.Param)))
  images = {}
  for prediction in ("v", "x"):
    path = str(tmp_path / f"{prediction}.safetensors")
    export.write(path, params, cfg.to_dict(), prediction=prediction)
    loaded = predict.load(path)
    assert loaded.prediction == prediction
    made = predict.run(path, "generate", str(tmp_path / prediction), prompt="a red sphere", steps=3,
                       num_samples=2, loaded=loaded)
    images[prediction] = np.stack([np.asarray(Image.open(m)) for m in made])
  assert np.isin(images["x"], (127, 128)).all()  # to_uint8 of 0 (127.5, rounded either way by float dust)
  assert images["v"].std() > 50                  # noise


def _foreign_checkpoints(tmp_path, exported):
  """A safetensors file of another library, and an export whose config is another model's."""
  from safetensors.numpy import save_file
  from vbanana import export
  foreign = tmp_path / "foreign.safetensors"
  save_file({"x": np.zeros(2, np.float32)}, str(foreign))
  cfg, flat = export.read(exported)
  other = tmp_path / "other.safetensors"
  export.write(str(other), flat, {**cfg, "width": cfg["width"] * 2})
  return foreign, other


def test_user_mistakes_give_one_line_and_status_2(tiny, images, tmp_path, capsys):
  garbage = tmp_path / "notes.png"
  garbage.write_text("not an image")
  empty = tmp_path / "empty"
  empty.mkdir()
  foreign, other = _foreign_checkpoints(tmp_path, tiny[1])
  out = str(tmp_path / "out")
  scene = str(images / "scene.png")
  cases = [
      ([f"--input={tmp_path / 'missing.png'}", "--task=depth"], "no such file"),
      ([f"--input={garbage}", "--task=depth"], "is not an image"),
      ([f"--input={empty}", "--task=depth"], "holds no images"),
      ([f"--input={scene}", "--task=segment"], "unknown task 'segment'"),
      ([f"--input={scene}", "--task=referring"], "--task=referring needs --prompt"),
      (["--task=generate"], "--task=generate needs --prompt"),
      ([f"--input={scene}", "--task=edit"], "--task=edit needs --prompt"),
      ([f"--input={scene}", "--task=depth", "--steps=0"], "--steps must be at least 1"),
  ]
  for args, expected in cases:
    assert predict.main([f"--checkpoint={tiny[1]}", f"--out={out}", *args]) == 2, args
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1, (args, err)
  for checkpoint, expected in [(tmp_path / "nowhere", "no such file or directory"),
                               (empty, "is not a vbanana training workdir"),
                               (garbage, "not a vbanana export"),
                               (foreign, "not a vbanana export"),
                               (other, "a checkpoint of another model")]:
    assert predict.main([f"--checkpoint={checkpoint}", f"--input={scene}", "--task=depth", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expected in err and len(err.splitlines()) == 1, (checkpoint, err)


def test_cli_error_has_no_traceback(tmp_path):
  r = subprocess.run([sys.executable, "-m", "vbanana.predict", f"--checkpoint={tmp_path}", "--task=depth",
                      f"--input={tmp_path / 'none.jpg'}", f"--out={tmp_path}"], capture_output=True, text=True,
                     timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": PYTHONPATH})
  assert r.returncode == 2
  assert r.stderr.strip().splitlines() == [f"error: --input: no such file or folder: {tmp_path / 'none.jpg'}"]
