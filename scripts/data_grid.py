"""Writes one PNG per data component: rows of (input, instruction, target, decoded target) for a person to check.

    PYTHONPATH=. python scripts/data_grid.py --out=/tmp/vbanana_grids
    PYTHONPATH=. python scripts/data_grid.py --config=configs/quickstart.py --out=/tmp/grids

Examples go through the training preprocessing (augmentation included); "decoded" is the task's `decode`
of the encoded target with the example's decode_args, drawn with a fixed colour map (depth: viridis,
normals: (n + 1) / 2, labels: a colour per id, masks: white), so a wrong encoding or a misaligned
augmentation shows. Without --config it uses the scenes quickstart mixture (built once in --data_dir).
"""

from __future__ import annotations

import os
import textwrap

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from vbanana.data import pipeline
from vbanana.data import sources

_OUT = flags.DEFINE_string("out", "/tmp/vbanana_grids", "Directory for the PNGs.")
_CONFIG = flags.DEFINE_string("config", None, "A config file (path[:args]); its `data` section is used.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/vbanana_bench_scenes", "Scenes data_dir without --config.")
_ROWS = flags.DEFINE_integer("rows", 6, "Examples per component.")
_SCALE = flags.DEFINE_integer("scale", 4, "Pixel upscaling of each panel.")

PANEL_TEXT_WIDTH = 36  # characters per line in the instruction panel


def _data_config():
  if _CONFIG.value:
    from vbanana import config_lib

    return config_lib.load_config(_CONFIG.value).data
  return pipeline.scenes_data_config(_DATA_DIR.value, num_train=512)


def _palette(ids: np.ndarray) -> np.ndarray:
  rng = np.random.default_rng(0)
  colours = rng.integers(40, 256, (int(ids.max(initial=0)) + 2, 3)).astype(np.uint8)
  colours[0] = 0
  return colours[np.clip(ids, 0, len(colours) - 1)]


def show(value) -> np.ndarray | None:
  """A decoded prediction or a ground-truth array -> uint8 RGB for people (None when it is not an image)."""
  import matplotlib

  if isinstance(value, dict) and "masks" in value:  # an instance decode: {'masks', 'scores'}
    value = value["masks"]
  array = np.asarray(value) if not isinstance(value, dict) else None
  if array is None or array.ndim < 2:
    return None
  if array.dtype == bool and array.ndim == 3:  # (N, H, W) instance masks: instance k + 1 in its own colour
    ids = np.zeros(array.shape[1:], np.int32)
    for k, mask in enumerate(array):
      ids[mask] = k + 1
    return _palette(ids)
  if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
    return array
  if array.dtype == bool:
    return np.repeat((array[..., None] * 255).astype(np.uint8), 3, -1)
  if np.issubdtype(array.dtype, np.integer) and array.ndim == 2:
    return _palette(np.where(array == 255, 0, array + 1))
  if array.ndim == 3 and array.shape[-1] == 3:  # normals
    return (np.clip((np.nan_to_num(array) + 1) / 2, 0, 1) * 255).astype(np.uint8)
  if array.ndim == 2:  # depth
    valid = np.isfinite(array) & (array > 0)
    lo, hi = (np.percentile(array[valid], [2, 98]) if valid.any() else (0.0, 1.0))
    rgb = matplotlib.colormaps["viridis"](np.clip((np.nan_to_num(array) - lo) / max(hi - lo, 1e-6), 0, 1))
    return np.where(valid[..., None], (rgb[..., :3] * 255).astype(np.uint8), 0).astype(np.uint8)
  return None


def _first_array(mapping) -> np.ndarray | None:
  for value in (mapping or {}).values():
    if isinstance(value, np.ndarray) and value.ndim >= 2:
      return value
  return None


def _panel(image, size: int, scale: int) -> Image.Image:
  if image is None:
    return Image.new("RGB", (size * scale, size * scale), (40, 40, 40))
  image = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
  return image.resize((size * scale, size * scale), Image.NEAREST)


def _text_panel(text: str, height: int, width: int) -> Image.Image:
  panel = Image.new("RGB", (width, height), (255, 255, 255))
  lines = textwrap.wrap(text, PANEL_TEXT_WIDTH)[: max(1, height // 12)]
  ImageDraw.Draw(panel).multiline_text((4, 4), "\n".join(lines), fill=(0, 0, 0), spacing=2)
  return panel


def component_grid(component, data_cfg, rows: int, scale: int) -> Image.Image:
  """Rows of (input, instruction, target, decoded target, ground truth) for one component."""
  from vbanana import tasks

  module = tasks.get(component.task)
  source = sources.make_source(component.source)
  preprocess = pipeline.Preprocess(component, data_cfg, train=True)
  size = preprocess.shapes[0][0]  # square data (the grid draws square panels)
  side = size * scale
  text_width = 7 * PANEL_TEXT_WIDTH
  columns = ["input", "instruction", "target", "decoded target", "ground truth"]
  widths = [side, text_width, side, side, side]
  grid = Image.new("RGB", (sum(widths) + 4 * len(widths), 16 + rows * (side + 4)), (255, 255, 255))
  draw = ImageDraw.Draw(grid)
  x = 0
  for name, width in zip(columns, widths):
    draw.text((x + 2, 2), name, fill=(0, 0, 0))
    x += width + 4
  rng = np.random.default_rng(0)
  row = 0
  for index in rng.permutation(len(source))[: rows * 3]:
    if row == rows:
      break
    result = preprocess.example(source[int(index)], np.random.default_rng(int(index)))
    if result is None:
      continue
    example, _ = result
    decoded = module.decode(example.target, **(example.decode_args or {}))
    gt = _first_array(example.ground_truth)
    panels = [
        _panel(example.inputs[0] if example.inputs else None, size, scale),
        _text_panel(example.instruction, side, text_width),
        _panel(example.target, size, scale),
        _panel(show(decoded), size, scale),
        _panel(show(gt) if gt is not None else None, size, scale),
    ]
    x, y = 0, 16 + row * (side + 4)
    for panel, width in zip(panels, widths):
      grid.paste(panel, (x, y))
      x += width + 4
    row += 1
  return grid


def main(argv):
  del argv
  data_cfg = _data_config()
  os.makedirs(_OUT.value, exist_ok=True)
  for component in pipeline.components(data_cfg):
    path = os.path.join(_OUT.value, f"{component.name}.png")
    component_grid(component, data_cfg, _ROWS.value, _SCALE.value).save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
