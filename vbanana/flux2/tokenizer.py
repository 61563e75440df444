"""klein's prompt tokenizer: Qwen3's byte-level BPE read with the `tokenizers` package (no transformers).

klein puts each prompt in Qwen3's chat template with thinking switched off,
  <|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n
then pads it with the pad token (<|endoftext|>, id 151643 in Qwen3) to max_length (512), cutting longer
prompts, exactly as `Flux2KleinPipeline._get_qwen3_prompt_embeds` does through transformers. The attention
mask says which positions are the prompt's; the transformer later sees all max_length positions.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_PAD = "<|endoftext|>"


def format_prompt(prompt: str) -> str:
  """The chat-template string klein encodes for one prompt (Qwen3 template, enable_thinking=False)."""
  return TEMPLATE.format(prompt=prompt)


def tokenizer_files(path: str) -> tuple[str, str | None]:
  """(tokenizer.json, tokenizer_config.json or None) from a pipeline folder, its `tokenizer/` folder, or the
  tokenizer.json itself."""
  if os.path.isfile(path):
    folder, json_path = os.path.dirname(path), path
  else:
    folder = os.path.join(path, "tokenizer") if os.path.isdir(os.path.join(path, "tokenizer")) else path
    json_path = os.path.join(folder, "tokenizer.json")
  if not os.path.isfile(json_path):
    raise FileNotFoundError(f"{path}: no tokenizer.json (looked for {json_path}; a klein pipeline folder has "
                            "tokenizer/tokenizer.json)")
  config = os.path.join(folder, "tokenizer_config.json")
  return json_path, config if os.path.isfile(config) else None


class KleinTokenizer:
  """`tok(prompts, max_length) -> (ids int32 (B, L), mask int32 (B, L))` in klein's prompt format."""

  def __init__(self, path: str):
    import tokenizers  # pylint: disable=g-import-not-at-top  (a dependency of the package; imported when used)
    json_path, config_path = tokenizer_files(path)
    try:
      self._tok = tokenizers.Tokenizer.from_file(json_path)
    except Exception as e:  # the Rust side raises its own exception type
      raise ValueError(f"{json_path}: not a readable tokenizers file ({str(e).splitlines()[0]})") from None
    self._tok.no_padding()
    self._tok.no_truncation()
    config = {}
    if config_path:
      with open(config_path) as f:
        config = json.load(f)
    pad = config.get("pad_token") or DEFAULT_PAD
    pad = pad.get("content") if isinstance(pad, dict) else pad
    self.pad_id = self._tok.token_to_id(pad)
    if self.pad_id is None:
      raise ValueError(f"{json_path}: the pad token {pad!r} is not in the vocabulary")
    self.padding_side = config.get("padding_side", "right")
    self.truncation_side = config.get("truncation_side", "right")
    for key, side in (("padding_side", self.padding_side), ("truncation_side", self.truncation_side)):
      if side not in ("right", "left"):
        raise ValueError(f"{config_path}: {key} {side!r}; expected 'right' or 'left'")
    self.path = json_path

  def token_ids(self, prompt: str) -> list[int]:
    """The ids of one formatted prompt, uncut and unpadded."""
    return list(self._tok.encode(format_prompt(prompt)).ids)

  def __call__(self, prompts: str | Sequence[str], max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(prompts, str):
      prompts = [prompts]
    if max_length < 1:
      raise ValueError(f"max_length {max_length}: must be at least 1")
    for i, p in enumerate(prompts):
      if not isinstance(p, str):
        raise TypeError(f"prompts[{i}] is {type(p).__name__}, expected str")
    encoded = self._tok.encode_batch([format_prompt(p) for p in prompts])
    ids = np.full((len(prompts), max_length), self.pad_id, np.int32)
    mask = np.zeros((len(prompts), max_length), np.int32)
    for row, enc in enumerate(encoded):
      seq = enc.ids[:max_length] if self.truncation_side == "right" else enc.ids[-max_length:]
      n = len(seq)
      cols = slice(0, n) if self.padding_side == "right" else slice(max_length - n, max_length)
      ids[row, cols] = seq
      mask[row, cols] = 1
    return ids, mask
