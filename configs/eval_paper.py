r"""The paper's Table 1: every benchmark whose data is present, with its published protocol, beside the paper.

  python -m vbanana.main --config=configs/eval_paper.py:checkpoint=runs/quickstart,data_dir=~/tensorflow_datasets --mode=eval

`checkpoint` is a workdir or an exported .safetensors file; `data_dir` is the TFDS data_dir holding the
prepared nyu_depth_v2, cityscapes and ref_coco datasets and the folder datasets (kitti/, eth3d/, diode/,
ibims1/, dsine_eval/, reasonseg/, nuscenes/, sa_co_gold/ in their publishers' layouts: docs/benchmarks.md). Prints one line per
benchmark skipped (naming the path it expected) and writes paper_table.md into --workdir (or `out`, default
runs/eval_paper). Arguments (`:key=value,...`): checkpoint, data_dir, out, limit (examples per benchmark,
0 = all), steps, sampler, text_scale, batch_size, seed, semantic_prompt ('named': the 19 colours in the
prompt, the paper's protocol; 'palette': the palette phrase vbanana trains with), only (names joined by ';'),
queries (SA-Co/Gold pairs drawn with a fixed seed, the paper's 500; 0 = all).

Protocol options, where the peers' own evaluation code splits (vbanana/bench/options.py; docs/benchmarks.md
has the per-benchmark table). Each default makes our number comparable with the paper's counterpart column:
  depth_cap        le (d <= cap counts: Depth-Anything-V2) | lt (ZoeDepth, Marigold, monodepth2, UniDepth)
  depth_clip       off (Depth-Anything-V2, UniDepth) | range (clip metric predictions to the benchmark's range:
                   ZoeDepth, monodepth2)
  affine_clip      off | range (clip the affine-aligned map to the benchmark's range: Marigold)
  kitti_crop       garg (Garg crop of the full frame: monodepth2) | kb_garg (352 x 1216 benchmark crop, then Garg:
                   ZoeDepth, UniDepth) | kb_eigen (benchmark crop, then Eigen: Marigold) | none (DA-V2's validation)
  ibims            cap10 (no crop, 10 m: ours) | zoedepth (Eigen crop, < 10 m) | unidepth (no crop, < 25 m)
  nuscenes_points  devkit (drop points within 1 px of the border, as the devkit does) | all
  resize           half_pixel (align_corners False: Marigold, Lotus-2, UniDepth) | corners (True: ZoeDepth, DA-V2)
  reasonseg_texts  first (the first query text per image: LISA's evaluator) | all
  saco_pooling     subsets (mean over the subsets: SAM 3's reported numbers, DINO-X's 0.552) | pooled
e.g. `:checkpoint=...,data_dir=...,kitti_crop=kb_garg,depth_cap=lt,depth_clip=range` scores KITTI as ZoeDepth does.
"""

import ml_collections

from vbanana import config_lib
from vbanana.bench import options


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, checkpoint="", data_dir="", out="", limit=0, steps=4, sampler="euler",
                             text_scale=1.0, batch_size=8, seed=0, semantic_prompt="named", only="", queries=500,
                             **options.DEFAULTS)
  c = config_lib.base_config()  # the usual sections, so every config reads alike; `bench` selects the runner
  c.bench = ml_collections.ConfigDict(arg.to_dict())
  return c
