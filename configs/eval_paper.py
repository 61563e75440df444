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
"""

import ml_collections

from vbanana import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, checkpoint="", data_dir="", out="", limit=0, steps=4, sampler="euler",
                             text_scale=1.0, batch_size=8, seed=0, semantic_prompt="named", only="", queries=500)
  c = config_lib.base_config()  # the usual sections, so every config reads alike; `bench` selects the runner
  c.bench = ml_collections.ConfigDict(arg.to_dict())
  return c
