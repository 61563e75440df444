"""Examples/s of the full data pipeline (scenes, quickstart mixture) with 0, 1 and 2 worker processes.

    PYTHONPATH=. python benchmarks/data_pipeline.py                      # also times the quickstart step
    PYTHONPATH=. python benchmarks/data_pipeline.py --step_examples_per_s=14   # or give its rate

Prints one row per worker count: examples/s of the pipeline, and its ratio to the examples/s a training
step consumes: the quickstart model's jitted train step (benchmarks/train_step.py) at the same batch, timed
here unless --step_examples_per_s is given. A ratio above 1 means the input pipeline keeps up with
training. The scenes dataset is built once in --data_dir.
"""

from __future__ import annotations

import time

from absl import app, flags

from vbanana.data import pipeline

_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/vbanana_bench_scenes", "Where the scenes dataset lives.")
_RESOLUTION = flags.DEFINE_integer("resolution", 32, "Image size.")
_BATCH = flags.DEFINE_integer("batch", 32, "Global batch.")
_TEXT_LENGTH = flags.DEFINE_integer("text_length", 224, "Bytes per instruction (the quickstart config's).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 512, "Scenes to build if the dataset is missing.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per setting (after one warm-up batch).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker counts to time.")
_STEP = flags.DEFINE_float("step_examples_per_s", None,
                           "Examples/s a training step consumes; None: time the quickstart step here.")

def examples_per_second(data_cfg, batches: int) -> float:
  it = pipeline.make_train_iterator(data_cfg, process_index=0, process_count=1)
  try:
    next(it)  # Warm-up: worker start and the first batch are not throughput.
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    return batches * data_cfg["global_batch"] / (time.perf_counter() - start)
  finally:
    if hasattr(it, "close"):
      it.close()


def quickstart_step_examples_per_s(batch: int) -> float:
  """Examples/s of the quickstart model's train step at this batch (one device, compiled first)."""
  import train_step  # benchmarks/train_step.py, beside this file.

  setup = train_step.setup(train_step.QUICKSTART, batch_size=batch)
  return batch / train_step.time_step(setup, repeats=3)["median"]


def main(argv):
  del argv
  rows = []
  for workers in [int(w) for w in _WORKERS.value]:
    cfg = pipeline.scenes_data_config(_DATA_DIR.value, _RESOLUTION.value, _BATCH.value, _TEXT_LENGTH.value,
                                      _NUM_TRAIN.value, workers)
    rows.append((workers, examples_per_second(cfg, _BATCHES.value)))
  step = _STEP.value or quickstart_step_examples_per_s(_BATCH.value)
  print(f"\nData pipeline, scenes {_RESOLUTION.value}x{_RESOLUTION.value}, text {_TEXT_LENGTH.value}, "
        f"batch {_BATCH.value}, quickstart mixture")
  print(f"{'workers':>8} {'examples/s':>12} {'step examples/s':>16} {'pipeline/step':>14}")
  for workers, rate in rows:
    print(f"{workers:>8d} {rate:12.1f} {step:16.1f} {rate / step:14.2f}")
  base = rows[0][1]
  print("speed-up over 0 workers: " + ", ".join(f"{w} workers x{r / base:.2f}" for w, r in rows))


if __name__ == "__main__":
  app.run(main)
