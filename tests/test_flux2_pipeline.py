"""The whole klein pipeline against diffusers' Flux2KleinPipeline on one tiny saved folder: the same prompt
and the same latents give the same images (text-to-image with real CFG, editing with a reference), the
sigma schedules are identical, and `predict_files` writes those images as PNGs."""

import json
import os
import shutil

import flux2_fixtures as fx
import numpy as np
import pytest
from PIL import Image

from vbanana.flux2 import pipeline as pipeline_lib
from vbanana.flux2 import scheduler as scheduler_lib

LENGTH = 24  # max_sequence_length: the tiny prompts fit
HEIGHT, WIDTH = 64, 80  # non-square; the tiny VAE has 3 blocks: 8 px a token (klein: 16), an 8 x 10 grid
TOKEN = 8


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
  """(diffusers pipeline, its saved folder, vbanana's pipeline loaded from that folder)."""
  folder = str(tmp_path_factory.mktemp("klein"))
  torch_pipe = fx.tiny_klein_pipeline(folder)
  return torch_pipe, folder, pipeline_lib.load_pipeline(folder)


def _reference_image():
  rng = np.random.default_rng(1)
  return Image.fromarray((rng.random((HEIGHT + 7, WIDTH + 5, 3)) * 255).astype(np.uint8))  # cropped to 64 x 80


def _both(klein, steps, prompt, latents, image=None):
  import torch  # pylint: disable=g-import-not-at-top
  torch_pipe, _, pipe = klein
  kw = dict(num_inference_steps=steps, guidance_scale=4.0, max_sequence_length=LENGTH,
            text_encoder_out_layers=fx.KLEIN_TEXT_LAYERS)
  size = {} if image is not None else dict(height=HEIGHT, width=WIDTH)
  want = torch_pipe(prompt=prompt, image=image, latents=torch.from_numpy(latents), output_type="np", **size,
                    **kw).images
  got = pipe(prompt, image=image, latents=latents, **size, **kw)
  return want, got, torch_pipe.scheduler.sigmas.numpy()


