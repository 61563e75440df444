"""What the paper reports: Table 1 of "Image Generators are Generalist Vision Learners" (Gabeur et al.,
arXiv 2604.20329, April 2026) and the per-dataset numbers of its Tables 3 (metric depth) and 4 (normals),
so `paper_table.md` puts our numbers beside the paper's without anyone retyping them.

Source: the paper's text (arxiv.org/abs/2604.20329, HTML version), read for this module. Every number
below is the paper's, with its row name; `None` means the paper prints no number there. Table 1's two
averages were checked against Tables 3 and 4: depth 0.929 = mean delta1 of NYU, ETH3D, DIODE-Indoor and
KITTI (0.948, 0.935, 0.917, 0.915), Depth Anything 3's 0.918 the same four (0.963, 0.917, 0.838, 0.953);
normals 18.928 = mean of the mean angular errors on NYUv2, DIODE-indoor, ScanNet and VKitti (17.778,
13.818, 15.052, 29.063), Lotus-2's 19.642 likewise (16.9, 18.575, 14.2, 28.894).
"""

from __future__ import annotations

import dataclasses

SOURCE = ("Gabeur et al., Image Generators are Generalist Vision Learners, arXiv 2604.20329 (2026), "
          "Table 1 (per-dataset numbers: Tables 2-4)")


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the paper's Table 1: what it measures, Vision Banana's number and the best counterpart's."""
  key: str                 # our name for the row
  capability: str          # the paper's row name
  benchmark: str           # the paper's benchmark and metric, as printed
  metric: str              # the key of our metric that this row compares (None: not measurable here)
  higher_is_better: bool
  paper: str               # Vision Banana's number, as printed
  counterpart: str         # the best counterpart's number, as printed
  counterpart_name: str
  note: str = ""


TABLE1 = (
    Row("refcocog", "Referring segmentation", "RefCOCOg UMD val (cIoU)", "ciou", True, "0.738", "0.734",
        "SAM3 Agent"),
    Row("reasonseg", "Referring segmentation", "ReasonSeg val (gIoU)", "giou", True, "0.793", "0.770",
        "SAM3 Agent", "the paper's Vision Banana and SAM 3 Agent both run with Gemini 2.5 Pro (Table 2d); "
        "here the query goes to the model as written"),
    Row("cityscapes", "Semantic segmentation", "Cityscapes val (mIoU)", "miou", True, "0.699", "0.652", "SAM3"),
    Row("sa_co_gold", "Instance segmentation", "SA-Co/Gold (pmF1)", "pmf1", True, "0.540*", "0.552", "DINO-X",
        "*the paper evaluates a random subset of 500 queries; here too, drawn with a fixed seed (the paper's "
        "subset is not published); DINO-X's 0.552 is its mean positive_micro_F1 over the seven subsets in "
        "SAM 3's SA-Co/Gold results"),
    Row("depth_avg4", "Metric depth estimation", "average of 4 datasets (delta1)", "delta1", True, "0.929",
        "0.918", "Depth Anything 3", "NYU, ETH3D, DIODE-Indoor, KITTI (the four Depth Anything 3 reports)"),
    Row("normals_avg4", "Surface normal estimation", "average of 4 datasets (mean angle error)", "mean_angle",
        False, "18.928", "19.642", "Lotus-2", "NYUv2, DIODE-indoor, ScanNet, VKitti"),
    Row("genai_bench", "Text-to-image", "GenAI-Bench (win rate against the other)", None, True, "53.5%",
        "46.5%", "Nano Banana Pro", "human raters against Nano Banana Pro: not measurable here"),
    Row("imgedit", "Image editing", "ImgEdit (win rate against the other)", None, True, "47.8%", "52.2%",
        "Nano Banana Pro", "human raters against Nano Banana Pro: not measurable here"),
)

# Table 3 (metric depth, no alignment): Vision Banana's delta1 and AbsRel per dataset, and the number of
# the counterpart Table 1 names (Depth Anything 3; None where the paper prints none for it).
DEPTH = {
    "nyu": dict(name="NYU", delta1="0.948", abs_rel="0.081", da3_delta1="0.963", da3_abs_rel="0.07"),
    "ibims1": dict(name="iBims1", delta1="0.934", abs_rel="0.078", da3_delta1=None, da3_abs_rel=None),
    "eth3d": dict(name="ETH3D", delta1="0.935", abs_rel="0.103", da3_delta1="0.917", da3_abs_rel="0.104"),
    "diode_indoor": dict(name="DIODE-Indoor", delta1="0.917", abs_rel="0.108", da3_delta1="0.838",
                         da3_abs_rel="0.123"),
    "kitti": dict(name="KITTI", delta1="0.915", abs_rel="0.107", da3_delta1="0.953", da3_abs_rel="0.086"),
    "nuscenes": dict(name="nuScenes", delta1="0.643", abs_rel="0.219", da3_delta1=None, da3_abs_rel=None),
}
DEPTH_AVG4 = ("nyu", "eth3d", "diode_indoor", "kitti")

# Table 4 (normals): mean / median angular error (degrees) per dataset, Vision Banana and Lotus-2-Normal
# (the paper prints no median for Lotus-2 on these sets).
NORMALS = {
    "nyuv2": dict(name="NYUv2", mean="17.778", median="8.876", lotus2_mean="16.9", lotus2_median=None),
    "diode_indoor": dict(name="DIODE-indoor", mean="13.818", median="11.556", lotus2_mean="18.575",
                         lotus2_median=None),
    "scannet": dict(name="ScanNet", mean="15.052", median="7.468", lotus2_mean="14.2", lotus2_median=None),
    "vkitti": dict(name="VKitti", mean="29.063", median="10.699", lotus2_mean="28.894", lotus2_median="9.677"),
}
NORMALS_AVG4 = ("nyuv2", "diode_indoor", "scannet", "vkitti")


def row(key: str) -> Row:
  for r in TABLE1:
    if r.key == key:
      return r
  raise KeyError(f"no Table 1 row {key!r}: expected one of {[r.key for r in TABLE1]}")
