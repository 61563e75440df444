"""TPU-native attention: the joint sequence through the Pallas splash-attention kernel inside `shard_map`.

The kernel works on one device's shard, (heads, seq, head_dim) per example, so it runs inside `jax.shard_map`
over the mesh: the batch split as the rules place 'act_batch' (data and FSDP axes), the heads as they place
'act_heads' (the tensor axis); sequence and head dim stay whole on every device. What the kernel needs and
the model does not give it directly:
  * scale: the kernel applies no 1/sqrt(head_dim); q is scaled first.
  * padding: absent keys (unused input-image slots, instruction padding) are a segment of their own. Every
    query is in segment 0, present keys are in segment 0, absent keys in segment 1, so a query sees exactly
    the keys that exist (the target's keys always do, so no row of the mask is empty).
  * lengths: the kernel tiles the sequence in blocks of 128 (TPU lanes); the sequence is padded with absent
    keys up to a multiple of the block and the padded queries are cut off again.
  * head dim: TPU lanes are 128 wide; a head dim that is not a multiple of 128 is zero-padded (q.k and the
    output's first head_dim columns are unchanged by zero columns) and cut back.
On a CPU the same kernel runs in Pallas interpret mode (slow; tests use it to check it against
`layers.attention`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from vbanana import parallel

LANES = 128  # the kernel's block sizes and head dims are multiples of this (TPU vector lanes)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block(seq: int) -> int:
  """The largest of 512, 256, 128 that divides the (padded) sequence: bigger blocks keep the MXU busier."""
  return next(b for b in (512, 256, LANES) if seq % b == 0)


def _kernel(heads: int, seq: int, interpret: bool):
  """A fresh kernel per trace (its mask tables become constants of the program being traced; a cached one
  would leak one trace's arrays into the next)."""
  block = _block(seq)
  sizes = splash_kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                                   block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block,
                                   block_kv_dq=block)
  mask = splash_mask.MultiHeadMask([splash_mask.FullMask((seq, seq))] * heads)
  return splash_kernel.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                       interpret=interpret)


def _local_attention(q, k, v, key_mask, *, interpret: bool):
  """One device's shard: q, k, v (b, S, n, D) (already padded), key_mask bool (b, S)."""
  b, s, n, d = q.shape
  kernel = _kernel(n, s, interpret)
  heads_first = lambda a: jnp.swapaxes(a, 1, 2)  # (b, n, S, D)
  q_segments = jnp.zeros((b, s), jnp.int32)
  kv_segments = jnp.where(key_mask, 0, 1).astype(jnp.int32)

  def one(q1, k1, v1, qs, ks):
    return kernel(q1, k1, v1, segment_ids=splash_kernel.SegmentIds(q=qs, kv=ks))

  out = jax.vmap(one)(heads_first(q), heads_first(k), heads_first(v), q_segments, kv_segments)
  return heads_first(out)


def attention(q, k, v, mask, *, interpret: bool | None = None):
  """Softmax attention of q, k, v (B, S, N, D) over the keys that exist (mask bool (B, S)) -> (B, S, N, D).

  The same function as `layers.attention` (heads last here, as the kernel's callers hold them). Inside a
  `parallel.sharding_context` it runs under `shard_map` on that mesh; outside it, on one device.
  `interpret=None`: interpret mode exactly when the devices are CPUs.
  """
  _, s, _, d = q.shape
  context = parallel.current()
  interpret = (parallel.current_platform() == "cpu") if interpret is None else interpret
  dtype = v.dtype
  q = q * jnp.asarray(d ** -0.5, q.dtype)  # the kernel does not scale
  s_pad, d_pad = _round_up(s, LANES), _round_up(d, LANES)
  pad = lambda a: jnp.pad(a, ((0, 0), (0, s_pad - s), (0, 0), (0, d_pad - d)))
  q, k, v = pad(q), pad(k), pad(v)
  mask = jnp.pad(mask, ((0, 0), (0, s_pad - s)), constant_values=False)
  local = functools.partial(_local_attention, interpret=interpret)
  if context is None:
    out = local(q, k, v, mask)
  else:
    mesh, table = context
    spec = parallel.named_sharding(mesh, ("act_batch", "act_seq", "act_heads", "act_head_dim"), table,
                                   q.shape).spec
    # The sequence and head dim are never split inside the kernel: keep only the batch and head axes.
    qkv_spec = PartitionSpec(spec[0], None, spec[2], None)
    mask_spec = PartitionSpec(spec[0], None)
    out = jax.shard_map(local, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, mask_spec),
                        out_specs=qkv_spec, check_vma=False)(q, k, v, mask)
  return out[:, :s, :, :d].astype(dtype)
