"""Inference: load a model, ask each task its request, sample on the model's setup, at any photo size.

    model = load("runs/quickstart")                      # a workdir (its latest EMA params) or an export
    sampler = make_sampler(model, steps=4)
    rgbs = predict_rgb(model, sampler, [request("depth").instruction], [photo])   # uint8 at the model's shape
    depth = tasks.get("depth").decode(rgbs[0])                                     # metres, then resize_values

Nothing here touches training code: requests come from each task module's `request` (the instruction and
the decode arguments for an image without labels), the sampler from the model's `vbanana.setup.Setup` (the
same programs the evaluators run, on one device).
"""

from __future__ import annotations

import dataclasses
import json
import os
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
RESIZE_MODES = ("bucket", "square", "native")


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
  """A model ready to sample: its setup on one device and its (EMA) parameters there."""
  setup: Any        # vbanana.setup.Setup of the model's config, on one device
  params: Any       # nested dict of arrays placed by the setup's shardings
  source: str

  @property
  def config(self):
    """The model family's config (vbanana.model.ModelConfig for the DiT)."""
    return self.setup.model_cfg

  @property
  def prediction(self) -> str:
    """What the network outputs ('v' or 'x'): the run's config.flow.prediction."""
    return self.setup.flow_cfg.prediction


def read_checkpoint(path: str) -> tuple[str, dict, dict[str, np.ndarray], str]:
  """(family, model config dict, flat params, prediction) of an exported file or of a workdir's latest
  checkpoint (its EMA parameters)."""
  from vbanana import checkpoint, export  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise UserError(f"--checkpoint: no such file or directory: {path}")
  if os.path.isfile(path):
    try:
      cfg, flat = export.read(path)
      return export.read_family(path), cfg, flat, export.read_prediction(path)
    except ValueError as e:
      raise UserError(f"--checkpoint: {e}") from None
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own types on garbage)
      raise UserError(f"--checkpoint: {path} is not a vbanana export (a .safetensors file written by "
                      f"`python -m vbanana.export`): {type(e).__name__}: {str(e)[:120]}") from None
  config_path = checkpoint.checkpoint_dir(path) / checkpoint.MODEL_CONFIG_FILE
  step_dir = checkpoint.find_step_dir(checkpoint.checkpoint_dir(path))
  if not config_path.exists() or step_dir is None:
    raise UserError(f"--checkpoint: {path} is not a vbanana training workdir (expected "
                    f"{config_path} and checkpoints/<step>/), nor an exported .safetensors file")
  try:
    flat = export.read_params_to_host(step_dir / checkpoint.STATE, "ema_params")
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"--checkpoint: cannot read the EMA parameters of {step_dir}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
  try:
    run = export.workdir_run(path)
  except ValueError as e:
    raise UserError(f"--checkpoint: {e}") from None
  return run["family"], json.loads(config_path.read_text()), flat, run["prediction"]


def load(path: str, klein_overrides: dict | None = None) -> Loaded:
  """The model of a workdir, an exported file or a FLUX.2 klein folder (diffusers' layout: a download, or
  a klein run exported by `python -m vbanana.export`), on this host's first device, ready to sample.
  `klein_overrides`: model config fields for a klein folder (e.g. dtype, prompt_len) over its defaults."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana import export, families, setup as setup_lib  # pylint: disable=g-import-not-at-top
  from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
  if finetuned.is_klein_folder(path):
    family = families.get("flux2")
    try:
      model_cfg = family.config_for_folder(path, **(klein_overrides or {}))
      setup = setup_lib.for_model(family, model_cfg, devices=jax.devices()[:1])
      return Loaded(setup, family.load_params(path, setup.abstract_params), path)
    except (OSError, ValueError) as e:
      raise UserError(f"--checkpoint: {path}: {str(e).splitlines()[0]}") from None
  family_name, cfg_dict, flat, prediction = read_checkpoint(path)
  try:
    family = families.get(family_name)
    model_cfg = family.config_from_dict(cfg_dict)
  except (TypeError, ValueError) as e:
    raise UserError(f"--checkpoint: {path} holds a model config this vbanana cannot build ({e})") from None
  setup = setup_lib.for_model(family, model_cfg, prediction=prediction, devices=jax.devices()[:1])
  try:
    host = export.assign(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), setup.abstract_params), flat, path)
  except ValueError as e:
    raise UserError(f"--checkpoint: a checkpoint of another model: {str(e).splitlines()[0]}") from None
  params = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), host, setup.abstract_params)
  return Loaded(setup, params, path)


def make_sampler(loaded: Loaded, *, steps: int, method: str = "euler", text_scale: float = 1.0,
                 image_scale: float = 1.0):
  """`(noise, batch) -> uint8 images` for this model and these settings: the setup's jitted sampler (made
  once per settings, so every task and batch of the same shapes reuses one compilation)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana import flow  # pylint: disable=g-import-not-at-top
  sample = loaded.setup.sampler(steps=steps, method=method, text_scale=text_scale, image_scale=image_scale)
  to_uint8 = jax.jit(flow.to_uint8)
  return lambda noise, batch: np.asarray(to_uint8(sample(loaded.params, loaded.setup.frozen, noise, batch)))


