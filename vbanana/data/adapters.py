"""TFDS adapters: one function per dataset family that maps a decoded TFDS record onto the raw sample.

The raw sample is the one dict every task reads (docs/interfaces.md). An adapter only renames, converts
dtypes and maps label ids; it never resizes or augments. A record that lacks a feature raises
`BadRecordError` naming the record and the feature, so the pipeline can skip it (or fail in strict mode).

Adapters are looked up by the dataset's base name ('cityscapes/semantic_segmentation:1.0.0' ->
'cityscapes'); any dataset with an `image` and a `label` ClassLabel works as a classification source.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np

IGNORE_LABEL = 255


class BadRecordError(ValueError):
  """A record that cannot become a raw sample (corrupt, missing a feature, out-of-range labels)."""


# ADE20K scene parsing (SceneParse150): class id k in the annotation is ADE20K_CLASSES[k - 1]; 0 = other.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table",
    "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island",
    "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy",
    "washer", "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot",
    "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce",
    "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
assert len(ADE20K_CLASSES) == 150

# Cityscapes: the 19 evaluated classes (train ids 0..18) and the label id each comes from.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def _cityscapes_train_id_table() -> np.ndarray:
  table = np.full(256, IGNORE_LABEL, np.int32)
  table[list(CITYSCAPES_LABEL_IDS)] = np.arange(len(CITYSCAPES_LABEL_IDS))
  return table


CITYSCAPES_TRAIN_IDS = _cityscapes_train_id_table()


def _feature(record: Mapping[str, Any], name: str, key: str):
  if name not in record:
    raise BadRecordError(f"{key}: record has no feature '{name}' (has {sorted(record)})")
  return record[name]


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return _text(value.item())
  return str(value)


def _rgb(record, name, key) -> np.ndarray:
  image = np.asarray(_feature(record, name, key))
  if image.ndim == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, -1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise BadRecordError(f"{key}: feature '{name}' should be uint8 (H, W, 3), got "
                         f"{image.dtype} {image.shape}")
  return image


# ----------------------------------------------------------------------------------------------------------
# One adapter per dataset family: (record, key, **options) -> raw sample.


def nyu_depth_v2(record, key):
  """NYU Depth v2: `image` and `depth` in metres (float16; 0 = no measurement -> invalid)."""
  depth = np.asarray(_feature(record, "depth", key), np.float32)
  return {"image": _rgb(record, "image", key), "depth": depth, "key": key}


def scene_parse150(record, key):
  """ADE20K SceneParse150: annotation channel 0 holds 0 (other -> ignore) or class k in 1..150 -> k - 1."""
  annotation = np.asarray(_feature(record, "annotation", key))
  labels = (annotation[..., 0] if annotation.ndim == 3 else annotation).astype(np.int32)
  semantic = np.where(labels == 0, IGNORE_LABEL, labels - 1).astype(np.int32)
  return {"image": _rgb(record, "image", key), "semantic": semantic,
          "class_names": ADE20K_CLASSES, "key": key}


def cityscapes(record, key):
  """Cityscapes: `image_left` and label ids in `segmentation_label` -> the 19 train ids (else ignore)."""
  labels = np.asarray(_feature(record, "segmentation_label", key))
  labels = labels[..., 0] if labels.ndim == 3 else labels
  semantic = CITYSCAPES_TRAIN_IDS[labels.astype(np.int64) % 256]
  if "image_id" in record:
    key = f"{key} ({_text(record['image_id'])})"
  return {"image": _rgb(record, "image_left", key), "semantic": semantic,
          "class_names": CITYSCAPES_CLASSES, "key": key}


def coco_captions(record, key):
  """COCO captions: the image and its captions (the pipeline picks one at random in training)."""
  captions = _feature(record, "captions", key)
  texts = captions.get("text") if isinstance(captions, Mapping) else None
  if texts is None or len(texts) == 0:
    raise BadRecordError(f"{key}: feature 'captions/text' is missing or empty")
  texts = tuple(_text(t) for t in np.asarray(texts).tolist())
  if "image/filename" in record:
    key = f"{key} ({_text(record['image/filename'])})"
  return {"image": _rgb(record, "image", key), "caption": texts[0], "captions": texts, "key": key}


def _article(name: str) -> str:
  return "an" if name[:1].lower() in "aeiou" else "a"


def classification(record, key, class_names: Sequence[str]):
  """Any image classification dataset: the class name becomes the caption 'a photo of a <name>'."""
  label = int(np.asarray(_feature(record, "label", key)))
  if not 0 <= label < len(class_names):
    raise BadRecordError(f"{key}: label {label} outside the {len(class_names)} class names")
  name = class_names[label]
  return {"image": _rgb(record, "image", key), "caption": f"a photo of {_article(name)} {name}",
          "key": key}


_BY_NAME: dict[str, Callable] = {
    "nyu_depth_v2": nyu_depth_v2,
    "scene_parse150": scene_parse150,
    "cityscapes": cityscapes,
    "coco_captions": coco_captions,
}
_WORDNET_ID = re.compile(r"^n\d{8}$")


def base_name(name: str) -> str:
  """'cityscapes/semantic_segmentation:1.0.0' -> 'cityscapes'."""
  return name.split(":")[0].split("/")[0]


def read_class_names(spec_value) -> tuple[str, ...]:
  """`class_names` of a source spec: a list of names or the path of a text file with one name a line."""
  if isinstance(spec_value, str):
    try:
      with open(spec_value) as f:
        names = [line.strip() for line in f if line.strip()]
    except OSError as e:
      raise ValueError(f"source spec field 'class_names': cannot read {spec_value}: {e}") from e
  else:
    names = [str(n) for n in spec_value]
  if not names:
    raise ValueError("source spec field 'class_names' is empty")
  return tuple(names)


def make_adapter(name: str, features=None, class_names=None) -> Callable[[Mapping, str], dict]:
  """The adapter for TFDS dataset `name`; `features` (the builder's FeaturesDict) for classification.

  Raises ValueError naming the dataset when no adapter fits.
  """
  base = base_name(name)
  if base in _BY_NAME:
    return _BY_NAME[base]
  label = features["label"] if features is not None and "label" in features else None
  if label is None or not hasattr(label, "names") or "image" not in features:
    raise ValueError(
        f"source spec field 'name': no TFDS adapter for '{name}'; known: {sorted(_BY_NAME)} or any "
        "dataset with 'image' and a 'label' ClassLabel (classification -> 'a photo of a <class>')")
  if class_names is not None:
    names = read_class_names(class_names)
    if len(names) != label.num_classes:
      raise ValueError(f"source spec field 'class_names': {len(names)} names for the "
                       f"{label.num_classes} classes of '{name}'")
  else:
    names = tuple(n.replace("_", " ") for n in label.names)
    if any(_WORDNET_ID.match(n) for n in names):
      raise ValueError(
          f"'{name}' names its classes by WordNet id ({names[0]}, ...): give the source spec a "
          "'class_names' field (a list or a text file with one human-readable name a line)")
  return functools.partial(classification, class_names=names)
