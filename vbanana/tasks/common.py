"""What every task shares: the TaskExample, input checks, instruction picking, colours and palettes.

Colour distances are measured in CIELAB (perceptual): a generator drifts colours, and nearest-colour decoding
should follow what looks closest, not raw RGB.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Sequence

import numpy as np
from scipy import ndimage


@dataclasses.dataclass
class TaskExample:
  """What the model trains on for one raw sample and one task (docs/interfaces.md)."""
  task: str
  instruction: str
  inputs: list[np.ndarray]
  target: np.ndarray
  ground_truth: dict
  decode_args: dict


@dataclasses.dataclass(frozen=True)
class Request:
  """What a task asks of the model for an image without labels (prediction): the instruction and what
  `decode` needs besides the generated RGB. Each task module's `request(...)` makes one."""
  instruction: str
  decode_args: dict


def check_rgb(rgb: Any, what: str = "rgb") -> np.ndarray:
  """The uint8 (H, W, 3) image a decoder expects, or a ValueError naming what was wrong."""
  if not isinstance(rgb, np.ndarray):
    rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"{what}: expected a uint8 RGB image of shape (H, W, 3), got shape {rgb.shape}")
  if rgb.dtype != np.uint8:
    raise ValueError(f"{what}: expected dtype uint8 (0-255), got {rgb.dtype}; convert float images with "
                     "np.round(x * 255).astype(np.uint8)")
  return rgb


def check_map(x: Any, what: str, ndim: int, channels: int | None = None) -> np.ndarray:
  """A float/int ground-truth map of the given rank (and channel count), or a ValueError naming it."""
  x = np.asarray(x)
  if x.ndim != ndim or (channels is not None and x.shape[-1] != channels):
    want = "(H, W)" if ndim == 2 else f"(H, W, {channels})"
    raise ValueError(f"{what}: expected shape {want}, got {x.shape}")
  return x


# Share of training examples whose colours are the evaluation's (semantic: the default class colours,
# referring: EVAL_COLOR, instance: a black background); the rest draw colours at random. The fixed colours
# make a code the model can learn first, as depth's or normals' is; the random ones teach it to read the
# colours an instruction names. (Phrasings are random either way.)
FIXED_COLOURS_SHARE = 0.5


def random_colours(rng: np.random.Generator | None, train: bool) -> bool:
  """Whether this example draws its colours at random (training only, 1 - FIXED_COLOURS_SHARE of the time)."""
  return bool(train and rng is not None and rng.random() >= FIXED_COLOURS_SHARE)


def pick(templates: Sequence[str], canonical: str, rng: np.random.Generator | None, train: bool) -> str:
  """A random phrasing in training, the canonical one in evaluation."""
  if train and rng is not None:
    return templates[int(rng.integers(len(templates)))]
  return canonical


def nearest_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """Invalid pixels take the value of the nearest valid one: no special colour for the model to learn."""
  if valid.all() or not valid.any():
    return values
  _, (rows, cols) = ndimage.distance_transform_edt(~valid, return_indices=True)
  return values[rows, cols]


def as_dict(ground_truth: Any, key: str) -> tuple[Any, Any]:
  """(value, valid) from a ground-truth dict ({key: ..., 'valid': ...}) or a bare array."""
  if isinstance(ground_truth, dict):
    if key not in ground_truth:
      raise ValueError(f"ground_truth: expected a '{key}' entry, got keys {sorted(ground_truth)}")
    return ground_truth[key], ground_truth.get("valid")
  return ground_truth, None


