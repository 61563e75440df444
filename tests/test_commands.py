"""Every command the documentation shows parses: the README's "Using it" block and every config's docstring.

Each `python -m vbanana.<command> ...` line is parsed with that command's own flags (its `define_flags`, into
a fresh absl FlagValues); a `--config` is loaded with its `:arguments` and `--config.KEY=value` overrides and
resolved (every default filled in), exactly as the command would before it touches a device or a file.
"""
import importlib
import pathlib
import re
import shlex
import sys

import pytest
from absl import flags

from vbanana import cli, config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# `python -m MODULE` -> the module whose define_flags(fv) defines its flags.
COMMANDS = {
    "vbanana.main": "vbanana.main", "vbanana.aot": "vbanana.aot", "vbanana.sweep": "vbanana.sweep",
    "vbanana.export": "vbanana.export", "vbanana.predict": "vbanana.predict.cli",
    "vbanana.experiments.recipe": "vbanana.experiments.recipe", "vbanana.data.build_scenes": "vbanana.data.build_scenes",
    "vbanana.flux2.convert": "vbanana.flux2.convert",
}


def documented_commands(text: str) -> list[list[str]]:
  """The `python -m vbanana...` command lines of a text: continuations joined, comments, `[optional]` brackets,
  `...` and shell variables left out."""
  text = re.sub(r"\\\n\s*", " ", text)
  commands = []
  for line in text.splitlines():
    line = line.strip()
    if not line.startswith("python -m vbanana"):  # a command line, not a mention in a sentence
      continue
    line = line.split("  #")[0].split(" # ")[0]
    words = [w.strip("[]`") for w in shlex.split(line.replace("[", "").replace("]", "")) if w not in ("...",)]
    words = [w for w in words if "$" not in w]
    commands.append(words[2:])  # after "python -m"
  return commands


def readme_commands():
  readme = (ROOT / "README.md").read_text()
  block = readme.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
  return documented_commands(block)


def config_commands():
  out = []
  for path in sorted((ROOT / "configs").glob("*.py")):
    out += documented_commands(config_lib.load_module(str(path)).__doc__)
  return out


ALL = readme_commands() + config_commands()


def parse(words: list[str], monkeypatch):
  """(module, parsed FlagValues) of one command line; the config (if any) loaded, overridden, resolved."""
  module, args = words[0], words[1:]
  assert module in COMMANDS, f"a documented command this test does not know: {module}"
  fv = flags.FlagValues()
  importlib.import_module(COMMANDS[module]).define_flags(fv)
  monkeypatch.setattr(sys, "argv", [module] + args)  # where config_flags finds the --config.KEY overrides
  cli.parse_flags([module] + args, fv)
  if "config" in fv and module != "vbanana.sweep":
    config = fv.config
    if "bench" not in config:  # configs/eval_paper.py runs benchmarks, not a training config
      config_lib.resolve(config)
  return module, fv


def test_the_documentation_shows_commands():
  modules = {w[0] for w in ALL}
  assert {"vbanana.main", "vbanana.aot", "vbanana.predict", "vbanana.export"} <= modules, modules
  assert len(readme_commands()) >= 10


@pytest.mark.parametrize("words", ALL, ids=[" ".join(w)[:90] for w in ALL])
def test_documented_command_parses(words, monkeypatch):
  monkeypatch.chdir(ROOT)
  parse(words, monkeypatch)


def test_the_readme_override_reaches_the_resolved_config(monkeypatch):
  """The README's `--config.optim.lr=3e-4` (and the other sections' fields) set what the run uses."""
  monkeypatch.chdir(ROOT)
  _, fv = parse(["vbanana.main", "--config=configs/quickstart.py", "--workdir=/tmp/x", "--config.optim.lr=3e-4",
                 "--config.model.width=128", "--config.flow.text_dropout=0.2"], monkeypatch)
  resolved = config_lib.resolve(fv.config)
  assert resolved.optim.lr == 3e-4 and resolved.model.width == 128 and resolved.flow.text_dropout == 0.2
  assert resolved.optim.total_steps == resolved.train.steps  # unset: the schedule spans the run
  assert config_lib.model_config(resolved).width == 128
  with pytest.raises(SystemExit):
    parse(["vbanana.main", "--config=configs/quickstart.py", "--config.optim.lrr=3e-4"], monkeypatch)


def test_every_section_holds_every_default():
  """base_config has every field of model, flow, optim and data: config.json records what a run used."""
  import dataclasses
  from vbanana import flow, optim
  from vbanana.data import pipeline
  from vbanana.model import config as model_config
  c = config_lib.base_config()
  assert {f.name for f in dataclasses.fields(flow.FlowConfig)} == set(c.flow)
  assert {f.name for f in dataclasses.fields(optim.OptimConfig)} == set(c.optim)
  assert {f.name for f in dataclasses.fields(model_config.ModelConfig)} | {"size", "family"} == set(c.model)
  assert set(pipeline.DEFAULTS) | {"components"} == set(c.data)
  resolved = config_lib.resolve(config_lib.load_config(str(ROOT / "configs" / "quickstart.py")))
  for section in ("model", "flow", "optim"):
    unset = [k for k, v in resolved[section].items() if v is None and k not in ("text_embed_dim", "attention",
                                                                                   "mu_dtype")]
    assert not unset, (section, unset)
