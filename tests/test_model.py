"""The DiT: config validation, tokenizer, shapes, masking, identity at init, precomputed text, program size flat in depth."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vbanana import model as model_lib
from vbanana.model import text as text_lib
from vbanana.model.config import ModelConfig


def small_cfg(**kw):
  base = dict(image_size=8, patch_size=4, width=32, depth=2, num_heads=2, text_width=32, text_heads=2,
              text_depth=1, text_len=8, max_inputs=2, scan=True)  # the scanned path (tiny itself unrolls)
  return model_lib.config_for("tiny", **{**base, **kw})


def inputs_for(cfg, b=2, seed=0):
  rng = np.random.default_rng(seed)
  s = cfg.image_size
  return dict(
      x_t=jnp.asarray(rng.normal(size=(b, s, s, 3)), jnp.float32),
      t=jnp.asarray(rng.uniform(size=(b,)), jnp.float32),
      text=jnp.asarray(model_lib.tokenize(["paint it red", "depth"][:b] * (b // 2 or 1), cfg.text_len)),
      inputs=jnp.asarray(rng.uniform(-1, 1, size=(b, cfg.max_inputs, s, s, 3)), jnp.float32),
      input_mask=jnp.asarray(np.arange(cfg.max_inputs)[None] < np.array([[1], [2]])[:b]),
  )


@nnx.jit
def fwd(model, args, text_embeddings=None):
  """The model under jit (eager NNX calls dispatch op by op: slow on CPU)."""
  return model(**args, text_embeddings=text_embeddings)


def randomized(model, scale=0.05, seed=1):
  """The model with every parameter perturbed (zero-initialised layers would make outputs trivially 0)."""
  graphdef, params = nnx.split(model)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves))


# ----------------------------------------------------------------------------------------------------------
# Config.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field, values", [
    (dict(width=30, num_heads=4), "width", ["30", "4"]),
    (dict(image_size=30, patch_size=4), "image_size", ["30", "4"]),
    (dict(width=24, num_heads=4), "num_heads", ["24", "4", "6"]),  # head dim 6 is not divisible by 4
    (dict(dtype="float16"), "dtype", ["float16"]),
    (dict(remat="sometimes"), "remat", ["sometimes"]),
    (dict(attention="flash"), "attention", ["flash", "cudnn"]),
    (dict(text_width=30, text_heads=4), "text_width", ["30", "4"]),
])
def test_bad_config_names_field_and_values(overrides, field, values):
  with pytest.raises(ValueError) as e:
    model_lib.config_for("tiny", **overrides)
  msg = str(e.value)
  assert f"ModelConfig.{field}" in msg, msg
  for v in values:
    assert v in msg, msg


def test_unknown_size_and_field():
  with pytest.raises(ValueError, match="size='huge'"):
    model_lib.config_for("huge")
  with pytest.raises(ValueError, match="widht"):
    model_lib.config_for("tiny", widht=3)


def test_config_round_trip_and_sizes():
  cfg = model_lib.config_for("B", image_size=64, text_embed_dim=512, remat="full")
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert hash(cfg) == hash(ModelConfig.from_dict(cfg.to_dict()))
  for name in ("tiny", "small", "B", "L", "XL", "2B", "xl"):
    c = model_lib.config_for(name)
    assert c.width % c.num_heads == 0
  assert model_lib.config_for("2B").depth * model_lib.config_for("2B").width ** 2 * 12 > 1.5e9


# ----------------------------------------------------------------------------------------------------------
# Tokenizer.
# ----------------------------------------------------------------------------------------------------------
def test_tokenizer_spec():
  toks = model_lib.tokenize(["ab", ""], 5)
  assert toks.dtype == np.int32 and toks.shape == (2, 5)
  np.testing.assert_array_equal(toks[0], [ord("a") + 2, ord("b") + 2, 1, 0, 0])
  np.testing.assert_array_equal(toks[1], 0)  # empty instruction = all padding (= what CFG dropout feeds)
  assert text_lib.detokenize(model_lib.tokenize(["héllo wörld"], 32)) == ["héllo wörld"]


def test_tokenizer_truncates_at_character_boundary():
  text = "aé€"  # 1 + 2 + 3 bytes
  for length in range(1, 9):
    toks = model_lib.tokenize([text], length)[0]
    ids = toks[toks >= 2] - 2
    decoded = bytes(ids.astype(np.uint8)).decode("utf-8")  # raises if a character was cut
    assert text.startswith(decoded)
    assert (toks == 1).sum() == 1  # the end token always fits
    assert len(ids) < length


# ----------------------------------------------------------------------------------------------------------
# Forward.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_forward_shape_and_zero_velocity_at_init():
  cfg = small_cfg()
  model = model_lib.DiT(cfg, rngs=nnx.Rngs(0))
  v = fwd(model, inputs_for(cfg))
  assert v.shape == (2, 8, 8, 3) and v.dtype == jnp.float32
  # Zero-initialised gates and readout: a fresh network predicts exactly zero velocity.
  np.testing.assert_array_equal(np.asarray(v), 0.0)


@pytest.mark.slow
def test_absent_inputs_do_not_matter_and_examples_do_not_interact():
  cfg = small_cfg()
  model = randomized(model_lib.DiT(cfg, rngs=nnx.Rngs(0)))
  args = inputs_for(cfg)
  # One batch of four rows built from example 0 (slot 2 absent) and example 1: [ex0, ex0 with the absent
  # slot changed, ex0 with its present slot changed, ex1].
  rows = {k: jnp.stack([a[0], a[0], a[0], a[1]]) for k, a in args.items()}
  rows["inputs"] = rows["inputs"].at[1, 1].set(0.7).at[2, 0].set(0.7)
  v = fwd(model, rows)
  np.testing.assert_allclose(v[1], v[0], atol=1e-6)   # absent slot: masked out of attention
  assert np.abs(v[2] - v[0]).max() > 1e-3             # present slot: used
  # Example 1 beside other rows gives what it gives beside example 0 (the batch composition is irrelevant).
  np.testing.assert_allclose(v[3], fwd(model, args)[1], atol=1e-5)


@pytest.mark.slow
def test_precomputed_text_embeddings_of_any_width():
  cfg = small_cfg(text_embed_dim=24)
  model = randomized(model_lib.DiT(cfg, rngs=nnx.Rngs(0)))
  args = inputs_for(cfg)
  emb = jax.random.normal(jax.random.key(0), args["text"].shape + (24,))
  v = fwd(model, args, emb)
  assert v.shape == (2, 8, 8, 3)
  other = jax.random.normal(jax.random.key(1), emb.shape)
  assert np.abs(fwd(model, args, other) - v).max() > 1e-4
  with pytest.raises(ValueError, match="text_embeddings"):
    fwd(model, args)
  assert "embed" not in nnx.state(model, nnx.Param)["text"]  # no byte-encoder parameters then


@pytest.mark.slow
def test_scan_remat_and_unrolled_agree():
  cfg = small_cfg()
  args = inputs_for(cfg)
  outs = []
  for kw in (dict(), dict(scan=False, remat="full"), dict(attention="xla")):
    model = randomized(model_lib.DiT(dataclasses.replace(cfg, **kw), rngs=nnx.Rngs(0)))
    value, grad = nnx.jit(nnx.value_and_grad(lambda m: jnp.sum(m(**args) ** 2)))(model)
    outs.append((value, jax.tree.leaves(grad)))
  for v, g in outs[1:]:
    np.testing.assert_allclose(v, outs[0][0], rtol=1e-5)
    for a, b in zip(g, outs[0][1]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_bfloat16_activations_keep_float32_params():
  cfg = small_cfg(dtype="bfloat16")
  model = randomized(model_lib.DiT(cfg, rngs=nnx.Rngs(0)))
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
  v32 = fwd(randomized(model_lib.DiT(small_cfg(), rngs=nnx.Rngs(0))), inputs_for(cfg))
  v16 = fwd(model, inputs_for(cfg))
  assert v16.dtype == jnp.float32
  assert np.abs(v16 - v32).max() < 0.05 * np.abs(v32).max()


@pytest.mark.slow
def test_every_parameter_has_logical_names():
  model = model_lib.DiT(small_cfg(), rngs=nnx.Rngs(0))
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var.shape.__len__(), (path, names, var.shape)
    if path[0] == "blocks":
      assert names[0] == "layers", path


@pytest.mark.slow
def test_program_size_flat_in_depth():
  """Blocks run under lax.scan: the optimized forward + backward program of depth 24 holds one block's code,
  as depth 4's does (compile time follows the program's size; benchmarks time it, tests count it)."""
  def program_lines(depth):
    cfg = small_cfg(depth=depth)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: model_lib.DiT(cfg, rngs=nnx.Rngs(0))))
    args = inputs_for(cfg)
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(**args) ** 2)
    return len(jax.jit(jax.grad(loss)).lower(params).compile().as_text().splitlines())
  shallow, deep = program_lines(4), program_lines(24)
  print(f"optimized HLO lines: depth 4 {shallow}, depth 24 {deep}")
  assert deep < 1.1 * shallow
