"""Text: a byte-level tokenizer, a small trainable text encoder, and the projection of precomputed
embeddings (T5, Gemma, ... features brought by the dataset).

Tokens: 0 = padding, 1 = end of text, UTF-8 byte b -> b + 2 (vocabulary 258). An empty instruction is all
padding, which is also what classifier-free-guidance dropout feeds.
"""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel
from vbanana.model import layers

PAD, EOT, OFFSET, VOCAB_SIZE = 0, 1, 2, 258


def tokenize(texts: Iterable[str] | str, length: int) -> np.ndarray:
  """int32 (N, length): bytes + 2, then one end-of-text token, then padding. Texts too long are cut at a
  character boundary (never inside a multi-byte UTF-8 character) so that the end token still fits."""
  if isinstance(texts, str):
    texts = [texts]
  texts = list(texts)
  out = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"tokenize: texts[{row}] is {type(text).__name__}, expected str")
    if not text or length == 0:
      continue
    data = text.encode("utf-8")
    if len(data) > length - 1:
      cut = length - 1
      while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte: back off to the char start
        cut -= 1
      data = data[:cut]
    ids = np.frombuffer(data, np.uint8).astype(np.int32) + OFFSET
    out[row, :len(ids)] = ids
    out[row, len(ids)] = EOT
  return out


def detokenize(tokens: np.ndarray) -> list[str]:
  """Inverse of `tokenize` (up to truncation): for logs and tests."""
  out = []
  for row in np.asarray(tokens).reshape(-1, np.shape(tokens)[-1]):
    data = bytes(int(t) - OFFSET for t in row if t >= OFFSET)
    out.append(data.decode("utf-8", errors="replace"))
  return out


class TextEncoder(nnx.Module):
  """Byte embedding + a few pre-norm transformer blocks (1D rotary positions, padding mask), then every
  `text_stride` consecutive bytes merged into one token by a linear map to the DiT width.

  Bytes keep the vocabulary tiny and need no trained tokenizer; the encoder's attention lets each byte see
  its word, so merging afterwards loses little, and the DiT's joint sequence (the cost that grows with every
  token) holds a quarter of the bytes. Word order is encoded here, so the DiT gives text tokens no positions
  of its own."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.embed = nnx.Param(jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.text_width), param_dtype) * 0.02,
                           out_sharding=("vocab", "embed"))
    self.blocks = layers.make_stack(
        lambda r: layers.Block(cfg.text_width, cfg.text_heads, cfg.text_mlp_dim, modulated=False,
                               qk_norm=cfg.qk_norm, attention=cfg.attention, rngs=r, dtype=dtype, param_dtype=param_dtype),
        cfg.text_depth, rngs) if cfg.text_depth else None
    self.norm = layers.RMSNorm(cfg.text_width, param_dtype=param_dtype)
    self.merge = layers.Dense((cfg.text_stride, cfg.text_width), (cfg.width,), (None, "embed_out", "embed"),
                              rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """tokens int32 (B, L) -> (features (B, L / text_stride, width), mask bool (B, L / text_stride))."""
    cfg = self.cfg
    b, length = tokens.shape
    if length % cfg.text_stride:
      raise ValueError(f"TextEncoder: text length {length} is not divisible by text_stride={cfg.text_stride}")
    mask = tokens != PAD
    # The table is small: gather from a replicated copy (a gather from an FSDP-sharded table partitions badly).
    table = parallel.constrain(self.embed[...], (None, None))
    x = jnp.take(table, tokens, axis=0).astype(cfg.dtype)
    x = parallel.constrain(x, ("act_batch", "act_seq", "act_embed"))
    if self.blocks is not None:
      angles = layers.rope_angles(jnp.arange(tokens.shape[1])[:, None], cfg.text_width // cfg.text_heads)
      x = layers.run_stack(self.blocks, x, lambda block, h: block(h, None, angles, mask), scan=cfg.scan,
                           remat_policy=cfg.remat)
    groups = (b, length // cfg.text_stride, cfg.text_stride)
    x = self.norm(x).reshape(groups + (cfg.text_width,))
    return self.merge(x), mask.reshape(groups).any(-1)  # a merged token exists if any of its bytes does


class TextProjection(nnx.Module):
  """Precomputed text embeddings (B, L, text_embed_dim) -> (B, L, width): RMSNorm then a linear map."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    dtype, param_dtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
    self.dim = cfg.text_embed_dim
    self.norm = layers.RMSNorm(cfg.text_embed_dim, ("embed_out",), param_dtype=param_dtype)
    self.proj = layers.Dense((cfg.text_embed_dim,), (cfg.width,), ("embed_out", "embed"), rngs=rngs, dtype=dtype,
                             param_dtype=param_dtype)

  def __call__(self, embeddings: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    if embeddings.shape[-1] != self.dim or embeddings.shape[:2] != tokens.shape:
      raise ValueError(f"text_embeddings has shape {embeddings.shape}; expected (B, L, text_embed_dim) = "
                       f"{tokens.shape + (self.dim,)} (L from the tokenized text, which gives the padding mask)")
    return self.proj(self.norm(embeddings)), tokens != PAD
