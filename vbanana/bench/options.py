"""The protocol choices on which the peers' own evaluation code splits, as named options with one default each.

Why options: the field's evaluators (ZoeDepth, Marigold, Depth-Anything-V2, monodepth2, UniDepth, DSINE,
Lotus-2, LISA, SAM 3, the nuScenes devkit) agree on most of each benchmark's protocol, but not on all of it
(which pixels count at the cap, whether predictions are clipped, which KITTI crop, ...). A number is only
comparable with a column computed the same way, so each such choice is a named option here; its default is
the choice that makes our number comparable with the paper's counterpart column (docs/benchmarks.md has the
per-benchmark table and says whose code each choice follows). `runner.Settings` carries these fields, and
`paper_table.md` lists the values a run used.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Option:
  name: str
  choices: dict[str, str]  # value -> what it does and whose evaluation code does it (the first is the default)
  benchmarks: str          # which benchmarks it changes

  @property
  def default(self) -> str:
    return next(iter(self.choices))


OPTIONS = (
    Option("depth_cap", {
        "le": "ground truth exactly at the cap is scored (d <= cap: Depth-Anything-V2's metric-depth eval)",
        "lt": "ground truth exactly at the cap is not scored (d < cap: ZoeDepth, Marigold, monodepth2, UniDepth)"},
        "every depth benchmark with a cap"),
    Option("depth_clip", {
        "off": "metric predictions scored as they are (Depth-Anything-V2, UniDepth)",
        "range": "metric predictions clipped to the benchmark's [min, max] depth first (ZoeDepth, monodepth2; "
                 "Marigold after its alignment)"},
        "every depth benchmark"),
    Option("affine_clip", {
        "off": "the affine-aligned map scored as it is (the paper reports no aligned number)",
        "range": "the affine-aligned map clipped to the benchmark's [min, max] depth first (Marigold)"},
        "the affine_* numbers of every depth benchmark"),
    Option("kitti_crop", {
        "garg": "Garg crop of the full frame (monodepth2)",
        "kb_garg": "352 x 1216 KITTI-benchmark crop of image and depth, then the Garg crop (ZoeDepth, UniDepth)",
        "kb_eigen": "352 x 1216 KITTI-benchmark crop, then the Eigen crop (Marigold)",
        "none": "the full frame, no crop (Depth-Anything-V2's KITTI validation)"},
        "depth_kitti"),
    Option("ibims", {
        "cap10": "no crop, 1e-3 m < d, cap 10 m (ours; neither peer's)",
        "zoedepth": "NYU's Eigen crop [45:471, 41:601], 0 < d, cap 10 m (ZoeDepth)",
        "unidepth": "no crop, 0.005 m < d, cap 25 m (UniDepth)"},
        "depth_ibims1"),
    Option("nuscenes_points", {
        "devkit": "LiDAR points within 1 px of the image border dropped (1 < u < W - 1, 1 < v < H - 1: the "
                  "nuScenes devkit's map_pointcloud_to_image)",
        "all": "every point that lands inside the image"},
        "depth_nuscenes"),
    Option("resize", {
        "half_pixel": "bilinear with pixel centres aligned (align_corners=False: Marigold, Lotus-2, UniDepth, "
                      "monodepth2's cv2.resize)",
        "corners": "bilinear with corner pixels aligned (align_corners=True: ZoeDepth, Depth-Anything-V2)"},
        "depth and normals predictions brought to the ground truth's size (masks are always nearest)"),
    Option("reasonseg_texts", {
        "first": "the first query text of each image (LISA's evaluator, the dataset authors')",
        "all": "every query text of each image"},
        "reasonseg"),
    Option("saco_pooling", {
        "subsets": "pmF1, IL_MCC and cgF1 per subset, then their mean over the subsets (SAM 3's reported "
                   "numbers, DINO-X's 0.552 included)",
        "pooled": "TP / FP / FN pooled over all drawn pairs (the paper's wording: '500 random queries')"},
        "sa_co_gold"),
)
BY_NAME = {o.name: o for o in OPTIONS}
DEFAULTS = {o.name: o.default for o in OPTIONS}


@dataclasses.dataclass(frozen=True)
class Options:
  """One value per option (`OPTIONS`); runner.Settings extends this, so a run's settings are its options."""
  depth_cap: str = DEFAULTS["depth_cap"]
  depth_clip: str = DEFAULTS["depth_clip"]
  affine_clip: str = DEFAULTS["affine_clip"]
  kitti_crop: str = DEFAULTS["kitti_crop"]
  ibims: str = DEFAULTS["ibims"]
  nuscenes_points: str = DEFAULTS["nuscenes_points"]
  resize: str = DEFAULTS["resize"]
  reasonseg_texts: str = DEFAULTS["reasonseg_texts"]
  saco_pooling: str = DEFAULTS["saco_pooling"]


def check(opts) -> None:
  """Raises ValueError naming the option, its value and the values it takes."""
  for o in OPTIONS:
    value = getattr(opts, o.name)
    if value not in o.choices:
      raise ValueError(f"error: eval_paper: option {o.name}={value!r}; expected one of {', '.join(o.choices)}")


def describe(opts) -> list[str]:
  """One markdown line per option: its value, what it means, and whether it is the default."""
  lines = []
  for o in OPTIONS:
    value = getattr(opts, o.name)
    mark = "default" if value == o.default else f"not the default {o.default}"
    lines.append(f"- `{o.name}={value}` ({mark}; {o.benchmarks}): {o.choices.get(value, 'unknown value')}")
  return lines
