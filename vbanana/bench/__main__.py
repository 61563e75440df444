"""python -m vbanana.bench --checkpoint=PATH --data_dir=DIR --out=DIR [--limit=N] [--steps=4]

Runs every benchmark of the paper's Table 1 whose data is under DIR and writes DIR_OUT/paper_table.md (the
same as `python -m vbanana.main --config=configs/eval_paper.py:checkpoint=PATH,data_dir=DIR --mode=eval`).
The protocol options (--depth_cap, --kitti_crop, ... : vbanana.bench.options) pick a peer's choice where the
peers' evaluation code splits; the table lists the values used.
"""

import argparse
import sys

from vbanana.bench import options, runner


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m vbanana.bench", description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", required=True, help="a workdir or an exported .safetensors file")
  p.add_argument("--data_dir", required=True, help="TFDS data_dir that also holds the folder datasets")
  p.add_argument("--out", default="runs/eval_paper", help="where paper_table.md is written")
  for name, default in (("limit", 0), ("steps", 4), ("batch_size", 8), ("seed", 0), ("queries", 500)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--sampler", default="euler")
  p.add_argument("--text_scale", type=float, default=1.0)
  p.add_argument("--semantic_prompt", default="named", choices=("named", "palette"))
  p.add_argument("--only", default="", help="benchmark names separated by ';' (default: all)")
  for o in options.OPTIONS:  # the protocol choices where the peers split (docs/benchmarks.md)
    p.add_argument(f"--{o.name}", default=o.default, choices=tuple(o.choices),
                   help=f"{o.benchmarks}: " + "; ".join(f"{k}: {v}" for k, v in o.choices.items()))
  args = vars(p.parse_args(argv))
  out = args.pop("out")
  try:
    outcome = runner.run(runner.Settings(**args), out)
  except ValueError as e:
    print(str(e), file=sys.stderr)
    return 2
  return 1 if outcome["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
