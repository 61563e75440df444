"""The TPU path on a CPU machine: splash attention in Pallas interpret mode against the written-out attention,
and `vbanana.aot` compiling with libtpu's real TPU compiler for a small slice (no TPU attached)."""
import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cli_helpers import ROOT
from vbanana import accelerators, aot, config_lib, families, hlo_stats, parallel
from vbanana import setup as setup_lib
from vbanana.model import config as model_config_lib, dit, layers, splash

pytestmark = pytest.mark.slow  # compiles for a TPU slice

TOPOLOGY = "v5e:2x2"  # 4 chips, one host: the smallest slice with room for FSDP x tensor


def _heads_first(fn):
  return lambda q, k, v, m: jnp.swapaxes(fn(*(jnp.swapaxes(a, 1, 2) for a in (q, k, v)), m), 1, 2)


def test_splash_matches_reference_attention_with_padding_forward_and_gradients():
  b, s, n, d = 3, 150, 2, 24  # neither the sequence nor the head dim is a multiple of the kernel's 128
  q, k, v = (jax.random.normal(key, (b, s, n, d)) for key in jax.random.split(jax.random.key(0), 3))
  mask = np.ones((b, s), bool)
  mask[1, 20:90] = False  # an absent input slot
  mask[2, :40] = False    # instruction padding
  mask = jnp.asarray(mask)
  reference = _heads_first(layers.attention)
  np.testing.assert_allclose(splash.attention(q, k, v, mask), reference(q, k, v, mask), atol=2e-6)
  loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, mask)))
  got = jax.grad(loss(splash.attention), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(reference), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, atol=2e-5)
  # A masked key carries no gradient: nothing attends to it.
  assert float(jnp.max(jnp.abs(got[1][1, 20:90]))) == 0.0


def _model_and_batch(attention):
  cfg = model_config_lib.config_for("tiny", image_size=16, patch_size=4, text_len=32, max_inputs=2,
                                    attention=attention)
  model = dit.DiT(cfg, rngs=nnx.Rngs(0))
  # Give the zero-initialised output layers weights, so the comparison sees the attention.
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [l + 0.05 * jax.random.normal(k_, l.shape)
                                                 for l, k_ in zip(leaves, keys)]))
  rng = np.random.default_rng(0)
  text = np.zeros((2, 32), np.int32)
  text[0, :20], text[1, :7] = rng.integers(2, 258, 20), rng.integers(2, 258, 7)  # short instructions
  batch = dict(x_t=jnp.asarray(rng.normal(size=(2, 16, 16, 3)), jnp.float32), t=jnp.asarray([0.3, 0.9]),
               text=jnp.asarray(text), inputs=jnp.asarray(rng.normal(size=(2, 2, 16, 16, 3)), jnp.float32),
               input_mask=jnp.asarray([[True, False], [False, False]]))  # unused input slots
  return cfg, model, batch


def test_splash_model_equals_written_out_model_forward_and_gradients():
  _, model_xla, batch = _model_and_batch("xla")
  _, model_splash, _ = _model_and_batch("splash")
  # Compiled, as a train step runs them (op by op, the interpreted splash kernel takes minutes on a CPU).
  run = nnx.jit(lambda m: m(batch["x_t"], batch["t"], batch["text"], batch["inputs"], batch["input_mask"]))
  np.testing.assert_allclose(run(model_splash), run(model_xla), atol=2e-5)
  grad = nnx.jit(lambda m: nnx.grad(lambda m: jnp.mean(run(m) ** 2))(m))
  g_splash = jax.tree.leaves(nnx.state(grad(model_splash), nnx.Param))
  g_xla = jax.tree.leaves(nnx.state(grad(model_xla), nnx.Param))
  for a, b in zip(g_splash, g_xla):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_attention_resolves_by_the_platform_the_program_is_built_for():
  assert layers.resolve_attention(None) == "xla"  # this CPU
  assert layers.resolve_attention("cudnn") == "cudnn"
  assert layers.resolve_attention(None, "bfloat16", platform="gpu") == "cudnn"
  # The setup resolves it once, from the platform of the devices it is built for.
  tpu = accelerators.target(TOPOLOGY)
  assert setup_lib.create(_tiny_pod_config(), tpu.devices).attention == "splash"
  with pytest.raises(ValueError, match="ModelConfig.attention"):
    model_config_lib.config_for("tiny", attention="flash")


def _tiny_pod_config(**model):
  """A small model on the TPU rules table, FSDP 2 x tensor 2 over the 4 chips of v5e:2x2."""
  c = config_lib.load_config("configs/pretrain_tpu.py:size=tiny,res=32,patch=4,batch=8,data=1,fsdp=2,tensor=2,"
                             "data_dir=/nonexistent")
  c.evals = {"generation": dict(type="generation", steps=2, text_scale=2.0, batch_size=8)}
  for key, value in model.items():
    c.model[key] = value
  return c


