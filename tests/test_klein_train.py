"""FLUX.2 [klein] as a model family, end to end on the CPU: a tiny random klein that diffusers builds here
(tokenizer, Qwen3, VAE, transformer, scheduler) goes through the README's three klein commands as written
(paths and test sizes substituted): imported by `python -m vbanana.flux2.convert`, instruction-tuned through
`python -m vbanana.main` on the scenes mixture at 32 px (killed with SIGKILL and resumed: identical losses;
evaluated by every evaluator) and exported by `python -m vbanana.export --dtype=bfloat16`; diffusers loads the
export (no missing or unexpected keys) and computes vbanana's outputs (float32 export: <= 5e-5). LoRA: only
the adapters train, the frozen weights stay as they were, bit for bit, and the merged export is
base + (alpha / rank) A B.

Cost on a quiet 2-core machine: about 4 minutes (two trainer processes of one run, one in-process LoRA run;
the compiles dominate). One training run serves the kill, resume, evaluation and export checks.
"""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import flux2_fixtures as fx  # noqa: E402
from cli_helpers import ROOT, checkpoints, losses, run_main, start_main, wait_for  # noqa: E402
from vbanana import checkpoint, config_lib, export, families, metrics_writer, trees  # noqa: E402

pytestmark = pytest.mark.slow

STEPS, CKPT_EVERY, BATCH = 24, 8, 8
EVALUATED = ("generation", "editing", "depth", "normals", "semantic", "instance", "referring")


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
  """A tiny klein pipeline folder in diffusers' layout (8 px per token: 4 x 4 tokens at 32 px)."""
  folder = tmp_path_factory.mktemp("klein") / "pipeline"
  fx.tiny_klein_pipeline(str(folder))
  return folder


# The README's "Using it" lines for klein (convert, instruct, export), run as written with these replaced.
README_PATHS = ("FLUX.2-klein-base-4B", "klein-vbanana", "klein-generalist", "runs/klein", "data/scenes")


