"""The whole FLUX.2 [klein] generator in JAX: diffusers' `Flux2KleinPipeline`, step for step.

  pipe = vbanana.flux2.load_pipeline("FLUX.2-klein-base-4B", dtype="bfloat16")
  images = pipe("a red cube on a wooden table", height=1024, width=1024)           # (1, 1024, 1024, 3) in [0, 1]
  edited = pipe("make the cube blue", image=PIL.Image.open("cube.png"), num_inference_steps=28)

What a call does, as diffusers does it:
  1. Prompts -> Qwen3 hidden states (klein: layers 9, 18, 27 stacked per token, 512 tokens), through a
     `PromptCache`; with real classifier-free guidance (guidance_scale > 1 and a non-distilled model) the
     negative prompt "" too.
  2. Reference images (editing): each resized to at most 1024^2 pixels (Lanczos), centre-cropped to a
     multiple of 16, encoded by the VAE (mode), patchified and normalised; token positions (10 + 10 i, h, w, 0),
     appended after the target's tokens. Without height/width the first reference sets the output size.
  3. Latents: given (diffusers' layout, (B, 128, H/16, W/16): patchified and normalised), or drawn from
     `seed`; the schedule from the folder's scheduler_config.json (`scheduler.FlowMatchSchedule`).
  4. One jitted loop over the steps (`lax.fori_loop`): the transformer on [target; references] with the
     prompt and, batched with it, the negative prompt; pred = neg + w (cond - neg) on the target tokens;
     Euler x <- x + (sigma_next - sigma) pred.
  5. Tokens -> un-normalise, unpatchify, VAE decode -> (x / 2 + 1/2) clipped: float32 (B, H, W, 3) in [0, 1],
     diffusers' output_type="np".
On a mesh (load_pipeline(..., mesh=)) every part is placed by its logical names and the batch is split over
the batch axes when it divides them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from vbanana import parallel
from vbanana.flux2 import prompt_cache as prompt_cache_lib
from vbanana.flux2 import scheduler as scheduler_lib
from vbanana.flux2 import text_encoder as text_encoder_lib
from vbanana.flux2 import transformer as transformer_lib
from vbanana.flux2 import vae as vae_lib
from vbanana.flux2 import weights
from vbanana.flux2.tokenizer import KleinTokenizer

PIPELINE_CLASS = "Flux2KleinPipeline"
MAX_REFERENCE_AREA = 1024 * 1024
MIN_REFERENCE_SIDE = 64
MAX_REFERENCE_ASPECT = 8
DEFAULT_SAMPLE_SIZE = 128  # latent positions per side without height/width (1024 px at factor 8)


# ----------------------------------------------------------------------------------------------------------
# Reference images, as diffusers' Flux2ImageProcessor prepares them.
# ----------------------------------------------------------------------------------------------------------
def check_reference(image: Any, index: int = 0) -> None:
  if not isinstance(image, Image.Image):
    raise ValueError(f"image[{index}] is {type(image).__name__}; reference images are PIL images")
  w, h = image.size
  if w < MIN_REFERENCE_SIDE or h < MIN_REFERENCE_SIDE:
    raise ValueError(f"image[{index}] is {w}x{h}; both sides must be at least {MIN_REFERENCE_SIDE} px")
  if max(w / h, h / w) > MAX_REFERENCE_ASPECT:
    raise ValueError(f"image[{index}] is {w}x{h}; the aspect ratio may be at most {MAX_REFERENCE_ASPECT}:1")


def prepare_reference(image: Image.Image, multiple: int) -> np.ndarray:
  """float32 (H, W, 3) in [-1, 1]: shrunk to at most 1024^2 pixels (Lanczos), then centre-cropped to a
  multiple of `multiple` (16 for klein), RGB."""
  w, h = image.size
  if w * h > MAX_REFERENCE_AREA:
    s = math.sqrt(MAX_REFERENCE_AREA / (w * h))
    image = image.resize((int(w * s), int(h * s)), Image.Resampling.LANCZOS)
    w, h = image.size
  cw, ch = (w // multiple) * multiple, (h // multiple) * multiple
  left, top = (w - cw) // 2, (h - ch) // 2
  image = image.crop((left, top, left + cw, top + ch))
  if image.mode != "RGB":
    image = image.convert("RGB")
  return np.asarray(image).astype(np.float32) / 255.0 * 2.0 - 1.0


# ----------------------------------------------------------------------------------------------------------
# Jitted pieces.
# ----------------------------------------------------------------------------------------------------------
@nnx.jit
def _encode_reference(vae: vae_lib.Flux2VAE, image):
  return vae.encode_images(image)


@nnx.jit
def _decode(vae: vae_lib.Flux2VAE, tokens):
  """klein tokens (B, h, w, C) -> images in [0, 1] as diffusers postprocesses them: x / 2 + 1/2, clipped."""
  latents = vae.unpatchify(vae.bn.denormalize(tokens.astype(jnp.float32)))
  images = vae.decode(latents).astype(jnp.float32)
  return jnp.clip(images * 0.5 + 0.5, 0.0, 1.0)


def make_sampler(transformer: transformer_lib.Flux2Transformer, img_ids: np.ndarray, txt_ids: np.ndarray,
                 num_target: int, guided: bool):
  """A jitted `(state, x, references, cond, neg, sigmas, times, scale) -> x` running every step.

  The position ids are constants of the program (the transformer builds its rotary table from them on the
  host, in float64 as diffusers does). Conditional and unconditional passes share one batch of 2B rows."""
  graphdef, _ = nnx.split(transformer)

  def run(state, x, references, cond, neg, sigmas, times, scale):
    model = nnx.merge(graphdef, state)
    b = x.shape[0]

    def step(i, x):
      inputs = x if references is None else jnp.concatenate([x, references], axis=1)
      t = jnp.full((b,), times[i], jnp.float32)
      if guided:
        out = model(jnp.concatenate([inputs, inputs]), jnp.concatenate([cond, neg]), jnp.concatenate([t, t]),
                    img_ids, txt_ids)[:, :num_target]
        pred_cond, pred_neg = out[:b], out[b:]
        pred = pred_neg + scale * (pred_cond - pred_neg)
      else:
        pred = model(inputs, cond, t, img_ids, txt_ids)[:, :num_target]
      return (x + (sigmas[i + 1] - sigmas[i]) * pred).astype(jnp.float32)

    return jax.lax.fori_loop(0, times.shape[0], step, x)

  return jax.jit(run)


# ----------------------------------------------------------------------------------------------------------
# The pipeline.
# ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class KleinPipeline:
  """The loaded parts; call it like diffusers' pipeline (see the module docstring)."""
  transformer: transformer_lib.Flux2Transformer
  text_encoder: text_encoder_lib.Qwen3Encoder
  tokenizer: KleinTokenizer
  vae: vae_lib.Flux2VAE
  schedule: scheduler_lib.FlowMatchSchedule
  is_distilled: bool = False
  mesh: Any = None
  rules: Any = None
  _caches: dict = dataclasses.field(default_factory=dict, repr=False)
  _samplers: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def multiple(self) -> int:
    """Pixels per token side: the VAE's factor times the 2x2 patch (16 for klein)."""
    return self.vae.cfg.scale * self.vae.cfg.patch_size[0]

  def prompt_cache(self, max_sequence_length: int = 512,
                   layers: Sequence[int] = prompt_cache_lib.KLEIN_LAYERS) -> prompt_cache_lib.PromptCache:
    key = (int(max_sequence_length), tuple(int(k) for k in layers))
    if key not in self._caches:
      self._caches[key] = prompt_cache_lib.PromptCache(self.text_encoder, self.tokenizer, max_length=key[0],
                                                       layers=key[1], mesh=self.mesh, rules=self.rules)
    return self._caches[key]

  def _place(self, x: np.ndarray | jax.Array) -> jax.Array:
    """On the mesh, split over the batch axes when they divide the batch (else replicated)."""
    if self.mesh is None:
      return jnp.asarray(x)
    names = ("act_batch",) + (None,) * (np.ndim(x) - 1)
    return jax.device_put(x, parallel.named_sharding(self.mesh, names, self.rules, np.shape(x)))

  def __call__(self, prompt: str | Sequence[str], height: int | None = None, width: int | None = None,
               num_inference_steps: int = 50, guidance_scale: float = 4.0, latents=None, image=None,
               seed: int = 0, max_sequence_length: int = 512,
               text_encoder_out_layers: Sequence[int] = prompt_cache_lib.KLEIN_LAYERS) -> np.ndarray:
    """float32 (B, H, W, 3) in [0, 1]. `latents`: diffusers' (B, 128, H/16, W/16) start (patchified and
    normalised) or None (drawn from `seed`); `image`: a PIL image or a list of them (editing)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
      raise ValueError("prompt: expected a string or a non-empty list of strings")
    b = len(prompts)
    cfg = self.transformer.cfg
    layers = tuple(int(k) for k in text_encoder_out_layers)
    if len(layers) * self.text_encoder.width != cfg.joint_attention_dim:
      raise ValueError(f"text_encoder_out_layers={layers} give embeddings of width {len(layers)} x "
                       f"{self.text_encoder.width}; the transformer reads joint_attention_dim={cfg.joint_attention_dim}")

    # Reference images (editing), checked and prepared first (cheap): the first sets the size by default.
    references = [] if image is None else list(image) if isinstance(image, (list, tuple)) else [image]
    pixels = []
    for i, img in enumerate(references):
      check_reference(img, i)
      pixels.append(prepare_reference(img, self.multiple))
      height, width = height or pixels[-1].shape[0], width or pixels[-1].shape[1]
    height = height or DEFAULT_SAMPLE_SIZE * self.vae.cfg.scale
    width = width or DEFAULT_SAMPLE_SIZE * self.vae.cfg.scale
    grid = (int(height) // self.multiple, int(width) // self.multiple)
    if min(grid) < 1:
      raise ValueError(f"height {height} x width {width}: both must be at least {self.multiple} px")

    # Initial latents, diffusers' layout (B, C, h, w) -> tokens (B, h * w, C).
    shape = (b, cfg.in_channels) + grid
    if latents is None:
      start = np.random.default_rng(seed).standard_normal(shape, np.float32)  # the same on any device or mesh
    else:
      start = np.asarray(latents, np.float32)
      if start.shape != shape:
        raise ValueError(f"latents have shape {start.shape}; for {b} prompt(s) at {height}x{width} expected "
                         f"{shape} (diffusers' patchified, normalised latents, channels first)")
    x = jnp.asarray(start).reshape(b, cfg.in_channels, -1).transpose(0, 2, 1)

    # Prompts (and with real CFG the negative prompt "") -> stacked Qwen3 hidden states, through the cache.
    guided = guidance_scale > 1 and not self.is_distilled
    cache = self.prompt_cache(max_sequence_length, layers)
    embeddings = cache(prompts + [""] if guided else prompts)  # one encoder run for the new ones
    cond = embeddings[:b]
    neg = np.broadcast_to(embeddings[b:], cond.shape) if guided else None

    # Reference tokens: each image its own grid, after the target's.
    ref_tokens, ref_grids = [], []
    for p in pixels:
      tokens = _encode_reference(self.vae, jnp.asarray(p)[None])[0]  # (h, w, C)
      ref_grids.append(tuple(tokens.shape[:2]))
      ref_tokens.append(tokens.reshape(-1, tokens.shape[-1]))
    refs = None
    if ref_tokens:
      refs = jnp.broadcast_to(jnp.concatenate(ref_tokens)[None], (b,) + (sum(len(t) for t in ref_tokens),
                                                                           ref_tokens[0].shape[-1]))
    num_target = grid[0] * grid[1]
    img_ids, txt_ids = transformer_lib.position_ids(grid, ref_grids, cond.shape[1])
    sigmas = self.schedule.sigmas(int(num_inference_steps), num_target)
    times = self.schedule.model_times(sigmas)

    key = (b, grid, tuple(ref_grids), cond.shape[1], guided)
    if key not in self._samplers:
      self._samplers[key] = make_sampler(self.transformer, img_ids, txt_ids, num_target, guided)
    run = self._samplers[key]
    dtype = jnp.dtype(cfg.dtype)
    with parallel.sharding_context(self.mesh, self.rules):
      x = run(nnx.state(self.transformer), self._place(x), None if refs is None else self._place(refs),
              self._place(jnp.asarray(cond, dtype)), None if neg is None else self._place(jnp.asarray(neg, dtype)),
              jnp.asarray(sigmas), jnp.asarray(times), jnp.float32(guidance_scale))
      tokens = x.reshape((b,) + grid + (x.shape[-1],))
      # One image at a time: one compiled decoder for every batch size, and a 1024^2 decode's activations
      # (128 channels at full resolution) held for one image only.
      images = [np.asarray(jax.device_get(_decode(self.vae, tokens[i:i + 1]))) for i in range(b)]
    return np.concatenate(images).astype(np.float32)


def read_model_index(path: str) -> dict:
  """The folder's model_index.json ({} when absent); another pipeline class is an error naming it."""
  index = os.path.join(path, "model_index.json")
  if not os.path.isfile(index):
    return {}
  with open(index) as f:
    d = json.load(f)
  name = d.get("_class_name", PIPELINE_CLASS)
  if name != PIPELINE_CLASS:
    raise ValueError(f"{index}: _class_name {name!r}; vbanana.flux2 loads {PIPELINE_CLASS!r} folders (FLUX.2 "
                     "[klein], whose text encoder is Qwen3)")
  return d


