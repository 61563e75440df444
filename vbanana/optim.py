"""The optimizer: AdamW with warmup + cosine (or constant) learning rate, global-norm clipping, optional
bf16 first moments, and weight decay only on matrices (not norms, biases, embeddings, modulation offsets).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 1e-3
  schedule: str = "cosine"      # 'cosine' (warmup then cosine to end_lr_fraction * lr) or 'constant'
  warmup_steps: int = 100
  total_steps: int = 10000      # the cosine's length (the trainer passes train.steps)
  end_lr_fraction: float = 0.0
  b1: float = 0.9
  b2: float = 0.99
  eps: float = 1e-8
  weight_decay: float = 0.0
  clip_norm: float = 1.0        # global-norm clipping; 0 = off
  mu_dtype: str | None = None   # 'bfloat16' halves the memory of the first moments
  ema_decay: float = 0.999      # EMA of parameters kept in the train state; 0 = EMA equals params

  def __post_init__(self):
    if self.schedule not in ("cosine", "constant"):
      raise ValueError(f"config.optim.schedule={self.schedule!r}; expected 'cosine' or 'constant'")
    if self.lr <= 0:
      raise ValueError(f"config.optim.lr={self.lr} must be > 0")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"config.optim.ema_decay={self.ema_decay} must be in [0, 1)")
    if self.mu_dtype not in (None, "float32", "bfloat16"):
      raise ValueError(f"config.optim.mu_dtype={self.mu_dtype!r}; expected None, 'float32' or 'bfloat16'")
    if self.warmup_steps < 0 or self.total_steps < 1:
      raise ValueError(f"config.optim: warmup_steps={self.warmup_steps} must be >= 0 and "
                       f"total_steps={self.total_steps} >= 1")

  @classmethod
  def create(cls, cfg: Any = None) -> "OptimConfig":
    """From None, a dict, a ConfigDict or an OptimConfig; unknown keys are an error naming them."""
    if isinstance(cfg, cls):
      return cfg
    d = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else (cfg or {}))
    known = {f.name for f in dataclasses.fields(cls)}
    if set(d) - known:
      raise ValueError(f"config.optim: unknown keys {sorted(set(d) - known)}; known: {sorted(known)}")
    return cls(**d)


def learning_rate(cfg: OptimConfig) -> optax.Schedule:
  if cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1)),
                                 optax.constant_schedule(cfg.lr)], [cfg.warmup_steps]) \
        if cfg.warmup_steps else optax.constant_schedule(cfg.lr)
  return optax.warmup_cosine_decay_schedule(
      0.0, cfg.lr, warmup_steps=cfg.warmup_steps, decay_steps=max(cfg.total_steps, cfg.warmup_steps + 1),
      end_value=cfg.lr * cfg.end_lr_fraction)


# Leaf names (last path entry) that are not decayed: norm scales, biases, embeddings, segment tables.
NO_DECAY = ("scale", "bias", "embed", "segment")


def decay_mask(params: Any) -> Any:
  """True for parameters that get weight decay: matrices, not norms, biases or embedding tables."""
  def keep(path, x):
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", path[-1])))
    return name not in NO_DECAY and jnp.ndim(x) >= 2
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(cfg: Any = None) -> optax.GradientTransformation:
  cfg = OptimConfig.create(cfg)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
  parts.append(optax.adamw(learning_rate(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           mu_dtype=None if cfg.mu_dtype is None else jnp.dtype(cfg.mu_dtype),
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
