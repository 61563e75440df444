"""Generation and editing: the target is the image itself.

Generation: instruction = a caption (in training one of several phrasings, "a picture of {caption}", ...;
in evaluation the caption itself), no input image. Editing: instruction = the edit as written ("make the red
sphere blue", "remove the cone"), one input image (the source), target = the edited image. Encoding and
decoding are the identity on uint8 RGB. The per-image metrics here are PSNR and mean absolute error against
the reference image, averaged over the dataset (a sanity check: generation quality is scored by the
model-independent `vbanana.quality` metrics in the evaluator).
"""

from __future__ import annotations

import numpy as np

from vbanana.tasks import common

TEMPLATES = ("{caption}", "a picture of {caption}", "generate an image of {caption}", "render {caption}")
CANONICAL = "{caption}"
HEADLINE = ("quality/fd", "psnr")


def encode(image) -> np.ndarray:
  return common.check_rgb(image, "image")


def decode(rgb, **_) -> np.ndarray:
  return common.check_rgb(rgb, "generated image")


def metrics(prediction, ground_truth, valid=None) -> dict[str, float]:
  ref, _ = common.as_dict(ground_truth, "image")
  p = np.asarray(prediction, np.float64)
  r = np.asarray(ref, np.float64)
  if p.shape != r.shape:
    raise ValueError(f"generated image shape {p.shape} != reference shape {r.shape}")
  mse = np.mean((p - r) ** 2)
  return {"psnr": float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10))), "mae": float(np.mean(np.abs(p - r)))}


class Accumulator:
  """Mean of per-image PSNR and MAE."""

  def __init__(self):
    self.sums, self.count = {}, 0

  def update(self, prediction, ground_truth, valid=None):
    self.count += 1
    for k, v in metrics(prediction, ground_truth).items():
      self.sums[k] = self.sums.get(k, 0.0) + v

  def result(self) -> dict[str, float]:
    return {k: v / self.count for k, v in self.sums.items()} if self.count else {}


def visualize(prediction, ground_truth=None) -> np.ndarray:
  panels = [np.asarray(prediction, np.uint8)]
  if ground_truth is not None:
    ref = np.asarray(common.as_dict(ground_truth, "image")[0], np.uint8)
    panels += [np.full((ref.shape[0], 4, 3), 255, np.uint8), ref]
  return np.concatenate(panels, 1)


def request_generation(prompt: str | None = None) -> common.Request:
  """Make the image `prompt` (the caption) describes; `decode` returns the uint8 image."""
  if not (prompt or "").strip():
    raise ValueError("generation: the request needs the caption of the image to make")
  return common.Request(CANONICAL.format(caption=prompt), {})


def request_editing(prompt: str | None = None) -> common.Request:
  """Edit the input image as `prompt` (the instruction) says; `decode` returns the uint8 image."""
  if not (prompt or "").strip():
    raise ValueError("editing: the request needs the edit instruction")
  return common.Request(prompt, {})


def make_generation_example(sample, rng, train) -> common.TaskExample | None:
  captions = sample.get("captions") or ([sample["caption"]] if sample.get("caption") else [])
  if not captions:
    return None
  caption = captions[int(rng.integers(len(captions)))] if (train and rng is not None) else captions[0]
  return common.TaskExample(
      task="generation", instruction=common.pick(TEMPLATES, CANONICAL, rng, train).format(caption=caption),
      inputs=[], target=encode(sample["image"]),
      ground_truth={"image": sample["image"], "objects": sample.get("objects")}, decode_args={})


def make_editing_example(sample, rng, train) -> common.TaskExample | None:
  if not sample.get("edit_instruction") or sample.get("edit_target") is None:
    return None
  return common.TaskExample(
      task="editing", instruction=sample["edit_instruction"], inputs=[sample["edit_source"]],
      target=encode(sample["edit_target"]), ground_truth={"image": sample["edit_target"]}, decode_args={})
