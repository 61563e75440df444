"""The FLUX.2 transformer against diffusers' `Flux2Transformer2DModel`, live, on tiny random models.

Parity in float32 (<= 5e-5) and bfloat16 (reported, bounded by diffusers' own bfloat16 error), import ->
export -> `from_pretrained` bit for bit, sharded checkpoints, strict errors that name the tensor, the
converter's command line both ways, and klein-4B's parameter count. Two tiny configs: diffusers' own test size
and a second one (tests/flux2_fixtures.py). Cost: about 40 s on a quiet 2-core machine (three forward
compiles, three converter processes, the torch/diffusers import).
"""

import json
import os
import re
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import flux2_fixtures as fx  # noqa: E402
from vbanana import flux2, parallel  # noqa: E402
from vbanana.flux2 import transformer as tr  # noqa: E402
from vbanana.flux2 import transformer_io, weights  # noqa: E402

pytestmark = pytest.mark.slow  # torch/diffusers parity: several compiles and converter subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The parity cases: (config, target grid, reference grids). Non-square grids, one and two references.
CASES = {"diffusers_test": ((4, 6), ((3, 5),)), "second": ((6, 4), ((4, 6), (2, 3)))}
GUIDANCE = np.array([2.5, 4.0], np.float32)  # the diffusers test size has a guidance embedder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """name -> (constructor kwargs, torch model, saved folder); `second` saved in shards (an index + files)."""
  root = tmp_path_factory.mktemp("flux2")
  out = {}
  for name, cfg, shard in (("diffusers_test", fx.DIFFUSERS_TEST, "10GB"), ("second", fx.SECOND, 200_000)):
    model, folder = fx.tiny_transformer(str(root / name), max_shard_size=shard, **cfg)
    out[name] = (cfg, model, folder)
  return out


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh(dict(data=1, fsdp=2, tensor=4))


@pytest.fixture(scope="module")
def loaded(tiny, mesh):
  """load(name, sharded=False, dtype="float32") -> the imported module, each imported once per module."""
  cache = {}

  def load(name, sharded=False, dtype="float32"):
    if (name, sharded, dtype) not in cache:
      cache[name, sharded, dtype] = flux2.load_transformer(tiny[name][2], dtype=dtype,
                                                           mesh=mesh if sharded else None)
    return cache[name, sharded, dtype]
  return load


def _forward(model, img_ids, txt_ids, mesh=None):
  """The model's forward in one jit (ids concrete, as a sampler holds them)."""
  graphdef, state = nnx.split(model)

  def run(state, hidden, text, t, guidance):
    with parallel.sharding_context(mesh):
      return nnx.merge(graphdef, state)(hidden, text, t, img_ids, txt_ids, guidance)

  def call(*args):  # XLA:CPU's backend at -O0 compiles this twice as fast; the float math is the same
    compiled = jax.jit(run).lower(state, *args).compile({"xla_backend_optimization_level": 0})
    return np.asarray(compiled(state, *args))
  return call


def _inputs(name, cfg):
  grid, refs = CASES[name]
  inputs = fx.torch_inputs(cfg, batch=2, grid=grid, reference_grids=refs, text_length=13)
  return inputs, (GUIDANCE if cfg.get("guidance_embeds", True) else None)


# ----------------------------------------------------------------------------------------------------------
# Parity.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_float32_parity(tiny, mesh, loaded, name):
  """Batch 2 with different t, 13 text tokens, non-square grids, one (diffusers' size) or two (second,
  sharded over fsdp x tensor) reference images."""
  cfg, torch_model, _ = tiny[name]
  (hidden, text, t, img_ids, txt_ids), guidance = _inputs(name, cfg)
  on_mesh = mesh if name == "second" else None
  ours = _forward(loaded(name, sharded=on_mesh is not None), img_ids, txt_ids, on_mesh)(hidden, text, t, guidance)
  theirs = fx.torch_forward(torch_model, hidden, text, t, img_ids, txt_ids, guidance=guidance)
  assert ours.shape == theirs.shape == (2, img_ids.shape[0], cfg.get("out_channels") or cfg["in_channels"])
  diff = float(np.abs(ours - theirs).max())
  print(f"\n{name}: float32 max |ours - diffusers| = {diff:.2e} (outputs up to {np.abs(theirs).max():.2f})")
  assert diff <= 5e-5
  assert np.abs(ours[0] - ours[1]).max() > 1e-2  # the two examples (different t, inputs) differ


