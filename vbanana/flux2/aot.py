r"""The FLUX.2 [klein] transformer's forward compiled for an accelerator, with no accelerator: memory, roofline.

  python -m vbanana.aot --model=klein-4b --topology=h200:1     # the CUDA plugin: pip install -e ".[gpu]"
  python -m vbanana.aot --model=klein-4b --topology=v6e-1      # libtpu (the test extra has it)
  python -m vbanana.aot --model=klein-4b --topology=v5p-8

The program is one forward of the klein-4B transformer at 1024x1024: the target's 64x64 latent tokens, one
64x64 reference image and 512 text tokens (a joint sequence of 8,704), bf16 activations, attention by
platform (splash on TPU, cuDNN on GPU), parameters from random-init shapes only (nothing is downloaded or
allocated). Two rows: parameters in float32 (as training holds them) and in bfloat16 (inference). The batch
is one example per chip, the chips one FSDP axis (parameters split over them, gathered per layer). The table
is vbanana.aot's (per-device memory against the chip's HBM, the analytic FLOPs, the roofline estimate, the
collectives); compiled by the real compiler (libtpu's, XLA:GPU's) through vbanana.accelerators.
"""

from __future__ import annotations

import dataclasses
import time

MODELS = ("klein-4b", "qwen3-4b", "flux2-vae")  # the transformer; klein's text encoder; its VAE (issue 21)
# The 1024x1024 case: 16x VAE downsampling x 2x2 patches -> a 64x64 grid per image; klein's 512 text tokens.
GRID, REFERENCES, TEXT_TOKENS = (64, 64), ((64, 64),), 512
TOPOLOGIES = {"v6e-1": "v6e:1x1"}  # names accelerators.SLICES does not list


@dataclasses.dataclass(frozen=True)
class Program:
  label: str
  param_dtype: str


PROGRAMS = (Program("forward, f32 params", "float32"), Program("forward, bf16 params", "bfloat16"))


def _abstract_params(model, mesh):
  """(graphdef, params as ShapeDtypeStructs carrying the shardings their logical names give on `mesh`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import parallel  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)
  table = parallel.resolve_rules(None)
  flat = []
  for path, var in nnx.to_flat_state(state):
    x = var.get_value()
    names = tuple(var.get_metadata().get("out_sharding") or (None,) * len(x.shape))
    sharding = parallel.named_sharding(mesh, names, table, x.shape)
    flat.append((path, var.replace(jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding))))
  return graphdef, nnx.from_flat_state(flat)


def check(model_name: str, topology: str, *, batch_size: int | None = None, min_headroom: float | None = None):
  """Compiles klein's forward for `topology`; returns vbanana.aot's Report."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import accelerators, aot, parallel  # pylint: disable=g-import-not-at-top
  from vbanana.flux2 import transformer as tr  # pylint: disable=g-import-not-at-top
  if model_name.lower() not in MODELS:
    raise SystemExit(f"vbanana.aot: --model={model_name!r}: expected one of {MODELS}")
  if model_name.lower() in PARTS:
    return check_part(model_name.lower(), topology, min_headroom=min_headroom)
  target = accelerators.target(TOPOLOGIES.get(topology.lower(), topology))
  options = accelerators.compiler_options(target.platform)
  devices = len(target.devices)
  mesh = parallel.make_mesh(dict(data=1, fsdp=devices, tensor=1), devices=target.devices)
  batch_size = batch_size or devices
  img_ids, txt_ids = tr.position_ids(GRID, REFERENCES, TEXT_TOKENS)
  n = img_ids.shape[0]
  attention = _attention(target.platform)
  data = parallel.named_sharding(mesh, ("act_batch", None, None))
  rows = []
  for program in PROGRAMS:
    cfg = tr.config_for(model_name, dtype="bfloat16", param_dtype=program.param_dtype, attention=attention)
    graphdef, params = _abstract_params(tr.abstract_model(cfg), mesh)
    hidden = jax.ShapeDtypeStruct((batch_size, n, cfg.in_channels), "bfloat16", sharding=data)
    text = jax.ShapeDtypeStruct((batch_size, TEXT_TOKENS, cfg.joint_attention_dim), "bfloat16", sharding=data)
    t = jax.ShapeDtypeStruct((batch_size,), "float32", sharding=parallel.named_sharding(mesh, ("act_batch",)))

    def forward(params, hidden, text, t, graphdef=graphdef):
      with parallel.sharding_context(mesh):
        return nnx.merge(graphdef, params)(hidden, text, t, img_ids, txt_ids)

    flops = tr.forward_flops(cfg, n, TEXT_TOKENS) * batch_size
    lower = lambda forward=forward, params=params, hidden=hidden, text=text, t=t: jax.jit(
        forward, out_shardings=data).lower(params, hidden, text, t)
    rows.append(aot._compile(program.label, lower, flops, flops, options))  # pylint: disable=protected-access
  report = aot.Report(config_name=model_name, target=target, rows=rows,
                      min_headroom=aot.MIN_HEADROOM if min_headroom is None else min_headroom)
  report.flux2 = dict(batch_size=batch_size, tokens=n + TEXT_TOKENS, attention=attention, mesh=dict(mesh.shape),
                      params=tr.count_params(tr.abstract_model(tr.config_for(model_name))))
  return report


