"""Metric writers: clu's (log + TensorBoard) plus DIR/metrics.jsonl and PNG sample grids under DIR/samples/.

metrics.jsonl holds one JSON object per write_scalars call, with `step`; it is what scripts and tests read
without TensorFlow. Only process 0 writes files; other processes only log.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
import numpy as np
from clu import metric_writers
from etils import epath
from PIL import Image


class JsonlAndPngWriter(metric_writers.MetricWriter):
  """Appends scalars to metrics.jsonl; saves images as samples/<name>_<step>.png."""

  def __init__(self, workdir: str):
    self._dir = epath.Path(workdir)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._file = open(self._dir / "metrics.jsonl", "a")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    row = {"step": int(step)}
    for k, v in scalars.items():
      v = float(np.asarray(v))
      row[k] = v if math.isfinite(v) else str(v)
    self._file.write(json.dumps(row) + "\n")
    self._file.flush()

  def write_images(self, step: int, images: Mapping[str, Any]):
    out = self._dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
      image = np.asarray(image)
      if image.ndim == 4:  # clu convention: a batch of images; save each
        for i, im in enumerate(image):
          _save_png(im, out / f"{_safe(name)}_{int(step):07d}_{i}.png")
      else:
        _save_png(image, out / f"{_safe(name)}_{int(step):07d}.png")

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    (self._dir / "hparams.json").write_text(json.dumps(dict(hparams), indent=2, default=str))

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _save_png(image: np.ndarray, path: epath.Path):
  if image.dtype != np.uint8:
    image = np.clip(np.asarray(image, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  with path.open("wb") as f:
    Image.fromarray(image).save(f, format="PNG")


def create_writer(workdir: str, *, tensorboard: bool = True) -> metric_writers.MetricWriter:
  """Process 0: log + TensorBoard + metrics.jsonl + PNGs. Other processes: log only."""
  if jax.process_index() != 0:
    return metric_writers.create_default_writer(just_logging=True, asynchronous=False)
  writers = [metric_writers.LoggingWriter(), JsonlAndPngWriter(workdir)]
  if tensorboard:
    writers.append(metric_writers.SummaryWriter(os.fspath(epath.Path(workdir) / "tensorboard")))
  return metric_writers.MultiWriter(writers)


def image_grid(images: np.ndarray, cols: int | None = None, pad: int = 1, min_cell: int = 128) -> np.ndarray:
  """Tiles uint8 (N, H, W, 3) images into one image with a white gap, each tile enlarged by nearest
  neighbour (pixels repeated, codes never blended) to at least `min_cell` pixels on its shorter side, so a
  32 px sample is big enough to see."""
  images = np.asarray(images)
  scale = max(1, -(-min_cell // min(images.shape[1:3])))
  images = images.repeat(scale, axis=1).repeat(scale, axis=2)
  n, h, w, c = images.shape
  cols = cols or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / cols))
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i, im in enumerate(images):
    r, k = divmod(i, cols)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
  return grid


def read_metrics(workdir: str) -> list[dict]:
  """All rows of DIR/metrics.jsonl (a convenience for scripts and tests)."""
  path = epath.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
