"""Draws docs/images/scenes_grid.png: a few built-in scenes with all their ground truth, for people.

  PYTHONPATH=. python scripts/scenes_pictures.py --resolution=64 --num=4

Columns: image, depth (z-depth, metres), normals (shown as (1 + n) / 2), semantic classes, instances, and
the edit target; the caption, one referring expression and the edit instruction are written below each row.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vbanana.data import scenes  # noqa: E402


def draw(samples: list[dict], path: str) -> None:
  cols = ["image", "log depth", "normals", "semantic", "instance", "edit target"]
  fig, axes = plt.subplots(len(samples), len(cols), figsize=(2.1 * len(cols), 2.75 * len(samples)),
                           squeeze=False)
  for row, s in zip(axes, samples):
    depth = np.where(s["depth"] > 0, np.log(np.maximum(s["depth"], 1e-3)), np.nan)  # log: near detail shows
    panels = [s["image"], depth, np.where(s["depth"][..., None] > 0, (1 + s["normals"]) / 2, 1.0),
              s["semantic"], s["instance"], s["edit_target"]]
    kwargs = [{}, {"cmap": "viridis"}, {}, {"cmap": "tab10", "vmin": 0, "vmax": 9},
              {"cmap": "tab10", "vmin": 0, "vmax": 9}, {}]
    for ax, name, panel, kw in zip(row, cols, panels, kwargs):
      ax.imshow(panel, interpolation="nearest", **kw)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(name, fontsize=8)
    ref = s["referring"][0] if s["referring"] else ("-", 0)
    text = (f"{s['key']}: {s['caption']}\nreferring: \"{ref[0]}\" -> instance {ref[1]}"
            f"\nedit: {s['edit_instruction']}")
    row[0].text(0, 1.02 * s["image"].shape[0] + 2, "\n".join(w for line in text.split("\n") for w in textwrap.wrap(line, 130)),
                fontsize=7, va="top", ha="left")
  fig.subplots_adjust(left=0.02, right=0.98, top=0.96, bottom=0.06, hspace=0.55, wspace=0.08)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--resolution", type=int, default=64)
  parser.add_argument("--num", type=int, default=4)
  parser.add_argument("--split", default="train")
  parser.add_argument("--out", default=os.path.join(_ROOT, "docs", "images", "scenes_grid.png"))
  args = parser.parse_args()
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  samples = [scenes.make_sample(args.split, i, args.resolution) for i in range(args.num)]
  draw(samples, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