def _attention(platform: str) -> str:
  """The kernel vbanana picks on `platform` for bf16 activations (the config names none)."""
  return {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}.get(platform, "xla")


def describe(report) -> str:
  from vbanana import accelerators  # pylint: disable=g-import-not-at-top
  t, info = report.target, report.flux2
  note = accelerators.memory_note(t.platform)
  if "part" in info:
    return (f"{info['part']} on {t.name}: {len(t.devices)} x {t.chip.name} ({t.chip.hbm_bytes / 1e9:.1f} GB HBM, "
            f"{t.chip.bf16_flops / 1e12:.0f} TFLOP/s bf16 per chip; {t.chip.source}); {info['params'] / 1e9:.3f} B "
            f"parameters; {info['what']}" + (f"; {note}" if note else ""))
  return (f"{report.config_name} forward on {t.name}: {len(t.devices)} x {t.chip.name} ({t.chip.hbm_bytes / 1e9:.1f} "
          f"GB HBM, {t.chip.bf16_flops / 1e12:.0f} TFLOP/s bf16 per chip; {t.chip.source}); mesh {info['mesh']}; "
          f"{info['params'] / 1e9:.2f} B parameters; 1024x1024 target + one 1024x1024 reference + {TEXT_TOKENS} "
          f"text tokens = {info['tokens']} tokens per example, batch {info['batch_size']}, bf16 activations, "
          f"attention {info['attention']}" + (f"; {note}" if note else ""))


def main(model_name: str, topology: str, *, min_headroom: float | None = None) -> int:
  from vbanana import aot  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  report = check(model_name, topology, min_headroom=min_headroom)
  print(describe(report))
  print(aot.table(report))
  print(aot.verdict(report) + f" ({time.perf_counter() - start:.0f} s)", flush=True)
  return 0 if report.fit else 1


# ----------------------------------------------------------------------------------------------------------
# klein's other parts (issue 21): the Qwen3-4B text encoder cut at layer 27, and the VAE at 1024x1024. One chip,
# parameters replicated; each row one jitted program as the pipeline runs it.
# ----------------------------------------------------------------------------------------------------------
PARTS = ("qwen3-4b", "flux2-vae")
TEXT_BATCHES = (1, 16)  # one prompt; the prompt cache's largest batch of new prompts
VAE_SIZE = (1024, 1024)
# bf16 everywhere; float32 (the parity setting: about 28 GB of klein parameters, more than a v6e chip's 32 GB
# with the transformer's activations) on GPUs only, which also spares libtpu's 12-20 minute VAE compiles.
VAE_DTYPES = {"tpu": ("bfloat16",), "gpu": ("bfloat16", "float32")}


