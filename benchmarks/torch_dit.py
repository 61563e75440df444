"""JAX vs PyTorch: the same DiT shape trained for the same steps, same batch, same CPU, same threads.

    pip install -e '.[bench]'            # torch==2.13.0 (CPU wheel), only for this script
    python benchmarks/torch_dit.py       # quickstart size; --sizes=quickstart,cpu_s to add more

The PyTorch side is a plain-PyTorch DiT written here with the same block as `vbanana.model.DiT`
(a byte-level text encoder of pre-norm blocks with 1D rotary positions, its bytes merged text_stride
at a time; a joint sequence of text,
input-image and target tokens with segment embeddings; adaLN modulation from the timestep; fused QKV;
QK-norm; 2D rotary positions; SwiGLU MLP; key padding mask; fused attention through
`F.scaled_dot_product_attention`; AdamW; velocity MSE on the target tokens). diffusers' `DiTTransformer2DModel` is not used:
it is class-conditional over one square image (no text or input-image tokens, no gated MLP, no QK-norm),
so at the same width and depth it would run a different sequence and block.

Prints, per size: parameters of each side (they must agree to within a few percent: the check that the
shapes match), step time of each (min over repeats, same run), and the ratio JAX / PyTorch (< 1: JAX faster).
"""
from __future__ import annotations

import argparse
import math
import os

import common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np