@pytest.mark.parametrize("name", list(CASES))
def test_bfloat16_error_is_diffusers_own(tiny, loaded, name):
  """bf16 activations (f32 parameters) against the float32 reference: within twice diffusers' own bf16
  error on the same inputs."""
  import torch  # pylint: disable=g-import-not-at-top
  cfg, torch_model, _ = tiny[name]
  (hidden, text, t, img_ids, txt_ids), guidance = _inputs(name, cfg)
  ours = _forward(loaded(name, dtype="bfloat16"), img_ids, txt_ids)(hidden, text, t, guidance)
  reference = fx.torch_forward(torch_model, hidden, text, t, img_ids, txt_ids, guidance=guidance)
  theirs = fx.torch_forward(torch_model, hidden, text, t, img_ids, txt_ids, dtype=torch.bfloat16,
                            guidance=guidance)
  ours_err, theirs_err = float(np.abs(ours - reference).max()), float(np.abs(theirs - reference).max())
  print(f"\n{name}: bfloat16 max error vs float32 diffusers: ours {ours_err:.4f}, diffusers bf16 "
        f"{theirs_err:.4f} (outputs up to {np.abs(reference).max():.2f})")
  assert 0 < ours_err <= 2 * theirs_err


def test_mesh_load_places_each_shard(loaded):
  sharded, plain = loaded("second", sharded=True), loaded("second")
  up = sharded.double_blocks.img_mlp.up.kernel[...]  # (layers, embed, 2, mlp)
  assert up.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", None, "tensor")
  assert up.addressable_shards[0].data.shape == (2, 72 // 2, 2, 180 // 4)
  for a, b in zip(jax.tree.leaves(nnx.state(sharded, nnx.Param)), jax.tree.leaves(nnx.state(plain, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rope_table_matches_diffusers_float64_angles():
  """The host table (float64, wrapped) equals diffusers' Flux2PosEmbed at 512 text tokens; traced ids give
  float32 angles within 1e-4 of it."""
  import torch  # pylint: disable=g-import-not-at-top
  from diffusers.models.transformers.transformer_flux2 import Flux2PosEmbed  # pylint: disable=g-import-not-at-top
  cfg = tr.config_for("klein-4b")
  img_ids, txt_ids = tr.position_ids((64, 48), [(32, 40)], text_length=512)
  angles = tr.rope_table(cfg, txt_ids, img_ids)
  cos, sin = Flux2PosEmbed(cfg.rope_theta, cfg.axes_dims_rope)(torch.from_numpy(np.concatenate([txt_ids, img_ids])))
  # diffusers repeats each angle for the pair (2j, 2j + 1): every other column is the table, in axis order.
  np.testing.assert_allclose(np.cos(angles), cos.numpy()[:, ::2], atol=2e-7)
  np.testing.assert_allclose(np.sin(angles), sin.numpy()[:, ::2], atol=2e-7)
  traced = jax.jit(lambda t, i: tr.rope_table(cfg, t, i))(txt_ids, img_ids)
  assert np.abs(np.cos(np.asarray(traced)) - np.cos(angles)).max() < 1e-4


# ----------------------------------------------------------------------------------------------------------
# Weights: layout, round trip, sharding, errors.
# ----------------------------------------------------------------------------------------------------------
def test_klein_4b_parameter_count():
  cfg = tr.config_for("klein-4b")
  assert tr.count_params(tr.abstract_model(cfg)) == 3_875_544_576
  shapes = transformer_io.diffusers_shapes(cfg)
  assert len(shapes) == 169 and sum(int(np.prod(s)) for s in shapes.values()) == 3_875_544_576


@pytest.mark.parametrize("name", ["diffusers_test", "second"])
def test_diffusers_shapes_are_diffusers_state_dict(tiny, name):
  _, torch_model, _ = tiny[name]
  cfg = tr.Flux2Config.from_diffusers_config(dict(torch_model.config))
  assert list(transformer_io.diffusers_shapes(cfg).items()) == [
      (k, tuple(v.shape)) for k, v in torch_model.state_dict().items()]


def _from_pretrained(folder):
  from diffusers import Flux2Transformer2DModel  # pylint: disable=g-import-not-at-top
  model, info = Flux2Transformer2DModel.from_pretrained(folder, output_loading_info=True)
  assert all(not info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
  return model


def _assert_same_tensors(a, b):
  sa, sb = a.state_dict(), b.state_dict()
  assert list(sa) == list(sb)
  for k in sa:
    assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape and bool((sa[k] == sb[k]).all()), k


@pytest.mark.parametrize("name", ["diffusers_test", "second"])
def test_round_trip_is_bit_exact(tiny, loaded, tmp_path, name):
  """import -> export -> diffusers' from_pretrained: no missing or unexpected keys, every tensor equal."""
  torch_model = tiny[name][1]
  shard = "10GB" if name == "diffusers_test" else 150_000
  files = flux2.save_transformer(loaded(name), tmp_path / "out", max_shard_size=shard)
  if name == "second":  # diffusers' sharded layout: shards and an index
    assert "diffusion_pytorch_model.safetensors.index.json" in files and len(files) > 3
  loaded = _from_pretrained(str(tmp_path / "out"))
  _assert_same_tensors(loaded, torch_model)
  fields = lambda config: json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))
  assert fields(loaded.config) == fields(torch_model.config)


def test_sharded_checkpoint_is_read(tiny):
  """`second` was saved by diffusers in shards: the loader followed its index (the parity tests ran on it)."""
  folder = tiny["second"][2]
  shards = [f for f in os.listdir(folder) if re.fullmatch(r"diffusion_pytorch_model-\d{5}-of-\d{5}\.safetensors", f)]
  assert len(shards) > 1 and os.path.exists(os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json"))
  ckpt = weights.open_checkpoint(folder)
  assert len({ckpt._entries[n].file for n in ckpt.names}) == len(shards)  # pylint: disable=protected-access


def _broken_copy(folder, dest, edit):
  """A copy of a diffusers folder whose tensors pass through `edit(dict) -> dict`."""
  ckpt = weights.open_checkpoint(folder)
  tensors = edit({n: np.array(ckpt.read(n)) for n in ckpt.names})
  weights.write_checkpoint(dest, tensors)
  with open(os.path.join(folder, "config.json")) as src, open(os.path.join(dest, "config.json"), "w") as dst:
    dst.write(src.read())
  return str(dest)


MISSING = "single_transformer_blocks.0.attn.norm_k.weight"
MISSHAPED = "transformer_blocks.0.attn.add_k_proj.weight"


@pytest.fixture(scope="module")
def broken(tiny, tmp_path_factory):
  folder = tiny["diffusers_test"][2]
  root = tmp_path_factory.mktemp("broken")
  return {
      "missing": _broken_copy(folder, root / "missing", lambda t: {k: v for k, v in t.items() if k != MISSING}),
      "misshaped": _broken_copy(folder, root / "misshaped", lambda t: {**t, MISSHAPED: t[MISSHAPED][:, :-1]}),
      "unexpected": _broken_copy(folder, root / "unexpected", lambda t: {**t, "extra.weight": np.zeros(3, np.float32)}),
  }


@pytest.mark.parametrize("kind,pattern", [
    ("missing", f"tensor '{MISSING}' is missing (expected shape (16,))"),
    ("misshaped", f"tensor '{MISSHAPED}' has shape (32, 31), expected (32, 32)"),
    ("unexpected", "tensor 'extra.weight' is not a parameter of this model")])
def test_bad_checkpoint_names_the_tensor(broken, kind, pattern):
  with pytest.raises(weights.CheckpointError, match=re.escape(pattern)):
    flux2.load_transformer(broken[kind])


def _convert(*args):
  return subprocess.run([sys.executable, "-m", "vbanana.flux2.convert", *args], capture_output=True, text=True,
                        timeout=300, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_convert_command_line_both_ways(tiny, loaded, broken, tmp_path):
  _, torch_model, folder = tiny["second"]
  r = _convert(f"--from={folder}", f"--to={tmp_path / 'vb'}")
  assert r.returncode == 0, r.stderr[-2000:]
  r = _convert("--export", f"--from={tmp_path / 'vb'}", f"--to={tmp_path / 'back'}", "--max_shard_size=150000")
  assert r.returncode == 0, r.stderr[-2000:]
  _assert_same_tensors(_from_pretrained(str(tmp_path / "back")), torch_model)
  # vbanana's layout loads into the same module as the diffusers folder does.
  for a, b in zip(jax.tree.leaves(nnx.state(flux2.load_transformer(tmp_path / "vb"), nnx.Param)),
                  jax.tree.leaves(nnx.state(loaded("second"), nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A broken checkpoint: exit 1 and one line naming the tensor.
  r = _convert(f"--from={broken['missing']}", f"--to={tmp_path / 'never'}")
  assert r.returncode == 1
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("vbanana.flux2.convert: ") and f"'{MISSING}' is missing" in last, r.stderr[-2000:]
  assert not os.path.exists(tmp_path / "never" / "params.safetensors")
