"""Generation-quality metrics in the scenes net's eyes: Frechet distance and caption-attribute accuracy."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from vbanana.quality import net as net_lib


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Frechet distance between Gaussians fitted to two feature sets (N, D) (float64 throughout).

  |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)); the matrix square root's trace is taken as
  sum sqrt(eig(S_a^(1/2) S_b S_a^(1/2))), which is symmetric PSD, so no complex parts and no sqrtm.
  """
  a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"frechet_distance needs two (N, D) feature sets of the same D, got {a.shape}, {b.shape}")
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f"frechet_distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, v = np.linalg.eigh(cov_a)
  sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
  trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
  value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
  return float(max(value, 0.0))


_WORDS = re.compile(r"[a-z]+")


def caption_attributes(text: str) -> np.ndarray:
  """Multi-hot over ATTRIBUTES of the shapes and colours a caption names (word match, plural-tolerant)."""
  words = set(_WORDS.findall(text.lower()))
  words |= {w[:-1] for w in words if w.endswith("s")}  # "spheres" -> "sphere"
  words |= {w[:-2] for w in words if w.endswith("es")}  # "boxes" -> "box"
  return np.array([a in words for a in net_lib.ATTRIBUTES], np.float32)


def attribute_scores(logits: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
  """Per-image scores of the net's attribute predictions against the caption's attributes.

  recall: the fraction of named attributes detected (NaN for an image whose caption names none);
  balanced: mean of that recall and the fraction of unnamed attributes not detected (any predictor that
  ignores the image scores 0.5 on average); exact: every attribute right.
  """
  detected = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))) > threshold
  named = np.asarray(labels) > 0.5
  n_named, n_unnamed = named.sum(-1), (~named).sum(-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(n_named > 0, (detected & named).sum(-1) / n_named, np.nan)
    specificity = np.where(n_unnamed > 0, (~detected & ~named).sum(-1) / n_unnamed, np.nan)
  balanced = np.nanmean(np.stack([recall, specificity]), axis=0)
  return {"recall": recall, "balanced": balanced, "exact": (detected == named).all(-1).astype(np.float64)}


class GenerationQuality:
  """Accumulates generated and real images (with their captions' attributes) and scores them at the end.

  update(generated, real, labels=None, counts=None): uint8 (N, H, W, 3) each; labels multi-hot (N, A)
  over net.ATTRIBUTES (from `attribute_labels(objects)` or `caption_attributes(text)`), counts (N,) ints.
  result(): fd (generated vs real), attribute recall/balanced accuracy (and count accuracy) of the
  generated images, and the same on the real images ("*_real": the ceiling the net itself reaches).
  """

  def __init__(self, apply=None):
    self._apply = apply
    self._gen: list[dict] = []
    self._real: list[dict] = []
    self._labels: list[np.ndarray] = []
    self._counts: list[np.ndarray] = []

  def _net(self):
    if self._apply is None:
      self._apply, _ = net_lib.load_default()
    return self._apply

  def update(self, generated: np.ndarray, real: np.ndarray, labels: np.ndarray | None = None,
             counts: Sequence[int] | None = None) -> None:
    generated, real = np.asarray(generated), np.asarray(real)
    if generated.shape[0] != real.shape[0]:
      raise ValueError(f"GenerationQuality.update: {generated.shape[0]} generated vs {real.shape[0]} real images")
    if generated.shape[0] == 0:
      return
    self._gen.append(net_lib.run_in_batches(self._net(), generated))
    self._real.append(net_lib.run_in_batches(self._net(), real))
    n = generated.shape[0]
    self._labels.append(np.full((n, len(net_lib.ATTRIBUTES)), np.nan, np.float32) if labels is None
                        else np.asarray(labels, np.float32).reshape(n, -1))
    self._counts.append(np.full((n,), -1) if counts is None else np.asarray(counts).reshape(n))

  def result(self) -> dict[str, float]:
    if not self._gen:
      return {}
    gen = {k: np.concatenate([g[k] for g in self._gen]) for k in self._gen[0]}
    real = {k: np.concatenate([r[k] for r in self._real]) for k in self._real[0]}
    out = {"fd": frechet_distance(gen["features"], real["features"]) if len(gen["features"]) >= 2
           else float("nan")}
    labels, counts = np.concatenate(self._labels), np.concatenate(self._counts)
    known = ~np.isnan(labels).any(-1)
    for suffix, outs in (("", gen), ("_real", real)):
      if known.any():
        scores = attribute_scores(outs["attributes"][known], labels[known])
        out["attr_recall" + suffix] = float(np.nanmean(scores["recall"])) if np.isfinite(
            scores["recall"]).any() else float("nan")
        out["attr_balanced" + suffix] = float(scores["balanced"].mean())
      has_count = counts >= 0
      if has_count.any():
        out["count_acc" + suffix] = float((outs["count"][has_count].argmax(-1) == counts[has_count]).mean())
    return out
