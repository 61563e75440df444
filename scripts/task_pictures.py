"""Draws docs/images/task_*.png (one picture per task encoding) and prints the round-trip error tables.

  PYTHONPATH=. python scripts/task_pictures.py --out=docs/images

Everything goes through the real task modules (vbanana/tasks/*.py) and the built-in scenes renderer
(`vbanana.data.scenes.make_sample`); figures are drawn with Agg without pyplot (`common.figure`). The output
is deterministic: fixed scenes, fixed noise seeds. `--no_pictures` prints the tables only, `--no_tables`
draws the pictures only. The tables (markdown) are the numbers in docs/tasks.md:
  - encode -> decode: depth relative error at 1, 10 and 50 m beside the 8-bit quantisation bound, normals
    angular error, semantic pixels and instance masks decoded exactly;
  - the same after adding Gaussian noise of sigma 4 and 8 (0-255 units, per channel, rounded and clipped
    to uint8), a crude stand-in for a generator's colour errors (and, for the scene tables, a 3x3 blur,
    a stand-in for its soft edges; the instance table adds noise 12 and 16 and a blur with noise 8);
  - every task's evaluation metrics (its Accumulator) on the encoded eval targets of validation scenes.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402

from vbanana import tasks  # noqa: E402
from vbanana.data import scenes  # noqa: E402
from vbanana.tasks import common, depth, instance, normals, referring, semantic  # noqa: E402

SIGMAS = (4.0, 8.0)
UP = 3  # nearest-neighbour upscaling of the scene pictures for display


# ------------------------------------------------------------------------------------------------------------
# Helpers.
# ------------------------------------------------------------------------------------------------------------
def add_noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
  """rgb + N(0, sigma^2) per channel, in 0-255 units, rounded and clipped back to uint8."""
  noise = np.random.default_rng(seed).normal(0.0, sigma, rgb.shape)
  return np.clip(np.round(rgb.astype(np.float64) + noise), 0, 255).astype(np.uint8)


def blur(rgb: np.ndarray) -> np.ndarray:
  """A 3x3 box blur: every edge becomes a ramp of in-between colours, as a generator's edges are."""
  return np.round(ndimage.uniform_filter(rgb.astype(np.float64), size=(3, 3, 1))).astype(np.uint8)


def generated_looking(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
  """A target as a generator might write it: edges blurred (3x3 box) and noise of sigma 4."""
  return add_noise(blur(rgb), 4.0, seed)


def up(img: np.ndarray, k: int = UP) -> np.ndarray:
  return np.repeat(np.repeat(np.asarray(img), k, 0), k, 1)


def show(ax, img, title: str | None = None, k: int = UP, **kwargs) -> None:
  ax.imshow(up(img, k), interpolation="nearest", **kwargs)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=8)


def caption(ax, text: str, width: int = 46, y: float = -0.04) -> None:
  ax.text(0.0, y, "\n".join(textwrap.wrap(text, width)), transform=ax.transAxes, fontsize=7, va="top",
          ha="left", family="monospace")


def save(fig, path: str, keep_colors=None) -> None:
  """The figure as an optimised PNG (small enough to commit). With keep_colors, an indexed PNG whose 256
  colours are those (exactly) plus the figure's most frequent others (text, background)."""
  img = Image.fromarray(common.figure_to_array(fig))
  if keep_colors is not None:
    keep = list(dict.fromkeys(tuple(int(v) for v in c) for c in np.asarray(keep_colors).reshape(-1, 3)))
    others = [c for _, c in sorted(img.getcolors(1 << 24), reverse=True) if c not in set(keep)]
    table = np.asarray((keep + others)[:256], np.float64)
    pixels = np.asarray(img).reshape(-1, 3)
    colors, inverse = np.unique(pixels, axis=0, return_inverse=True)
    nearest = np.linalg.norm(colors[:, None, :] - table[None], axis=-1).argmin(1)  # exact where present
    img = Image.fromarray(nearest[inverse.ravel()].reshape(np.asarray(img).shape[:2]).astype(np.uint8), "P")
    img.putpalette(table.astype(np.uint8).ravel().tolist())
  img.save(path, optimize=True)
  print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