def load_pipeline(path: str, *, dtype: str = "float32", text_encoder_depth: int | None = None,
                  text_encoder_layers: Sequence[int] | None = None, mesh=None, rules=None) -> KleinPipeline:
  """klein from a diffusers pipeline folder (model_index.json, transformer/, text_encoder/, tokenizer/, vae/,
  scheduler/), as `huggingface-cli download black-forest-labs/FLUX.2-klein-base-4B` lays it out.

  dtype: of every part's parameters and activations ('bfloat16' for the real model: 8 GB of transformer,
  6 GB of Qwen3 cut at layer 27). text_encoder_depth: Qwen3 layers to keep (default: all; klein's default
  layers (9, 18, 27) need 27), or text_encoder_layers: the hidden states the calls will stack (keeps what
  they need). On `mesh`, parts are placed by their logical names under `rules`."""
  from vbanana.flux2.api import load_transformer  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise FileNotFoundError(f"{path}: not a folder (expected a klein pipeline folder)")
  index = read_model_index(path)
  for part in ("transformer", "text_encoder", "tokenizer", "vae", "scheduler"):
    if not os.path.isdir(os.path.join(path, part)):
      raise FileNotFoundError(f"{path}: no {part}/ folder (a klein pipeline folder has transformer/, "
                              "text_encoder/, tokenizer/, vae/ and scheduler/)")
  transformer = load_transformer(os.path.join(path, "transformer"), dtype=dtype, param_dtype=dtype, mesh=mesh,
                                 rules=rules)
  text_encoder = text_encoder_lib.load_text_encoder(
      os.path.join(path, "text_encoder"), depth=text_encoder_depth, dtype=dtype, mesh=mesh, rules=rules,
      layers_asked=None if text_encoder_layers is None else tuple(text_encoder_layers))
  vae = vae_lib.load_vae(os.path.join(path, "vae"), dtype=dtype, mesh=mesh, rules=rules)
  tokenizer = KleinTokenizer(os.path.join(path, "tokenizer"))
  schedule = scheduler_lib.FlowMatchSchedule.from_folder(os.path.join(path, "scheduler"))
  if transformer.cfg.in_channels != vae.cfg.token_channels:
    raise ValueError(f"{path}: transformer in_channels={transformer.cfg.in_channels} but the VAE's tokens have "
                     f"{vae.cfg.token_channels} channels (latent_channels x 4)")
  return KleinPipeline(transformer, text_encoder, tokenizer, vae, schedule,
                       is_distilled=bool(index.get("is_distilled", False)), mesh=mesh, rules=rules)


