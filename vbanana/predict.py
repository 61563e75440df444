r"""Run a trained vbanana model on your own images: one image (or a folder) in, task outputs out.

  python -m vbanana.predict --checkpoint=runs/quickstart --task=depth --input=photo.jpg --out=preds
  python -m vbanana.predict --checkpoint=model.safetensors --task=referring --input=photos/ \
      --prompt="the red sphere" --out=preds
  python -m vbanana.predict --checkpoint=model.safetensors --task=generate --prompt="a blue cube" --out=preds

--checkpoint is a training workdir (its latest checkpoint, EMA parameters) or a file written by
`python -m vbanana.export`. Tasks: depth, normals, semantic, instance (--prompt may name the class to
segment: sphere, box, cylinder or cone; default sphere), referring (needs --prompt, the referring
expression), generate (needs --prompt, the caption; no --input), edit (needs --prompt, the instruction).

Image sizes: every photo keeps its aspect ratio. It is resized (bicubic) to the model's aspect-ratio bucket
nearest its own (a model trained on squares has one: the square; --resize=native runs the photo's own ratio
at the model's token budget, --resize=square squashes every photo to the square), and every prediction is
resized back to the photo's own size: depth and normals bilinearly (normals renormalised), masks by
nearest neighbour, edited images bicubically. No tiling: the model sees the whole image at once.
Grayscale, palette and RGBA images are converted to RGB (alpha dropped), with a note on stderr.

Outputs, for an input NAME.ext (in --out):
  depth      NAME.depth.npy (float32 metres), NAME.depth.png (uint16 millimetres), NAME.depth.vis.png
  normals    NAME.normals.npy (float32 (H, W, 3), camera coordinates), NAME.normals.vis.png
  semantic   NAME.semantic.png (class ids, palette PNG), NAME.semantic.json (legend), NAME.semantic.vis.png
  instance   NAME.instance.png (instance ids, palette PNG), NAME.instance.json (legend), NAME.instance.vis.png
  referring  NAME.referring.png (1 = the object, palette PNG), NAME.referring.json, NAME.referring.vis.png
  edit       NAME.edit.png
  generate   generated_000.png, ... (--num_samples of them)
Each NAME.TASK.vis.png shows the input beside the prediction.

A user's mistake (a missing or unreadable file, an unknown task, a missing prompt, a checkpoint of
another model) prints one line starting with 'error:' and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Sequence

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
# Command-line task names -> vbanana.tasks names.
TASKS = {"depth": "depth", "normals": "normals", "semantic": "semantic", "instance": "instance",
         "referring": "referring", "generate": "generation", "edit": "editing"}
NEEDS_PROMPT = {"referring": "the referring expression, e.g. --prompt='the red sphere'",
                "generate": "the caption of the image to generate, e.g. --prompt='a red cube on the ground'",
                "edit": "the edit instruction, e.g. --prompt='make the sphere blue'"}
DEFAULT_STEPS = {"generation": 25, "editing": 25}  # perception works in a few steps (see docs/results.md)
DEFAULT_PERCEPTION_STEPS = 4


class UserError(Exception):
  """A mistake in the command line or the files given: printed as one line, no traceback."""


# ----------------------------------------------------------------------------------------------------------
# Images in.
# ----------------------------------------------------------------------------------------------------------
def read_image(path: str, notes: list[str] | None = None) -> np.ndarray:
  """uint8 (H, W, 3); other modes are converted and the conversion is noted."""
  if not os.path.exists(path):
    raise UserError(f"--input: no such file: {path}")
  try:
    with Image.open(path) as im:
      im.load()
      mode = im.mode
      rgb = im.convert("RGB") if mode != "RGB" else im.copy()
  except (OSError, SyntaxError, ValueError) as e:
    raise UserError(f"--input: {path} is not an image that can be read ({type(e).__name__}: {e})") from None
  if mode != "RGB":
    what = {"L": "grayscale", "LA": "grayscale+alpha", "RGBA": "RGBA", "P": "palette", "I;16": "16-bit gray",
            "I": "32-bit gray", "CMYK": "CMYK", "1": "1-bit"}.get(mode, mode)
    note = f"note: {path} is a {what} image: converted to RGB" + (" (alpha dropped)" if "A" in mode else "")
    if notes is not None:
      notes.append(note)
  return np.asarray(rgb, np.uint8)


def list_inputs(path: str) -> list[str]:
  """The image files named by --input: the file itself, or a folder's images in name order."""
  if not os.path.exists(path):
    raise UserError(f"--input: no such file or folder: {path}")
  if os.path.isfile(path):
    return [path]
  files = sorted(os.path.join(path, f) for f in os.listdir(path)
                 if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
  if not files:
    raise UserError(f"--input: folder {path} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
  return files


def resize_rgb(image: np.ndarray, size: tuple[int, int], resample=Image.BICUBIC) -> np.ndarray:
  """uint8 (H, W, 3) -> uint8 (size[0], size[1], 3)."""
  if image.shape[:2] == tuple(size):
    return image
  return np.asarray(Image.fromarray(image).resize((size[1], size[0]), resample), np.uint8)


def resize_values(values: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
  """Resizes a float (H, W) or (H, W, C) map, or an integer mask (nearest), to `size` = (H, W)."""
  if values.shape[:2] == tuple(size):
    return values
  resample = Image.NEAREST if nearest else Image.BILINEAR
  if values.ndim == 2:
    mode_dtype = np.int32 if nearest else np.float32
    return np.asarray(Image.fromarray(values.astype(mode_dtype)).resize((size[1], size[0]), resample),
                      values.dtype)
  return np.stack([resize_values(values[..., c], size, nearest) for c in range(values.shape[-1])], -1)


# ----------------------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Loaded:
  config: Any       # vbanana.model.ModelConfig
  model: Any        # vbanana.model.DiT with the checkpoint's (EMA) parameters
  source: str
  prediction: str = "v"  # what the network outputs (the run's config.flow.prediction): 'v' or 'x'
  samplers: dict = dataclasses.field(default_factory=dict)  # settings -> jitted sampler (compiled once)


def read_checkpoint(path: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(model config dict, flat params) from an exported file or a workdir's latest checkpoint (EMA)."""
  from vbanana import checkpoint, export  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UserError(f"--checkpoint: no such file or directory: {path}")
  if os.path.isfile(path):
    try:
      return export.read(path)
    except ValueError as e:
      raise UserError(f"--checkpoint: {e}") from None
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own types on garbage)
      raise UserError(f"--checkpoint: {path} is not a vbanana export (a .safetensors file written by "
                      f"`python -m vbanana.export`): {type(e).__name__}: {str(e)[:120]}") from None
  config_path = checkpoint.checkpoint_dir(path) / checkpoint.MODEL_CONFIG_FILE
  step_dir = checkpoint._find_step_dir(checkpoint.checkpoint_dir(path))  # pylint: disable=protected-access
  if not config_path.exists() or step_dir is None:
    raise UserError(f"--checkpoint: {path} is not a vbanana training workdir (expected "
                    f"{config_path} and checkpoints/<step>/), nor an exported .safetensors file")
  try:
    flat = export.read_params_to_host(step_dir / checkpoint.STATE, "ema_params")
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"--checkpoint: cannot read the EMA parameters of {step_dir}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
  return json.loads(config_path.read_text()), flat


def read_prediction(path: str) -> str:
  """What the checkpoint's network predicts ('v' or 'x'): an export's metadata, a workdir's config.json."""
  from vbanana import export  # pylint: disable=g-import-not-at-top
  try:
    return export.read_prediction(path) if os.path.isfile(path) else export.workdir_prediction(path)
  except ValueError as e:
    raise UserError(f"--checkpoint: {e}") from None


def load(path: str) -> Loaded:
  """The model of a workdir or an exported file, on the default device, ready to sample."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import export  # pylint: disable=g-import-not-at-top
  from vbanana import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg_dict, flat = read_checkpoint(path)
  prediction = read_prediction(path)
  try:
    cfg = export.model_config_from_dict(model_lib, cfg_dict)
  except (TypeError, ValueError) as e:
    raise UserError(f"--checkpoint: {path} holds a model config this vbanana cannot build ({e})") from None
  with nnx.use_eager_sharding(False):
    model = model_lib.DiT(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  try:
    params = export.assign(params, flat, path)
  except ValueError as e:
    raise UserError(f"--checkpoint: a checkpoint of another model: {str(e).splitlines()[0]}") from None
  return Loaded(cfg, nnx.merge(graphdef, params, rest), path, prediction)


def model_resolution(cfg) -> int:
  return int(cfg.image_size)


def text_length(cfg) -> int:
  return int(cfg.text_len)


def max_inputs(cfg) -> int:
  return int(cfg.max_inputs)


def make_sampler(loaded: Loaded, *, steps: int, method: str = "euler", text_scale: float = 1.0,
                 image_scale: float = 1.0):
  """A jitted (noise, text, inputs, input_mask) -> uint8 images for this model and these settings;
  made once per settings and model, so every task and batch of the same shapes reuses one compilation."""
  key = (steps, method, float(text_scale), float(image_scale))
  if key not in loaded.samplers:
    loaded.samplers[key] = _jit_sampler(loaded, steps=steps, method=method, text_scale=text_scale,
                                        image_scale=image_scale)
  return loaded.samplers[key]


def _jit_sampler(loaded: Loaded, *, steps: int, method: str, text_scale: float, image_scale: float):
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import flow  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(loaded.model)

  @jax.jit
  def sample(state, noise, text, inputs, input_mask):
    model = nnx.merge(graphdef, state)
    return flow.to_uint8(flow.sample(model, noise, text, inputs, input_mask, steps=steps, method=method,
                                     text_scale=text_scale, image_scale=image_scale,
                                     prediction=loaded.prediction))

  return lambda *args: sample(state, *args)


def generate(loaded: Loaded, sampler, instructions: Sequence[str], inputs: Sequence[Sequence[np.ndarray]],
             seed: int = 0, shape: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 (B, H, W, 3) images for B (instruction, input images) requests; input images already at the
  output's shape (H, W): theirs, else `shape`, else the model's square."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana.model import text as text_lib  # pylint: disable=g-import-not-at-top
  k = max_inputs(loaded.config)
  given = [im for images in inputs for im in images[:k]]
  h, w = (given[0].shape[:2] if given else shape or (model_resolution(loaded.config),) * 2)
  b = len(instructions)
  slots = np.zeros((b, k, h, w, 3), np.float32)
  mask = np.zeros((b, k), bool)
  for i, images in enumerate(inputs):
    for j, image in enumerate(images[:k]):
      slots[i, j] = image.astype(np.float32) / 127.5 - 1.0
      mask[i, j] = True
  text = np.asarray(text_lib.tokenize(list(instructions), text_length(loaded.config)), np.int32)
  noise = jax.random.normal(jax.random.key(seed), (b, h, w, 3), np.float32)
  return np.asarray(sampler(noise, text, slots, mask))


def predict_rgb(loaded: Loaded, sampler, instructions: Sequence[str], images: Sequence[np.ndarray],
                seed: int = 0, resize: str = "bucket") -> list[np.ndarray]:
  """The model's uint8 RGB output for each (instruction, photo) request, at the shape the model ran it
  (`model_shape(config, photo shape, resize)`). Photos may have any size and aspect ratio; requests of the
  same model shape share one batch. Decode the output with the task module, then bring the decoded values
  to the photo's size with `resize_values` (what `write_prediction` and the benchmark evaluators do)."""
  out: list[np.ndarray | None] = [None] * len(images)
  groups: dict[tuple[int, int], list[int]] = {}
  for i, image in enumerate(images):
    groups.setdefault(model_shape(loaded.config, image.shape[:2], resize), []).append(i)
  for shape, rows in groups.items():
    rgbs = generate(loaded, sampler, [instructions[i] for i in rows],
                    [[resize_rgb(images[i], shape)] for i in rows], seed + rows[0])
    for i, rgb in zip(rows, rgbs):
      out[i] = rgb
  return out


RESIZE_MODES = ("bucket", "square", "native")


def model_shape(cfg, image_shape: tuple[int, int], resize: str = "bucket") -> tuple[int, int]:
  """The (H, W) the model runs a photo of `image_shape` at.

  'bucket' (the default): the model's aspect-ratio bucket nearest the photo's (a model trained on squares
  has one bucket, the square). 'square': the square image_size, whatever the photo (the old squash).
  'native': the grid at the model's token budget nearest the photo's own aspect ratio (vbanana.aspect), a
  shape the model may never have trained at."""
  from vbanana import aspect  # pylint: disable=g-import-not-at-top
  if resize == "square":
    return cfg.image_size, cfg.image_size
  if resize == "native":
    h, w = image_shape
    return aspect.shape_at_budget(cfg.image_size, cfg.patch_size,
                                  min(max(w / h, aspect.MIN_RATIO), aspect.MAX_RATIO))
  if resize != "bucket":
    raise UserError(f"--resize: expected one of {', '.join(RESIZE_MODES)}, got '{resize}'")
  return aspect.nearest(image_shape, cfg.shapes)


# ----------------------------------------------------------------------------------------------------------
# Requests: the instruction and decode arguments of a task for a user's image (no ground truth).
# ----------------------------------------------------------------------------------------------------------
def request_sample(image: np.ndarray, prompt: str | None, key: str) -> dict:
  """A raw sample around a user's image whose stand-in labels only serve to pick the canonical
  instruction and decode arguments (`make_example(train=False)`); no label reaches the model.

  The labels name every class the built-in scenes data knows, so the semantic instruction lists all of
  them, and one object of each shape class, so every class can be asked for.
  """
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  num_classes = len(scenes.CLASS_NAMES)
  semantic = (np.arange(h * w).reshape(h, w) % num_classes).astype(np.int32)
  instance = np.zeros((h, w), np.int32)
  shape_classes = list(scenes.SHAPE_CLASS.values())
  for n, _ in enumerate(shape_classes):
    instance.reshape(-1)[n::len(shape_classes) + 1] = n + 1
  normals = np.zeros((h, w, 3), np.float32)
  normals[..., 2] = 1.0
  return {
      "image": image, "depth": np.full((h, w), 2.0, np.float32), "normals": normals,
      "semantic": semantic, "class_names": tuple(scenes.CLASS_NAMES), "instance": instance,
      "instance_class": {n + 1: c for n, c in enumerate(shape_classes)},
      "caption": prompt or "", "referring": [(prompt or "", 1)],
      "edit_instruction": prompt or "", "edit_source": image, "edit_target": image,
      "objects": [], "key": key,
  }


def instance_class(prompt: str | None) -> int:
  """The scenes class id that --task=instance asks for: --prompt names it (default: the first shape)."""
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  name = (prompt or scenes.SHAPES[0]).strip().lower()
  if name not in scenes.SHAPE_CLASS:
    raise UserError(f"--prompt for --task=instance names the class to segment: one of "
                    f"{', '.join(scenes.SHAPES)}; got '{prompt}'")
  return scenes.SHAPE_CLASS[name]


def make_request(task: str, image: np.ndarray | None, prompt: str | None, res, key: str):
  """The TaskExample (instruction, inputs, decode_args) for one request of an image already at the model's
  shape (`res`: a side, or (H, W), gives the shape when there is no image)."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  if image is None:
    h, w = (res, res) if isinstance(res, int) else res
    image = np.zeros((h, w, 3), np.uint8)
  sample = request_sample(image, prompt, key)
  if task == "instance":
    wanted = instance_class(prompt)
    sample["instance_class"] = {i: c for i, c in sample["instance_class"].items() if c == wanted}
  example = tasks.get(task).make_example(sample, np.random.default_rng(0), train=False)
  if example is None:
    raise UserError(f"--task: the task module '{task}' cannot make a request for {key}")
  return example


# ----------------------------------------------------------------------------------------------------------
# Outputs.
# ----------------------------------------------------------------------------------------------------------
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


def mask_ids(prediction: Any, shape: tuple[int, int]) -> np.ndarray:
  """An int32 (H, W) id map from what a mask task's decode returns: an id map, a bool mask, or a list
  (or (N, H, W) array) of instance masks (id = position + 1)."""
  if isinstance(prediction, dict):
    for key in ("ids", "instance", "labels", "mask", "masks", "segmentation"):
      if key in prediction:
        return mask_ids(prediction[key], shape)
    raise TypeError(f"cannot read a mask from a prediction with keys {sorted(prediction)}")
  if isinstance(prediction, (list, tuple)):
    ids = np.zeros(shape, np.int32)
    for n, m in enumerate(prediction):
      ids[np.asarray(m, bool)] = n + 1
    return ids
  arr = np.asarray(prediction)
  if arr.ndim == 3:
    return mask_ids(list(arr), shape)
  return arr.astype(np.int32)


def decode(task: str, rgb: np.ndarray, example) -> Any:
  """The task module's decode of a generated image with the request's decode arguments."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  return tasks.get(task).decode(rgb, **example.decode_args)


def class_names(example) -> list[str]:
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  return list(example.decode_args.get("class_names", scenes.CLASS_NAMES))


def mask_palette(task: str, num_ids: int, example) -> np.ndarray:
  """Colours of ids 0..num_ids-1: for semantic, the colours the instruction gave each class (black for
  unlabelled); for instance and referring, one distinct colour per id (black background)."""
  if task == "semantic":
    colors = np.asarray(example.decode_args["colors"], np.uint8)
    palette = np.zeros((max(num_ids, len(colors)), 3), np.uint8)
    palette[:len(colors)] = colors
    return palette
  return _palette(max(num_ids, 2))


def picture(task: str, prediction: Any, example, size: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 (H, W, 3) picture of a decoded prediction (or of decoded ground truth), for people."""
  if task in ("generation", "editing"):
    return np.asarray(prediction, np.uint8)
  values = np.asarray(prediction) if task in ("depth", "normals") else mask_ids(prediction, size)
  if task == "depth":
    return colorize_depth(values.astype(np.float32))
  if task == "normals":
    return colorize_normals(values.astype(np.float32))
  return mask_palette(task, int(values.max()) + 1, example)[values]


def write_prediction(task: str, out_dir: str, name: str, image: np.ndarray, rgb: np.ndarray,
                     example) -> list[str]:
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
  prediction = decode(task, rgb, example)
  if task == "depth":
    depth = resize_values(np.asarray(prediction, np.float32), size)
    np.save(f"{base}.depth.npy", depth)
    mm = np.clip(np.round(np.nan_to_num(depth) * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(mm).save(f"{base}.depth.png")
    written += [f"{base}.depth.npy", f"{base}.depth.png"]
    save_png("depth.vis", side_by_side(image, picture(task, depth, example)))
  elif task == "normals":
    normals = resize_values(np.asarray(prediction, np.float32), size)
    normals /= np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-6)
    np.save(f"{base}.normals.npy", normals)
    written.append(f"{base}.normals.npy")
    save_png("normals.vis", side_by_side(image, picture(task, normals, example)))
  else:  # semantic, instance, referring: an id map
    ids = resize_values(mask_ids(prediction, rgb.shape[:2]), size, nearest=True)
    palette = mask_palette(task, int(ids.max()) + 1, example)
    save_mask(f"{base}.{task}.png", ids, palette)
    with open(f"{base}.{task}.json", "w") as f:
      json.dump(mask_legend(task, ids, palette, example), f, indent=2)
    written += [f"{base}.{task}.png", f"{base}.{task}.json"]
    save_png(f"{task}.vis", side_by_side(image, palette[ids]))
  return written


def mask_legend(task: str, ids: np.ndarray, palette: np.ndarray, example) -> dict:
  """What each id present in a mask PNG means, and its colour in the PNG's palette."""
  names = class_names(example)

  def name(i):
    if task == "semantic":
      return names[i] if i < len(names) else "unlabelled"
    if i == 0:
      return "background"
    return f"instance {i}" if task == "instance" else "the referred object"

  entries = {str(i): {"name": name(i), "color": palette[i].tolist()} for i in sorted(np.unique(ids).tolist())}
  return {"task": task, "instruction": example.instruction, "ids": entries}


# ----------------------------------------------------------------------------------------------------------
# The command.
# ----------------------------------------------------------------------------------------------------------
def run(checkpoint: str, task: str, out: str, input_path: str | None = None, prompt: str | None = None,
        steps: int | None = None, batch_size: int = 8, num_samples: int = 4, seed: int = 0,
        guidance: float | None = None, method: str = "euler", loaded: Loaded | None = None,
        progress: bool = True, resize: str = "bucket", aspect_ratio: str | None = None) -> list[str]:
  """Everything the command does; returns the paths written. Raises UserError for a user's mistake."""
  if resize not in RESIZE_MODES:
    raise UserError(f"--resize: expected one of {', '.join(RESIZE_MODES)}, got '{resize}'")
  if aspect_ratio and task != "generate":
    raise UserError("--aspect_ratio is for --task=generate; other tasks keep each photo's aspect ratio")
  if task not in TASKS:
    raise UserError(f"--task: unknown task '{task}'; expected one of {', '.join(TASKS)}")
  if task == "instance":
    instance_class(prompt)  # checked before anything is loaded
  if task in NEEDS_PROMPT and not (prompt or "").strip():
    raise UserError(f"--task={task} needs --prompt: {NEEDS_PROMPT[task]}")
  if task == "generate" and input_path:
    raise UserError("--task=generate makes images from --prompt alone; leave out --input")
  if task != "generate" and not input_path:
    raise UserError(f"--task={task} needs --input: an image file or a folder of images")
  if steps is not None and steps < 1:
    raise UserError(f"--steps must be at least 1, got {steps}")
  files = list_inputs(input_path) if input_path else []
  name = TASKS[task]
  steps = steps or DEFAULT_STEPS.get(name, DEFAULT_PERCEPTION_STEPS)
  if guidance is None:
    guidance = 2.0 if name in ("generation", "editing") else 1.0
  ratio = None
  if aspect_ratio:
    from vbanana import aspect  # pylint: disable=g-import-not-at-top
    try:
      ratio = aspect.parse_ratio(aspect_ratio)
    except (ValueError, ZeroDivisionError):
      raise UserError(f"--aspect_ratio: expected width:height such as 4:3, or a number, got '{aspect_ratio}'"
                      ) from None
  loaded = loaded or load(checkpoint)
  sampler = make_sampler(loaded, steps=steps, method=method, text_scale=guidance)
  os.makedirs(out, exist_ok=True)
  written = []

  if name == "generation":
    # A picture of the asked aspect ratio, as `resize` would bring a photo of that ratio.
    shape = model_shape(loaded.config, (1000, round(1000 * ratio)) if ratio else (1, 1), resize)
    example = make_request(name, None, prompt, shape, "prompt")
    images = generate(loaded, sampler, [example.instruction] * num_samples, [[]] * num_samples, seed, shape)
    for i, image in enumerate(images):
      path = os.path.join(out, f"generated_{i:03d}.png")
      Image.fromarray(image).save(path)
      written.append(path)
    return written

  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm(total=len(files), desc=f"{task}", unit="image", disable=not progress or len(files) < 2,
             file=sys.stderr)
  for start in range(0, len(files), batch_size):
    chunk = files[start:start + batch_size]
    notes: list[str] = []
    images = [read_image(f, notes) for f in chunk]
    for note in notes:
      print(note, file=sys.stderr)
    # Each request made at the model shape of its photo (`model_shape`), which `predict_rgb` runs it at.
    examples = [make_request(name, resize_rgb(im, shape), prompt, shape, f) for im, f in zip(images, chunk)
                for shape in [model_shape(loaded.config, im.shape[:2], resize)]]
    rgbs = predict_rgb(loaded, sampler, [e.instruction for e in examples], images, seed + start, resize)
    for f, image, rgb, example in zip(chunk, images, rgbs, examples):
      stem = os.path.splitext(os.path.basename(f))[0]
      written += write_prediction(name, out, stem, image, rgb, example)
    bar.update(len(chunk))
  bar.close()
  return written


def _parser():
  import argparse  # pylint: disable=g-import-not-at-top

  class Parser(argparse.ArgumentParser):
    def error(self, message):
      raise UserError(message)

  p = Parser(prog="python -m vbanana.predict", description=__doc__.split("\n\n")[0].strip(),
             epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="a training workdir or a file from vbanana.export")
  p.add_argument("--task", required=True, help=" | ".join(TASKS))
  p.add_argument("--input", help="an image file or a folder of images (not for --task=generate)")
  p.add_argument("--prompt", help="referring: the expression; generate: the caption; edit: the instruction; "
                 "instance (optional): the class to segment (sphere, box, cylinder or cone; default sphere)")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--steps", type=int, help=f"sampler steps (default {DEFAULT_PERCEPTION_STEPS} for "
                 f"perception, {DEFAULT_STEPS['generation']} for generate and edit)")
  p.add_argument("--batch_size", type=int, default=8, help="images per forward pass for a folder")
  p.add_argument("--num_samples", type=int, default=4, help="images made by --task=generate")
  p.add_argument("--guidance", type=float, help="classifier-free guidance on the instruction (default 1 "
                 "for perception, 2 for generate and edit)")
  p.add_argument("--method", default="euler", choices=("euler", "heun"), help="sampler")
  p.add_argument("--resize", default="bucket", choices=RESIZE_MODES,
                 help="the shape the model sees a photo at: 'bucket' = the model's aspect-ratio bucket nearest "
                 "the photo's (default), 'square' = squashed to the square, 'native' = the photo's own aspect "
                 "ratio at the model's token budget; outputs always come back at the photo's size")
  p.add_argument("--aspect_ratio", help="--task=generate: width:height of the images (e.g. 4:3; default 1:1)")
  p.add_argument("--seed", type=int, default=0)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  try:
    args = _parser().parse_args(argv)
    written = run(args.checkpoint, args.task, args.out, args.input, args.prompt, args.steps, args.batch_size,
                  args.num_samples, args.seed, args.guidance, args.method, resize=args.resize,
                  aspect_ratio=args.aspect_ratio)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {len(written)} files to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
