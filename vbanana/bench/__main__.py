"""python -m vbanana.bench --checkpoint=PATH --data_dir=DIR --out=DIR [--limit=N] [--steps=4]

Runs every benchmark of the paper's Table 1 whose data is under DIR and writes DIR_OUT/paper_table.md (the
same as `python -m vbanana.main --config=configs/eval_paper.py:checkpoint=PATH,data_dir=DIR --mode=eval`).
The protocol options (--depth_cap, --kitti_crop, ... : vbanana.bench.options) pick a peer's choice where the
peers' evaluation code splits; the table lists the values used.
"""

import sys

from absl import flags

from vbanana.bench import options, runner

PROG = "python -m vbanana.bench"
INT_FLAGS = (("limit", 0, "examples per benchmark; 0 = all"), ("steps", 4, "sampler steps"),
             ("batch_size", 8, "images per forward pass"), ("seed", 0, "noise seed"),
             ("queries", 500, "SA-Co/Gold queries drawn"))


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("checkpoint", None, "a workdir or an exported .safetensors file", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir that also holds the folder datasets", flag_values=fv)
  flags.DEFINE_string("out", "runs/eval_paper", "where paper_table.md is written", flag_values=fv)
  for name, default, help_text in INT_FLAGS:
    flags.DEFINE_integer(name, default, help_text, flag_values=fv)
  flags.DEFINE_string("sampler", "euler", "euler or heun", flag_values=fv)
  flags.DEFINE_float("text_scale", 1.0, "guidance on the instruction", flag_values=fv)
  flags.DEFINE_enum("semantic_prompt", "named", ["named", "palette"], "how semantic classes are asked for",
                    flag_values=fv)
  flags.DEFINE_string("only", "", "benchmark names separated by ';' (default: all)", flag_values=fv)
  for o in options.OPTIONS:  # the protocol choices where the peers split (docs/benchmarks.md)
    flags.DEFINE_enum(o.name, o.default, list(o.choices),
                      f"{o.benchmarks}: " + "; ".join(f"{k}: {v}" for k, v in o.choices.items()), flag_values=fv)


def main(argv=None) -> int:
  """The command on `argv` (without the program name); 2 after one 'error:' line for a mistake."""
  fv = flags.FlagValues()
  define_flags(fv)
  try:
    fv([PROG] + list(sys.argv[1:] if argv is None else argv))
    missing = [f"--{n}" for n in ("checkpoint", "data_dir") if fv[n].value is None]
    if missing:
      raise ValueError(f"error: {', '.join(missing)} required")
    settings = {n: fv[n].value for n in fv if n != "out"}
    outcome = runner.run(runner.Settings(**settings), fv.out)
  except (ValueError, flags.Error) as e:
    print(str(e) if str(e).startswith("error:") else f"error: {e}", file=sys.stderr)
    return 2
  return 1 if outcome["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
