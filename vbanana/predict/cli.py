r"""Run a trained vbanana model on your own images: one image (or a folder) in, task outputs out.

  python -m vbanana.predict --checkpoint=runs/quickstart --task=depth --input=photo.jpg --out=preds
  python -m vbanana.predict --checkpoint=model.safetensors --task=referring --input=photos/ \
      --prompt="the red sphere" --out=preds
  python -m vbanana.predict --checkpoint=model.safetensors --task=generate --prompt="a blue cube" --out=preds

--checkpoint is a training workdir (its latest checkpoint, EMA parameters) or a file written by
`python -m vbanana.export`; a downloaded FLUX.2 [klein] folder generates and edits as diffusers'
Flux2KleinPipeline does (klein's defaults: 50 steps, guidance 4; see docs/klein.md). Tasks: depth,
normals, semantic, instance (--prompt may name the class to segment: sphere, box, cylinder or cone; default
sphere), referring (needs --prompt, the referring expression), generate (needs --prompt, the caption; no
--input), edit (needs --prompt, the instruction); generation and editing are the same as generate and edit.

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

import os
import sys
from typing import Sequence

from absl import flags
from PIL import Image

from vbanana.predict import core, outputs

PROG = "python -m vbanana.predict"


def define_flags(fv: flags.FlagValues) -> None:
  """The command's flags, in their own FlagValues: absl like every vbanana command, without claiming
  global names (a notebook or a test calls `main` many times beside other commands)."""
  flags.DEFINE_string("checkpoint", None, "a training workdir or a file from vbanana.export", flag_values=fv)
  flags.DEFINE_string("task", None, " | ".join(core.TASKS), flag_values=fv)
  flags.DEFINE_string("input", None, "an image file or a folder of images (not for --task=generate)",
                      flag_values=fv)
  flags.DEFINE_string("prompt", None, "referring: the expression; generate: the caption; edit: the "
                      "instruction; instance (optional): the class to segment (sphere, box, cylinder or cone; "
                      "default sphere)", flag_values=fv)
  flags.DEFINE_string("out", None, "output folder", flag_values=fv)
  flags.DEFINE_integer("steps", None, f"sampler steps (default {core.DEFAULT_PERCEPTION_STEPS} for perception, "
                       f"{core.DEFAULT_STEPS['generation']} for generate and edit)", flag_values=fv)
  flags.DEFINE_integer("batch_size", 8, "images per forward pass for a folder", flag_values=fv)
  flags.DEFINE_integer("num_samples", 4, "images made by --task=generate", flag_values=fv)
  flags.DEFINE_float("guidance", None, "classifier-free guidance on the instruction (default 1 for "
                     "perception, 2 for generate and edit)", flag_values=fv)
  flags.DEFINE_enum("method", "euler", ["euler", "heun"], "sampler", flag_values=fv)
  flags.DEFINE_enum("resize", "bucket", list(core.RESIZE_MODES), "the shape the model sees a photo at: "
                    "'bucket' = the model's aspect-ratio bucket nearest the photo's (default), 'square' = "
                    "squashed to the square, 'native' = the photo's own aspect ratio at the model's token "
                    "budget; outputs always come back at the photo's size", flag_values=fv)
  flags.DEFINE_string("aspect_ratio", None, "--task=generate: width:height of the images (e.g. 4:3; default "
                      "1:1)", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "noise seed", flag_values=fv)


def run(checkpoint: str, task: str, out: str, input_path: str | None = None, prompt: str | None = None,
        steps: int | None = None, batch_size: int = 8, num_samples: int = 4, seed: int = 0,
        guidance: float | None = None, method: str = "euler", loaded: core.Loaded | None = None,
        progress: bool = True, resize: str = "bucket", aspect_ratio: str | None = None) -> list[str]:
  """Everything the command does; returns the paths written. Raises UserError for a user's mistake."""
  task = {"generation": "generate", "editing": "edit"}.get(task, task)  # vbanana.tasks' names work too
  if resize not in core.RESIZE_MODES:
    raise core.UserError(f"--resize: expected one of {', '.join(core.RESIZE_MODES)}, got '{resize}'")
  if aspect_ratio and task != "generate":
    raise core.UserError("--aspect_ratio is for --task=generate; other tasks keep each photo's aspect ratio")
  if task not in core.TASKS:
    raise core.UserError(f"--task: unknown task '{task}'; expected one of {', '.join(core.TASKS)}")
  if task == "instance":
    core.instance_class_name(prompt)  # checked before anything is loaded
  if task in core.NEEDS_PROMPT and not (prompt or "").strip():
    raise core.UserError(f"--task={task} needs --prompt: {core.NEEDS_PROMPT[task]}")
  if task == "generate" and input_path:
    raise core.UserError("--task=generate makes images from --prompt alone; leave out --input")
  if task != "generate" and not input_path:
    raise core.UserError(f"--task={task} needs --input: an image file or a folder of images")
  if steps is not None and steps < 1:
    raise core.UserError(f"--steps must be at least 1, got {steps}")
  files = core.list_inputs(input_path) if input_path else []
  name = core.TASKS[task]
  if name in ("generation", "editing") and os.path.isfile(os.path.join(checkpoint, "model_index.json")):
    from vbanana.flux2 import pipeline as klein  # pylint: disable=g-import-not-at-top
    if klein.is_klein_download(checkpoint):  # klein's own pipeline, as diffusers runs it (docs/klein.md)
      try:
        return klein.predict_command(checkpoint, name, out, files, prompt, steps=steps, guidance=guidance,
                                     num_samples=num_samples, seed=seed, method=method, aspect_ratio=aspect_ratio)
      except (OSError, ValueError) as e:
        raise core.UserError(str(e).splitlines()[0]) from None
  steps = steps or core.DEFAULT_STEPS.get(name, core.DEFAULT_PERCEPTION_STEPS)
  if guidance is None:
    guidance = 2.0 if name in ("generation", "editing") else 1.0
  ratio = None
  if aspect_ratio:
    from vbanana import aspect  # pylint: disable=g-import-not-at-top
    try:
      ratio = aspect.parse_ratio(aspect_ratio)
    except (ValueError, ZeroDivisionError):
      raise core.UserError(f"--aspect_ratio: expected width:height such as 4:3, or a number, got "
                           f"'{aspect_ratio}'") from None
  loaded = loaded or core.load(checkpoint)
  sampler = core.make_sampler(loaded, steps=steps, method=method, text_scale=guidance)
  request = core.request(name, prompt)
  os.makedirs(out, exist_ok=True)
  written = []

  if name == "generation":
    # A picture of the asked aspect ratio, as `resize` would bring a photo of that ratio.
    shape = core.model_shape(loaded.config, (1000, round(1000 * ratio)) if ratio else (1, 1), resize)
    images = core.generate(loaded, sampler, [request.instruction] * num_samples, [[]] * num_samples, seed, shape)
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
    images = [core.read_image(f, notes) for f in chunk]
    for note in notes:
      print(note, file=sys.stderr)
    rgbs = core.predict_rgb(loaded, sampler, [request.instruction] * len(images), images, seed + start, resize)
    for f, image, rgb in zip(chunk, images, rgbs):
      stem = os.path.splitext(os.path.basename(f))[0]
      written += outputs.write_prediction(name, out, stem, image, rgb, request)
    bar.update(len(chunk))
  bar.close()
  return written


def main(argv: Sequence[str] | None = None) -> int:
  """The command on `argv` (without the program name); 0, or 2 after one 'error:' line for a mistake."""
  argv = sys.argv[1:] if argv is None else list(argv)
  fv = flags.FlagValues()
  define_flags(fv)
  if any(a in ("--help", "-h", "--helpfull") for a in argv):
    print(f"usage: {PROG} --checkpoint=... --task=... [--input=...] [--prompt=...] --out=...\n\n{__doc__}\n"
          f"{fv.get_help()}")
    return 0
  try:
    fv([PROG] + argv)
    missing = [f"--{name}" for name in ("checkpoint", "task", "out") if fv[name].value is None]
    if missing:
      raise core.UserError(f"{', '.join(missing)} required (see {PROG} --help)")
    written = run(fv.checkpoint, fv.task, fv.out, fv.input, fv.prompt, fv.steps, fv.batch_size, fv.num_samples,
                  fv.seed, fv.guidance, fv.method, resize=fv.resize, aspect_ratio=fv.aspect_ratio)
  except (core.UserError, flags.Error) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {len(written)} files to {fv.out}")
  return 0
