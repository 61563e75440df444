"""Prediction for people and programs: a trained model on your own images (docs/predict.md).

  core      load a workdir or an export onto one device, each task's request, the sampler, predict_rgb
  outputs   decoded predictions as files (arrays, palette PNGs and legends) and pictures
  cli       `python -m vbanana.predict` (flags, the loop over a folder, one-line errors)

The notebooks, the benchmarks' evaluators and the GPU check import these; none copies them.
"""

from vbanana.predict.cli import main, run
from vbanana.predict.core import (DEFAULT_PERCEPTION_STEPS, DEFAULT_STEPS, RESIZE_MODES, TASKS, Loaded, UserError,
                                  generate, list_inputs, load, make_sampler, model_shape, predict_rgb, read_image,
                                  request, resize_rgb, resize_values)
from vbanana.predict.outputs import decode, picture, write_prediction

__all__ = ["main", "run", "DEFAULT_PERCEPTION_STEPS", "DEFAULT_STEPS", "RESIZE_MODES", "TASKS", "Loaded",
           "UserError", "generate", "list_inputs", "load", "make_sampler", "model_shape", "predict_rgb",
           "read_image", "request", "resize_rgb", "resize_values", "decode", "picture", "write_prediction"]