def masks_picture(masks: np.ndarray, rgb: np.ndarray, background=(0, 0, 0)) -> np.ndarray:
  """Decoded masks, each in the mean colour of its pixels, outlined in black, at UP times the size."""
  masks = np.asarray(masks, bool)
  colors = [np.round(rgb[m].mean(0)).astype(np.uint8) for m in masks]
  out = up(instance.encode(masks, background, colors) if len(masks) else
           np.broadcast_to(np.asarray(background, np.uint8), rgb.shape))
  labels = up(np.argmax(np.concatenate([np.zeros((1,) + rgb.shape[:2], bool), masks]), 0))
  edge = np.zeros(labels.shape, bool)
  edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
  edge[1:, :] |= labels[1:, :] != labels[:-1, :]
  out = out.copy()
  out[edge] = 0
  return out


# ------------------------------------------------------------------------------------------------------------
# Pictures.
# ------------------------------------------------------------------------------------------------------------
def picture_depth(s: dict, path: str) -> None:
  ex = depth.make_example(s, None, False)
  d = np.where(ex.ground_truth["valid"], ex.ground_truth["depth"], np.nan)
  fig = common.figure(figsize=(9.6, 4.4), dpi=100)
  grid = fig.add_gridspec(2, 3, height_ratios=[4, 1], left=0.02, right=0.98, top=0.93, bottom=0.13,
                          hspace=0.45, wspace=0.25)
  show(fig.add_subplot(grid[0, 0]), s["image"], "scene")
  ax = fig.add_subplot(grid[0, 1])
  im = ax.imshow(up(d), cmap="magma_r", vmin=0, interpolation="nearest")
  ax.set_xticks([]), ax.set_yticks([])
  ax.set_title("metric depth (m; sky invalid)", fontsize=8)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
  ax = fig.add_subplot(grid[0, 2])
  show(ax, ex.target, "target: the walk colour of f(d)")
  caption(ax, "sky has no depth: the encoder fills it from the nearest pixel", 40)
  # the colour bar: the encoder's own output for depths that sweep f from 0 to 1
  bar = fig.add_subplot(grid[1, :])
  f = np.linspace(0.0, 1.0 - 1e-6, 1400)
  strip = depth.encode(depth.unsquash(f)[None, :].repeat(2, 0))
  bar.imshow(strip, aspect="auto", extent=(0, 1, 0, 1), interpolation="nearest")
  metres = [0, 0.5, 1, 2, 3, 5, 10, 20, 50]
  bar.set_xticks([float(depth.squash(m)) for m in metres], [f"{m:g}" for m in metres], fontsize=7)
  bar.set_yticks([])
  bar.set_xlabel("depth d (m): position on the walk f(d) = 1 - (1 + d/10)^-2", fontsize=8)
  top = bar.secondary_xaxis("top")
  top.set_xticks([k / 7 for k in range(8)],
                 ["black", "red", "yellow", "green", "cyan", "blue", "magenta", "white"], fontsize=7)
  save(fig, path)


def sphere_normals(size: int = 97) -> tuple[np.ndarray, np.ndarray]:
  """Unit normals of a sphere seen head-on (+x right, +y up, +z to the viewer) and its disk mask."""
  c = np.linspace(-1, 1, size)
  x, y = np.meshgrid(c, -c)  # image rows go down, +y goes up
  inside = x ** 2 + y ** 2 < 1
  z = np.sqrt(np.clip(1 - x ** 2 - y ** 2, 0, 1))
  return np.where(inside[..., None], np.stack([x, y, z], -1), 0.0), inside