# ------------------------------------------------------------------------------------------------------------
# Colours.
# ------------------------------------------------------------------------------------------------------------
COLOR_NAMES = {
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (230, 25, 25), "green": (30, 180, 50),
    "blue": (20, 60, 230), "yellow": (250, 220, 20), "purple": (140, 40, 180), "cyan": (20, 220, 230),
    "magenta": (240, 40, 220), "orange": (250, 130, 20), "pink": (250, 160, 190), "brown": (130, 80, 30),
    "gray": (128, 128, 128), "grey": (128, 128, 128), "lime": (160, 250, 40), "navy": (10, 20, 120),
    "teal": (0, 128, 128), "olive": (128, 128, 0), "maroon": (128, 0, 0),
}
# Names used when the task picks colours itself (grey duplicates gray; black is the usual background).
PROMPT_COLORS = ("red", "green", "blue", "yellow", "purple", "cyan", "magenta", "orange", "pink", "brown",
                 "white", "lime", "navy", "teal", "olive", "maroon", "gray")


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
  """sRGB (0-255, any leading shape) to CIELAB (D65)."""
  c = np.asarray(rgb, np.float64) / 255.0
  c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
  m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
  xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
  f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
  return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def nearest_color(rgb: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(index of the nearest colour in CIELAB, that distance) for every pixel."""
  lab = rgb_to_lab(rgb.reshape(-1, 3))
  ref = rgb_to_lab(np.asarray(colors).reshape(-1, 3))
  dist = np.linalg.norm(lab[:, None, :] - ref[None, :, :], axis=-1)
  idx = dist.argmin(1)
  return idx.reshape(rgb.shape[:-1]), dist[np.arange(len(idx)), idx].reshape(rgb.shape[:-1])


def well_separated_palette(n: int, seed: int = 0, exclude: Sequence[Sequence[int]] = ()) -> np.ndarray:
  """n colours far apart in CIELAB: greedy farthest-point selection from a 6-level RGB lattice."""
  levels = np.array([0, 51, 102, 153, 204, 255])
  grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
  lab = rgb_to_lab(grid)
  chosen_lab = [rgb_to_lab(np.asarray(e)) for e in exclude]
  rng = np.random.default_rng(seed)
  picked = []
  dmin = np.full(len(grid), np.inf)
  for c in chosen_lab:
    dmin = np.minimum(dmin, np.linalg.norm(lab - c, axis=-1))
  for i in range(n):
    j = int(rng.integers(len(grid))) if (i == 0 and not chosen_lab) else int(dmin.argmax())
    picked.append(grid[j])
    dmin = np.minimum(dmin, np.linalg.norm(lab - lab[j], axis=-1))
  return np.asarray(picked, np.uint8)


_HEX = re.compile(r"#([0-9a-fA-F]{6})\b")
_TUPLE = re.compile(r"\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)")


def parse_color(text: str) -> tuple[int, int, int]:
  """One colour from a name ('purple'), a hex code ('#8c28b4') or an RGB tuple ('(0, 0, 255)')."""
  t = text.strip().lower()
  if m := _HEX.search(t):
    h = m.group(1)
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))
  if m := _TUPLE.search(t):
    vals = tuple(int(v) for v in m.groups())
    if max(vals) > 255:
      raise ValueError(f"colour {text!r}: RGB values must be 0-255")
    return vals
  for name in sorted(COLOR_NAMES, key=len, reverse=True):
    if re.search(rf"\b{name}\b", t):
      return COLOR_NAMES[name]
  raise ValueError(f"colour {text!r}: expected a colour name ({', '.join(PROMPT_COLORS)}), a hex code "
                   "like '#ff8800' or an RGB tuple like '(0, 0, 255)'")


def describe_color(rgb: Sequence[int], style: str = "name") -> str:
  """A colour written as a name (when it is one of COLOR_NAMES), hex code or RGB tuple."""
  rgb = tuple(int(v) for v in rgb)
  if style == "name":
    for name, value in COLOR_NAMES.items():
      if value == rgb:
        return name
    style = "hex"
  if style == "hex":
    return "#" + "".join(f"{v:02x}" for v in rgb)
  return f"({rgb[0]}, {rgb[1]}, {rgb[2]})"


def parse_color_mapping(text: str, class_names: Sequence[str]) -> dict[str, tuple[int, int, int]]:
  """Class -> colour from an instruction: JSON-like {"road": "purple"} or prose ("paint the road purple and
  cars (0, 0, 255), sky #87ceeb"). Class names may appear in the plural."""
  start, end = text.find("{"), text.rfind("}")
  if 0 <= start < end:
    try:
      mapping = json.loads(text[start:end + 1].replace("'", '"'))
      return {str(k): parse_color(v if isinstance(v, str) else f"({v[0]}, {v[1]}, {v[2]})")
              for k, v in mapping.items()}
    except (json.JSONDecodeError, TypeError, IndexError):
      pass
  out = {}
  for clause in re.split(r";|,(?![^()]*\))|\band\b", text):
    for name in sorted(class_names, key=len, reverse=True):
      if re.search(rf"\b{re.escape(name)}s?\b", clause, flags=re.IGNORECASE):
        rest = re.sub(rf"\b{re.escape(name)}s?\b", " ", clause, flags=re.IGNORECASE)
        try:
          out[name] = parse_color(rest)
        except ValueError:
          pass
        break
  return out


def figure(**kwargs):
  """A matplotlib Figure drawn by Agg without pyplot: library code never switches the user's backend."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def figure_to_array(fig) -> np.ndarray:
  """uint8 RGB pixels of a figure made by `figure`."""
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