def qwen3_flops(cfg, depth: int, tokens: int) -> float:
  """Matmul FLOPs of one prompt through `depth` layers (2 per multiply-add; both attention products counted
  in full, the causal mask is not a saving XLA makes)."""
  d, hd, i = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
  h, kv = cfg.num_attention_heads, cfg.num_key_value_heads
  per_token = 2 * (d * (h + 2 * kv) * hd + h * hd * d + 3 * d * i)
  return float(depth * (tokens * per_token + 4 * tokens * tokens * h * hd))


def vae_flops(cfg, height: int, width: int, part: str) -> float:
  """Convolution and attention FLOPs of one image through the encoder ('encode') or decoder ('decode')."""
  conv = lambda h, w, cin, cout, k=3, stride=1: 2.0 * (h // stride) * (w // stride) * cin * cout * k * k
  g = cfg.norm_num_groups

  def resnet(h, w, cin, cout):
    return conv(h, w, cin, cout) + conv(h, w, cout, cout) + (conv(h, w, cin, cout, 1) if cin != cout else 0)

  def mid(h, w, c):
    attention = (4 * 2.0 * h * w * c * c + 2 * 2.0 * (h * w) ** 2 * c) if cfg.mid_block_add_attention else 0
    return 2 * resnet(h, w, c, c) + attention

  del g
  total, h, w = 0.0, height, width
  if part == "encode":
    ch = cfg.block_out_channels
    total += conv(h, w, cfg.in_channels, ch[0])
    for i, c in enumerate(ch):
      cin = ch[max(i - 1, 0)]
      for j in range(cfg.layers_per_block):
        total += resnet(h, w, cin if j == 0 else c, c)
      if i < len(ch) - 1:
        total += conv(h, w, c, c, stride=2)
        h, w = h // 2, w // 2
    total += mid(h, w, ch[-1]) + conv(h, w, ch[-1], 2 * cfg.latent_channels)
    return total + conv(h, w, 2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
  ch = tuple(reversed(cfg.decoder_channels))
  h, w = height // cfg.scale, width // cfg.scale
  total += conv(h, w, cfg.latent_channels, cfg.latent_channels, 1) + conv(h, w, cfg.latent_channels, ch[0])
  total += mid(h, w, ch[0])
  for i, c in enumerate(ch):
    cin = ch[max(i - 1, 0)]
    for j in range(cfg.layers_per_block + 1):
      total += resnet(h, w, cin if j == 0 else c, c)
    if i < len(ch) - 1:
      h, w = 2 * h, 2 * w
      total += conv(h, w, c, c)
  return total + conv(h, w, ch[-1], cfg.out_channels)


def _compile_part(label: str, lower, flops: float, options):
  """vbanana.aot's row, tolerating one libtpu 0.0.52 bug: printing the compiled Qwen3 program at batch >= 4
  fails (RET_CHECK 'async-update instruction should have 1 operands'); its memory analysis is fine, and a
  single chip has no collectives to read off the text anyway."""
  import jax  # pylint: disable=g-import-not-at-top
  from vbanana import aot, hlo_stats  # pylint: disable=g-import-not-at-top
  row = aot.Row(label, flops=flops, hardware_flops=flops)
  t0 = time.perf_counter()
  try:
    compiled = lower().compile(options)
  except Exception as e:  # pylint: disable=broad-except  (the compiler's refusal is the answer)
    if "RESOURCE_EXHAUSTED" not in str(e) and "exceeds" not in str(e):
      raise
    row.error, row.compile_seconds = str(e).splitlines()[0][:300], time.perf_counter() - t0
    return row
  row.compile_seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  row.argument_bytes, row.temp_bytes = int(mem.argument_size_in_bytes), int(mem.temp_size_in_bytes)
  row.output_bytes, row.alias_bytes = int(mem.output_size_in_bytes), int(mem.alias_size_in_bytes)
  try:
    text = compiled.as_text()
  except jax.errors.JaxRuntimeError:
    text = ""
  row.collectives, row.custom_calls = hlo_stats.collectives(text), hlo_stats.custom_calls(text)
  return row


def check_part(name: str, topology: str, *, min_headroom: float | None = None):
  """Compiles the text encoder's or the VAE's programs for `topology`; returns vbanana.aot's Report."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from vbanana import accelerators, aot, parallel  # pylint: disable=g-import-not-at-top
  from vbanana.flux2 import text_encoder as te  # pylint: disable=g-import-not-at-top
  from vbanana.flux2 import vae as vae_lib  # pylint: disable=g-import-not-at-top
  target = accelerators.target(TOPOLOGIES.get(topology.lower(), topology))
  options = accelerators.compiler_options(target.platform)
  mesh = parallel.make_mesh(dict(data=1, fsdp=len(target.devices), tensor=1), devices=target.devices)
  replicated = parallel.named_sharding(mesh, ())
  rows = []

  def compile_row(label, module, fn, inputs, flops):
    graphdef, params = _abstract_params(module, mesh)

    def program(params, *args):
      with parallel.sharding_context(mesh):
        return fn(nnx.merge(graphdef, params), *args)

    lower = lambda: jax.jit(program).lower(params, *inputs)
    rows.append(_compile_part(label, lower, flops, options))

  if name == "qwen3-4b":
    cfg = te.Qwen3Config()
    depth = te.depth_for(cfg, (9, 18, 27))
    module = nnx.eval_shape(lambda: te.Qwen3Encoder(cfg, depth=depth, rngs=nnx.Rngs(0), dtype=jnp.bfloat16,
                                                    param_dtype=jnp.bfloat16))
    for b in TEXT_BATCHES:
      ids = jax.ShapeDtypeStruct((b, TEXT_TOKENS), jnp.int32, sharding=replicated)
      compile_row(f"Qwen3 to layer {depth}, {TEXT_TOKENS} tokens, batch {b}, bf16", module,
                  lambda m, i, a: m(i, a, (9, 18, 27)), (ids, ids), b * qwen3_flops(cfg, depth, TEXT_TOKENS))
    params = sum(int(jnp.prod(jnp.array(x.shape))) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
    what = (f"klein's prompt encoder: Qwen3-4B's first {depth} layers, hidden states 9, 18, 27 stacked, "
            f"{TEXT_TOKENS} tokens, bf16 parameters and activations")
  else:
    cfg = vae_lib.VAEConfig()
    (h, w) = VAE_SIZE
    for dtype in VAE_DTYPES.get(target.platform, VAE_DTYPES["gpu"]):
      dt = jnp.dtype(dtype)
      module = nnx.eval_shape(lambda dt=dt: vae_lib.Flux2VAE(cfg, rngs=nnx.Rngs(0), dtype=dt, param_dtype=dt))
      image = jax.ShapeDtypeStruct((1, h, w, 3), dt, sharding=replicated)
      tokens = jax.ShapeDtypeStruct((1, h // 16, w // 16, cfg.token_channels), jnp.float32, sharding=replicated)
      compile_row(f"encode {h}x{w} -> tokens, {dtype}", module, lambda m, x: m.encode_images(x), (image,),
                  vae_flops(cfg, h, w, "encode"))
      compile_row(f"decode tokens -> {h}x{w}, {dtype}", module, lambda m, z: m.decode_images(z), (tokens,),
                  vae_flops(cfg, h, w, "decode"))
    params = sum(int(jnp.prod(jnp.array(x.shape))) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
    what = f"the FLUX.2 VAE, one {h}x{w} image, encode (mode, patchify, normalise) and decode as separate programs"
  report = aot.Report(config_name=name, target=target, rows=rows,
                      min_headroom=aot.MIN_HEADROOM if min_headroom is None else min_headroom)
  report.flux2 = dict(part=name, params=params, what=what)
  return report


__all__ = ["check", "check_part", "main", "describe", "MODELS"]
