r"""Trains the scenes attribute network once and writes its weights into the package.

  PYTHONPATH=. python scripts/train_quality_net.py            # about 5 minutes on a 2-core CPU

Renders scenes at 32x32 (train / validation / test splits of the built-in dataset, straight from the
renderer), trains vbanana.quality.net.QualityNet to predict which shapes and colours are present and how
many objects are visible, then measures what vbanana/quality/__init__.py reports (attribute accuracy on
real test images and on noise, the real-vs-real FD floor at several set sizes) and writes
vbanana/quality/scenes_net.safetensors + scenes_net.json (config + that record).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time

import numpy as np


def _render(job):
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  from vbanana.quality import net as net_lib  # pylint: disable=g-import-not-at-top
  split, index, resolution = job
  sample = scenes.make_sample(split, index, resolution)
  labels, count = net_lib.attribute_labels(sample["objects"])
  return sample["image"], labels, count


def render_split(split: str, num: int, resolution: int, workers: int, cache_dir: str | None = None):
  cache = cache_dir and os.path.join(cache_dir, f"scenes_{split}_{num}_{resolution}.npz")
  if cache and os.path.exists(cache):
    with np.load(cache) as data:
      return data["images"], data["labels"], data["counts"]
  jobs = [(split, i, resolution) for i in range(num)]
  if workers > 1:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      rows = pool.map(_render, jobs, chunksize=64)
  else:
    rows = [_render(j) for j in jobs]
  images, labels, counts = (np.stack(x) for x in zip(*rows))
  if cache:
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(cache, images=images, labels=labels, counts=counts.astype(np.int32))
  return images, labels, counts.astype(np.int32)


def blur(images: np.ndarray) -> np.ndarray:
  """A 3x3 box blur (uint8 in, uint8 out), the kind of softness an undertrained generator shows."""
  x = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = images.shape[1:3]
  out = sum(x[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_train", type=int, default=10000)
  parser.add_argument("--num_test", type=int, default=1000)
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=15)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--cache_dir", default=None, help="keep the rendered images here between runs")
  parser.add_argument("--out", default=None, help="weights path (default: the package's scenes_net.safetensors)")
  args = parser.parse_args()

  from flax import nnx  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from vbanana.quality import metrics  # pylint: disable=g-import-not-at-top
  from vbanana.quality import net as net_lib  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  train_x, train_y, train_c = render_split("train", args.num_train, args.resolution, args.workers, args.cache_dir)
  test_x, test_y, test_c = render_split("test", args.num_test, args.resolution, args.workers, args.cache_dir)
  print(f"rendered {len(train_x)} train + {len(test_x)} test images in {time.time() - t0:.0f}s; "
        f"attribute frequencies {np.round(train_y.mean(0), 2).tolist()}", flush=True)

  cfg = net_lib.NetConfig(resolution=args.resolution)
  model = net_lib.QualityNet(cfg, rngs=nnx.Rngs(args.seed))
  steps_per_epoch = len(train_x) // args.batch
  total = steps_per_epoch * args.epochs
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(200, total // 10), total)
  optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

  def loss_fn(model, x, y, c):
    out = model(x)
    bce = optax.sigmoid_binary_cross_entropy(out["attributes"], y).mean()
    ce = optax.softmax_cross_entropy_with_integer_labels(out["count"], c).mean()
    return bce + 0.3 * ce, (bce, ce)

  @nnx.jit
  def train_step(model, optimizer, images, y, c):
    x = net_lib.to_input(images, cfg.resolution)
    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y, c)
    optimizer.update(model, grads)
    return loss, aux

  rng = np.random.default_rng(args.seed)
  t0 = time.time()
  for epoch in range(args.epochs):
    order = rng.permutation(len(train_x))
    losses = []
    for s in range(steps_per_epoch):
      idx = order[s * args.batch:(s + 1) * args.batch]
      images = train_x[idx]
      flip = rng.random(len(idx)) < 0.5  # a mirrored scene has the same objects
      images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
      loss, (bce, ce) = train_step(model, optimizer, images, train_y[idx], train_c[idx])
      losses.append((float(loss), float(bce), float(ce)))
    m = np.mean(losses, axis=0)
    print(f"epoch {epoch + 1}/{args.epochs}: loss {m[0]:.4f} (attributes {m[1]:.4f}, count {m[2]:.4f}), "
          f"{time.time() - t0:.0f}s", flush=True)
  train_seconds = time.time() - t0

  # ---- What the record (and the package docstring) states.
  apply = net_lib.make_apply(model)
  run = lambda images: net_lib.run_in_batches(apply, images)
  test_out = run(test_x)
  scores = metrics.attribute_scores(test_out["attributes"], test_y)
  noise = np.random.default_rng(1).integers(0, 256, test_x.shape, dtype=np.uint8)
  noise_scores = metrics.attribute_scores(run(noise)["attributes"], test_y)
  train_feats = run(train_x[:args.num_test])["features"]
  floors = {str(n): round(metrics.frechet_distance(train_feats[:n], test_out["features"][:n]), 4)
            for n in (16, 64, 256, args.num_test) if n <= args.num_test}
  record = {
      "command": "PYTHONPATH=. python scripts/train_quality_net.py " + " ".join(
          f"--{k}={v}" for k, v in vars(args).items() if k not in ("out", "workers", "cache_dir")),
      "train_images": len(train_x), "test_images": len(test_x), "epochs": args.epochs,
      "train_seconds": round(train_seconds, 1), "num_params": net_lib.num_params(model),
      "test": {
          "attr_recall": round(float(np.nanmean(scores["recall"])), 4),
          "attr_balanced": round(float(scores["balanced"].mean()), 4),
          "attr_exact": round(float(scores["exact"].mean()), 4),
          "count_acc": round(float((test_out["count"].argmax(-1) == test_c).mean()), 4),
      },
      "noise": {
          "attr_recall": round(float(np.nanmean(noise_scores["recall"])), 4),
          "attr_balanced": round(float(noise_scores["balanced"].mean()), 4),
      },
      "fd_real_vs_real": floors,  # train images vs held-out test images, first N of each
      "fd_test_vs_blur": round(metrics.frechet_distance(test_out["features"], run(blur(test_x))["features"]), 4),
      "fd_test_vs_noise": round(metrics.frechet_distance(test_out["features"], run(noise)["features"]), 4),
  }
  out = args.out or net_lib.DEFAULT_WEIGHTS
  net_lib.save(model, out, record)
  import json  # pylint: disable=g-import-not-at-top
  print(json.dumps(record, indent=2))
  print(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB) and its .json")


if __name__ == "__main__":
  main()