def generate(loaded: Loaded, sampler, instructions: Sequence[str], inputs: Sequence[Sequence[np.ndarray]],
             seed: int = 0, shape: tuple[int, int] | None = None) -> np.ndarray:
  """uint8 (B, H, W, 3) images for B (instruction, input images) requests; input images already at the
  output's shape (H, W): theirs, else `shape`, else the model's square."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana.model import text as text_lib  # pylint: disable=g-import-not-at-top
  cfg = loaded.config
  k = int(cfg.max_inputs)
  given = [im for images in inputs for im in images[:k]]
  h, w = (given[0].shape[:2] if given else shape or (int(cfg.image_size),) * 2)
  b = len(instructions)
  slots = np.zeros((b, k, h, w, 3), np.float32)
  mask = np.zeros((b, k), bool)
  for i, images in enumerate(inputs):
    for j, image in enumerate(images[:k]):
      slots[i, j] = image.astype(np.float32) / 127.5 - 1.0
      mask[i, j] = True
  text = np.asarray(text_lib.tokenize(list(instructions), int(cfg.text_len)), np.int32)
  noise_shape = loaded.setup.family.denoised_shape(cfg, (h, w))
  noise = jax.random.normal(jax.random.key(seed), (b, *noise_shape), np.float32)
  return sampler(noise, {"text": text, "inputs": slots, "input_mask": mask})


def predict_rgb(loaded: Loaded, sampler, instructions: Sequence[str], images: Sequence[np.ndarray],
                seed: int = 0, resize: str = "bucket") -> list[np.ndarray]:
  """The model's uint8 RGB output for each (instruction, photo) request, at the shape the model ran it
  (`model_shape(config, photo shape, resize)`). Photos may have any size and aspect ratio; requests of the
  same model shape share one batch. Decode the output with the task module, then bring the decoded values
  to the photo's size with `resize_values` (what `outputs.write_prediction` and the benchmarks do)."""
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
# Requests: each task module's own (instruction, decode arguments) for an image without labels.
# ----------------------------------------------------------------------------------------------------------
def request(task: str, prompt: str | None = None):
  """The `vbanana.tasks.Request` of a task (a vbanana.tasks name) for a photo of the built-in scenes'
  world: semantic segments its classes with their palette, instance asks for the class --prompt names
  (sphere, box, cylinder or cone; default sphere)."""
  from vbanana import tasks  # pylint: disable=g-import-not-at-top
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  module = tasks.get(task)
  if task == "semantic":
    return module.request(scenes.CLASS_NAMES, prompt)
  if task == "instance":
    return module.request(instance_class_name(prompt))
  if task in ("depth", "normals"):
    return module.request()
  try:
    return module.request(prompt)
  except ValueError as e:
    raise UserError(f"--prompt: {e}") from None


def instance_class_name(prompt: str | None) -> str:
  """The scenes class that --task=instance asks for: --prompt names it (default: the first shape)."""
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  name = (prompt or scenes.SHAPES[0]).strip().lower()
  if name not in scenes.SHAPE_CLASS:
    raise UserError(f"--prompt for --task=instance names the class to segment: one of "
                    f"{', '.join(scenes.SHAPES)}; got '{prompt}'")
  return scenes.CLASS_NAMES[scenes.SHAPE_CLASS[name]]