@pytest.mark.slow
def test_text_to_image_matches_diffusers(klein):
  latents = np.random.default_rng(0).standard_normal((2, 16, HEIGHT // TOKEN, WIDTH // TOKEN)).astype(np.float32)
  want, got, sigmas = _both(klein, 3, ["a red cube on the ground", "segment every sphere"], latents)
  diff = np.abs(got - want).max()
  print(f"text-to-image, 3 steps, guidance 4, batch 2: max |vbanana - diffusers| = {diff:.2e}")
  assert got.shape == want.shape == (2, HEIGHT, WIDTH, 3) and got.dtype == np.float32
  assert diff <= 1e-4 and want.std() > 0.05  # images, not a constant
  schedule = klein[2].schedule
  assert schedule.use_dynamic_shifting
  np.testing.assert_array_equal(schedule.sigmas(3, (HEIGHT // TOKEN) * (WIDTH // TOKEN)), sigmas)


@pytest.mark.slow
def test_editing_with_a_reference_matches_diffusers(klein):
  latents = np.random.default_rng(2).standard_normal((1, 16, HEIGHT // TOKEN, WIDTH // TOKEN)).astype(np.float32)
  want, got, sigmas = _both(klein, 2, "make the cube blue", latents, image=_reference_image())
  diff = np.abs(got - want).max()
  print(f"editing, one reference, 2 steps, guidance 4: max |vbanana - diffusers| = {diff:.2e}")
  assert got.shape == want.shape == (1, HEIGHT, WIDTH, 3)  # the output takes the cropped reference's size
  assert diff <= 1e-4
  np.testing.assert_array_equal(klein[2].schedule.sigmas(2, (HEIGHT // TOKEN) * (WIDTH // TOKEN)), sigmas)


@pytest.mark.parametrize("config", [dict(shift=3.0), dict(use_dynamic_shifting=True, shift=3.0),
                                    dict(use_dynamic_shifting=True, time_shift_type="linear", shift_terminal=0.05)])
@pytest.mark.slow
def test_sigma_schedules_are_identical(config):
  from diffusers import FlowMatchEulerDiscreteScheduler  # pylint: disable=g-import-not-at-top
  from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu  # pylint: disable=g-import-not-at-top
  reference = FlowMatchEulerDiscreteScheduler(**config)
  schedule = scheduler_lib.FlowMatchSchedule.from_dict(dict(reference.config))
  for steps, tokens in ((50, 4096), (4, 1024), (28, 6400)):  # 6400 > 4300: the other line of mu
    mu = compute_empirical_mu(tokens, steps)
    assert scheduler_lib.compute_empirical_mu(tokens, steps) == mu
    reference.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    sigmas = schedule.sigmas(steps, tokens)
    np.testing.assert_array_equal(sigmas, reference.sigmas.numpy())
    np.testing.assert_array_equal(schedule.model_times(sigmas), (reference.timesteps / 1000).numpy())


@pytest.mark.slow
def test_predict_files_writes_the_pipeline_images(klein, tmp_path):
  _, folder, pipe = klein
  kw = dict(steps=2, guidance_scale=4.0, max_sequence_length=LENGTH, text_encoder_out_layers=fx.KLEIN_TEXT_LAYERS)
  _reference_image().save(tmp_path / "photo.png")
  edited = pipeline_lib.predict_files(folder, "editing", "make the cube blue", [str(tmp_path / "photo.png")],
                                      str(tmp_path / "out"), pipeline=pipe, seed=3, **kw)
  assert edited == [str(tmp_path / "out" / "photo.edit.png")]
  want = pipe("make the cube blue", image=Image.open(tmp_path / "photo.png"), num_inference_steps=2, seed=3,
              max_sequence_length=LENGTH, text_encoder_out_layers=fx.KLEIN_TEXT_LAYERS)[0]
  np.testing.assert_array_equal(np.asarray(Image.open(edited[0])), pipeline_lib.to_uint8(want))
  generated = pipeline_lib.predict_files(folder, "generation", "a red cube", (), str(tmp_path / "out"),
                                         pipeline=pipe, height=HEIGHT, width=WIDTH, num_samples=2, **kw)
  assert [os.path.basename(p) for p in generated] == ["generated_000.png", "generated_001.png"]
  a, b = (np.asarray(Image.open(p)) for p in generated)
  assert a.shape == (HEIGHT, WIDTH, 3) and not np.array_equal(a, b)  # one batch, two draws
  with pytest.raises(ValueError, match="generation takes no --input"):
    pipeline_lib.predict_files(folder, "generation", "x", [str(tmp_path / "photo.png")], str(tmp_path), pipeline=pipe)
  with pytest.raises(ValueError, match="task 'depth'"):
    pipeline_lib.predict_files(folder, "depth", "x", (), str(tmp_path), pipeline=pipe)


@pytest.fixture(scope="module")
def klein_download(tmp_path_factory):
  """(diffusers pipeline, its folder): a tiny klein the predict command runs with klein's own defaults (Qwen3 of
  27 layers so layers 9, 18, 27 exist, 512 prompt tokens); a 2-block VAE, 4 px a token, so diffusers' default
  size (128 latent positions a side) is 256 x 256 px, 64 x 64 tokens."""
  folder = str(tmp_path_factory.mktemp("download"))
  return fx.tiny_klein_pipeline(folder, seed=1, qwen3_layers=27, vae_channels=(8, 16)), folder


def _diffusers_uint8(torch_pipe, latents, **kw):
  """diffusers' images for these latents, as its output_type="pil" rounds them."""
  import torch  # pylint: disable=g-import-not-at-top
  images = torch_pipe(latents=torch.from_numpy(latents), output_type="np", **kw).images
  return (images * 255).round().astype(np.uint8)


@pytest.mark.slow
def test_predict_command_on_a_klein_folder_matches_diffusers(klein_download, tmp_path, capsys):
  """`python -m vbanana.predict --checkpoint=<diffusers folder> --task=generation|editing` (its main, in
  process): the latents are drawn from --seed as np.random.default_rng(seed).standard_normal((B, 128, H/16,
  W/16)) (here 16 channels, 4 px a token), so diffusers given the same array makes the same PNGs."""
  from vbanana import predict  # pylint: disable=g-import-not-at-top
  torch_pipe, folder = klein_download
  out = tmp_path / "out"
  prompt = "a red cube on the ground"
  assert predict.main([f"--checkpoint={folder}", "--task=generation", f"--prompt={prompt}", "--steps=2",
                       "--num_samples=1", "--seed=5", f"--out={out}"]) == 0
  got = np.asarray(Image.open(out / "generated_000.png"))[None]
  grid = torch_pipe.default_sample_size // 2  # diffusers' default size: 128 latent positions a side, 2x2 patches
  latents = np.random.default_rng(5).standard_normal((1, 16, grid, grid), np.float32)
  want = _diffusers_uint8(torch_pipe, latents, prompt=prompt, num_inference_steps=2)  # guidance 4 default
  diff = np.abs(got.astype(int) - want).max()
  off = float((got != want).mean())
  with capsys.disabled():  # the numbers to quote (capsys holds the command's own output)
    print(f"predict --task=generation, 256x256 (64 x 64 tokens), 2 steps, guidance 4: max |PNG - diffusers| = "
          f"{diff} (8-bit levels), {off:.1e} of values differ")
  assert got.shape == want.shape == (1, 256, 256, 3) and want.std() > 10
  assert diff <= 1 and off < 1e-3  # only a float difference of ~1e-6 at a rounding edge can flip a level

  reference = Image.fromarray((np.random.default_rng(1).random((71, 85, 3)) * 255).astype(np.uint8))
  reference.save(tmp_path / "photo.png")
  assert predict.main([f"--checkpoint={folder}", "--task=editing", f"--input={tmp_path / 'photo.png'}",
                       "--prompt=make the cube blue", "--steps=2", "--seed=3", f"--out={out}"]) == 0
  got = np.asarray(Image.open(out / "photo.edit.png"))
  latents = np.random.default_rng(3).standard_normal((1, 16, 68 // 4, 84 // 4), np.float32)  # cropped to 68 x 84
  want = _diffusers_uint8(torch_pipe, latents, prompt="make the cube blue", image=reference, num_inference_steps=2)[0]
  diff = np.abs(got.astype(int) - want).max()
  with capsys.disabled():
    print(f"predict --task=editing, one 71x85 reference, 2 steps, guidance 4: max |PNG - diffusers| = {diff} "
          f"(8-bit levels), {float((got != want).mean()):.1e} of values differ")
  assert got.shape == want.shape == (68, 84, 3) and diff <= 1 and (got != want).mean() < 1e-3
  capsys.readouterr()
  assert predict.main([f"--checkpoint={folder}", "--task=generate", "--prompt=x", "--method=heun",
                       f"--out={out}"]) == 2
  assert "klein's pipeline takes the Euler steps" in capsys.readouterr().err


def test_bad_inputs_name_the_problem(klein, tmp_path):
  _, folder, pipe = klein
  with pytest.raises(ValueError, match="image\\[0\\] is 63x80; both sides must be at least 64 px"):
    pipe("x", image=Image.new("RGB", (63, 80)), num_inference_steps=1, max_sequence_length=LENGTH,
         text_encoder_out_layers=fx.KLEIN_TEXT_LAYERS)
  with pytest.raises(ValueError, match=r"latents have shape \(1, 16, 2, 2\).*expected \(1, 16, 8, 10\)"):
    pipe("x", height=HEIGHT, width=WIDTH, latents=np.zeros((1, 16, 2, 2), np.float32), num_inference_steps=1,
         max_sequence_length=LENGTH, text_encoder_out_layers=fx.KLEIN_TEXT_LAYERS)
  with pytest.raises(ValueError, match="width 2 x 32; the transformer reads joint_attention_dim=96"):
    pipe("x", height=HEIGHT, width=WIDTH, num_inference_steps=1, max_sequence_length=LENGTH,
         text_encoder_out_layers=(1, 2))
  # Folders: another pipeline class, a missing part, a scheduler option vbanana does not implement.
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  index = json.loads((bad / "model_index.json").read_text())
  (bad / "model_index.json").write_text(json.dumps({**index, "_class_name": "Flux2Pipeline"}))
  with pytest.raises(ValueError, match="_class_name 'Flux2Pipeline'"):
    pipeline_lib.load_pipeline(str(bad))
  (bad / "model_index.json").write_text(json.dumps(index))
  config = json.loads((bad / "scheduler" / "scheduler_config.json").read_text())
  (bad / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "stochastic_sampling": True}))
  with pytest.raises(ValueError, match="stochastic_sampling=true is not supported"):
    scheduler_lib.FlowMatchSchedule.from_folder(str(bad))
  shutil.rmtree(bad / "vae")
  with pytest.raises(FileNotFoundError, match="no vae/ folder"):
    pipeline_lib.load_pipeline(str(bad))