def picture_normals(s: dict, path: str) -> None:
  ex = normals.make_example(s, None, False)
  n, inside = sphere_normals()
  sphere = np.concatenate([normals.encode(n, inside), np.where(inside, 255, 0)[..., None].astype(np.uint8)], -1)
  fig = common.figure(figsize=(9.6, 3.7), dpi=100)
  axes = fig.subplots(1, 3, gridspec_kw=dict(left=0.02, right=0.98, top=0.88, bottom=0.16, wspace=0.12))
  show(axes[0], s["image"], "scene")
  show(axes[1], ex.target, "target: R=(1-x)/2, G=(1+y)/2, B=(1+z)/2")
  if not ex.ground_truth["valid"].all():
    caption(axes[1], "sky has no normal: the encoder fills it from the nearest pixel", 52)
  else:  # a back wall instead of sky: say what its normal is in the camera frame
    wall = np.asarray(s["semantic"]) == s["class_names"].index("wall")
    n_wall = np.asarray(s["normals"])[wall].mean(0)
    caption(axes[1], f"back wall: n = ({n_wall[0]:.2f}, {n_wall[1]:.2f}, {n_wall[2]:.2f}) -> "
            f"{tuple(int(v) for v in ex.target[wall][0])} (the camera looks down at it)", 52)
  axes[2].imshow(sphere, interpolation="nearest", extent=(-1, 1, -1, 1))
  axes[2].set_xlim(-2.0, 2.0), axes[2].set_ylim(-1.4, 1.4), axes[2].axis("off")
  axes[2].set_title("a unit sphere's normals, encoded", fontsize=8)
  probes = {(-1, 0, 0): ("left", (-0.97, 0.0), (-1.45, 0.55)), (1, 0, 0): ("right", (0.97, 0.0), (1.45, 0.55)),
            (0, 1, 0): ("up", (0.0, 0.97), (-0.9, 1.2)), (0, -1, 0): ("down", (0.0, -0.97), (0.9, -1.2)),
            (0, 0, 1): ("camera", (0.0, 0.0), (0.0, 0.0))}
  for v, (label, point, text) in probes.items():
    rgb = normals.encode(np.asarray(v, np.float64)[None, None])[0, 0]
    axes[2].annotate(f"{label} {v}\n-> {tuple(int(c) for c in rgb)}", point, text, fontsize=6.5, ha="center",
                     va="center", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", lw=0.5),
                     arrowprops=None if label == "camera" else dict(arrowstyle="-", lw=0.6, color="0.3"))
  caption(axes[2], "x is flipped: a normal facing left is pinkish red, one facing the camera light blue", 50,
          y=0.0)
  save(fig, path)


def legend(ax, colors, names, ncol=1) -> None:
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  ax.legend(handles=[Patch(color=np.asarray(c) / 255, label=n) for c, n in zip(colors, names)], ncol=ncol,
            loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, handlelength=1.2)


def picture_semantic(s: dict, path: str) -> None:
  ex = semantic.make_example(s, None, False)
  colors, names = ex.decode_args["colors"], ex.decode_args["class_names"]
  noisy = generated_looking(ex.target)
  pred = semantic.decode(noisy, colors)
  acc = semantic.metrics(pred, ex.ground_truth)["pixel_acc"]
  shown = np.where((pred == semantic.IGNORE)[..., None], 0, colors[np.minimum(pred, len(colors) - 1)])
  fig = common.figure(figsize=(10.6, 3.2), dpi=100)
  axes = fig.subplots(1, 4, gridspec_kw=dict(left=0.01, right=0.88, top=0.9, bottom=0.13, wspace=0.06))
  show(axes[0], s["image"], "scene")
  show(axes[1], ex.target, "target: each class in its named colour")
  show(axes[2], noisy, "as generated (blur + noise 4)")
  show(axes[3], shown.astype(np.uint8), f"decoded: nearest colour ({acc:.1%} right)")
  legend(axes[3], list(colors) + [(0, 0, 0)], list(names) + ["unlabelled"])
  caption(axes[0], f'instruction: "{ex.instruction}"', 110, y=-0.05)
  save(fig, path)