# ----------------------------------------------------------------------------------------------------------
# Files in, PNGs out: what `python -m vbanana.predict --checkpoint=<klein folder>` calls.
# ----------------------------------------------------------------------------------------------------------
TASK_NAMES = {"generation": "generation", "generate": "generation", "editing": "editing", "edit": "editing"}


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8, as diffusers' numpy_to_pil rounds."""
  return (np.asarray(images) * 255).round().astype(np.uint8)


def predict_files(checkpoint: str, task: str, prompt: str, inputs: Sequence[str] = (), out_dir: str = ".", *,
                  num_samples: int = 1, height: int | None = None, width: int | None = None,
                  steps: int = 50, guidance_scale: float = 4.0, seed: int = 0, dtype: str = "float32",
                  max_sequence_length: int = 512,
                  text_encoder_out_layers: Sequence[int] = prompt_cache_lib.KLEIN_LAYERS,
                  aspect_ratio: float | None = None, pipeline: KleinPipeline | None = None) -> list[str]:
  """Runs klein on files and writes PNGs into `out_dir`; returns their paths.

  generation: `prompt` -> generated_000.png ... (num_samples of them, one batch: latents drawn from `seed`,
  `np.random.default_rng(seed).standard_normal((num_samples, 128, H/16, W/16), np.float32)`; without
  height/width the size is klein's default square, or with `aspect_ratio` (width / height) a shape of about
  the same area); editing: each image of `inputs` edited by `prompt` (it is the reference; the output keeps
  its size cropped to a multiple of 16, unless height/width are given; latents from `seed` as above, batch 1)
  -> NAME.edit.png. `pipeline`: an already loaded one."""
  kind = TASK_NAMES.get(task)
  if kind is None:
    raise ValueError(f"task {task!r}: a klein checkpoint runs {sorted(TASK_NAMES)}")
  if not isinstance(prompt, str):
    raise ValueError(f"{task} needs --prompt (the {'caption' if kind == 'generation' else 'edit instruction'})")
  if kind == "generation" and inputs:
    raise ValueError("generation takes no --input (it is text to image); use --task=editing to edit images")
  if kind == "editing" and not inputs:
    raise ValueError("editing needs --input: the image(s) to edit")
  for p in inputs:
    if not os.path.isfile(p):
      raise FileNotFoundError(f"{p}: no such image file")
  pipe = pipeline or load_pipeline(checkpoint, dtype=dtype, text_encoder_layers=text_encoder_out_layers)
  os.makedirs(out_dir, exist_ok=True)
  common = dict(height=height, width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
                max_sequence_length=max_sequence_length, text_encoder_out_layers=text_encoder_out_layers)
  if kind == "generation" and aspect_ratio and height is None and width is None:
    height, width = shape_for_ratio(aspect_ratio, DEFAULT_SAMPLE_SIZE * pipe.vae.cfg.scale, pipe.multiple)
    common.update(height=height, width=width)
  written = []
  if kind == "generation":
    for i, image in enumerate(pipe([prompt] * num_samples, seed=seed, **common)):
      written.append(os.path.join(out_dir, f"generated_{i:03d}.png"))
      Image.fromarray(to_uint8(image)).save(written[-1])
    return written
  for path in inputs:
    try:
      with Image.open(path) as f:
        reference = f.convert("RGB") if f.mode != "RGB" else f.copy()
    except OSError as e:
      raise ValueError(f"{path}: not a readable image ({e})") from None
    image = pipe(prompt, image=reference, seed=seed, **common)[0]
    written.append(os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".edit.png"))
    Image.fromarray(to_uint8(image)).save(written[-1])
  return written