def readme_klein_commands(paths: dict) -> dict:
  """{'convert' | 'main' | 'export': the README's command line as words after `python -m`}, with the README's
  folder names replaced by `paths` (README_PATHS -> str)."""
  readme = (ROOT / "README.md").read_text()
  block = readme.split("## Using it", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
  pattern = re.compile("|".join(re.escape(p) for p in README_PATHS))
  out = {}
  for line in block.splitlines():
    if not line.startswith("python -m "):
      continue
    words = shlex.split(line.split(" #")[0])
    name = {"vbanana.flux2.convert": "convert", "vbanana.main": "main", "vbanana.export": "export"}.get(words[2])
    if name and "klein" in line:
      assert name not in out, f"README.md shows two klein {name} commands"
      out[name] = [pattern.sub(lambda m: paths[m.group(0)], w) for w in words[2:]]
  assert set(out) == {"convert", "main", "export"}, f"README.md's klein commands: {sorted(out)}"
  return out


def run_module(words, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  r = subprocess.run([sys.executable, "-m", *words], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                     env=env)
  assert r.returncode == 0, (words, r.stdout[-2000:], r.stderr[-3000:])
  return r


@pytest.fixture(scope="module")
def readme(klein, scenes_dir, tmp_path_factory):
  """The README's klein commands on the tiny klein; the first (convert: import every tensor) already run."""
  root = tmp_path_factory.mktemp("klein_readme")
  paths = {"FLUX.2-klein-base-4B": str(klein), "klein-vbanana": str(root / "klein-vbanana"),
           "klein-generalist": str(root / "klein-generalist"), "runs/klein": str(root / "run"),
           "data/scenes": scenes_dir}
  commands = readme_klein_commands(paths)
  run_module(commands["convert"])
  assert (root / "klein-vbanana").is_dir()
  return commands, paths


def args(readme_main):
  """The README's instruct command (configs/klein_instruct_gpu.py), CPU-sized: full fine-tuning in float32 on
  8 devices (FSDP 8), 32 px, a few steps."""
  words = list(readme_main[1:])  # after vbanana.main
  i = next(i for i, w in enumerate(words) if w.startswith("--config="))
  words[i] += (f",res=32,batch={BATCH},steps={STEPS},prompt_len=32,text_bytes=224,scenes=64,workers=0,evals=4,"
               "eval_every=0,image_steps=4,guidance=1.0,lr=1e-3,peak=1e11")
  return words + ["--config.model.dtype=float32", "--config.model.remat=none", "--config.model.text_layers=(1,2,3)",
                  "--config.train.log_every=1", f"--config.checkpoint.every={CKPT_EVERY}",
                  "--config.checkpoint.keep=10", "--config.train.tensorboard=False",
                  "--config.optim.warmup_steps=2"]


@pytest.fixture(scope="module")
def run(readme):
  """The run, killed (SIGKILL) after its first checkpoint and resumed to the end by the same command.
  (workdir, the losses logged before the kill, the step it resumed from, the resumed run's stdout)."""
  commands, paths = readme
  workdir = pathlib.Path(paths["runs/klein"])
  # The two trainer processes share a persistent compilation cache: the resumed one reuses the first one's
  # programs (the same executables), so the test pays for one compile of the train step, not two.
  cache = dict(JAX_COMPILATION_CACHE_DIR=str(workdir.parent / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  saved = {k: os.environ.get(k) for k in cache}
  os.environ.update(cache)
  try:
    return _killed_and_resumed(workdir, args(commands["main"]))
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _killed_and_resumed(workdir, argv):
  proc = start_main(argv, start_new_session=True)
  reached = wait_for(lambda: CKPT_EVERY in checkpoints(workdir) and
                     max(losses(workdir), default=0) >= CKPT_EVERY + 3, proc, timeout=900)
  proc.kill()  # SIGKILL: no handler runs, no checkpoint is saved on the way out
  out = proc.communicate()[0]
  assert reached, out[-3000:]
  assert proc.returncode == -9, proc.returncode
  init_from = next(w for w in argv if w.startswith("--config=")).split("init_from=")[1].split(",")[0]
  assert f"Initialised params and EMA params from {init_from}" in out, out[-3000:]  # convert's copy
  before = losses(workdir)
  resumed_from = max(s for s in checkpoints(workdir) if s <= max(before))
  r = run_main(*argv, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, before, resumed_from, r.stdout


def test_loss_falls_and_resume_after_sigkill_repeats_the_losses(run):
  workdir, before, resumed_from, stdout = run
  assert "Resumed from" in stdout and f"at step {resumed_from}" in stdout
  after = losses(workdir)
  assert sorted(after) == list(range(1, STEPS + 1))
  overlap = [s for s in before if s > resumed_from]
  assert overlap, (before, resumed_from)  # steps trained twice: before the kill and after the resume
  np.testing.assert_allclose([after[s] for s in overlap], [before[s] for s in overlap], rtol=1e-6)
  first, last = np.mean([after[s] for s in range(1, 5)]), np.mean([after[s] for s in range(STEPS - 3, STEPS + 1)])
  print(f"loss {first:.3f} (steps 1-4) -> {last:.3f} (steps {STEPS - 3}-{STEPS}); resumed from {resumed_from}, "
        f"steps {overlap} trained twice, identical")
  assert last < 0.95 * first, (first, last)


def test_every_evaluator_writes_its_metrics(run):
  workdir = run[0]
  rows = [r for r in metrics_writer.read_metrics(str(workdir)) if any(k.endswith("/num_examples") for k in r)]
  assert rows and rows[-1]["step"] == STEPS
  row = rows[-1]
  for name in EVALUATED:
    assert row.get(f"{name}/num_examples") == 4, name
    metrics = [v for k, v in row.items() if k.startswith(name + "/") and k != f"{name}/seconds"]
    assert any(np.isfinite(v) for v in metrics if isinstance(v, float)), (name, metrics)
  assert list((workdir / "samples").glob("*")) or (workdir / "metrics.jsonl").exists()


def _from_pretrained(folder):
  from diffusers import Flux2Transformer2DModel  # pylint: disable=g-import-not-at-top
  model, info = Flux2Transformer2DModel.from_pretrained(str(folder), output_loading_info=True)
  assert all(not info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
  return model.eval()


def _unseen_batch(cfg, seed):
  """Random tokens, prompt embeddings and times, one reference image: no training batch looked like it."""
  return fx.torch_inputs(dict(in_channels=cfg.in_channels, joint_attention_dim=cfg.joint_attention_dim), 2, (4, 4),
                         ((4, 4),), text_length=32, seed=seed)


def test_export_loads_in_diffusers_with_every_key_and_equal_outputs(run, readme, klein, tmp_path):
  from vbanana.flux2 import transformer as tr  # pylint: disable=g-import-not-at-top
  workdir = run[0]
  # vbanana's transformer with the run's EMA parameters, as the last checkpoint holds them.
  root = checkpoint.checkpoint_dir(str(workdir))
  model_cfg = families.get("flux2").config_from_dict(json.loads((root / checkpoint.MODEL_CONFIG_FILE).read_text()))
  flat = export.read_params_to_host(root / str(STEPS) / checkpoint.STATE, "ema_params")
  graphdef, _ = nnx.split(tr.abstract_model(model_cfg.flux2_config()))
  ours = nnx.merge(graphdef, trees.unflatten({k: jax.numpy.asarray(v) for k, v in flat.items()}))
  hidden, text, t, img_ids, txt_ids = _unseen_batch(model_cfg, seed=11)
  got = np.asarray(ours(hidden, text, t, img_ids, txt_ids))

  # The README's export command as written (bfloat16 tensors, as klein's own folder): a whole pipeline folder.
  commands, paths = readme
  run_module(commands["export"])
  out = pathlib.Path(paths["klein-generalist"])
  for part in ("model_index.json", "transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
    assert (out / part).exists(), part
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  with safe_open(str(out / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
  want_bf16 = fx.torch_forward(_from_pretrained(out / "transformer"), hidden, text, t, img_ids, txt_ids)
  bf16_diff = np.abs(got - want_bf16).max()
  assert bf16_diff <= 0.05 * np.abs(want_bf16).max(), bf16_diff  # bf16 rounding of the weights only

  # float32 (the export's default): diffusers computes exactly what vbanana computes.
  out32 = tmp_path / "klein-generalist-f32"
  export.export_workdir(str(workdir), str(out32))
  torch_model = _from_pretrained(out32 / "transformer")
  want = fx.torch_forward(torch_model, hidden, text, t, img_ids, txt_ids)
  print(f"full fine-tuning export vs vbanana: max abs diff {np.abs(got - want).max():.2e} float32, "
        f"{bf16_diff:.2e} bfloat16 (outputs up to {np.abs(want).max():.2f})")
  assert np.abs(got - want).max() <= 5e-5, np.abs(got - want).max()
  # The fine-tuned weights, not klein's own.
  pretrained = fx.torch_forward(_from_pretrained(klein / "transformer"), hidden, text, t, img_ids, txt_ids)
  assert np.abs(pretrained - want).max() > 1e-3


# ----------------------------------------------------------------------------------------------------------
# LoRA: adapters only, the frozen weights untouched, the merged export = base + scale A B.
# ----------------------------------------------------------------------------------------------------------
def _lora_setup(klein_dir):
  from vbanana import setup as setup_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config(f"{ROOT}/configs/klein_lora_tpu.py:pretrained={klein_dir},res=32,batch={BATCH},"
                             "prompt_len=32,text_bytes=224,lora=4,lora_alpha=8.0,steps=3,lr=1e-2")
  c.model.dtype = c.model.param_dtype = "float32"
  c.model.remat = "none"
  c.model.text_layers = (1, 2, 3)
  c.mesh = dict(data=-1, fsdp=1, tensor=1)
  c.optim.warmup_steps = 0
  return setup_lib.create(c)


def _random_batch(seed):
  from vbanana.model import text as text_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  prompts = ["the depth of the scene as colours", "segment every sphere", "make the cube blue", ""] * 2
  return dict(text=text_lib.tokenize(prompts, 224), inputs=rng.integers(0, 256, (BATCH, 1, 32, 32, 3), np.uint8),
              input_mask=np.arange(BATCH)[:, None] % 2 == 0, target=rng.integers(0, 256, (BATCH, 32, 32, 3), np.uint8),
              task=np.zeros(BATCH, np.int32))


def test_lora_trains_adapters_only_and_exports_base_plus_ba(klein, tmp_path):
  from vbanana import flux2  # pylint: disable=g-import-not-at-top
  from vbanana.flux2 import lora  # pylint: disable=g-import-not-at-top
  setup = _lora_setup(klein)
  base_before = jax.tree.map(np.array, setup.frozen["module"])
  state = setup.init_state()
  # The train state (what checkpoints hold): the adapters, their EMA and AdamW moments; no pretrained weight.
  assert all(k.endswith(("/lora_a", "/lora_b")) for k in trees.flatten(state["params"]))
  assert trees.flatten(state["ema_params"]).keys() == trees.flatten(state["params"]).keys()
  sizes = {int(np.prod(x.shape)) for x in jax.tree.leaves(state["opt_state"])}
  assert max(sizes) <= max(int(np.prod(x.shape)) for x in jax.tree.leaves(state["params"]))
  with jax.set_mesh(setup.mesh):
    for i in range(3):
      state, metrics = setup.train_step(state, setup.shard_batch(_random_batch(i)), setup.frozen)
      assert np.isfinite(float(metrics["loss"]))
  # The frozen weights: the same bits after training, and the same as the folder's.
  base_after = trees.flatten(jax.tree.map(np.array, setup.frozen["module"]))
  for k, v in trees.flatten(base_before).items():
    assert np.array_equal(v, base_after[k]), k
  pretrained = nnx.state(flux2.load_transformer(str(klein)), nnx.Param)
  folder = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(pretrained)}
  assert set(folder) == set(base_after)
  for k, v in folder.items():
    assert np.array_equal(v, base_after[k]), k
  params = trees.flatten(jax.tree.map(np.array, state["params"]))
  assert any(np.abs(v).max() > 0 for k, v in params.items() if k.endswith("/lora_b"))  # the adapters moved

  # Merged export: every adapted kernel is base + (alpha / rank) A B, every other tensor the base's.
  out = tmp_path / "merged"
  setup.family.save(str(out), params, setup.model_cfg, {"step": 3})
  merged = nnx.state(flux2.load_transformer(str(out)), nnx.Param)
  merged = {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(merged)}
  pairs = lora.adapted(params)
  assert len(pairs) == 12  # q/k/v, out and both MLP layers of both streams, four of the single blocks
  scale = setup.model_cfg.lora_scale
  assert scale == 2.0
  worst = 0.0
  for k, v in folder.items():
    if k in pairs:
      a, b = (params[p] for p in pairs[k])
      want = v + scale * np.stack([np.tensordot(a[i], b[i], axes=([a.ndim - 2], [0])) for i in range(len(a))])
      worst = max(worst, float(np.abs(merged[k] - want).max() / np.abs(want).max()))
      np.testing.assert_allclose(merged[k], want, rtol=1e-6, atol=1e-7, err_msg=k)
      assert not np.allclose(merged[k], v), k
    else:
      assert np.array_equal(merged[k], v), k

  # diffusers reads the merged transformer whole, and computes what vbanana's LoRA model computes.
  torch_model = _from_pretrained(out / "transformer")
  hidden, text, t, img_ids, txt_ids = _unseen_batch(setup.model_cfg, seed=5)
  ours = setup.model(state["params"])
  got = np.asarray(ours(hidden, text, t, img_ids, txt_ids))
  want = fx.torch_forward(torch_model, hidden, text, t, img_ids, txt_ids)
  print(f"LoRA: merged kernels vs base + scale A B: {worst:.1e} of the largest entry; merged export in diffusers "
        f"vs vbanana's LoRA model: max abs diff {np.abs(got - want).max():.2e}")
  assert np.abs(got - want).max() <= 5e-5, np.abs(got - want).max()


# ----------------------------------------------------------------------------------------------------------
# launch/: the TPU config's docstring command reaches the host's trainer unchanged.
# ----------------------------------------------------------------------------------------------------------
def test_launch_runs_the_tpu_config_unchanged(klein, tmp_path, monkeypatch):
  """configs/klein_instruct_tpu.py's `launch/tpu_run.sh` line (dry run): the host runs `python -m vbanana.main`
  with the same --config and --workdir, and there (`~` = the host's home, klein downloaded into it) that config
  resolves to klein read from the download, full fine-tuning on the slice's mesh."""
  doc = re.sub(r"\\\n\s*", " ", config_lib.load_module(str(ROOT / "configs" / "klein_instruct_tpu.py")).__doc__)
  line = next(l.strip() for l in doc.splitlines() if l.strip().startswith("launch/tpu_run.sh"))
  words = shlex.split(line)
  r = subprocess.run(["bash", str(ROOT / words[0]), *words[1:], "--dry-run"], capture_output=True, text=True,
                     timeout=60)
  assert r.returncode == 0, r.stderr
  (printed,) = [l[2:] for l in r.stdout.splitlines() if l.startswith("+ ")]
  remote = shlex.split(next(w for w in shlex.split(printed) if w.startswith("--command="))[len("--command="):])
  assert remote[:7] == ["cd", "~/vbanana", "&&", "nohup", "~/venv/bin/python", "-m", "vbanana.main"], remote
  sent = [w for w in words if w.startswith(("--config=", "--workdir="))]
  assert remote[7:9] == sent, (remote, sent)

  home = tmp_path / "home"
  home.mkdir()
  (home / "FLUX.2-klein-base-4B").symlink_to(klein)
  monkeypatch.setenv("HOME", str(home))
  config = config_lib.resolve(config_lib.load_config(sent[0][len("--config="):]))
  assert config.model.family == "flux2" and config.model.pretrained == str(home / "FLUX.2-klein-base-4B")
  assert config.init_from == config.model.pretrained and config.model.lora_rank == 0
  model_cfg = families.get("flux2").model_config(config)
  assert model_cfg.num_layers == 1 and model_cfg.patch_size == 8  # the folder's transformer and VAE
  assert dict(config.mesh) == dict(data=1, fsdp=-1, tensor=1) and config.data.global_batch == 32
