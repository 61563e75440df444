"""The scenes attribute network: a small fixed CNN that sees an image and names what is in it.

It predicts, from the RGB image alone, which of the scenes dataset's shapes and colours are present
(multi-label) and how many objects are visible. Its penultimate layer is the feature space of the
"scenes FD". Trained once by scripts/train_quality_net.py; the weights ship beside this file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Sequence

from flax import nnx
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vbanana.data import scenes

SHAPES = scenes.SHAPES
COLORS = tuple(scenes.COLORS)
ATTRIBUTES = SHAPES + COLORS  # the multi-label outputs, in this order
MAX_COUNT = 6  # count classes 0..MAX_COUNT (the renderer places at most 6 objects)
# An object is "present" when it shows at least this many pixels: the same rule that decides whether the
# caption names it (scenes._MIN_VISIBLE_PIXELS), so the labels are exactly the caption's attributes.
MIN_VISIBLE_PIXELS = scenes._MIN_VISIBLE_PIXELS  # pylint: disable=protected-access

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WEIGHTS = os.path.join(PACKAGE_DIR, "scenes_net.safetensors")
DEFAULT_CONFIG = os.path.join(PACKAGE_DIR, "scenes_net.json")


@dataclasses.dataclass(frozen=True)
class NetConfig:
  resolution: int = 32  # native input size; other sizes are resized to it (antialiased)
  convs: tuple[tuple[int, int], ...] = ((32, 1), (32, 2), (64, 1), (64, 2), (128, 1))  # (features, stride)
  feature_dim: int = 128  # the penultimate layer: the FD feature space

  def to_dict(self) -> dict:
    return {"resolution": self.resolution, "convs": [list(c) for c in self.convs],
            "feature_dim": self.feature_dim}

  @classmethod
  def from_dict(cls, d: dict, source: str = "config") -> "NetConfig":
    unknown = set(d) - {"resolution", "convs", "feature_dim"}
    if unknown:
      raise ValueError(f"{source}: unknown quality-net config fields {sorted(unknown)}")
    return cls(resolution=int(d["resolution"]), convs=tuple((int(f), int(s)) for f, s in d["convs"]),
               feature_dim=int(d["feature_dim"]))


def attribute_labels(objects: Sequence[dict]) -> tuple[np.ndarray, int]:
  """A sample's `objects` -> (multi-hot float32 over ATTRIBUTES, number of visible objects)."""
  labels = np.zeros(len(ATTRIBUTES), np.float32)
  count = 0
  for obj in objects:
    if obj.get("pixels", MIN_VISIBLE_PIXELS) < MIN_VISIBLE_PIXELS:
      continue
    count += 1
    for value in (obj["shape"], obj["color"]):
      if value not in ATTRIBUTES:
        raise ValueError(f"object {obj}: unknown shape or colour {value!r}; expected one of {ATTRIBUTES}")
      labels[ATTRIBUTES.index(value)] = 1.0
  return labels, min(count, MAX_COUNT)


def to_input(images, resolution: int) -> jax.Array:
  """uint8 (N, H, W, 3) -> float32 (N, r, r, 3) in [-1, 1], resized (antialiased) to the native size."""
  x = jnp.asarray(images).astype(jnp.float32) / 127.5 - 1.0
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f"quality net expects images (N, H, W, 3), got shape {x.shape}")
  if x.shape[1:3] != (resolution, resolution):
    x = jax.image.resize(x, (x.shape[0], resolution, resolution, 3), "linear", antialias=True)
  return x


