"""The FLUX.2 autoencoder (diffusers' `AutoencoderKLFlux2`) in Flax NNX, and klein's image codec on top.

The network is the SD/FLUX-style KL autoencoder, channels last: an encoder of ResNet blocks with stride-2
downsampling (block widths (128, 256, 512, 512), 2 ResNets each, GroupNorm 32, one single-head attention in
the middle), a 1x1 `quant_conv`; the decoder mirrors it with nearest-neighbour upsampling and 3 ResNets per
block. Encoding keeps the posterior's mode (the mean half of the moments), as klein does.

klein denoises neither pixels nor raw latents but **tokens**: the 32-channel latents patchified 2x2 (channel
c * 4 + 2 * dy + dx, 128 channels at 1/16 of the image size) and normalised by the BatchNorm's running
statistics, (z - running_mean) / sqrt(running_var + eps). `encode_images` / `decode_images` are that codec
(pixels -> tokens -> pixels), the image-codec side of the model-family seam; the module names mirror
diffusers' so that the weight names map one to one (`load_vae`, `save_vae`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """diffusers' AutoencoderKLFlux2 constructor arguments that shape the network (defaults: FLUX.2's)."""
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  decoder_block_out_channels: tuple[int, ...] | None = None
  layers_per_block: int = 2
  latent_channels: int = 32
  norm_num_groups: int = 32
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  batch_norm_eps: float = 1e-4
  patch_size: tuple[int, int] = (2, 2)
  extra: tuple[tuple[str, Any], ...] = ()  # other config.json fields, written back unchanged by save_vae

  @property
  def decoder_channels(self) -> tuple[int, ...]:
    return tuple(self.decoder_block_out_channels or self.block_out_channels)

  @property
  def token_channels(self) -> int:
    """Channels of the tokens klein denoises: latent_channels * prod(patch_size) (128)."""
    return self.latent_channels * math.prod(self.patch_size)

  @property
  def scale(self) -> int:
    """Pixels per latent position (8 for FLUX.2); one token covers scale * patch pixels (16)."""
    return 2 ** (len(self.block_out_channels) - 1)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = CONFIG_NAME) -> "VAEConfig":
    cls_name = d.get("_class_name", "AutoencoderKLFlux2")
    if cls_name != "AutoencoderKLFlux2":
      raise ValueError(f"{source}: _class_name {cls_name!r}; expected 'AutoencoderKLFlux2' (FLUX.2's VAE)")
    n = len(d.get("block_out_channels", cls.block_out_channels))
    for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
      kinds = d.get(key, [want] * n)
      if list(kinds) != [want] * n:
        raise ValueError(f"{source}: {key} {list(kinds)}; only {n} x {want!r} is supported")
    if d.get("act_fn", "silu") != "silu":
      raise ValueError(f"{source}: act_fn {d['act_fn']!r}; only 'silu' is supported")
    fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    kwargs = {}
    for k in fields:
      if d.get(k) is not None:
        v = d[k]
        kwargs[k] = tuple(v) if isinstance(v, list) else v
    extra = tuple((k, v) for k, v in d.items() if k not in fields)
    cfg = cls(**kwargs, extra=extra)
    if any(c % cfg.norm_num_groups for c in cfg.block_out_channels + cfg.decoder_channels):
      raise ValueError(f"{source}: norm_num_groups {cfg.norm_num_groups} does not divide the block widths "
                       f"{cfg.block_out_channels} / {cfg.decoder_channels}")
    return cfg

  def to_dict(self) -> dict:
    d = dict(self.extra)
    d.setdefault("_class_name", "AutoencoderKLFlux2")
    n = len(self.block_out_channels)
    d.update(in_channels=self.in_channels, out_channels=self.out_channels,
             down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
             block_out_channels=list(self.block_out_channels),
             decoder_block_out_channels=(list(self.decoder_block_out_channels)
                                         if self.decoder_block_out_channels else None),
             layers_per_block=self.layers_per_block, act_fn="silu", latent_channels=self.latent_channels,
             norm_num_groups=self.norm_num_groups, use_quant_conv=self.use_quant_conv,
             use_post_quant_conv=self.use_post_quant_conv, mid_block_add_attention=self.mid_block_add_attention,
             batch_norm_eps=self.batch_norm_eps, patch_size=list(self.patch_size))
    return d


# ----------------------------------------------------------------------------------------------------------
# Layers, channels last (B, H, W, C). Convolution kernels are HWIO.
# ----------------------------------------------------------------------------------------------------------
class Conv(nnx.Module):
  def __init__(self, cin: int, cout: int, k: int, *, rngs: nnx.Rngs, stride: int = 1, padding=None,
               dtype=jnp.float32, param_dtype=jnp.float32):
    fan_in = cin * k * k
    w = jax.random.uniform(rngs.params(), (k, k, cin, cout), param_dtype, -1, 1) / math.sqrt(fan_in)
    self.kernel = nnx.Param(w, out_sharding=(None, None, None, None))
    self.bias = nnx.Param(jnp.zeros((cout,), param_dtype), out_sharding=(None,))
    self.stride, self.dtype = stride, dtype
    self.padding = ((k // 2, k // 2),) * 2 if padding is None else padding

  def __call__(self, x):
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                                     (self.stride, self.stride), self.padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...].astype(self.dtype)


class GroupNorm(nnx.Module):
  def __init__(self, channels: int, groups: int, *, eps: float = 1e-6, param_dtype=jnp.float32):
    self.scale = nnx.Param(jnp.ones((channels,), param_dtype), out_sharding=(None,))
    self.bias = nnx.Param(jnp.zeros((channels,), param_dtype), out_sharding=(None,))
    self.groups, self.eps = groups, eps

  def __call__(self, x):
    dtype = x.dtype
    b, h, w, c = x.shape
    g = x.astype(jnp.float32).reshape(b, h, w, self.groups, c // self.groups)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
    g = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
    return (g * self.scale[...] + self.bias[...]).astype(dtype)


class Linear(nnx.Module):
  """A 1x1 projection with bias (the attention's to_q/k/v/out)."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, dtype, param_dtype):
    w = jax.random.uniform(rngs.params(), (cin, cout), param_dtype, -1, 1) / math.sqrt(cin)
    self.kernel = nnx.Param(w, out_sharding=(None, None))
    self.bias = nnx.Param(jnp.zeros((cout,), param_dtype), out_sharding=(None,))
    self.dtype = dtype

  def __call__(self, x):
    return x.astype(self.dtype) @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)