def picture_palettes(path: str) -> None:
  """The two shipped dataset palettes, swatch by swatch."""
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  fig = common.figure(figsize=(10.6, 6.4), dpi=100)
  grid = fig.add_gridspec(1, 2, width_ratios=[1.3, 8.7], left=0.005, right=0.995, top=0.95, bottom=0.005,
                          wspace=0.04)
  for cell, name, cols, title in ((grid[0, 0], "cityscapes_19", 1, "Cityscapes-19"),
                                  (grid[0, 1], "ade20k_150", 8, "ADE20K-150 (skyscraper: vbanana's colour)")):
    names, colors = semantic.dataset_palette(name)
    ax = fig.add_subplot(cell)
    rows = int(np.ceil(len(names) / cols))
    for k, (n, c) in enumerate(zip(names, colors)):
      col, row = divmod(k, rows)
      ax.add_patch(Rectangle((col, rows - row - 1), 0.16, 0.8, color=np.asarray(c) / 255, lw=0))
      ax.text(col + 0.2, rows - row - 0.6, f"{k} {n}", fontsize=5.6, va="center")
    ax.set_xlim(0, cols), ax.set_ylim(0, rows), ax.axis("off")
    ax.set_title(title, fontsize=8)
  swatches = np.concatenate([semantic.dataset_palette(n)[1] for n in semantic.DATASET_PALETTES])
  save(fig, path, keep_colors=swatches)


def picture_instance(s: dict, path: str) -> None:
  inst = np.asarray(s["instance"])
  counts = {}
  for iid, cls in s["instance_class"].items():
    if (inst == int(iid)).any():
      counts[int(cls)] = counts.get(int(cls), 0) + 1
  cls = max(counts, key=lambda c: (counts[c], -c))  # the class with most instances
  cls_name = s["class_names"][cls]
  bg_name = "gray"
  background = common.COLOR_NAMES[bg_name]
  masks = np.stack([inst == int(i) for i, c in sorted(s["instance_class"].items()) if int(c) == cls
                    and (inst == int(i)).any()])
  target = instance.encode(masks, background)
  instruction = instance.CANONICAL.format(cls=cls_name, bg=bg_name)
  fig = common.figure(figsize=(10.0, 3.3), dpi=100)
  axes = fig.subplots(1, 4, gridspec_kw=dict(left=0.01, right=0.99, top=0.9, bottom=0.12, wspace=0.06))
  show(axes[0], s["image"], "scene")
  show(axes[1], target, f"target: {len(masks)} {cls_name}s, one colour each")
  for ax, what, rgb in ((axes[2], "noise 8", add_noise(target, 8.0, 0)), (axes[3], "3x3 blur", blur(target))):
    pred = instance.decode(rgb, background)
    pq = instance.metrics(pred, {"masks": masks})["pq"]
    show(ax, masks_picture(pred["masks"], rgb, background),
         f"decoded from target + {what}:\n{len(pred['masks'])} masks (PQ {pq:.2f})", k=1)
  caption(axes[0], f'instruction: "{instruction}"', 110, y=-0.05)
  caption(axes[2], "decoded masks: outlined, each in its mean colour", 60, y=-0.05)
  save(fig, path)


def picture_referring(s: dict, path: str) -> None:
  ex = referring.make_example(s, None, False)
  train = referring.make_example(s, np.random.default_rng(3), True)
  fig = common.figure(figsize=(7.6, 3.2), dpi=100)
  axes = fig.subplots(1, 3, gridspec_kw=dict(left=0.01, right=0.99, top=0.9, bottom=0.12, wspace=0.06))
  show(axes[0], s["image"], "scene")
  show(axes[1], ex.target, "target (evaluation)")
  caption(axes[1], f'"{ex.instruction}"', 34)
  show(axes[2], train.target, "target (a training phrasing)")
  caption(axes[2], f'"{train.instruction}"', 34)
  save(fig, path)


