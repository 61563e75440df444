"""Prompt embeddings for klein: `encode_prompts` (Qwen3 hidden states stacked per token) and a cache of them.

A training batch of vision tasks repeats a handful of instruction templates, and classifier-free guidance
repeats the empty prompt at every step: Qwen3-4B should run once per distinct prompt, not once per row.
`PromptCache` keeps each prompt's (max_length, K * hidden) embeddings on the host (in the encoder's dtype;
512 x 7680 bfloat16 = 7.5 MiB a prompt) and encodes only the prompts it has not seen, in one padded batch.
"""

from __future__ import annotations

import collections
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel
from vbanana.flux2.text_encoder import Qwen3Encoder
from vbanana.flux2.tokenizer import KleinTokenizer

KLEIN_LAYERS = (9, 18, 27)


@functools.partial(nnx.jit, static_argnames=("layers_asked",))
def _encode(encoder: Qwen3Encoder, ids, mask, layers_asked):
  return encoder(ids, mask, layers_asked)


def _tokenizer(tokenizer) -> KleinTokenizer:
  return tokenizer if isinstance(tokenizer, KleinTokenizer) else KleinTokenizer(tokenizer)


def encode_prompts(text_encoder: Qwen3Encoder, tokenizer_path, prompts: str | Sequence[str],
                   max_length: int = 512, layers: Sequence[int] = KLEIN_LAYERS, *, mesh=None,
                   rules=None) -> jax.Array:
  """(B, max_length, len(layers) * hidden): `Flux2KleinPipeline.encode_prompt`'s embeddings. The prompts go
  through klein's chat template and are padded to max_length; Qwen3 reads them with causal + padding
  attention; every position (pads too) keeps its hidden states. `tokenizer_path`: a pipeline folder, its
  `tokenizer/` folder, a tokenizer.json, or a KleinTokenizer."""
  ids, mask = _tokenizer(tokenizer_path)(prompts, max_length)
  with parallel.sharding_context(mesh, rules):
    return _encode(text_encoder, jnp.asarray(ids), jnp.asarray(mask), tuple(int(k) for k in layers))


class PromptCache:
  """`cache(prompts) -> np.ndarray (B, max_length, K * hidden)`; each distinct prompt is encoded once.

  At most `max_entries` prompts are kept (least recently used dropped). New prompts are encoded together,
  their batch padded to a power of two, at least `min_batch` and at most `batch_size` rows a run, so a few
  compiled shapes serve every call."""

  def __init__(self, text_encoder: Qwen3Encoder, tokenizer, *, max_length: int = 512,
               layers: Sequence[int] = KLEIN_LAYERS, max_entries: int = 1024, batch_size: int = 16,
               min_batch: int = 4, mesh=None, rules=None):
    self.encoder, self.tokenizer = text_encoder, _tokenizer(tokenizer)
    self.max_length, self.layers = int(max_length), tuple(int(k) for k in layers)
    self.max_entries, self.batch_size = int(max_entries), int(batch_size)
    self.min_batch = min(int(min_batch), self.batch_size)
    self.mesh, self.rules = mesh, rules
    self._store: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self.hits = self.misses = 0

  def __len__(self) -> int:
    return len(self._store)

  def __contains__(self, prompt: str) -> bool:
    return prompt in self._store

  def _encode_new(self, prompts: list[str]) -> dict[str, np.ndarray]:
    rows = {}
    for start in range(0, len(prompts), self.batch_size):
      chunk = prompts[start:start + self.batch_size]
      padded = chunk + [""] * (max(pow2(len(chunk)), self.min_batch) - len(chunk))
      out = np.asarray(jax.device_get(encode_prompts(self.encoder, self.tokenizer, padded, self.max_length,
                                                     self.layers, mesh=self.mesh, rules=self.rules)))
      rows.update(zip(chunk, out))
    return rows

  def __call__(self, prompts: str | Sequence[str]) -> np.ndarray:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = {p: self._store[p] for p in dict.fromkeys(prompts) if p in self._store}
    new = [p for p in dict.fromkeys(prompts) if p not in rows]
    self.misses += len(new)
    self.hits += len(prompts) - len(new)
    rows.update(self._encode_new(new) if new else {})
    for p in dict.fromkeys(prompts):
      self._store[p] = rows[p]
      self._store.move_to_end(p)
    while len(self._store) > self.max_entries:
      self._store.popitem(last=False)
    return np.stack([rows[p] for p in prompts])


def pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()
