r"""The joint-sequence diffusion transformer (DiT): instruction + input images + noisy target in one sequence.

One forward pass predicts the flow-matching velocity of the target image from everything at once:

    tokens   | instruction (T)  | input image 1 (N) | ... | input image K (N) | noisy target x_t (N) |
    segment  |      text        |     input 1       | ... |     input K       |       target         |
    position |  none (see why)  |  2D (row, col)    | ... |  2D (row, col)    |    2D (row, col)     |
    mask     |  token != pad    |  input_mask[:, 1] | ... |  input_mask[:, K] |      always on       |
                        \______________ joint self-attention, `depth` blocks ______________/
                                                                                     |
                                               velocity read out from these tokens only (B, H, W, 3)

  t ──> sinusoidal ──> MLP ──> c ──> adaLN (shift, scale, gate) of every block and of the final layer

Why this shape:
  * In-context conditioning: conditions are ordinary tokens, so every block can attend between the target
    and the instruction or the input pixels. Adding a task = a new instruction, never a new module.
  * Text: T = L / text_stride tokens, each merging text_stride bytes after the byte-level text encoder
    (or one token per precomputed embedding), so long instructions stay affordable in the joint sequence.
  * Shapes: images need not be square. Every image of a batch has the batch's H x W (one aspect-ratio
    bucket, vbanana.aspect); the grid of patches is read off x_t, so one model runs any bucket within its
    token budget (image_size / patch_size)^2, one compiled program per shape.
  * Positions: each image gets the same 2D rotary grid, so target token (r, c) and input token (r, c) have
    relative offset zero: pixel-aligned tasks (depth, normals, segmentation, edits) find their source by
    position. Text tokens get no rotary position (identity rotation): the text encoder already encoded word
    order with 1D rotary positions, and in the joint sequence the instruction is a set of features.
  * Roles: a learned segment embedding tells the text, each input slot and the target apart (positions alone
    cannot: all images share the grid).
  * Missing inputs: K slots always exist (fixed shapes, one compiled program); an absent slot is removed from
    attention by the key padding mask. Classifier-free guidance drops conditions the same way.
  * The timestep enters through adaLN with zero-initialised gates and a zero-initialised output layer: the
    network starts as the identity on its residual stream and predicts zero velocity.
  * Images go through `PatchTokenizer` (pixels <-> patches); a latent autoencoder can replace it behind the
    same two methods.
  * Blocks are stacked (a leading 'layers' axis) and run with `lax.scan`: compile time stays flat in depth.
"""

from __future__ import annotations

