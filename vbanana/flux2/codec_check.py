r"""Do the tasks' RGB encodings survive klein's latent space? Encode, round-trip through a VAE, decode, score.

  python -m vbanana.flux2.codec_check --vae=FLUX.2-klein-base-4B/vae --num=16 --resolution=256

klein never sees pixels: it denoises the FLUX.2 autoencoder's latents (8x smaller per side, 32 channels).
A perception task's target is an RGB image whose exact colours carry the answer (depth along a colour walk,
normals as RGB, class colours, instance colours), so the question before any training is how much of the
answer the autoencoder alone destroys. For each built-in scene and each task (depth, normals, semantic,
instance, referring) this encodes the ground truth as the task does for evaluation, sends the RGB through
the VAE and back (encode -> mode -> klein's tokens -> decode, as the pipeline would produce it), decodes it
with the task's own decoder, and scores it with the task's metrics, beside the same scores for the
pixel-exact codec (no VAE: the encoding's own quantisation only) and the RGB round trip's PSNR. The gap is
the ceiling the latent space puts on each task, whatever the transformer learns.

Prints a table (and writes JSON with every metric when --out is given). A fair answer needs the trained
FLUX.2 VAE; a random VAE (the tests use one) only exercises the plumbing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TASKS = ("depth", "normals", "semantic", "instance", "referring")
HEADLINE = {"depth": ("abs_rel", "delta1"), "normals": ("mean_angle", "within_11.25"), "semantic": ("miou",),
            "instance": ("ap", "pq"), "referring": ("giou",)}


@nnx.jit
def round_trip(vae, images):
  """uint8 images (B, H, W, 3) -> through klein's tokens and back -> uint8, as a generator's output would be
  quantised (x / 2 + 1/2, clipped, times 255, rounded)."""
  decoded = vae.decode_images(vae.encode_images(images))
  return jnp.round((decoded * 0.5 + 0.5) * 255.0).astype(jnp.uint8)


def run(vae, *, num: int = 16, resolution: int = 256, split: str = "test", tasks: Sequence[str] = TASKS,
        batch_size: int = 4, seed: int = 0) -> dict:
  """{task: {"exact": metrics, "vae": metrics, "psnr": dB, "num": examples}} over `num` scenes of `split`."""
  from vbanana import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from vbanana.data import scenes  # pylint: disable=g-import-not-at-top
  multiple = vae.cfg.scale * vae.cfg.patch_size[0]
  if resolution % multiple:
    raise ValueError(f"--resolution={resolution}: must be a multiple of {multiple} (the VAE's factor x 2x2 patch)")
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    raise ValueError(f"--tasks: unknown {unknown}; expected some of {TASKS}")
  examples = {t: [] for t in tasks}
  for i in range(num):
    sample = scenes.make_sample(split, i, resolution, seed=seed)
    for t in tasks:
      example = tasks_lib.get(t).make_example(sample, np.random.default_rng(i), False)
      if example is not None:
        examples[t].append(example)
  report = {}
  for t in tasks:
    module, items = tasks_lib.get(t), examples[t]
    exact, through = module.Accumulator(), module.Accumulator()
    errors = []
    for start in range(0, len(items), batch_size):
      chunk = items[start:start + batch_size]
      targets = np.stack([e.target for e in chunk])
      rgb = np.asarray(round_trip(vae, jnp.asarray(targets)))
      for e, out in zip(chunk, rgb):
        valid = e.ground_truth.get("valid") if isinstance(e.ground_truth, dict) else None
        exact.update(module.decode(e.target, **e.decode_args), e.ground_truth, valid)
        through.update(module.decode(out, **e.decode_args), e.ground_truth, valid)
        errors.append(np.mean((out.astype(np.float64) - e.target.astype(np.float64)) ** 2))
    mse = float(np.mean(errors)) if errors else float("nan")
    report[t] = {"exact": exact.result(), "vae": through.result(), "num": len(items),
                 "psnr": float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)}
  return report


def table(report: dict) -> str:
  rows = ["| task | metric | pixel-exact codec | through the VAE | RGB PSNR (dB) | examples |",
          "|---|---|---:|---:|---:|---:|"]
  for t, r in report.items():
    for k in HEADLINE.get(t, ()):
      rows.append(f"| {t} | {k} | {r['exact'].get(k, float('nan')):.4f} | {r['vae'].get(k, float('nan')):.4f} | "
                  f"{r['psnr']:.1f} | {r['num']} |")
  return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m vbanana.flux2.codec_check", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--vae", required=True, help="a klein pipeline folder or its vae/ folder")
  p.add_argument("--num", type=int, default=16, help="scenes of the split (default 16)")
  p.add_argument("--resolution", type=int, default=256, help="pixels a side, a multiple of 16 (default 256)")
  p.add_argument("--split", default="test", choices=("train", "validation", "test"))
  p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {','.join(TASKS)}")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--out", default=None, help="write every metric as JSON here")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  from vbanana.flux2 import vae as vae_lib  # pylint: disable=g-import-not-at-top
  try:
    vae = vae_lib.load_vae(args.vae, dtype=args.dtype)
    report = run(vae, num=args.num, resolution=args.resolution, split=args.split,
                 tasks=[t for t in args.tasks.split(",") if t], batch_size=args.batch_size)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
  print(f"{args.num} scenes of {args.split} at {args.resolution}x{args.resolution} through {args.vae} "
        f"({args.dtype}, {jax.default_backend()}):")
  print(table(report))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
