r"""What squashing a photo to a square costs: the same checkpoint on non-square scenes, squashed or native.

  python -m vbanana.experiments.aspect --out=runs/aspect               # about 10 minutes on 2 CPU cores
  python -m vbanana.experiments.aspect --out=runs/aspect --steps=200   # a smoke run

Two quickstart models (configs/quickstart.py, tiny, 32 px, the full mixture, the same steps and seed) are
trained through the real trainer, one workdir each under OUT/runs (a stopped experiment resumes):
  square  trained on square scenes (the quickstart as it is);
  mixed   trained on aspect-ratio buckets 3:4, 1:1 and 4:3 at the square's token budget (`aspect=3:4+1:1+4:3`:
          36x28, 32x32 and 28x36 px, scenes rendered with cameras of those shapes).
Both are then scored on the same test scenes rendered natively at 4:3 (48x64 px) and 3:4 (64x48 px), larger
than the models' images and unseen in training, through `vbanana.predict.predict_rgb` with each resize mode
(`square`: the photo squashed to 32x32; `bucket`: the bucket nearest its aspect ratio; `native`: its own
ratio at the model's budget). Each prediction is decoded at the shape the model ran and resized back to the
ground truth's 48x64 / 64x48, as predict does, and scored there: depth AbsRel and delta1 (no alignment),
normals mean angle, semantic mIoU. Writes OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
import numpy as np

ARMS = {"square": "", "mixed": "3:4+1:1+4:3"}
MODES = {"square": ("square", "native"), "mixed": ("square", "bucket")}
TEST_SHAPES = ((48, 64), (64, 48))  # 4:3 and 3:4 cameras, H x W
TASKS = ("depth", "normals", "semantic")
METRICS = (("depth", "abs_rel", "depth AbsRel", False), ("depth", "delta1", "depth delta1", True),
           ("depth", "affine_abs_rel", "depth AbsRel, scale-and-shift aligned", False),
           ("normals", "mean_angle", "normals mean angle (deg)", False),
           ("normals", "within_30", "normals % within 30 deg", True),
           ("semantic", "miou", "semantic mIoU", True), ("semantic", "pixel_acc", "semantic pixel accuracy", True))


def arm_config(arm: str, out: str, steps: int):
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
  import quickstart  # pylint: disable=import-outside-toplevel,g-import-not-at-top
  arg = f"steps={steps},data_dir={os.path.join(out, 'data')}" + (f",aspect={ARMS[arm]}" if ARMS[arm] else "")
  config = quickstart.get_config(arg)
  config.train.eval_at_end = False  # scored here, on the non-square test scenes
  config.train.tensorboard = False
  return config


def test_samples(num: int) -> list[dict]:
  """`num` test scenes alternating the 4:3 and 3:4 cameras."""
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  return [scenes.make_sample("test", i, 32, shape=TEST_SHAPES[i % len(TEST_SHAPES)]) for i in range(num)]


def score(workdir: str, samples: list[dict], resize: str, steps: int = 4) -> dict[str, float]:
  """Every task's metrics of one checkpoint on the samples, predicted with `resize`, scored at the
  ground truth's size."""
  from vbanana import predict, tasks  # pylint: disable=g-import-not-at-top
  loaded = predict.load(workdir)
  sampler = predict.make_sampler(loaded, steps=steps)
  out = {}
  for task_name in TASKS:
    task = tasks.get(task_name)
    examples = [task.make_example(s, np.random.default_rng(i), train=False) for i, s in enumerate(samples)]
    rgbs = predict.predict_rgb(loaded, sampler, [e.instruction for e in examples],
                               [s["image"] for s in samples], seed=0, resize=resize)
    accumulator = task.Accumulator()
    for example, rgb, sample in zip(examples, rgbs, samples):
      prediction = np.asarray(task.decode(rgb, **example.decode_args))
      prediction = predict.resize_values(prediction, sample["image"].shape[:2], nearest=task_name == "semantic")
      if task_name == "normals":
        prediction = prediction / np.maximum(np.linalg.norm(prediction, axis=-1, keepdims=True), 1e-6)
      accumulator.update(prediction, example.ground_truth, example.ground_truth.get("valid"))
    out.update({f"{task_name}/{k}": float(v) for k, v in accumulator.result().items()})
  return out


def table(results: dict) -> str:
  header = "| metric | " + " | ".join(f"{arm}-trained, {mode}" for arm in ARMS for mode in MODES[arm]) + " |"
  lines = [header, "|" + "---|" * (1 + sum(len(m) for m in MODES.values()))]
  for task, key, label, higher in METRICS:
    cells = [f"{results[arm][mode][f'{task}/{key}']:.3f}" for arm in ARMS for mode in MODES[arm]]
    lines.append(f"| {label} ({'higher' if higher else 'lower'} is better) | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  flags.DEFINE_string("out", None, "output folder", required=True, flag_values=fv)
  flags.DEFINE_integer("steps", 2000, "training steps per arm", flag_values=fv)
  flags.DEFINE_integer("num_test", 64, "non-square test scenes", flag_values=fv)


def main(argv) -> int:
  del argv
  from vbanana import train  # pylint: disable=g-import-not-at-top
  args = flags.FLAGS
  start = time.time()
  os.makedirs(args.out, exist_ok=True)
  seconds = {}
  for arm in ARMS:
    t0 = time.time()
    train.train_and_evaluate(arm_config(arm, args.out, args.steps), os.path.join(args.out, "runs", arm),
                             final_eval=False)
    seconds[arm] = time.time() - t0
  samples = test_samples(args.num_test)
  results = {arm: {mode: score(os.path.join(args.out, "runs", arm), samples, mode) for mode in MODES[arm]}
             for arm in ARMS}
  record = {"steps": args.steps, "num_test": args.num_test, "test_shapes": TEST_SHAPES, "results": results,
            "train_seconds": seconds, "total_seconds": time.time() - start, "machine": platform.platform(),
            "cpus": os.cpu_count()}
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(record, f, indent=2)
  print(write_report(args.out, record))
  return 0


def write_report(out: str, record: dict) -> str:
  """OUT/results.md from the record of a run (also re-made from OUT/results.json alone)."""
  seconds = record["train_seconds"]
  text = (f"Command: python -m vbanana.experiments.aspect --out={out} --steps={record['steps']} "
          f"--num_test={record['num_test']}\n\n{table(record['results'])}\n\n{record['cpus']} CPUs, "
          f"{record['total_seconds'] / 60:.1f} min in all (training "
          f"{', '.join(f'{a} {s:.0f} s' for a, s in seconds.items())}; a resumed run counts only its own part).\n")
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(text)
  return text


if __name__ == "__main__":
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))
