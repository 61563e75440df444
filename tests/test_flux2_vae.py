"""The FLUX.2 VAE against diffusers' AutoencoderKLFlux2: encode (mode) and decode, klein's token codec
(patchify + BatchNorm statistics), the way back to diffusers' format, the real size's parameter count, and
the codec check's plumbing on a tiny random VAE."""

import json
import os

import flux2_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vbanana.flux2 import vae as vae_lib
from vbanana.flux2 import weights

# Two configs, non-square images: klein's shape in small (2 blocks, mid attention), and a deeper one with 2
# ResNets a block, no mid attention, a wider decoder than encoder and 8 latent channels.
CONFIGS = {
    "small": (dict(), (48, 32)),
    "deeper": (dict(block_out_channels=(8, 16, 16), layers_per_block=2, latent_channels=8,
                    decoder_block_out_channels=(8, 16, 24), mid_block_add_attention=False), (32, 64)),
}


def _torch_reference(model, images):
  """diffusers: the posterior's mode, its decoding, and klein's tokens as the pipeline makes them."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import Flux2KleinPipeline  # pylint: disable=g-import-not-at-top
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  with torch.no_grad():
    z = model.encode(x).latent_dist.mode()
    decoded = model.decode(z).sample
    std = torch.sqrt(model.bn.running_var.view(1, -1, 1, 1) + model.config.batch_norm_eps)
    tokens = (Flux2KleinPipeline._patchify_latents(z) - model.bn.running_mean.view(1, -1, 1, 1)) / std
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  return nhwc(z), nhwc(decoded), nhwc(tokens)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_encode_decode_match_diffusers(name, tmp_path):
  kwargs, (h, w) = CONFIGS[name]
  model = fx.tiny_vae(str(tmp_path), **kwargs)
  images = np.random.default_rng(0).uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
  z_want, decoded_want, tokens_want = _torch_reference(model, images)
  vae = vae_lib.load_vae(str(tmp_path))

  @nnx.jit
  def run(vae, images, z):
    latents = vae.encode(images)  # encode_images is this composition (the pipeline test runs it whole)
    return latents, vae.decode(z), vae.bn.normalize(vae.patchify(latents))

  z, decoded, tokens = (np.asarray(a) for a in run(vae, jnp.asarray(images), jnp.asarray(z_want)))
  diffs = {k: float(np.abs(a - b).max()) for k, a, b in (("encode", z, z_want), ("decode", decoded, decoded_want),
                                                          ("tokens", tokens, tokens_want))}
  print(f"{name}: max |vbanana - diffusers| {diffs}")
  assert tokens.shape == (2, h // (2 * vae.cfg.scale), w // (2 * vae.cfg.scale), 4 * vae.cfg.latent_channels)
  assert max(diffs.values()) <= 1e-4
  # The token codec inverts its own normalisation and patchify exactly (up to float rounding).
  back = np.asarray(vae.unpatchify(vae.bn.denormalize(jnp.asarray(tokens))))
  np.testing.assert_allclose(back, z, atol=1e-5)


def test_save_vae_round_trip(tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers import AutoencoderKLFlux2  # pylint: disable=g-import-not-at-top
  source = fx.tiny_vae(str(tmp_path / "src"))
  vae = vae_lib.load_vae(str(tmp_path / "src"))
  vae_lib.save_vae(vae, str(tmp_path / "out"), max_shard_size=20_000)  # small shards: an index and several files
  assert os.path.exists(tmp_path / "out" / "diffusion_pytorch_model.safetensors.index.json")
  back, info = AutoencoderKLFlux2.from_pretrained(str(tmp_path / "out"), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  want, got = source.state_dict(), back.state_dict()
  assert sorted(want) == sorted(got)
  for k in want:
    assert torch.equal(want[k], got[k]), k
  again = vae_lib.load_vae(str(tmp_path / "out"))  # and our own loader reads the sharded copy
  for (p, a), (_, b) in zip(nnx.to_flat_state(nnx.state(vae)), nnx.to_flat_state(nnx.state(again))):
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(p))


def test_real_size_parameter_count():
  vae = nnx.eval_shape(lambda: vae_lib.Flux2VAE(vae_lib.VAEConfig(), rngs=nnx.Rngs(0)))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(vae, nnx.Param))) == 84_046_115
  assert vae.cfg.token_channels == 128 and vae.cfg.scale == 8


def test_bad_checkpoints_name_the_tensor(tmp_path):
  fx.tiny_vae(str(tmp_path / "src"))
  src = weights.open_checkpoint(str(tmp_path / "src"))
  tensors = {n: np.array(src.read(n)) for n in src.names}
  config = (tmp_path / "src" / "config.json").read_text()
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text(config)
  name = "decoder.up_blocks.1.resnets.0.conv2.weight"
  weights.write_checkpoint(str(bad), {n: t for n, t in tensors.items() if n != name})
  with pytest.raises(weights.CheckpointError, match=f"'{name}' is missing"):
    vae_lib.load_vae(str(bad))
  weights.write_checkpoint(str(bad), {**tensors, "bn.running_var": tensors["bn.running_var"][:3]})
  with pytest.raises(weights.CheckpointError, match=r"'bn.running_var' has shape \(3,\), expected \(16,\)"):
    vae_lib.load_vae(str(bad))
  weights.write_checkpoint(str(bad), {**tensors, "encoder.extra.weight": np.zeros(2, np.float32)})
  with pytest.raises(weights.CheckpointError, match="'encoder.extra.weight' is not a parameter"):
    vae_lib.load_vae(str(bad))
  (bad / "config.json").write_text(json.dumps({**json.loads(config), "_class_name": "AutoencoderKL"}))
  with pytest.raises(ValueError, match="_class_name 'AutoencoderKL'; expected 'AutoencoderKLFlux2'"):
    vae_lib.load_vae(str(bad))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    vae_lib.load_vae(str(tmp_path))


@pytest.mark.slow
def test_codec_check_plumbing_on_a_tiny_random_vae(tmp_path, capsys):
  """The command's plumbing only: a random VAE says nothing about the real latent space (docs/klein.md)."""
  from vbanana.flux2 import codec_check  # pylint: disable=g-import-not-at-top
  fx.tiny_vae(str(tmp_path / "vae"))
  out = tmp_path / "report.json"
  assert codec_check.main([f"--vae={tmp_path}", "--num=2", "--resolution=32", "--batch_size=2",
                           f"--out={out}"]) == 0
  report = json.loads(out.read_text())
  assert sorted(report) == sorted(codec_check.TASKS)
  for task, r in report.items():
    assert r["num"] >= 1 and sorted(r["exact"]) == sorted(r["vae"]) and np.isfinite(r["psnr"]), task
  # Without the VAE the encodings decode to (nearly) the ground truth: the baseline the VAE is measured against.
  assert report["semantic"]["exact"]["miou"] == 1.0 and report["referring"]["exact"]["giou"] == 1.0
  assert report["depth"]["exact"]["delta1"] == 1.0 and report["instance"]["exact"]["ap"] == 1.0
  assert report["semantic"]["vae"]["miou"] < 1.0  # a random VAE destroys the code
  printed = capsys.readouterr().out
  assert "| depth | abs_rel |" in printed and "| instance | ap |" in printed
  assert codec_check.main([f"--vae={tmp_path}", "--resolution=30"]) == 2
  assert "must be a multiple of 4" in capsys.readouterr().err
