"""What every vbanana command shares on its command line: the `--config` flag (a config file with
`:key=value` arguments and `--config.KEY=value` overrides) and absl flag parsing with a one-line message for
an override of a key the config does not have. One flag system (absl) for every entry point."""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags


def define_config_flag(name: str = "config", help_text: str = "Config file, configs/NAME.py[:key=value,...].",
                       flag_values: flags.FlagValues = flags.FLAGS):
  """The config file flag (locked: an override of an unknown key is an error, never a new key)."""
  return config_flags.DEFINE_config_file(name, None, help_text, lock_config=True, flag_values=flag_values)


def config_spec(name: str = "config") -> str:
  """--config as given: 'configs/NAME.py[:ARGS]'."""
  return config_flags.get_config_filename(flags.FLAGS[name]) or ""


def config_file(name: str = "config") -> str:
  """The file part of --config, checked to exist (an app.UsageError naming the flag otherwise)."""
  path = config_spec(name).partition(":")[0]
  if not path or not os.path.exists(path):
    raise app.UsageError(f"--{name}: no config file at {path!r} (expected configs/NAME.py[:ARGS])")
  return path


def parse_flags(argv, flag_values: flags.FlagValues = flags.FLAGS):
  """absl flag parsing, with a clear message (and exit status 2) for an unknown --config.KEY override."""
  try:
    return flag_values(argv)
  except flags.Error as e:
    raise SystemExit(f"FATAL Flags parsing error: {e}") from None
  except (AttributeError, KeyError) as e:
    from vbanana import config_lib  # pylint: disable=g-import-not-at-top
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec:
      try:
        config = config_lib.load_config(spec)
      except Exception:  # pylint: disable=broad-except
        raise e from None
      for key in config_lib.override_keys(argv):
        message = config_lib.unknown_key_message(config, key)
        if message:
          print(f"FATAL {message}", file=sys.stderr)
          raise SystemExit(2) from None
    raise