class ResnetBlock(nnx.Module):
  def __init__(self, cin: int, cout: int, groups: int, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm1 = GroupNorm(cin, groups, param_dtype=param_dtype)
    self.conv1 = Conv(cin, cout, 3, **kw)
    self.norm2 = GroupNorm(cout, groups, param_dtype=param_dtype)
    self.conv2 = Conv(cout, cout, 3, **kw)
    self.conv_shortcut = Conv(cin, cout, 1, **kw) if cin != cout else None

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.conv_shortcut is not None:
      x = self.conv_shortcut(x)
    return x + h


class Downsample(nnx.Module):
  """Stride-2 3x3 convolution after padding one row and column at the bottom and right (diffusers' padding=0)."""

  def __init__(self, channels: int, *, rngs, dtype, param_dtype):
    self.conv = Conv(channels, channels, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs, dtype=dtype,
                     param_dtype=param_dtype)

  def __call__(self, x):
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 convolution."""

  def __init__(self, channels: int, *, rngs, dtype, param_dtype):
    self.conv = Conv(channels, channels, 3, rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x):
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class AttentionBlock(nnx.Module):
  """Single-head self-attention over all positions, with a residual (the mid block's)."""

  QUERY_CHUNK = 4096  # queries per slice: a 1024^2 image has 16,384 latent positions (1 GiB of f32 scores)

  def __init__(self, channels: int, groups: int, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.group_norm = GroupNorm(channels, groups, param_dtype=param_dtype)
    self.to_q, self.to_k, self.to_v = (Linear(channels, channels, **kw) for _ in range(3))
    self.to_out = nnx.List([Linear(channels, channels, **kw)])

  def __call__(self, x):
    b, h, w, c = x.shape
    t = self.group_norm(x).reshape(b, h * w, c)
    q, k, v = self.to_q(t), self.to_k(t), self.to_v(t)
    chunk = math.gcd(h * w, self.QUERY_CHUNK)

    def attend(qc):  # (B, chunk, C) queries against all keys
      logits = jnp.einsum("bqc,bkc->bqk", qc, k, preferred_element_type=jnp.float32) * (c ** -0.5)
      weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
      return jnp.einsum("bqk,bkc->bqc", weights, v, preferred_element_type=jnp.float32).astype(v.dtype)

    if chunk == h * w:
      o = attend(q)
    else:
      qs = jnp.moveaxis(q.reshape(b, h * w // chunk, chunk, c), 1, 0)
      o = jnp.moveaxis(jax.lax.map(attend, qs), 0, 1).reshape(b, h * w, c)
    return x + self.to_out[0](o).reshape(b, h, w, c).astype(x.dtype)


class MidBlock(nnx.Module):
  def __init__(self, channels: int, groups: int, attention: bool, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.resnets = nnx.List([ResnetBlock(channels, channels, groups, **kw) for _ in range(2)])
    self.attentions = nnx.List([AttentionBlock(channels, groups, **kw)] if attention else [])

  def __call__(self, x):
    x = self.resnets[0](x)
    if len(self.attentions):
      x = self.attentions[0](x)
    return self.resnets[1](x)


class DownBlock(nnx.Module):
  def __init__(self, cin, cout, num_layers, groups, downsample: bool, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.resnets = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, groups, **kw) for i in range(num_layers)])
    self.downsamplers = nnx.List([Downsample(cout, **kw)] if downsample else [])

  def __call__(self, x):
    for r in self.resnets:
      x = r(x)
    for d in self.downsamplers:
      x = d(x)
    return x


class UpBlock(nnx.Module):
  def __init__(self, cin, cout, num_layers, groups, upsample: bool, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.resnets = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, groups, **kw) for i in range(num_layers)])
    self.upsamplers = nnx.List([Upsample(cout, **kw)] if upsample else [])

  def __call__(self, x):
    for r in self.resnets:
      x = r(x)
    for u in self.upsamplers:
      x = u(x)
    return x


class Encoder(nnx.Module):
  def __init__(self, cfg: VAEConfig, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    ch, g = cfg.block_out_channels, cfg.norm_num_groups
    self.conv_in = Conv(cfg.in_channels, ch[0], 3, **kw)
    self.down_blocks = nnx.List([
        DownBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block, g, i < len(ch) - 1, **kw)
        for i in range(len(ch))])
    self.mid_block = MidBlock(ch[-1], g, cfg.mid_block_add_attention, **kw)
    self.conv_norm_out = GroupNorm(ch[-1], g, param_dtype=param_dtype)
    self.conv_out = Conv(ch[-1], 2 * cfg.latent_channels, 3, **kw)

  def __call__(self, x):
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = parallel.constrain(block(x), ("act_batch", None, None, None))
    x = self.mid_block(x)
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
  def __init__(self, cfg: VAEConfig, *, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    ch, g = tuple(reversed(cfg.decoder_channels)), cfg.norm_num_groups
    self.conv_in = Conv(cfg.latent_channels, ch[0], 3, **kw)
    self.mid_block = MidBlock(ch[0], g, cfg.mid_block_add_attention, **kw)
    self.up_blocks = nnx.List([
        UpBlock(ch[max(i - 1, 0)], ch[i], cfg.layers_per_block + 1, g, i < len(ch) - 1, **kw)
        for i in range(len(ch))])
    self.conv_norm_out = GroupNorm(ch[-1], g, param_dtype=param_dtype)
    self.conv_out = Conv(ch[-1], cfg.out_channels, 3, **kw)

  def __call__(self, z):
    x = self.mid_block(self.conv_in(z))
    for block in self.up_blocks:
      x = parallel.constrain(block(x), ("act_batch", None, None, None))
    return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class RunningStats(nnx.Variable):
  """BatchNorm running statistics: frozen, read by the codec, never trained."""


class LatentNorm(nnx.Module):
  """The BatchNorm (affine=False) whose running statistics normalise klein's tokens."""

  def __init__(self, channels: int, eps: float):
    self.running_mean = RunningStats(jnp.zeros((channels,), jnp.float32))
    self.running_var = RunningStats(jnp.ones((channels,), jnp.float32))
    self.num_batches_tracked = RunningStats(jnp.zeros((), jnp.int32))  # kept for the round trip only
    self.eps = eps

  def normalize(self, x):
    return (x - self.running_mean[...]) / jnp.sqrt(self.running_var[...] + self.eps)

  def denormalize(self, x):
    return x * jnp.sqrt(self.running_var[...] + self.eps) + self.running_mean[...]


class Flux2VAE(nnx.Module):
  """`encode` (NHWC images in [-1, 1] -> the posterior's mode, (B, H/8, W/8, 32)), `decode` (its inverse),
  and the token codec `encode_images` / `decode_images` (patchify 2x2 + BatchNorm statistics)."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    with nnx.use_eager_sharding(False):  # placed by the loader (or a jit's out-shardings), never at creation
      self._build(cfg, rngs, dtype, param_dtype)

  def _build(self, cfg, rngs, dtype, param_dtype):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.cfg, self.dtype = cfg, dtype
    c = cfg.latent_channels
    self.encoder = Encoder(cfg, **kw)
    self.decoder = Decoder(cfg, **kw)
    self.quant_conv = Conv(2 * c, 2 * c, 1, **kw) if cfg.use_quant_conv else None
    self.post_quant_conv = Conv(c, c, 1, **kw) if cfg.use_post_quant_conv else None
    self.bn = LatentNorm(cfg.token_channels, cfg.batch_norm_eps)

  def encode(self, images):
    """images (B, H, W, 3) in [-1, 1] -> latents (B, H/8, W/8, latent_channels): the posterior's mode."""
    _check_size(images.shape[1:3], self.cfg.scale, "encode: images")
    moments = self.encoder(images.astype(self.dtype))
    if self.quant_conv is not None:
      moments = self.quant_conv(moments)
    return moments[..., :self.cfg.latent_channels]

  def decode(self, latents):
    """latents (B, h, w, latent_channels) -> images (B, 8h, 8w, 3), roughly in [-1, 1]."""
    z = latents.astype(self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def patchify(self, latents):
    """(B, h, w, C) -> (B, h/2, w/2, 4C), channel c * 4 + 2 * dy + dx (diffusers' _patchify_latents)."""
    b, h, w, c = latents.shape
    py, px = self.cfg.patch_size
    x = latents.reshape(b, h // py, py, w // px, px, c)
    return jnp.transpose(x, (0, 1, 3, 5, 2, 4)).reshape(b, h // py, w // px, c * py * px)

  def unpatchify(self, tokens):
    b, h, w, cp = tokens.shape
    py, px = self.cfg.patch_size
    x = tokens.reshape(b, h, w, cp // (py * px), py, px)
    return jnp.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(b, h * py, w * px, cp // (py * px))

  def encode_images(self, images):
    """Pixels -> klein's tokens: images (..., H, W, 3), uint8 [0, 255] or float [-1, 1] -> normalised,
    patchified latents (..., H/16, W/16, 128), float32."""
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 127.5 - 1.0
    lead = images.shape[:-3]
    x = images.reshape((-1,) + images.shape[-3:])
    _check_size(x.shape[1:3], self.cfg.scale * self.cfg.patch_size[0], "encode_images: images")
    z = self.bn.normalize(self.patchify(self.encode(x).astype(jnp.float32)))
    return z.reshape(lead + z.shape[1:])

  def decode_images(self, tokens):
    """klein's tokens (..., h, w, 128) -> float images (..., 16h, 16w, 3) in [-1, 1] (clipped)."""
    lead = tokens.shape[:-3]
    z = jnp.asarray(tokens, jnp.float32).reshape((-1,) + tokens.shape[-3:])
    images = self.decode(self.unpatchify(self.bn.denormalize(z)))
    images = jnp.clip(images.astype(jnp.float32), -1.0, 1.0)
    return images.reshape(lead + images.shape[1:])


def _check_size(hw, multiple: int, what: str):
  if hw[0] % multiple or hw[1] % multiple:
    raise ValueError(f"{what} are {hw[0]}x{hw[1]}; height and width must be multiples of {multiple}")


def vae_dir(path: str) -> str:
  """A `vae/` folder, or a pipeline folder holding one."""
  sub = os.path.join(path, "vae")
  if os.path.isfile(os.path.join(sub, CONFIG_NAME)):
    return sub
  if os.path.isfile(os.path.join(path, CONFIG_NAME)):
    return path
  raise FileNotFoundError(f"{path}: no {CONFIG_NAME} here or in {sub} (expected a klein pipeline folder or its "
                          f"vae/ folder)")


def read_config(folder: str) -> VAEConfig:
  path = os.path.join(folder, CONFIG_NAME)
  try:
    with open(path) as f:
      d = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  return VAEConfig.from_dict(d, path)


# ----------------------------------------------------------------------------------------------------------
# Weights: diffusers' names are the module paths (PyTorch OIHW convolutions, (out, in) linears; GroupNorm's
# `weight` is our `scale`); `bn.*` are the BatchNorm's buffers.
# ----------------------------------------------------------------------------------------------------------
def torch_name(path) -> str:
  """diffusers' tensor name of one of our variables."""
  *head, leaf = (str(p) for p in path)
  return ".".join(head + ["weight" if leaf in ("kernel", "scale") else leaf])


def to_torch_layout(path, array: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array.T
  return array


def from_torch_layout(path, array: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array.T
  return array


def _torch_shape(path, shape: tuple) -> tuple:
  if path[-1] == "kernel":
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
  return shape


def load_vae(path: str, *, dtype: str = "float32", mesh=None, rules=None) -> Flux2VAE:
  """The FLUX.2 VAE of a klein pipeline folder (or its `vae/` folder): config.json and a single or sharded
  safetensors checkpoint. Every tensor is checked by name and shape first (missing, misshaped or unknown:
  an error naming it). The BatchNorm statistics stay float32 whatever `dtype` the network runs in."""
  from vbanana.flux2 import placement, weights  # pylint: disable=g-import-not-at-top
  folder = vae_dir(path)
  cfg = read_config(folder)
  dt = jnp.dtype(dtype)
  abstract = nnx.eval_shape(lambda: Flux2VAE(cfg, rngs=nnx.Rngs(0), dtype=dt, param_dtype=dt))
  ckpt = weights.open_checkpoint(folder, prefix="diffusion_pytorch_model")
  expected = {torch_name(p): _torch_shape(p, tuple(v.get_value().shape))
              for p, v in nnx.to_flat_state(nnx.state(abstract))}
  ckpt.check(expected, where=ckpt.where)

  def produce(p, shape, dtype_):
    return from_torch_layout(p, ckpt.read(torch_name(p)))

  return placement.materialize(abstract, produce, mesh=mesh, rules=rules)


def save_vae(model: Flux2VAE, path: str, *, max_shard_size: str = "10GB") -> list[str]:
  """Writes `config.json` and `diffusion_pytorch_model.safetensors` (sharded past `max_shard_size`) in
  diffusers' layout, so `AutoencoderKLFlux2.from_pretrained(path)` reads every tensor back. Returns the files."""
  from vbanana.flux2 import weights  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  tensors = {}
  for p, v in nnx.to_flat_state(nnx.state(model)):
    value = v.get_value()
    if p[-1] == "num_batches_tracked":  # torch keeps this BatchNorm counter as int64
      tensors[torch_name(p)] = np.asarray(value).astype(np.int64)
      continue
    shape = _torch_shape(p, tuple(value.shape))
    tensors[torch_name(p)] = weights.Pending(
        shape, value.dtype, lambda p=p, value=value: to_torch_layout(p, np.asarray(jax.device_get(value))))
  files = weights.write_checkpoint(path, tensors, prefix="diffusion_pytorch_model", max_shard_size=max_shard_size)
  with open(os.path.join(path, CONFIG_NAME), "w") as f:
    json.dump(model.cfg.to_dict(), f, indent=2, sort_keys=True)
  return files + [CONFIG_NAME]
