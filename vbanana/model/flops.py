"""Analytic FLOPs of the DiT: matmuls and attention (2 FLOPs per multiply-add); norms, softmax and other
elementwise work are left out (a few percent at useful sizes).

A training step costs about 3x the forward (backward = 2x); with rematerialisation the hardware does part of
the forward again (`hardware_train_flops`), which is not useful work and does not count towards MFU.
"""

from __future__ import annotations

from vbanana.model.config import ModelConfig


def _attention_products(seq: int, width: int) -> float:
  """QK^T and the attention-weighted V over all heads."""
  return 2 * 2 * seq * seq * width


def _block(seq: int, width: int, heads_dim: int, mlp_dim: int, modulated: bool) -> float:
  del heads_dim
  qkv = 2 * seq * width * 3 * width
  out = 2 * seq * width * width
  attention = _attention_products(seq, width)
  mlp = 3 * 2 * seq * width * mlp_dim    # gate, up, down
  modulation = 2 * width * 6 * width if modulated else 0
  return qkv + out + attention + mlp + modulation


def _layout(cfg: ModelConfig, text_len: int | None, num_inputs: int | None) -> tuple[int, int, int]:
  """(instruction bytes, input slots, joint sequence length), the config's where not given."""
  text_len = cfg.text_len if text_len is None else text_len
  k = cfg.max_inputs if num_inputs is None else num_inputs
  return text_len, k, cfg.text_tokens(text_len) + (k + 1) * cfg.tokens_per_image


def forward_flops(cfg: ModelConfig, text_len: int | None = None, num_inputs: int | None = None) -> float:
  """FLOPs of one forward pass for one example with `text_len` instruction tokens and `num_inputs` input
  slots (defaults: the config's text_len and max_inputs; absent slots still cost, as in the model)."""
  text_len, k, seq = _layout(cfg, text_len, num_inputs)
  n, w = cfg.tokens_per_image, cfg.width
  total = 0.0
  # Text: the byte encoder (blocks + projection), or the projection of precomputed embeddings.
  if cfg.text_embed_dim is None:
    tw = cfg.text_width
    total += cfg.text_depth * _block(text_len, tw, tw // cfg.text_heads, cfg.text_mlp_dim, modulated=False)
    total += 2 * text_len * tw * w                             # merging text_stride bytes per token
  else:
    total += 2 * text_len * cfg.text_embed_dim * w
  total += 2 * (k + 1) * n * cfg.patch_dim * w                # patch embedding
  total += 2 * 256 * w + 2 * w * w                             # timestep MLP
  total += cfg.depth * _block(seq, w, cfg.head_dim, cfg.mlp_dim, modulated=True)
  total += 2 * w * 2 * w + 2 * n * w * cfg.patch_dim          # final adaLN and readout (target only)
  return float(total)


def train_flops_per_example(cfg: ModelConfig, text_len: int | None = None, num_inputs: int | None = None) -> float:
  """Useful FLOPs of one training step per example: forward + backward = 3x forward."""
  return 3.0 * forward_flops(cfg, text_len, num_inputs)


def hardware_train_flops(cfg: ModelConfig, text_len: int | None = None, num_inputs: int | None = None) -> float:
  """FLOPs the hardware executes per example: + one more forward of the blocks when they are rematerialised
  ('full' recomputes everything; 'save_dots' keeps every matmul output, so only elementwise work repeats;
  'save_dots_no_batch' also recomputes the attention products, which have batch dimensions)."""
  extra = 0.0
  if cfg.remat == "full":
    extra = forward_flops(cfg, text_len, num_inputs)
  elif cfg.remat == "save_dots_no_batch":
    text_bytes, _, seq = _layout(cfg, text_len, num_inputs)
    extra = cfg.depth * _attention_products(seq, cfg.width)
    if cfg.text_embed_dim is None:
      extra += cfg.text_depth * _attention_products(text_bytes, cfg.text_width)
  return train_flops_per_example(cfg, text_len, num_inputs) + extra


def sample_flops(cfg: ModelConfig, steps: int, method: str = "euler", passes: int = 1,
                 text_len: int | None = None, num_inputs: int | None = None) -> float:
  """FLOPs of sampling one image: network evaluations x guidance passes x forward."""
  evals = steps if method == "euler" else 2 * steps - 1
  return evals * passes * forward_flops(cfg, text_len, num_inputs)