def test_aot_compiles_train_step_and_sampler_for_a_tpu_slice_with_splash_and_fsdp_tensor_sharding():
  report = aot.check(_tiny_pod_config(), TOPOLOGY, config_name="tiny-pod")
  assert [r.program.split(" (")[0] for r in report.rows] == ["train step", "sample"]
  assert report.fit, aot.verdict(report)
  for row in report.rows:
    assert row.custom_calls.get("tpu_custom_call", 0) > 0, row.custom_calls  # the splash kernel
    assert 0 < row.total_bytes < report.target.chip.hbm_bytes
  train = report.rows[0]
  # FSDP: parameters are gathered for the forward and gradients reduce-scattered (or all-reduced) back.
  assert train.collectives["all-gather"]["count"] > 0
  assert train.collectives["reduce-scatter"]["count"] + train.collectives["all-reduce"]["count"] > 0
  assert aot.verdict(report).startswith("FIT: tiny-pod on v5e:2x2")
  assert aot.table(report).count("\n| ") == len(report.rows)  # one row per program under the header


def test_aot_command_refuses_a_config_that_cannot_fit_in_one_line():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  r = subprocess.run(
      [sys.executable, "-m", "vbanana.aot", "--config=configs/pretrain_tpu.py:size=tiny,res=32,patch=4,"
       "batch=65536,data=1,fsdp=2,tensor=2,data_dir=/nonexistent", f"--topology={TOPOLOGY}", "--programs=train"],
      capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
  last = r.stdout.strip().splitlines()[-1]
  assert last.startswith("DOES NOT FIT: configs/pretrain_tpu.py:size=tiny,") and " on v5e:2x2 " in last, last
  assert "GB over the" in last and "model.remat=full" in last and "data.global_batch" in last


def test_aot_batch_layout_is_the_pipelines(scenes_dir):
  from vbanana.data import pipeline
  c = config_lib.load_config(f"configs/quickstart.py:batch=8,res=32,data_dir={scenes_dir}")
  batch = next(pipeline.make_train_iterator(c.data, process_index=0, process_count=1))
  layout = families.get("dit").batch_layout(config_lib.model_config(c), 8)
  assert sorted(layout) == sorted(k for k in batch if k not in ("weight", "skipped"))  # the step's optional keys
  for key, (shape, dtype) in layout.items():
    assert (tuple(batch[key].shape), str(batch[key].dtype)) == (shape, dtype), key


HLO = """HloModule step

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %g = f32[32]{0} all-gather(f32[8]{0} %x), dimensions={0}, replica_groups={{0,1,2,3}}
  %ags = (f32[8]{0}, f32[32]{0}) all-gather-start(f32[8]{0} %x), dimensions={0}
  ROOT %t = (s32[], f32[8]) tuple(%p)
}

%cond (p: (s32[], f32[8])) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %r = f32[8]{0} all-reduce(f32[8]{0} %a), to_apply=%add
  %w = (s32[], f32[8]) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"28"}}
  ROOT %k = f32[8]{0} custom-call(%a), custom_call_target="tpu_custom_call"
}
"""


def test_collectives_in_a_scanned_body_count_once_per_iteration():
  c = hlo_stats.collectives(HLO)
  assert c["all-gather"] == {"count": 2 * 28.0, "bytes": 2 * 28.0 * 32 * 4}
  assert c["all-reduce"] == {"count": 1.0, "bytes": 32.0}
  assert c["reduce-scatter"]["count"] == 0
  assert hlo_stats.custom_calls(HLO) == {"tpu_custom_call": 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pretrain_tpu", "instruct_tpu"])
def test_pod_config_trains_and_evaluates_on_cpu_with_only_its_size_arguments(name, scenes_dir, tmp_path):
  """The pod config itself (its mesh data=2 x fsdp=-1 over 8 CPU devices, rules, bf16, mixture, evaluators),
  sized down by its own arguments, with the scenes data of the test session. (pretrain_2b_tpu is
  pretrain_tpu's config function with other size defaults: sized down to tiny it is the same run.)"""
  from cli_helpers import losses, run_main
  r = run_main(f"--config=configs/{name}.py:size=tiny,res=32,patch=4,batch=8,steps=2,scenes=64,workers=1,"
               f"evals=8,data_dir={scenes_dir}", f"--workdir={tmp_path}", "--config.train.log_every=1", timeout=1500)
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(losses(tmp_path)) == [1, 2] and all(np.isfinite(list(losses(tmp_path).values())))
  from vbanana import metrics_writer
  final = {k for row in metrics_writer.read_metrics(str(tmp_path)) for k in row}
  evals = config_lib.load_config(f"configs/{name}.py").evals
  for task in evals:
    assert any(k.startswith(f"{task}/") for k in final), (task, sorted(final))


def test_pod_config_without_its_data_names_the_build_command_in_one_line(tmp_path):
  from cli_helpers import run_main
  r = run_main(f"--config=configs/pretrain_tpu.py:size=tiny,res=32,patch=4,batch=8,data_dir={tmp_path}/data",
               f"--workdir={tmp_path}/run", timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]
  fatal = [line for line in r.stderr.splitlines() if line.startswith("FATAL")]
  assert len(fatal) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert fatal[0].startswith("FATAL no scenes dataset at ") and "vbanana.data.build_scenes" in fatal[0], fatal
  assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.array_record*"))
