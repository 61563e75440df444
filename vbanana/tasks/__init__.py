"""Tasks as images: one module per task with instruction templates, encode / decode, metrics, an Accumulator,
a visualisation, `make_example` (training and evaluation, from labelled samples) and `request` (prediction:
the instruction and decode arguments for an image without labels) (docs/interfaces.md). `get(name)` returns
a task's module."""

from __future__ import annotations

import types

from vbanana.tasks import depth, generation, instance, normals, referring, semantic
from vbanana.tasks.common import Request, TaskExample

TASKS = ("generation", "editing", "depth", "normals", "semantic", "instance", "referring")


def _image_task(name: str, make_example, request) -> types.ModuleType:
  """'generation' and 'editing' share generation.py; each gets its own NAME, make_example and request."""
  m = types.ModuleType(f"vbanana.tasks.{name}")
  m.__dict__.update({k: v for k, v in vars(generation).items() if not k.startswith("__")})
  m.NAME, m.make_example, m.request = name, make_example, request
  if name == "editing":
    m.TEMPLATES, m.CANONICAL = ("{instruction}",), "{instruction}"
  return m


_MODULES = {
    "generation": _image_task("generation", generation.make_generation_example, generation.request_generation),
    "editing": _image_task("editing", generation.make_editing_example, generation.request_editing),
    "depth": depth, "normals": normals, "semantic": semantic, "instance": instance, "referring": referring,
}


def task_id(name: str) -> int:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: expected one of {TASKS}")
  return TASKS.index(name)


def get(name: str):
  if name not in _MODULES:
    raise ValueError(f"unknown task {name!r}: expected one of {TASKS}")
  return _MODULES[name]


def decode_and_score(name: str, rgb, example: TaskExample) -> dict[str, float]:
  """Decodes a generated image with the example's decode_args and scores it against its ground truth."""
  task = get(name)
  return task.metrics(task.decode(rgb, **example.decode_args), example.ground_truth)


__all__ = ["TASKS", "Request", "TaskExample", "task_id", "get", "decode_and_score"]