import dataclasses

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from vbanana import parallel
from vbanana.model import layers
from vbanana.model import text as text_lib
from vbanana.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class PatchTokenizer:
  """Images (..., H, W, C) <-> tokens (..., N, p*p*C) in pixel space. The one interface a latent
  autoencoder would implement instead (encode to latent patches, decode back)."""
  patch_size: int

  def encode(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    return einops.rearrange(images, "... (h p) (w q) c -> ... (h w) (p q c)", p=p, q=p)

  def decode(self, tokens: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Tokens of a (rows, cols) grid of patches -> the image."""
    p = self.patch_size
    return einops.rearrange(tokens, "... (h w) (p q c) -> ... (h p) (w q) c", h=grid[0], w=grid[1], p=p, q=p)


def timestep_embedding(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal features of t in [0, 1] (scaled by 1000 so the frequencies resolve small steps)."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def image_positions(rows: int, cols: int | None = None) -> jax.Array:
  """(rows*cols, 2) integer (row, col) of every patch of a rows x cols grid (square if cols is None), in
  token order."""
  cols = rows if cols is None else cols
  rows, cols = jnp.meshgrid(jnp.arange(rows), jnp.arange(cols), indexing="ij")
  return jnp.stack([rows.reshape(-1), cols.reshape(-1)], axis=-1)


class DiT(nnx.Module):
  """`model(x_t, t, text, inputs, input_mask, text_embeddings=None) -> velocity float32 (B, H, W, C)`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    # Parameters are never sharded at creation: `vbanana.step` places them with jit out-shardings.
    with nnx.use_eager_sharding(False):
      self._build(cfg, rngs)

  def _build(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    w = cfg.width
    self.tokenizer = PatchTokenizer(cfg.patch_size)
    # The same patch embedding for inputs and target (same pixel space); segments tell them apart.
    self.patch_embed = layers.Dense((cfg.patch_dim,), (w,), ("patch", "embed"), **kw)
    # Roles: 0 = text, 1..K = input slots, K+1 = target.
    self.segment = nnx.Param(jax.random.normal(rngs.params(), (cfg.max_inputs + 2, w), param_dtype) * 0.02,
                             out_sharding=("segment", "embed"))
    self.time_in = layers.Dense((256,), (w,), (None, "embed"), **kw)
    self.time_out = layers.Dense((w,), (w,), ("embed", "embed_out"), **kw)
    if cfg.text_embed_dim is None:
      self.text = text_lib.TextEncoder(cfg, rngs=rngs)
    else:
      self.text = text_lib.TextProjection(cfg, rngs=rngs)
    self.blocks = layers.make_stack(
        lambda r: layers.Block(w, cfg.num_heads, cfg.mlp_dim, modulated=True, qk_norm=cfg.qk_norm,
                               attention=cfg.attention, rngs=r,
                               dtype=dtype, param_dtype=param_dtype),
        cfg.depth, rngs)
    # Output: adaLN shift/scale, then patches; both zero-initialised, so the first prediction is 0.
    self.final_modulation = layers.Dense((w,), (2, w), ("embed", None, "embed_out"), init=layers.zeros, **kw)
    self.final = layers.Dense((w,), (cfg.patch_dim,), ("embed", "patch"), init=layers.zeros, **kw)

  def __call__(self, x_t, t, text, inputs, input_mask, text_embeddings=None):
    cfg = self.cfg
    _check_shapes(cfg, x_t, t, text, inputs, input_mask)
    # Any H x W that is a multiple of the patch: the grid is the batch's (one aspect-ratio bucket).
    grid = (x_t.shape[1] // cfg.patch_size, x_t.shape[2] // cfg.patch_size)
    b, n, k = x_t.shape[0], grid[0] * grid[1], inputs.shape[1]
    dtype = jnp.dtype(cfg.dtype)

    # Conditioning vector from the timestep (drives every adaLN).
    c = jax.nn.silu(self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t)))))

    # Instruction tokens: the byte encoder, or the projection of precomputed embeddings.
    if isinstance(self.text, text_lib.TextProjection):
      if text_embeddings is None:
        raise ValueError("this model has text_embed_dim set: pass text_embeddings (B, L, text_embed_dim)")
      txt, txt_mask = self.text(text_embeddings, text)
    else:
      txt, txt_mask = self.text(text)

    # Image tokens: patchify, embed, add the segment of each role.
    seg = self.segment[...].astype(dtype)
    target = self.patch_embed(self.tokenizer.encode(x_t)) + seg[k + 1]
    src = self.patch_embed(self.tokenizer.encode(inputs)) + seg[1:k + 1, None, :]  # (B, K, N, W)
    src = src.reshape(b, k * n, cfg.width)
    x = jnp.concatenate([txt.astype(dtype) + seg[0], src.astype(dtype), target.astype(dtype)], axis=1)
    x = parallel.constrain(x, ("act_batch", "act_seq", "act_embed"))

    # Which keys exist, and the rotary angles of every token (text: 0 = identity rotation).
    mask = jnp.concatenate([txt_mask, jnp.repeat(input_mask, n, axis=1), jnp.ones((b, n), bool)], axis=1)
    image_angles = layers.rope_angles(image_positions(*grid), cfg.head_dim)
    angles = jnp.concatenate([jnp.zeros((txt.shape[1], cfg.head_dim // 2)),
                              jnp.tile(image_angles, (k + 1, 1))], axis=0)

    x = layers.run_stack(self.blocks, x, lambda block, h: block(h, c, angles, mask), scan=cfg.scan,
                         remat_policy=cfg.remat)

    # Read out the target tokens only.
    y = x[:, -n:]
    shift, scale = (a[:, None, :] for a in jnp.moveaxis(self.final_modulation(c), 1, 0))
    y = self.final(layers.layer_norm(y) * (1 + scale) + shift)
    return self.tokenizer.decode(y, grid).astype(jnp.float32)


def _check_shapes(cfg: ModelConfig, x_t, t, text, inputs, input_mask):
  if x_t.ndim != 4 or x_t.shape[-1] != cfg.channels:
    raise ValueError(f"DiT: x_t has shape {tuple(x_t.shape)}, expected (B, H, W, {cfg.channels})")
  b, h, w = x_t.shape[:3]
  if h % cfg.patch_size or w % cfg.patch_size:
    raise ValueError(f"DiT: x_t is {h}x{w} pixels, not a multiple of patch_size={cfg.patch_size}")
  if (h // cfg.patch_size) * (w // cfg.patch_size) > cfg.tokens_per_image:
    raise ValueError(f"DiT: x_t is {h}x{w} pixels, {(h // cfg.patch_size) * (w // cfg.patch_size)} patches: "
                     f"over the model's budget of {cfg.tokens_per_image} (image_size={cfg.image_size}, "
                     f"patch_size={cfg.patch_size}); resize to one of its shapes {cfg.shapes}")
  expected = {"t": (b,), "inputs": (b, inputs.shape[1], h, w, cfg.channels), "input_mask": (b, inputs.shape[1])}
  for name, arr in (("t", t), ("inputs", inputs), ("input_mask", input_mask)):
    if tuple(arr.shape) != expected[name]:
      raise ValueError(f"DiT: {name} has shape {tuple(arr.shape)}, expected {expected[name]} "
                       f"(the target's {h}x{w}, channels={cfg.channels})")
  if inputs.shape[1] > cfg.max_inputs:
    raise ValueError(f"DiT: {inputs.shape[1]} input slots given, the model has max_inputs={cfg.max_inputs}")
  if text.ndim != 2 or text.shape[0] != b:
    raise ValueError(f"DiT: text has shape {tuple(text.shape)}, expected (B={b}, L)")