# ----------------------------------------------------------------------------- the PyTorch DiT
def build_torch_dit(cfg, torch):
  """A PyTorch module of the same shape as vbanana's DiT for ModelConfig `cfg` (vbanana/model/)."""
  nn, F = torch.nn, torch.nn.functional

  def rope(positions, head_dim):
    """cos, sin (S, head_dim/2): the head dim split in one part per coordinate (1D text, 2D images)."""
    num_axes = positions.shape[-1]
    part = head_dim // num_axes
    freqs = 1.0 / 10000.0 ** (np.arange(0, part, 2) / part)
    angles = (positions[..., None] * freqs).reshape(positions.shape[0], -1)
    return torch.tensor(np.cos(angles), dtype=torch.float32), torch.tensor(np.sin(angles), dtype=torch.float32)

  def apply_rope(x, cos, sin):  # x (B, H, S, D): rotate pairs (i, i + D/2)
    x1, x2 = x.chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

  class Attention(nn.Module):

    def __init__(self, width, heads):
      super().__init__()
      self.heads, self.head_dim = heads, width // heads
      self.qkv = nn.Linear(width, 3 * width)
      self.out = nn.Linear(width, width)
      self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
      self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)

    def forward(self, x, cos, sin, mask):
      b, n, w = x.shape
      q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
      q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
      y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
      return self.out(y.transpose(1, 2).reshape(b, n, w))

  class SwiGLU(nn.Module):

    def __init__(self, width, hidden):
      super().__init__()
      self.gate, self.up, self.down = nn.Linear(width, hidden), nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
      return self.down(F.silu(self.gate(x)) * self.up(x))

  class Block(nn.Module):

    def __init__(self, width, heads, mlp_dim, modulated):
      super().__init__()
      self.attn, self.mlp = Attention(width, heads), SwiGLU(width, mlp_dim)
      self.modulation = nn.Linear(width, 6 * width) if modulated else None
      if not modulated:
        self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-6), nn.RMSNorm(width, eps=1e-6)

    def forward(self, x, c, cos, sin, mask):
      if self.modulation is None:
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))
      shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
      width = x.shape[-1]
      x = x + gate1 * self.attn(F.layer_norm(x, (width,), eps=1e-6) * (1 + scale1) + shift1, cos, sin, mask)
      return x + gate2 * self.mlp(F.layer_norm(x, (width,), eps=1e-6) * (1 + scale2) + shift2)

  grid = cfg.image_size // cfg.patch_size
  patch_dim = cfg.patch_size**2 * cfg.channels

  class DiT(nn.Module):

    def __init__(self, text_length):
      super().__init__()
      w = cfg.width
      self.text_embed = nn.Embedding(cfg.vocab_size, cfg.text_width)
      self.text_blocks = nn.ModuleList([Block(cfg.text_width, cfg.text_heads, cfg.text_mlp_dim, False)
                                        for _ in range(cfg.text_depth)])
      # Bytes merged text_stride at a time after the encoder (vbanana.model.text.TextEncoder.merge).
      self.text_norm = nn.RMSNorm(cfg.text_width, eps=1e-6)
      self.text_merge = nn.Linear(cfg.text_stride * cfg.text_width, w)
      self.patch_embed = nn.Linear(patch_dim, w)
      self.segment = nn.Parameter(torch.zeros(2 + cfg.max_inputs, w))
      self.time_mlp = nn.Sequential(nn.Linear(256, w), nn.SiLU(), nn.Linear(w, w))
      self.blocks = nn.ModuleList([Block(w, cfg.num_heads, cfg.mlp_dim, True) for _ in range(cfg.depth)])
      self.final_modulation = nn.Linear(w, 2 * w)
      self.head = nn.Linear(w, patch_dim)
      text_cos, text_sin = rope(np.arange(text_length)[:, None], cfg.text_width // cfg.text_heads)
      self.register_buffer("text_cos", text_cos)
      self.register_buffer("text_sin", text_sin)
      rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
      image_positions = np.stack([rows.ravel(), cols.ravel()], -1)
      text_tokens = text_length // cfg.text_stride
      positions = np.concatenate([np.zeros((text_tokens, 2))] + [image_positions] * (1 + cfg.max_inputs))
      cos, sin = rope(positions, cfg.width // cfg.num_heads)
      self.register_buffer("cos", cos)
      self.register_buffer("sin", sin)

    def patchify(self, images):  # (B, H, W, C) -> (B, N, p*p*C)
      b, p = images.shape[0], cfg.patch_size
      x = images.reshape(b, grid, p, grid, p, cfg.channels).permute(0, 1, 3, 2, 4, 5)
      return x.reshape(b, grid * grid, patch_dim)

    def forward(self, x_t, t, text, inputs, input_mask):
      text_mask = text != 0
      h = self.text_embed(text)
      for block in self.text_blocks:
        h = block(h, None, self.text_cos, self.text_sin, text_mask)
      b, length = text.shape
      h = self.text_norm(h).reshape(b, length // cfg.text_stride, cfg.text_stride * cfg.text_width)
      merged_mask = text_mask.reshape(b, length // cfg.text_stride, cfg.text_stride).any(-1)
      parts, masks = [self.text_merge(h) + self.segment[0]], [merged_mask]
      for k in range(cfg.max_inputs):
        parts.append(self.patch_embed(self.patchify(inputs[:, k])) + self.segment[1 + k])
        masks.append(input_mask[:, k:k + 1].expand(-1, grid * grid))
      parts.append(self.patch_embed(self.patchify(x_t)) + self.segment[-1])
      masks.append(torch.ones_like(masks[-1]))
      x, mask = torch.cat(parts, 1), torch.cat(masks, 1)
      freqs = torch.exp(-math.log(10000.0) * torch.arange(128) / 128)
      c = F.silu(self.time_mlp(torch.cat([torch.cos(t[:, None] * 1000 * freqs),
                                          torch.sin(t[:, None] * 1000 * freqs)], -1)))
      for block in self.blocks:
        x = block(x, c, self.cos, self.sin, mask)
      shift, scale = self.final_modulation(c)[:, None].chunk(2, -1)
      target = x[:, -grid * grid:]
      return self.head(F.layer_norm(target, (cfg.width,), eps=1e-6) * (1 + scale) + shift)

  return DiT


def torch_step_time(cfg, batch_size, text_length, repeats, threads):
  """Seconds per AdamW train step of the PyTorch DiT (min over repeats) and its parameter count."""
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(threads)
  model = build_torch_dit(cfg, torch)(text_length)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
  s = cfg.image_size
  gen = torch.Generator().manual_seed(0)
  x0 = torch.rand(batch_size, s, s, 3, generator=gen) * 2 - 1
  noise = torch.randn(batch_size, s, s, 3, generator=gen)
  inputs = torch.rand(batch_size, cfg.max_inputs, s, s, 3, generator=gen) * 2 - 1
  text = torch.randint(2, 258, (batch_size, text_length), generator=gen)
  input_mask = torch.ones(batch_size, cfg.max_inputs, dtype=torch.bool)
  grid = s // cfg.patch_size

  def step():
    t = torch.rand(batch_size, generator=gen)
    x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
    v = model(x_t, t, text, inputs, input_mask)
    target = model.patchify(noise - x0)
    loss = torch.mean((v - target) ** 2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return common.time_it(step, repeats=repeats, warmup=2), sum(p.numel() for p in model.parameters()), grid


# ----------------------------------------------------------------------------- main
def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="quickstart", help="comma-separated: quickstart and/or SIZES names")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  try:
    import torch  # noqa: F401
  except ImportError:
    raise SystemExit("torch_dit.py needs PyTorch: pip install -e '.[bench]' (pins torch==2.13.0, CPU)")
  import jax
  import train_step as jax_bench  # the JAX side is timed exactly as benchmarks/train_step.py times it

  threads = len(os.sched_getaffinity(0))  # the cores this process may run on (`taskset` narrows them)
  print(common.machine())
  print(f"threads: XLA uses the {threads} cores this process may run on; torch.set_num_threads({threads})")
  rows = []
  for name in args.sizes.split(","):
    setup = jax_bench.setup(name)
    jax_time = jax_bench.time_step(setup, repeats=args.repeats)
    torch_time, torch_params, _ = torch_step_time(setup.model_cfg, setup.batch_size, setup.text_length,
                                                  args.repeats, threads)
    jax_time_again = jax_bench.time_step(setup, repeats=args.repeats)  # interleaved: JAX, torch, JAX
    jax_min = min(jax_time["min"], jax_time_again["min"])
    rows.append([name, setup.batch_size, f"{setup.run.num_params / 1e6:.2f}M", f"{torch_params / 1e6:.2f}M",
                 jax_min, torch_time["min"], jax_min / torch_time["min"]])
    del setup
    jax.clear_caches()
  common.print_table(
      "JAX vs PyTorch train step (float32, AdamW, min over repeats; ratio < 1: JAX faster)",
      ["size", "batch", "params JAX", "params torch", "JAX s/step", "torch s/step", "JAX/torch"], rows)


if __name__ == "__main__":
  main()
