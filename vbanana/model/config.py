"""`ModelConfig`: every shape and numeric choice of the DiT, validated once, and the named sizes.

A config is a frozen dataclass so it can be hashed (a static jit argument), compared (a workdir refuses
another model's checkpoints) and written as JSON next to exported weights (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

# Remat policy names -> `jax.checkpoint` policies ('none' = no remat, 'full' = save nothing).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.checkpoint_dots,
    "save_dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_everything": jax.checkpoint_policies.everything_saveable,
}
DTYPES = ("float32", "bfloat16")
ATTENTION = (None, "xla", "cudnn", "splash", "jax")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes of the joint-sequence DiT. Defaults are the `tiny` size."""
  image_size: int = 32          # the square side, pixels: (image_size / patch_size)^2 is the token budget
  # The aspect-ratio buckets (H, W) in pixels the model trains at (vbanana.aspect): () = the square only.
  # Any H x W grid of patches runs (the 2D rotary positions index rows and columns); these are the shapes
  # the data is batched at, and predict resizes a photo to the one nearest its aspect ratio.
  image_shapes: tuple = ()
  patch_size: int = 4           # pixels per token side
  channels: int = 3
  width: int = 64               # model (embedding) width
  depth: int = 2                # number of DiT blocks
  num_heads: int = 4
  mlp_ratio: float = 4.0        # SwiGLU hidden = 2/3 * mlp_ratio * width (rounded up to a multiple of 8)
  text_len: int = 224           # instruction bytes (the batches' text length; scenes captions reach 210)
  text_stride: int = 4          # the byte encoder's output is merged in groups of this many bytes: the DiT
                                # sees text_len / text_stride instruction tokens (precomputed embeddings: all)
  text_width: int = 64          # byte-level text encoder
  text_depth: int = 1
  text_heads: int = 4
  vocab_size: int = 258
  max_inputs: int = 1           # K input-image slots
  text_embed_dim: int | None = None  # set: the model reads precomputed text embeddings of this width instead
  dtype: str = "float32"        # activations / matmul inputs
  param_dtype: str = "float32"  # parameters (and so optimizer state) stay float32
  remat: str = "none"           # a key of REMAT_POLICIES
  scan: bool = True             # lax.scan over blocks (flat compile time) or an unrolled loop
  qk_norm: bool = True
  # Attention: 'xla' = the written-out softmax attention (layers.attention); 'cudnn' = the cuDNN kernel of
  # jax.nn.dot_product_attention (GPU, bf16); 'splash' = the Pallas splash kernel in shard_map (TPU; Pallas
  # interpret mode on CPU); 'jax' = jax.nn.dot_product_attention's own choice; None = by the platform the
  # program is built for: 'xla' on CPU, 'splash' on TPU, 'cudnn' on a GPU for bf16/fp16 activations, 'jax'
  # elsewhere (layers.resolve_attention).
  attention: str | None = None

  def __post_init__(self):
    def fail(field, message):
      raise ValueError(f"ModelConfig.{field}: {message}")
    for name in ("image_size", "patch_size", "channels", "width", "depth", "num_heads", "text_len", "text_stride",
                 "text_width", "text_heads", "vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(name, f"expected a positive int, got {value!r}")
    for name in ("text_depth", "max_inputs"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        fail(name, f"expected an int >= 0, got {getattr(self, name)!r}")
    if self.image_size % self.patch_size:
      fail("image_size", f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
    from vbanana import aspect  # pylint: disable=g-import-not-at-top
    try:
      shapes = tuple(tuple(int(v) if isinstance(v, float) and v.is_integer() else v for v in s)
                     for s in (self.image_shapes or ()))
      object.__setattr__(self, "image_shapes", aspect.check_shapes(
          shapes, self.patch_size, self.tokens_per_image, "ModelConfig.image_shapes"))
    except (TypeError, ValueError) as e:
      fail("image_shapes", str(e).removeprefix("ModelConfig.image_shapes: "))
    if self.width % self.num_heads:
      fail("width", f"width={self.width} is not divisible by num_heads={self.num_heads}")
    if (self.width // self.num_heads) % 4:
      fail("num_heads", f"head dim width/num_heads={self.width}/{self.num_heads}="
           f"{self.width // self.num_heads} must be divisible by 4 (2D rotary positions rotate pairs of "
           "channels, half of them by row and half by column)")
    if self.text_embed_dim is None and self.text_len % self.text_stride:
      fail("text_len", f"text_len={self.text_len} is not divisible by text_stride={self.text_stride} (the byte "
           "encoder merges text_stride bytes into one token)")
    if self.text_width % self.text_heads:
      fail("text_width", f"text_width={self.text_width} is not divisible by text_heads={self.text_heads}")
    if (self.text_width // self.text_heads) % 2:
      fail("text_heads", f"text head dim text_width/text_heads={self.text_width // self.text_heads} must be "
           "even (1D rotary positions rotate pairs of channels)")
    if self.attention not in ATTENTION:
      fail("attention", f"expected one of {ATTENTION}, got {self.attention!r}")
    if not self.mlp_ratio > 0:
      fail("mlp_ratio", f"expected > 0, got {self.mlp_ratio!r}")
    if self.text_embed_dim is not None and (not isinstance(self.text_embed_dim, int) or self.text_embed_dim < 1):
      fail("text_embed_dim", f"expected None or a positive int, got {self.text_embed_dim!r}")
    if self.dtype not in DTYPES:
      fail("dtype", f"expected one of {DTYPES}, got {self.dtype!r}")
    if self.param_dtype not in DTYPES:
      fail("param_dtype", f"expected one of {DTYPES}, got {self.param_dtype!r}")
    if self.remat not in REMAT_POLICIES:
      fail("remat", f"expected one of {tuple(REMAT_POLICIES)}, got {self.remat!r}")

  # Derived quantities, named once.
  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def mlp_dim(self) -> int:
    return -(-int(round(2 / 3 * self.mlp_ratio * self.width)) // 8) * 8

  @property
  def text_mlp_dim(self) -> int:
    return -(-int(round(2 / 3 * self.mlp_ratio * self.text_width)) // 8) * 8

  @property
  def grid(self) -> int:
    """Tokens per side of the square image."""
    return self.image_size // self.patch_size

  @property
  def tokens_per_image(self) -> int:
    """The token budget of one image (every bucket has at most this many)."""
    return self.grid ** 2

  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    """The image shapes (H, W) the model trains at: its buckets, or the square."""
    return self.image_shapes or ((self.image_size, self.image_size),)

  @property
  def patch_dim(self) -> int:
    return self.patch_size ** 2 * self.channels

  def text_tokens(self, text_len: int | None = None) -> int:
    """Instruction tokens in the joint sequence: merged bytes, or one per precomputed embedding."""
    text_len = self.text_len if text_len is None else text_len
    return text_len if self.text_embed_dim is not None else text_len // self.text_stride

  def seq_len(self, text_len: int | None = None) -> int:
    """Length of the joint sequence: text + K input images + target."""
    return self.text_tokens(text_len) + (self.max_inputs + 1) * self.tokens_per_image

  def replace(self, **overrides) -> "ModelConfig":
    return dataclasses.replace(self, **overrides)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"ModelConfig.from_dict: unknown fields {unknown}; known: {sorted(known)}")
    if d.get("image_shapes"):
      d = {**d, "image_shapes": tuple(tuple(s) for s in d["image_shapes"])}
    return cls(**d)


# Named sizes. Widths/depths/heads follow DiT (S/B/L/XL); the 2B one is for TPU pods. Sizes set the
# transformer; image size, patch size, text length and input slots come from the experiment config.
# The CPU sizes scan their blocks with remat (docs/performance.md, log): an unrolled stack lets XLA:CPU fuse
# the residual stream's backward across blocks into long expressions that every consumer recomputes, while
# the scan materialises the carry once per block (cpu_m 0.66x, cpu_s 0.71x, small 0.76x of the unrolled step
# at 32 px). `save_dots` keeps every matmul output; `tiny` (the quickstart, 32 px) recomputes the attention
# products instead (`save_dots_no_batch`: 0.86x of `save_dots` there, but 1.1-1.2x at 64 px, where attention
# dominates). The accelerator sizes scan too (compile time flat in depth).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(width=64, depth=2, num_heads=4, text_width=64, text_depth=1, text_heads=4,
                 remat="save_dots_no_batch"),
    "small": dict(width=128, depth=4, num_heads=4, text_width=128, text_depth=2, text_heads=4,
                  remat="save_dots"),
    "cpu_s": dict(width=256, depth=4, num_heads=4, text_width=128, text_depth=2, text_heads=4,
                  remat="save_dots"),
    "cpu_m": dict(width=384, depth=6, num_heads=6, text_width=128, text_depth=2, text_heads=4,
                  remat="save_dots"),
    "S": dict(width=384, depth=12, num_heads=6, text_width=256, text_depth=2, text_heads=4),
    "B": dict(width=768, depth=12, num_heads=12, text_width=384, text_depth=4, text_heads=6),
    "L": dict(width=1024, depth=24, num_heads=16, text_width=512, text_depth=4, text_heads=8),
    "XL": dict(width=1152, depth=28, num_heads=16, text_width=512, text_depth=6, text_heads=8),
    # 2B: 16 heads of 128 (the TPU's lane width: the splash kernel pads a smaller head dim to 128).
    "2B": dict(width=2048, depth=36, num_heads=16, text_width=1024, text_depth=8, text_heads=8,
               dtype="bfloat16", remat="save_dots_no_batch"),
}
_ALIASES = {"xl": "XL", "l": "L", "b": "B", "s": "S", "2b": "2B"}


def config_for(name: str, **overrides) -> ModelConfig:
  """The named size with `overrides` applied (e.g. `config_for("tiny", image_size=16)`)."""
  key = name if name in SIZES else _ALIASES.get(name)
  if key is None:
    raise ValueError(f"config.model.size={name!r} is not a known size; known: {sorted(SIZES)}")
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"config.model: unknown field(s) {unknown}; ModelConfig fields: {sorted(fields)}")
  return ModelConfig(**{**SIZES[key], **overrides})