def picture_generation(samples: list[dict], path: str) -> None:
  fig = common.figure(figsize=(6.4, 3.6), dpi=100)
  axes = fig.subplots(1, len(samples), gridspec_kw=dict(left=0.01, right=0.99, top=0.92, bottom=0.27,
                                                        wspace=0.06))
  for ax, s in zip(axes, samples):
    ex = tasks.get("generation").make_example(s, None, False)
    show(ax, ex.target, "target (no input image)")
    caption(ax, f'instruction: "{ex.instruction}"', 36)
  save(fig, path)


def picture_editing(samples: list[dict], path: str) -> None:
  fig = common.figure(figsize=(10.0, 3.0), dpi=100)
  axes = fig.subplots(1, 2 * len(samples), gridspec_kw=dict(left=0.01, right=0.99, top=0.9, bottom=0.1,
                                                            wspace=0.06))
  for k, s in enumerate(samples):
    ex = tasks.get("editing").make_example(s, None, False)
    show(axes[2 * k], ex.inputs[0], "input (source)")
    show(axes[2 * k + 1], ex.target, "target (edited)")
    caption(axes[2 * k], f'instruction: "{ex.instruction}"', 60)
  save(fig, path)


# ------------------------------------------------------------------------------------------------------------
# Tables.
# ------------------------------------------------------------------------------------------------------------
def table(title: str, header: list[str], rows: list[list[str]]) -> None:
  print(f"\n{title}\n")
  print("| " + " | ".join(header) + " |")
  print("|" + "|".join("---" for _ in header) + "|")
  for r in rows:
    print("| " + " | ".join(r) + " |")


def pct(x: float, digits: int = 3) -> str:
  return f"{100 * x:.{digits}f} %"


def depth_table() -> None:
  rows = []
  for k, d in enumerate((1.0, 10.0, 50.0)):
    grid = d * np.linspace(0.97, 1.03, 128 * 128).reshape(128, 128)  # +-3 % around d: every code step
    target = depth.encode(grid)
    rel = np.abs(depth.decode(target) - grid) / grid
    row = [f"{d:g} m", pct(float(depth.quantisation_bound(d))), pct(float(rel.max())),
           f"{float((rel / depth.quantisation_bound(grid)).max()):.3f}"]
    for sigma in SIGMAS:
      rel = np.abs(depth.decode(add_noise(target, sigma, 10 + k)) - grid) / grid
      row.append(f"{pct(float(rel.mean()), 2)} / {pct(float(np.median(rel)), 2)}")
    rows.append(row)
  table("Depth: relative error |decoded - d| / d (16,384 depths within 3 % of d)",
        ["depth d", "8-bit bound at d", "no noise: max", "no noise: max of error / bound at that depth",
         "noise 4: mean / median", "noise 8: mean / median"], rows)
  white, black = depth.decode(np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8))[0]
  print(f"\nwhite decodes to {white:.0f} m, black to {abs(black):g} m")


def normals_table() -> None:
  rng = np.random.default_rng(20)
  n = rng.normal(size=(256, 256, 3))
  n /= np.linalg.norm(n, axis=-1, keepdims=True)
  target = normals.encode(n)
  clean = normals.angular_error(normals.decode(target), n)
  rows = [["no noise", f"{clean.mean():.3f}", f"{np.median(clean):.3f}", f"{clean.max():.3f}",
           f"{np.mean(clean < 11.25):.1%}"]]
  for k, sigma in enumerate(SIGMAS):
    err = normals.angular_error(normals.decode(add_noise(target, sigma, 21 + k)), n)
    rows.append([f"noise {sigma:g}", f"{err.mean():.3f}", f"{np.median(err):.3f}", f"{err.max():.3f}",
                 f"{np.mean(err < 11.25):.1%}"])
  table("Normals: angular error in degrees (65,536 random unit normals, whole sphere)",
        ["", "mean", "median", "max", "under 11.25"], rows)


