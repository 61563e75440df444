r"""Convert FLUX.2 transformer weights between diffusers' layout and vbanana's, on the host (no accelerator).

  python -m vbanana.flux2.convert --from=FLUX.2-klein-base-4B --to=klein-vbanana            # import
  python -m vbanana.flux2.convert --export --from=klein-vbanana --to=out/transformer --dtype=bfloat16

Import reads a diffusers `transformer/` folder (or the pipeline folder holding it; single or sharded
safetensors) and writes vbanana's layout (`vbanana.flux2.load_transformer` reads both). Export writes
diffusers' layout back: config.json and diffusion_pytorch_model safetensors, sharded past --max_shard_size as
`save_pretrained` does, which `Flux2Transformer2DModel.from_pretrained` and the klein pipelines load. Both
stream one layer of one tensor at a time. A checkpoint that does not match the model (a missing, misshaped or
unexpected tensor) stops it with one line that names the tensor.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  flags.DEFINE_string("from", None, "Source folder: diffusers' (import) or vbanana's (--export).", flag_values=fv)
  flags.DEFINE_string("to", None, "Destination folder (created; earlier checkpoint files of the same name "
                      "are replaced).", flag_values=fv)
  flags.DEFINE_bool("export", False, "Write diffusers' layout from vbanana's (default: import into vbanana's).",
                    flag_values=fv)
  flags.DEFINE_string("dtype", None, "Tensor dtype written: float32 or bfloat16 (default: float32 on import; "
                      "the source's on export).", flag_values=fv)
  flags.DEFINE_string("max_shard_size", "10GB", "Shard the safetensors past this size (diffusers' default).",
                      flag_values=fv)


def main(argv) -> int:
  if len(argv) > 1:
    raise SystemExit(f"vbanana.flux2.convert: unexpected arguments {argv[1:]}")
  from vbanana.flux2 import transformer_io  # pylint: disable=g-import-not-at-top
  source, dest = FLAGS["from"].value, FLAGS.to
  if not source or not dest:
    raise SystemExit("vbanana.flux2.convert: --from and --to are required")
  try:
    if FLAGS.export:
      files = transformer_io.convert_to_diffusers(source, dest, dtype=FLAGS.dtype,
                                                  max_shard_size=FLAGS.max_shard_size)
    else:
      files = transformer_io.convert_to_native(source, dest, dtype=FLAGS.dtype or "float32",
                                               max_shard_size=FLAGS.max_shard_size)
  except (ValueError, TypeError, OSError) as e:  # CheckpointError is a ValueError
    raise SystemExit(f"vbanana.flux2.convert: {str(e).splitlines()[0]}") from None
  print(f"vbanana.flux2.convert: wrote {', '.join(files)} to {dest}", flush=True)
  return 0


def run():
  define_flags()
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
