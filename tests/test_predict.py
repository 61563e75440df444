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

pytestmark = pytest.mark.slow  # the shared trained tiny model; CLI subprocesses

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
PERCEPTION = ("depth", "normals", "semantic", "instance", "referring")


@pytest.fixture(scope="session")
def tiny(tiny_model):
  """(workdir, exported file) of conftest's shared tiny model, as strings."""
  return str(tiny_model[0]), str(tiny_model[1])


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
  assert np.asarray(Image.open(made[0])).shape == (res, res, 3)  # the bucket nearest 1:1: the square
  edited = predict.run(tiny[1], "edit", str(tmp_path / "edit"), input_path=str(images / "scene.png"),
                       prompt="make the sphere blue", steps=2, loaded=loaded)
  assert np.asarray(Image.open(edited[0])).shape == (64, 48, 3)


def test_workdir_and_export_give_the_same_model(tiny, loaded):
  import jax
  from_workdir = predict.load(tiny[0])
  assert from_workdir.config == loaded.config
  a, b = jax.tree.leaves(from_workdir.params), jax.tree.leaves(loaded.params)
  assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  assert from_workdir.prediction == loaded.prediction == "v"  # the trained run's config.flow default


def test_an_x_predicting_export_samples_as_one(tmp_path):
  """The export's `prediction` decides how predict samples. An untrained DiT outputs exactly 0 (its final
  layer is zero-initialised): read as a clean image that is mid-grey everywhere after any number of steps;
  read as a velocity it leaves the noise as it was."""
  from flax import nnx
  from vbanana import export, trees
  from vbanana import model as model_lib
  cfg = model_lib.config_for("tiny", image_size=16, text_len=16, max_inputs=1)
  with nnx.use_eager_sharding(False):
    params = trees.flatten(nnx.to_pure_dict(nnx.state(model_lib.DiT(cfg, rngs=nnx.Rngs(0)), nnx.Param)))
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


# ----------------------------------------------------------------------------------------------------------
# The package's outputs are the single-module predict's, and an oracle's known answers come back written.
# ----------------------------------------------------------------------------------------------------------
def _golden_model(path):
  """The tiny DiT (32 px, 224-byte instructions) whose parameters are 0.05 x N(0, 1) drawn with NumPy seed
  1234 in name order: the model tests/data/predict_golden.json was recorded with."""
  from flax import nnx
  from vbanana import export, trees
  from vbanana.model import config as model_config, dit
  cfg = model_config.config_for("tiny", image_size=32, text_len=224)
  model = nnx.eval_shape(lambda: dit.DiT(cfg, rngs=nnx.Rngs(0)))
  shapes = trees.flatten(nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[1]))
  rng = np.random.default_rng(1234)
  flat = {k: (0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in sorted(shapes.items())}
  export.write(str(path), flat, cfg.to_dict())


def test_outputs_are_those_of_the_single_module_predict(tmp_path):
  """Every task's files, byte for byte, as the predict.py of version 0.1 wrote them (recorded in
  tests/data/predict_golden.json with the same model, photo, prompts, 2 steps and seed 3)."""
  import hashlib
  golden = json.loads((ROOT / "tests" / "data" / "predict_golden.json").read_text())
  _golden_model(tmp_path / "model.safetensors")
  Image.fromarray(np.random.default_rng(7).integers(0, 256, (40, 52, 3), np.uint8)).save(tmp_path / "photo.png")
  loaded = predict.load(str(tmp_path / "model.safetensors"))
  prompts = {"instance": "cone", "referring": "the red sphere", "edit": "make the sphere blue", "generate": "a blue cube"}
  for task, files in golden.items():
    out = tmp_path / task
    written = predict.run(str(tmp_path / "model.safetensors"), task, str(out), steps=2, num_samples=2, seed=3,
                          input_path=None if task == "generate" else str(tmp_path / "photo.png"),
                          prompt=prompts.get(task), loaded=loaded, progress=False)
    got = {os.path.relpath(w, out): hashlib.sha256(open(w, "rb").read()).hexdigest() for w in written}
    assert got == files, task


def test_an_oracle_sampler_writes_the_known_answer(tiny, loaded, tmp_path, monkeypatch):
  """predict with a sampler that returns `task.encode(known)` for the request: the files hold `known` (the
  photo at the model's square shape, so nothing is resized): depth within the encoding's quantisation,
  normals within half a degree, masks exactly (instances up to their order)."""
  from vbanana import tasks
  from vbanana.data import scenes
  sample = scenes.make_sample("test", 3, 32)
  Image.fromarray(sample["image"]).save(tmp_path / "photo.png")
  shape_class = scenes.SHAPE_CLASS["sphere"]
  spheres = [i for i, c in sample["instance_class"].items() if c == shape_class] or [1]
  known = {
      "depth": lambda r: tasks.get("depth").encode(sample["depth"]),
      "normals": lambda r: tasks.get("normals").encode(sample["normals"]),
      "semantic": lambda r: tasks.get("semantic").encode(sample["semantic"], r.decode_args["colors"]),
      "instance": lambda r: tasks.get("instance").encode(np.stack([sample["instance"] == i for i in spheres]),
                                                         r.decode_args["background"]),
      "referring": lambda r: tasks.get("referring").encode(sample["instance"] == 1, r.decode_args["color"]),
  }
  for task, encode in known.items():
    prompt = "the red sphere" if task == "referring" else "sphere" if task == "instance" else None
    rgb = encode(predict.request(task, prompt))
    monkeypatch.setattr(predict.core, "make_sampler", lambda *a, rgb=rgb, **k: (lambda noise, batch: rgb[None]))
    out = tmp_path / task
    predict.run(tiny[1], task, str(out), str(tmp_path / "photo.png"), prompt=prompt, loaded=loaded, progress=False)
    if task == "depth":
      got, gt = np.load(out / "photo.depth.npy"), sample["depth"]
      ok = np.isfinite(gt) & (gt > 0)
      bound = tasks.get("depth").quantisation_bound(gt[ok])
      assert np.all(np.abs(got[ok] - gt[ok]) / gt[ok] <= bound + 1e-6)
    elif task == "normals":
      err = tasks.get("normals").angular_error(np.load(out / "photo.normals.npy"), sample["normals"])
      assert err[tasks.get("normals").valid_mask(sample["normals"])].max() < 0.5
    else:
      ids = np.asarray(Image.open(out / f"photo.{task}.png"))
      if task == "semantic":
        np.testing.assert_array_equal(ids, sample["semantic"])
      elif task == "referring":
        np.testing.assert_array_equal(ids, (sample["instance"] == 1).astype(np.uint8))
      else:
        got = sorted(tuple(np.flatnonzero(ids == k)) for k in np.unique(ids) if k)
        want = sorted(tuple(np.flatnonzero(sample["instance"] == i)) for i in spheres if (sample["instance"] == i).any())
        assert got == want