def shape_for_ratio(ratio: float, side: int, multiple: int) -> tuple[int, int]:
  """(H, W), multiples of `multiple`, of about side^2 pixels with width / height near `ratio`."""
  if not 1 / MAX_REFERENCE_ASPECT <= ratio <= MAX_REFERENCE_ASPECT:
    raise ValueError(f"--aspect_ratio: {ratio:g} is outside 1:{MAX_REFERENCE_ASPECT} .. {MAX_REFERENCE_ASPECT}:1")
  snap = lambda v: max(multiple, int(round(v / multiple)) * multiple)
  return snap(side / math.sqrt(ratio)), snap(side * math.sqrt(ratio))


# ----------------------------------------------------------------------------------------------------------
# `python -m vbanana.predict --checkpoint=<klein download> --task=generate|edit` (vbanana/predict/cli.py).
# ----------------------------------------------------------------------------------------------------------
COMMAND_STEPS, COMMAND_GUIDANCE = 50, 4.0  # klein base's own defaults (diffusers' pipeline call)


def is_klein_download(path: str) -> bool:
  """A diffusers Flux2KleinPipeline folder that is not a vbanana fine-tune (no vbanana_klein.json record):
  the predict command runs its generation and editing through this pipeline, exactly as diffusers does. A
  fine-tune exported by vbanana (it has the record) samples as it was trained and evaluated instead (the
  flux2 family's sampler)."""
  from vbanana.flux2 import finetuned  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(os.path.join(path, "model_index.json")) or os.path.exists(os.path.join(path, finetuned.RECORD)):
    return False
  try:
    read_model_index(path)
  except (ValueError, OSError):
    return False
  return True


