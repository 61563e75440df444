"""Outputs for people: a decoded prediction as files (arrays, palette PNGs with a legend) and as pictures.

`write_prediction(task, out_dir, name, photo, rgb, request)` decodes the model's RGB with the request's
decode arguments (vbanana.tasks.Request, or a TaskExample: both carry `instruction` and `decode_args`),
brings the values to the photo's size and writes them; `picture` draws any decoded prediction.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from PIL import Image

from vbanana.predict.core import resize_rgb, resize_values


def _palette(n: int) -> np.ndarray:
  """n distinct uint8 colours (index 0 black): the masks' PNG palette and legend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps["tab20"]
  colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(max(n - 1, 0))]
  return np.asarray(colours[:max(n, 1)], np.uint8)


def save_mask(path: str, ids: np.ndarray, palette: np.ndarray) -> None:
  """A palette ('P') PNG whose pixel values are the ids, so viewers show the palette colours (instance
  decoding keeps at most 100 masks, semantic palettes have at most 255 classes)."""
  if ids.max(initial=0) > 255:
    raise ValueError(f"{path}: {int(ids.max())} is over the 255 ids a palette PNG holds")
  im = Image.fromarray(ids.astype(np.uint8), mode="P")
  flat = np.zeros((256, 3), np.uint8)
  flat[:len(palette)] = palette[:256]
  im.putpalette(flat.reshape(-1).tolist())
  im.save(path)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
  import matplotlib  # pylint: disable=g-import-not-at-top
  valid = np.isfinite(depth) & (depth > 0)
  lo, hi = (np.percentile(depth[valid], [2, 98]) if valid.any() else (0.0, 1.0))
  x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
  rgb = (matplotlib.colormaps["magma_r"](x)[..., :3] * 255).astype(np.uint8)
  rgb[~valid] = 0
  return rgb


def colorize_normals(normals: np.ndarray) -> np.ndarray:
  """The normals encoding of the design (R = (1 - x) / 2, G = (1 + y) / 2, B = (1 + z) / 2)."""
  n = np.nan_to_num(normals)
  rgb = np.stack([(1 - n[..., 0]) / 2, (1 + n[..., 1]) / 2, (1 + n[..., 2]) / 2], -1)
  return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
  right = resize_rgb(right, left.shape[:2], Image.NEAREST)
  gap = np.full((left.shape[0], 4, 3), 255, np.uint8)
  return np.concatenate([left, gap, right], 1)


def mask_ids(task: str, prediction: Any, shape: tuple[int, int]) -> np.ndarray:
  """An int32 (H, W) id map from a mask task's decoded prediction, by the task's documented return type
  (vbanana.tasks.<task>.request): semantic -> class ids as they are; instance -> {'masks': (N, H, W)}, id
  n + 1 for mask n; referring -> a bool mask, id 1 for the object."""
  if task == "semantic":
    return np.asarray(prediction, np.int32)
  if task == "instance":
    ids = np.zeros(shape, np.int32)
    for n, m in enumerate(prediction["masks"]):
      ids[np.asarray(m, bool)] = n + 1
    return ids
  if task == "referring":
    return np.asarray(prediction, bool).astype(np.int32)
  raise ValueError(f"mask_ids: {task!r} is not a mask task (semantic, instance, referring)")


def decode(task: str, rgb: np.ndarray, request) -> Any:
  """The task module's decode of a generated image with the request's decode arguments."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  return tasks.get(task).decode(rgb, **request.decode_args)


def class_names(request) -> list[str]:
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  return list(request.decode_args.get("class_names", scenes.CLASS_NAMES))


def mask_palette(task: str, num_ids: int, request) -> np.ndarray:
  """Colours of ids 0..num_ids-1: for semantic, the colours the instruction gave each class (black for
  unlabelled); for instance and referring, one distinct colour per id (black background)."""
  if task == "semantic":
    colors = np.asarray(request.decode_args["colors"], np.uint8)
    palette = np.zeros((max(num_ids, len(colors)), 3), np.uint8)
    palette[:len(colors)] = colors
    return palette
  return _palette(max(num_ids, 2))


def picture(task: str, prediction: Any, request, size: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 (H, W, 3) picture of a decoded prediction (or of decoded ground truth), for people."""
  if task in ("generation", "editing"):
    return np.asarray(prediction, np.uint8)
  values = np.asarray(prediction) if task in ("depth", "normals") else mask_ids(task, prediction, size)
  if task == "depth":
    return colorize_depth(values.astype(np.float32))
  if task == "normals":
    return colorize_normals(values.astype(np.float32))
  return mask_palette(task, int(values.max()) + 1, request)[values]


def write_prediction(task: str, out_dir: str, name: str, image: np.ndarray, rgb: np.ndarray,
                     request) -> list[str]:
  """Decodes the generated RGB, resizes it to the input's size and writes the files; returns their paths."""
  size = image.shape[:2]
  base = os.path.join(out_dir, name)
  written = []

  def save_png(suffix, array):
    path = f"{base}.{suffix}.png"
    Image.fromarray(array).save(path)
    written.append(path)

  if task == "editing":
    save_png("edit", resize_rgb(rgb, size))
    return written
  prediction = decode(task, rgb, request)
  if task == "depth":
    depth = resize_values(np.asarray(prediction, np.float32), size)
    np.save(f"{base}.depth.npy", depth)
    mm = np.clip(np.round(np.nan_to_num(depth) * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(f"{base}.depth.png")
    written += [f"{base}.depth.npy", f"{base}.depth.png"]
    save_png("depth.vis", side_by_side(image, picture(task, depth, request)))
  elif task == "normals":
    normals = resize_values(np.asarray(prediction, np.float32), size)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    np.save(f"{base}.normals.npy", normals)
    written.append(f"{base}.normals.npy")
    save_png("normals.vis", side_by_side(image, picture(task, normals, request)))
  else:  # semantic, instance, referring: an id map
    ids = resize_values(mask_ids(task, prediction, rgb.shape[:2]), size, nearest=True)
    palette = mask_palette(task, int(ids.max()) + 1, request)
    save_mask(f"{base}.{task}.png", ids, palette)
    with open(f"{base}.{task}.json", "w") as f:
      json.dump(mask_legend(task, ids, palette, request), f, indent=2)
    written += [f"{base}.{task}.png", f"{base}.{task}.json"]
    save_png(f"{task}.vis", side_by_side(image, palette[ids]))
  return written


def mask_legend(task: str, ids: np.ndarray, palette: np.ndarray, request) -> dict:
  """What each id present in a mask PNG means, and its colour in the PNG's palette."""
  names = class_names(request)

  def name(i):
    if task == "semantic":
      return names[i] if i < len(names) else "unlabelled"
    if i == 0:
      return "background"
    return f"instance {i}" if task == "instance" else "the referred object"

  entries = {str(i): {"name": name(i), "color": palette[i].tolist()} for i in sorted(np.unique(ids).tolist())}
  return {"task": task, "instruction": request.instruction, "ids": entries}