def semantic_table() -> None:
  palettes = [
      ("7 named colours (scenes' eval prompt)",
       np.asarray([common.COLOR_NAMES[c] for c in common.PROMPT_COLORS[:7]], np.uint8)),
      ("10 named colours (the most a prompt names)",
       np.asarray([common.COLOR_NAMES[c] for c in common.PROMPT_COLORS[:10]], np.uint8)),
      ("Cityscapes-19 palette", semantic.dataset_palette("cityscapes_19")[1]),
      ("ADE20K-150 palette", semantic.dataset_palette("ade20k_150")[1]),
      ("150 well-separated colours", common.well_separated_palette(150, seed=150)),
  ]
  rows = []
  for k, (name, colors) in enumerate(palettes):
    lab = common.rgb_to_lab(colors.astype(np.float64))
    dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    rng = np.random.default_rng(30 + k)
    labels = np.kron(rng.integers(0, len(colors), (64, 64)), np.ones((2, 2), int))  # 128x128, 2x2 cells
    labels[:len(colors) // 128 + 1].flat[:len(colors)] = np.arange(len(colors))  # every class appears
    target = semantic.encode(labels, colors)
    i, j = np.unravel_index(dist.argmin(), dist.shape)
    pair = f"{dist.min():.1f}: {tuple(int(v) for v in colors[i])} / {tuple(int(v) for v in colors[j])}"
    row = [name, pair, pct(float(np.mean(semantic.decode(target, colors) == labels)), 2)]
    for sigma in SIGMAS:
      pred = semantic.decode(add_noise(target, sigma, 40 + k), colors)
      right, unlabelled = float(np.mean(pred == labels)), float(np.mean(pred == semantic.IGNORE))
      row.append(f"{pct(right, 2)} / {pct(unlabelled, 2)}")
    rows.append(row)
  table("Semantic: pixels decoded to their class (16,384 pixels of random labels; after noise: "
        "right / unlabelled)", ["colours", "closest pair: CIELAB distance, colours", "no noise", "noise 4",
                                  "noise 8"], rows)


def scene_samples(num: int, resolution: int) -> list[dict]:
  return [scenes.make_sample("validation", i, resolution) for i in range(num)]


def instance_requests(samples: list[dict]):
  """(masks, background) of every class of every scene, the backgrounds taking turns."""
  k = 0
  for s in samples:
    inst = np.asarray(s["instance"])
    by_class = {}
    for iid, cls in sorted(s["instance_class"].items()):
      if (inst == int(iid)).any():
        by_class.setdefault(int(cls), []).append(inst == int(iid))
    for cls in sorted(by_class):
      yield np.stack(by_class[cls]), common.COLOR_NAMES[instance.BACKGROUNDS[k % len(instance.BACKGROUNDS)]]
      k += 1


def corruptions():
  """(column name, function of (rgb, seed)) for the scene tables: none, noise 4 and 8, a 3x3 blur."""
  return [("no noise", lambda rgb, seed: rgb)] + [
      (f"noise {g:g}", lambda rgb, seed, g=g: add_noise(rgb, g, seed)) for g in SIGMAS] + [
      ("3x3 blur", lambda rgb, seed: blur(rgb))]


def instance_corruptions():
  """The scene tables' corruptions, then heavier ones: how instance decoding degrades past noise 8."""
  return corruptions() + [
      (f"noise {g:g}", lambda rgb, seed, g=g: add_noise(rgb, g, seed)) for g in (12.0, 16.0)] + [
      ("3x3 blur + noise 8", lambda rgb, seed: add_noise(blur(rgb), 8.0, seed))]


def instance_table(samples: list[dict]) -> None:
  requests = list(instance_requests(samples))
  rows, missed = [], []
  for k, (what, corrupt) in enumerate(instance_corruptions()):
    acc, exact, total, decoded = instance.Accumulator(), 0, 0, 0
    for j, (masks, background) in enumerate(requests):
      pred = instance.decode(corrupt(instance.encode(masks, background), 50 + 7 * j + k), background)
      acc.update(pred, {"masks": masks})
      decoded += len(pred["masks"])
      for m in masks:
        if any(np.array_equal(m, p) for p in pred["masks"]):
          exact += 1
        elif k == 0:  # no noise: how far off is the best decoded mask, and is the rest a small piece?
          best = max(pred["masks"], key=lambda p: (p & m).sum() / (p | m).sum())
          pieces, n = ndimage.label(m & ~best)
          missed.append(((best & m).sum() / (best | m).sum(), int((m ^ best).sum()),
                         max(np.bincount(pieces.ravel())[1:], default=0)))
      total += len(masks)
    r = acc.result()
    rows.append([what, str(decoded), f"{exact} / {total} ({pct(exact / total, 1)})", f"{r['ap']:.3f}",
                 f"{r['ap50']:.3f}", f"{r['ap75']:.3f}", f"{r['pq']:.3f}"])
  table(f"Instance: {len(requests)} requests (every class of {len(samples)} validation scenes at "
        f"{samples[0]['image'].shape[0]} px, backgrounds black / white / gray in turn), "
        f"{sum(len(m) for m, _ in requests)} instances",
        ["", "masks decoded", "masks decoded exactly", "mask AP", "AP50", "AP75", "PQ"], rows)
  if missed:
    ious = ", ".join(f"{iou:.3f}" for iou, _, _ in missed)
    wrong = ", ".join(str(w) for _, w, _ in missed)
    print(f"\nno noise, the {len(missed)} masks not decoded exactly: best IoU {ious}; pixels wrong {wrong}; "
          f"largest piece missed {max(p for _, _, p in missed)} pixels")


def scenes_table(samples: list[dict]) -> None:
  """Each task's Accumulator on its own eval targets: the numbers a perfect model would get, then corrupted."""
  keys = {"depth": ["abs_rel", "delta1"], "normals": ["mean_angle", "within_11.25"],
          "semantic": ["miou", "pixel_acc"], "instance": ["ap", "pq"], "referring": ["giou", "ciou"]}
  rows = []
  for name, metric_names in keys.items():
    task = tasks.get(name)
    examples = [e for e in (task.make_example(s, None, False) for s in samples) if e is not None]
    results = []
    for k, (_, corrupt) in enumerate(corruptions()):
      acc = task.Accumulator()  # semantic reads num_classes from each example's ground truth
      for j, ex in enumerate(examples):
        acc.update(task.decode(corrupt(ex.target, 60 + 7 * j + k), **ex.decode_args), ex.ground_truth)
      results.append(acc.result())
    for m in metric_names:
      rows.append([name, m] + [f"{r[m]:.4f}" for r in results])
  table(f"Evaluation metrics on the encoded eval targets of {len(samples)} validation scenes at "
        f"{samples[0]['image'].shape[0]} px (each task's Accumulator)",
        ["task", "metric"] + [c for c, _ in corruptions()], rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=os.path.join(_ROOT, "docs", "images"))
  parser.add_argument("--resolution", type=int, default=96, help="scene size for the pictures")
  parser.add_argument("--table_scenes", type=int, default=16)
  parser.add_argument("--table_resolution", type=int, default=64)
  parser.add_argument("--no_pictures", action="store_true")
  parser.add_argument("--no_tables", action="store_true")
  args = parser.parse_args()
  if not args.no_pictures:
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, f"task_{name}.png")  # noqa: E731
    s = {i: scenes.make_sample("train", i, args.resolution) for i in (0, 2, 6, 9)}
    picture_depth(s[0], out("depth"))
    picture_normals(s[9], out("normals"))
    picture_semantic(s[0], out("semantic"))
    picture_palettes(out("palettes"))
    picture_instance(s[2], out("instance"))
    picture_referring(s[9], out("referring"))
    picture_generation([s[0], s[6]], out("generation"))
    picture_editing([s[6], s[2]], out("editing"))
  if not args.no_tables:
    print("\nRound trips: encode -> (noise) -> decode with the task modules; noise is N(0, sigma^2) per "
          "channel in 0-255 units, rounded and clipped to uint8.")
    depth_table()
    normals_table()
    semantic_table()
    samples = scene_samples(args.table_scenes, args.table_resolution)
    instance_table(samples)
    scenes_table(samples)


if __name__ == "__main__":
  main()