def predict_command(checkpoint: str, task: str, out_dir: str, inputs: Sequence[str], prompt: str, *,
                    steps: int | None = None, guidance: float | None = None, num_samples: int = 1, seed: int = 0,
                    method: str = "euler", aspect_ratio: str | None = None,
                    pipeline: KleinPipeline | None = None) -> list[str]:
  """The predict command's flags on a klein download: klein's defaults (50 steps, real CFG at guidance 4,
  1024x1024 for text to image), latents from `--seed` as `predict_files` draws them, so diffusers given the
  same array makes the same images. float32 (diffusers' parity setting, about 28 GB of parameters) except on
  a TPU, whose chips (v6e: 32 GB) run bfloat16. Raises ValueError naming the flag."""
  if method != "euler":
    raise ValueError(f"--method={method}: klein's pipeline takes the Euler steps of its folder's scheduler")
  ratio = None
  if aspect_ratio:
    from vbanana import aspect  # pylint: disable=g-import-not-at-top
    try:
      ratio = aspect.parse_ratio(aspect_ratio)
    except (ValueError, ZeroDivisionError):
      raise ValueError(f"--aspect_ratio: expected width:height such as 4:3, or a number, got "
                       f"'{aspect_ratio}'") from None
  try:
    return predict_files(checkpoint, task, prompt, inputs, out_dir, num_samples=num_samples,
                         steps=steps or COMMAND_STEPS,
                         guidance_scale=COMMAND_GUIDANCE if guidance is None else guidance, seed=seed, aspect_ratio=ratio, pipeline=pipeline,
                         dtype="bfloat16" if jax.default_backend() == "tpu" else "float32")
  except (weights.CheckpointError, FileNotFoundError) as e:
    raise ValueError(f"--checkpoint: {checkpoint}: {str(e).splitlines()[0]}") from None
