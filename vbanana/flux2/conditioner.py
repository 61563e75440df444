"""klein's text conditioner on the host: a batch's instructions -> Qwen3 prompt embeddings, through a cache.

The training data carries each instruction as vbanana's byte tokens (`batch['text']`, lossless up to
data.text_length), whatever the model. klein reads instructions as the hidden states of its frozen Qwen3
(`vbanana.flux2.encode_prompts`): 512 x 7680 values a prompt, 3.2 TFLOP to compute at 4B. The vision tasks
repeat a handful of instruction templates and guidance repeats the empty prompt, so each distinct prompt is
encoded once (`PromptCache`) and every later row is a host lookup. So Qwen3 never runs inside the train
step: `prepare` adds `text_embeddings` (B, prompt_len, joint_dim) to a batch before the step sees it, and the
jitted programs read that (precomputed embeddings in the data are used as they are).

Qwen3 is placed on this process's own devices (sharded over them by its logical names), so on a slice of
many hosts every host encodes its own rows without a collective.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from vbanana import parallel
from vbanana.flux2 import prompt_cache as prompt_cache_lib
from vbanana.flux2 import text_encoder as text_encoder_lib
from vbanana.flux2.tokenizer import KleinTokenizer

KEY = "text_embeddings"


class PromptConditioner:
  """`embed(prompts)` and `prepare(batch)`: a klein folder's Qwen3 and tokenizer behind a PromptCache."""

  def __init__(self, folder: str, *, prompt_len: int, layers: Sequence[int], dtype: str, rules=None,
               max_entries: int = 1024):
    devices = jax.local_devices()
    self.mesh = parallel.make_mesh(dict(data=1, fsdp=len(devices), tensor=1), devices=devices)
    encoder = text_encoder_lib.load_text_encoder(folder, layers_asked=tuple(layers), dtype=dtype, mesh=self.mesh,
                                                 rules=rules)
    self.cache = prompt_cache_lib.PromptCache(encoder, KleinTokenizer(folder), max_length=prompt_len,
                                              layers=tuple(layers), max_entries=max_entries, mesh=self.mesh,
                                              rules=rules)

  def embed(self, prompts: Sequence[str]) -> np.ndarray:
    """(B, prompt_len, len(layers) * hidden) on the host."""
    return self.cache(list(prompts))

  def embed_tokens(self, text: np.ndarray) -> np.ndarray:
    """The embeddings of byte-token rows (B, text_len) (vbanana.model.text's tokens; all padding = '')."""
    from vbanana.model import text as text_lib  # pylint: disable=g-import-not-at-top
    return self.embed(text_lib.detokenize(np.asarray(text)))

  def prepare(self, batch: Mapping[str, Any], sharding=None) -> dict:
    """The batch with `text_embeddings` of its `text` rows added: numpy rows (this process's) stay numpy;
    global jax arrays (an evaluator's batch) give a global array with `sharding`."""
    batch = dict(batch)
    if KEY in batch:
      return batch
    text = batch["text"]
    if isinstance(text, jax.Array):
      rows = self.embed_tokens(_host(text))
      batch[KEY] = jax.make_array_from_callback(rows.shape, sharding or text.sharding, lambda index: rows[index])
    else:
      batch[KEY] = self.embed_tokens(text)
    return batch


def _host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def has_text_encoder(folder: str) -> bool:
  return bool(folder) and os.path.isdir(os.path.join(folder, "text_encoder")) and \
      os.path.isdir(os.path.join(folder, "tokenizer"))


__all__ = ["PromptConditioner", "has_text_encoder", "KEY"]