class QualityNet(nnx.Module):
  """conv stack -> [max, mean] over positions -> dense (features) -> attribute and count logits.

  The max over positions makes "is there a red object anywhere" a natural question for the net to answer,
  and the mean carries the scene's overall look (floor, wall, light) into the FD features.
  """

  def __init__(self, cfg: NetConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    channels = 3
    for i, (features, stride) in enumerate(cfg.convs):
      setattr(self, f"conv{i}", nnx.Conv(channels, features, (3, 3), strides=stride, rngs=rngs))
      channels = features
    self.features = nnx.Linear(2 * channels, cfg.feature_dim, rngs=rngs)
    self.attributes = nnx.Linear(cfg.feature_dim, len(ATTRIBUTES), rngs=rngs)
    self.count = nnx.Linear(cfg.feature_dim, MAX_COUNT + 1, rngs=rngs)

  def embed(self, x: jax.Array) -> jax.Array:
    """Preprocessed images (to_input) -> penultimate features (N, feature_dim)."""
    for i in range(len(self.cfg.convs)):
      x = jax.nn.relu(getattr(self, f"conv{i}")(x))
    pooled = jnp.concatenate([x.max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)
    return jax.nn.relu(self.features(pooled))

  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    feats = self.embed(x)
    return {"features": feats, "attributes": self.attributes(feats), "count": self.count(feats)}


# ----------------------------------------------------------------------------------------------------------
# Weights on disk: safetensors (flat "conv0.kernel" names) + a JSON config with the training record.
# ----------------------------------------------------------------------------------------------------------
def save(model: QualityNet, weights_path: str, record: dict | None = None) -> None:
  """Writes the weights and, beside them (same stem, .json), the net config and `record` (how trained)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(model, nnx.Param)), sep=".")
  save_file({k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}, weights_path)
  with open(os.path.splitext(weights_path)[0] + ".json", "w") as f:
    json.dump({"net": model.cfg.to_dict(), "record": record or {}}, f, indent=2)
    f.write("\n")


def load(weights_path: str = DEFAULT_WEIGHTS) -> tuple[QualityNet, dict]:
  """Reads a saved net; returns (model, the JSON sidecar: {'net': ..., 'record': ...})."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  config_path = os.path.splitext(weights_path)[0] + ".json"
  for path in (weights_path, config_path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"quality net: {path} not found (train it with scripts/train_quality_net.py)")
  with open(config_path) as f:
    meta = json.load(f)
  if "net" not in meta:
    raise ValueError(f"{config_path}: expected a 'net' field with the network config")
  cfg = NetConfig.from_dict(meta["net"], config_path)
  abstract = nnx.eval_shape(lambda: QualityNet(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  expected = traverse_util.flatten_dict(nnx.to_pure_dict(state), sep=".")
  stored = load_file(weights_path)
  if set(stored) != set(expected):
    raise ValueError(f"{weights_path}: parameter names {sorted(stored)} do not match the net of "
                     f"{config_path} ({sorted(expected)})")
  for name, value in expected.items():
    if tuple(stored[name].shape) != tuple(value.shape):
      raise ValueError(f"{weights_path}: '{name}' has shape {stored[name].shape}, the net expects {value.shape}")
  pure = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in stored.items()}, sep=".")
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state), meta


@functools.lru_cache(maxsize=4)
def load_default(weights_path: str = DEFAULT_WEIGHTS):
  """The shipped net, loaded once per process, as (jitted apply: uint8 images -> outputs, sidecar)."""
  model, meta = load(weights_path)
  return make_apply(model), meta


def make_apply(model: QualityNet):
  """uint8 images (N, H, W, 3) -> {'features', 'attributes' (logits), 'count' (logits)}, jitted."""
  graphdef, state = nnx.split(model)
  resolution = model.cfg.resolution

  @jax.jit
  def apply(state, images):
    return nnx.merge(graphdef, state)(to_input(images, resolution))

  return functools.partial(apply, state)


def run_in_batches(apply, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
  """apply() over uint8 images in chunks padded to a power of two (few shapes, few compiles)."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"quality net expects uint8 images, got {images.dtype}")
  outs: dict[str, list] = {}
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    size = min(batch_size, 1 << (n - 1).bit_length())
    if n < size:
      chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], np.uint8)])
    result = jax.device_get(apply(chunk))
    for key, value in result.items():
      outs.setdefault(key, []).append(np.asarray(value)[:n])
  return {k: np.concatenate(v) for k, v in outs.items()}


def num_params(model: Any) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
