"""klein's text encoder: Qwen3 (a decoder-only LM) read as an encoder, in Flax NNX.

klein conditions on the hidden states of Qwen3-4B's layers 9, 18 and 27, stacked per token (width 3 x 2560).
Only those are needed, so the encoder is built to the deepest layer asked for (27 of 36 layers: 3.1 B of the
4.0 B parameters) and never computes the LM head. `hidden_states(...)` keeps transformers' indexing exactly:
index 0 is the token embeddings, index k the raw output of decoder layer k, and only the last index
(k = num_hidden_layers) carries the final RMSNorm.

The layer: pre-norm GQA attention (per-head RMSNorm on q and k, rotate-half RoPE with the config's theta,
causal + key-padding mask) and a SwiGLU MLP, no biases (unless the config's `attention_bias`). Layers are
stacked and run in one loop (`lax.fori_loop`, each layer read in place from the stack, so asking for fewer
layers than are kept copies nothing); the states asked for are written into a small buffer in the loop carry,
so a 27-layer pass keeps 3 extra (B, S, D) arrays, not 27. Attention is written out (scores in float32):
prompts are 512 tokens and each distinct one is encoded once (`prompt_cache`), so a fused kernel buys nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vbanana import parallel
from vbanana.model import layers


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
  """The fields of a transformers `Qwen3Config` that the encoder uses (defaults: Qwen/Qwen3-4B)."""
  vocab_size: int = 151936
  hidden_size: int = 2560
  intermediate_size: int = 9728
  num_hidden_layers: int = 36
  num_attention_heads: int = 32
  num_key_value_heads: int = 8
  head_dim: int = 128
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1_000_000.0
  attention_bias: bool = False
  tie_word_embeddings: bool = True

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = "config.json") -> "Qwen3Config":
    """From a transformers config.json (4.x `rope_theta` or 5.x `rope_parameters`); anything this encoder
    does not implement (sliding windows, scaled RoPE, another activation) is an error naming the field."""
    model_type = d.get("model_type", "qwen3")
    if model_type != "qwen3":
      raise ValueError(f"{source}: model_type {model_type!r}; the klein text encoder is a Qwen3 ('qwen3')")
    if d.get("hidden_act", "silu") != "silu":
      raise ValueError(f"{source}: hidden_act {d['hidden_act']!r}; Qwen3 uses 'silu'")
    if d.get("use_sliding_window"):
      raise ValueError(f"{source}: use_sliding_window=true is not supported (Qwen3 checkpoints leave it off)")
    layer_types = d.get("layer_types") or ()
    if any(t != "full_attention" for t in layer_types):
      raise ValueError(f"{source}: layer_types {sorted(set(layer_types))}; only 'full_attention' is supported")
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
      raise ValueError(f"{source}: rope type {rope_type!r}; only the default (unscaled) RoPE is supported")
    theta = rope.get("rope_theta", d.get("rope_theta", cls.rope_theta))
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if k not in d]
    if missing:
      raise ValueError(f"{source}: missing field(s) {missing} of a Qwen3 config")
    heads = int(d["num_attention_heads"])
    return cls(vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
               intermediate_size=int(d["intermediate_size"]), num_hidden_layers=int(d["num_hidden_layers"]),
               num_attention_heads=heads, num_key_value_heads=int(d.get("num_key_value_heads") or heads),
               head_dim=int(d.get("head_dim") or int(d["hidden_size"]) // heads),
               rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
               attention_bias=bool(d.get("attention_bias", False)),
               tie_word_embeddings=bool(d.get("tie_word_embeddings", True)))

  @classmethod
  def from_json(cls, path: str) -> "Qwen3Config":
    try:
      with open(path) as f:
        d = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"{path}: no such file (the text encoder's config.json)") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}: not valid JSON ({e})") from None
    return cls.from_dict(d, path)


def resolve_layers(cfg: Qwen3Config, layers_asked: Sequence[int]) -> tuple[int, ...]:
  """transformers' hidden-state indices (negatives count from the end, as there) -> indices in
  [0, num_hidden_layers]; out-of-range indices are an error."""
  n = cfg.num_hidden_layers + 1
  out = []
  for k in layers_asked:
    if not -n <= int(k) < n:
      raise ValueError(f"hidden state {k} asked of a Qwen3 with {cfg.num_hidden_layers} layers (valid: "
                       f"{-n} .. {n - 1}; 0 = the embeddings, {n - 1} = the last layer after the final norm)")
    out.append(int(k) % n)
  if not out:
    raise ValueError("no hidden-state layers asked (e.g. layers=(9, 18, 27))")
  return tuple(out)


class Qwen3Layer(nnx.Module):
  """One decoder layer: x + attn(norm(x)), then + mlp(norm(x))."""

  def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs, dtype, param_dtype):
    d, hd = cfg.hidden_size, cfg.head_dim
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.input_norm = layers.RMSNorm(d, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    self.q = layers.Dense((d,), (cfg.num_attention_heads, hd), ("embed", "heads", "head_dim"),
                          use_bias=cfg.attention_bias, **kw)
    self.k = layers.Dense((d,), (cfg.num_key_value_heads, hd), ("embed", "heads", "head_dim"),
                          use_bias=cfg.attention_bias, **kw)
    self.v = layers.Dense((d,), (cfg.num_key_value_heads, hd), ("embed", "heads", "head_dim"),
                          use_bias=cfg.attention_bias, **kw)
    self.o = layers.Dense((cfg.num_attention_heads, hd), (d,), ("heads", "head_dim", "embed"),
                          use_bias=cfg.attention_bias, **kw)
    self.q_norm = layers.RMSNorm(hd, ("head_dim",), eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    self.k_norm = layers.RMSNorm(hd, ("head_dim",), eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    self.post_norm = layers.RMSNorm(d, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
    self.gate = layers.Dense((d,), (cfg.intermediate_size,), ("embed", "mlp"), use_bias=False, **kw)
    self.up = layers.Dense((d,), (cfg.intermediate_size,), ("embed", "mlp"), use_bias=False, **kw)
    self.down = layers.Dense((cfg.intermediate_size,), (d,), ("mlp", "embed"), use_bias=False, **kw)

  def __call__(self, x, angles, bias):
    """x (B, S, D); angles (S, head_dim/2); bias float32 (B, S, S): 0 where a query may see a key."""
    h = self.input_norm(x)
    q = layers.apply_rope(self.q_norm(self.q(h)), angles)  # (B, S, H, hd)
    k = layers.apply_rope(self.k_norm(self.k(h)), angles)  # (B, S, KV, hd)
    v = self.v(h)
    x = x + self.o(grouped_attention(q, k, v, bias))
    h = self.post_norm(x)
    m = jax.nn.silu(self.gate(h)) * self.up(h)
    m = parallel.constrain(m, ("act_batch", "act_seq", "act_mlp"))
    x = x + self.down(m)
    return parallel.constrain(x, ("act_batch", "act_seq", "act_embed"))


def grouped_attention(q, k, v, bias):
  """Grouped-query attention: query head h reads key/value head h // (H / KV), as transformers' repeat_kv.
  q (B, S, H, hd), k and v (B, S, KV, hd), bias (B, S, S) -> (B, S, H, hd)."""
  b, s, h, hd = q.shape
  kv = k.shape[2]
  q = q.reshape(b, s, kv, h // kv, hd)
  logits = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) * (hd ** -0.5)
  weights = jax.nn.softmax(logits + bias[:, None, None], axis=-1)
  out = jnp.einsum("bkgqs,bskd->bqkgd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.reshape(b, s, h, hd).astype(v.dtype)


def causal_padding_bias(mask) -> jax.Array:
  """float32 (B, S, S) from a key-padding mask (B, S) (1 = token, 0 = padding): causal and padding."""
  s = mask.shape[1]
  causal = jnp.tril(jnp.ones((s, s), bool))
  allowed = causal[None] & (mask[:, None, :] > 0)
  return jnp.where(allowed, 0.0, -0.7 * jnp.finfo(jnp.float32).max).astype(jnp.float32)


def rope_angles(cfg: Qwen3Config, length: int) -> jax.Array:
  """(length, head_dim/2) angles: position * theta^(-2i/head_dim), as transformers' default RoPE."""
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  return jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]


class Qwen3Encoder(nnx.Module):
  """Qwen3's embeddings and its first `depth` decoder layers (all of them by default), the final norm only
  when the whole depth is kept. `hidden_states(ids, mask, layers)` is the call."""

  def __init__(self, cfg: Qwen3Config, *, depth: int | None = None, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    with nnx.use_eager_sharding(False):  # placed by the loader (or a jit's out-shardings), never at creation
      self._build(cfg, depth, rngs, dtype, param_dtype)

  def _build(self, cfg, depth, rngs, dtype, param_dtype):
    depth = cfg.num_hidden_layers if depth is None else int(depth)
    if not 0 <= depth <= cfg.num_hidden_layers:
      raise ValueError(f"depth {depth}: a Qwen3 with {cfg.num_hidden_layers} layers keeps 0 .. "
                       f"{cfg.num_hidden_layers} of them")
    self.cfg, self.depth, self.dtype = cfg, depth, dtype
    embed = jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size), param_dtype) * 0.02
    self.embed = nnx.Param(embed, out_sharding=("vocab", "embed"))
    self.layers = layers.make_stack(
        lambda r: Qwen3Layer(cfg, rngs=r, dtype=dtype, param_dtype=param_dtype), depth, rngs) if depth else None
    self.norm = (layers.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
                 if depth == cfg.num_hidden_layers else None)

  @property
  def width(self) -> int:
    return self.cfg.hidden_size

  def hidden_states(self, input_ids, attention_mask, layers_asked: Sequence[int] = (9, 18, 27)) -> jax.Array:
    """(B, len(layers_asked), S, D): transformers' `output_hidden_states[k]` for each k asked, stacked as
    klein stacks them. input_ids int (B, S); attention_mask (B, S), 1 = token, 0 = padding (any side)."""
    asked = resolve_layers(self.cfg, layers_asked)
    deepest = max(asked)
    if deepest > self.depth:
      raise ValueError(f"hidden state {deepest} asked, but this encoder keeps {self.depth} of the "
                       f"{self.cfg.num_hidden_layers} layers (load it with depth >= {deepest})")
    needs_norm = deepest == self.cfg.num_hidden_layers
    if needs_norm and self.norm is None:
      raise ValueError(f"hidden state {deepest} is the final-normed output; this encoder was built without it")
    unique = sorted(set(asked))
    b, s = input_ids.shape
    x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
    x = parallel.constrain(x, ("act_batch", "act_seq", "act_embed"))
    buf = jnp.zeros((len(unique), b, s, self.cfg.hidden_size), self.dtype)
    if 0 in unique:
      buf = buf.at[unique.index(0)].set(x)
    if deepest > 0:
      # slot[i]: where the output of layer i (hidden state i + 1) goes (len(unique): nowhere).
      slot = jnp.asarray([unique.index(i + 1) if i + 1 in unique else len(unique) for i in range(deepest)],
                         jnp.int32)
      angles, bias = rope_angles(self.cfg, s), causal_padding_bias(attention_mask)
      graphdef, params = nnx.split(self.layers)

      def body(i, carry):  # layer i read in place from the stack: no copy when fewer layers than kept run
        h, buf = carry
        layer = nnx.merge(graphdef, jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, False), params))
        h = layer(h, angles, bias)
        here = (jnp.arange(len(unique)) == slot[i])[:, None, None, None]
        return h, jnp.where(here, h[None], buf)

      x, buf = jax.lax.fori_loop(0, deepest, body, (x, buf))
      if needs_norm:
        buf = buf.at[unique.index(deepest)].set(self.norm(x))
    out = buf[np.array([unique.index(k) for k in asked])]  # (K, B, S, D)
    return jnp.swapaxes(out, 0, 1)

  def __call__(self, input_ids, attention_mask, layers_asked: Sequence[int] = (9, 18, 27)) -> jax.Array:
    """(B, S, K * D): the asked hidden states side by side per token (klein's prompt embeddings)."""
    h = self.hidden_states(input_ids, attention_mask, layers_asked)  # (B, K, S, D)
    b, k, s, d = h.shape
    return jnp.transpose(h, (0, 2, 1, 3)).reshape(b, s, k * d)


def depth_for(cfg: Qwen3Config, layers_asked: Sequence[int] | None) -> int:
  """The layers to keep for these hidden states (all when None)."""
  return cfg.num_hidden_layers if layers_asked is None else max(resolve_layers(cfg, layers_asked))


def text_encoder_dir(path: str) -> str:
  """A `text_encoder/` folder, or a pipeline folder holding one."""
  sub = os.path.join(path, "text_encoder")
  if os.path.isfile(os.path.join(sub, "config.json")):
    return sub
  if os.path.isfile(os.path.join(path, "config.json")):
    return path
  raise FileNotFoundError(f"{path}: no config.json here or in {sub} (expected a klein pipeline folder or its "
                          f"text_encoder/ folder)")


# ----------------------------------------------------------------------------------------------------------
# Loading from a transformers checkpoint (Qwen3ForCausalLM or Qwen3Model; single or sharded safetensors).
# ----------------------------------------------------------------------------------------------------------
# Per-layer variable -> (tensor name under `layers.{i}.`, transposed?). Reshapes follow from the shapes:
# q_proj (H*hd, D) -> (D, H, hd), o_proj (D, H*hd) -> (H, hd, D), biases (H*hd,) -> (H, hd).
_LAYER_TENSORS = {
    ("input_norm", "scale"): ("input_layernorm.weight", False),
    ("q", "kernel"): ("self_attn.q_proj.weight", True),
    ("q", "bias"): ("self_attn.q_proj.bias", False),
    ("k", "kernel"): ("self_attn.k_proj.weight", True),
    ("k", "bias"): ("self_attn.k_proj.bias", False),
    ("v", "kernel"): ("self_attn.v_proj.weight", True),
    ("v", "bias"): ("self_attn.v_proj.bias", False),
    ("o", "kernel"): ("self_attn.o_proj.weight", True),
    ("o", "bias"): ("self_attn.o_proj.bias", False),
    ("q_norm", "scale"): ("self_attn.q_norm.weight", False),
    ("k_norm", "scale"): ("self_attn.k_norm.weight", False),
    ("post_norm", "scale"): ("post_attention_layernorm.weight", False),
    ("gate", "kernel"): ("mlp.gate_proj.weight", True),
    ("up", "kernel"): ("mlp.up_proj.weight", True),
    ("down", "kernel"): ("mlp.down_proj.weight", True),
}


def checkpoint_shapes(cfg: Qwen3Config, prefix: str = "model.") -> dict[str, tuple]:
  """Every tensor of a Qwen3 checkpoint and its shape (without the optional lm_head)."""
  d, i, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
  q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
  per_layer = {"input_layernorm.weight": (d,), "self_attn.q_proj.weight": (q, d),
               "self_attn.k_proj.weight": (kv, d), "self_attn.v_proj.weight": (kv, d),
               "self_attn.o_proj.weight": (d, q), "self_attn.q_norm.weight": (hd,),
               "self_attn.k_norm.weight": (hd,), "post_attention_layernorm.weight": (d,),
               "mlp.gate_proj.weight": (i, d), "mlp.up_proj.weight": (i, d), "mlp.down_proj.weight": (d, i)}
  if cfg.attention_bias:
    per_layer.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                      "self_attn.v_proj.bias": (kv,), "self_attn.o_proj.bias": (d,)})
  shapes = {f"{prefix}embed_tokens.weight": (cfg.vocab_size, d)}
  for layer in range(cfg.num_hidden_layers):
    shapes.update({f"{prefix}layers.{layer}.{k}": v for k, v in per_layer.items()})
  shapes[f"{prefix}norm.weight"] = (d,)
  return shapes


def load_text_encoder(path: str, *, depth: int | None = None, layers_asked: Sequence[int] | None = None,
                      dtype: str = "float32", mesh=None, rules=None) -> Qwen3Encoder:
  """The Qwen3 encoder of a klein pipeline folder (or its `text_encoder/` folder).

  depth: decoder layers to keep (default all); or `layers_asked`, the hidden states you will ask for (klein:
  (9, 18, 27) keeps 27 layers). dtype: of the parameters and activations ('bfloat16' halves the memory).
  Every tensor of the checkpoint is checked first (names and shapes, a missing, misshaped or unknown one is
  an error naming it); deeper layers than kept are checked but never read. On `mesh` each device receives
  its shard of each tensor (`rules` over vbanana.parallel's defaults)."""
  from vbanana.flux2 import placement, weights  # pylint: disable=g-import-not-at-top
  folder = text_encoder_dir(path)
  cfg = Qwen3Config.from_json(os.path.join(folder, "config.json"))
  if layers_asked is not None:
    if depth is not None:
      raise ValueError("load_text_encoder: give depth or layers_asked, not both")
    depth = depth_for(cfg, layers_asked)
  ckpt = weights.open_checkpoint(folder, prefix=None)
  prefix = "model." if "model.embed_tokens.weight" in ckpt else ""
  expected = checkpoint_shapes(cfg, prefix)
  if "lm_head.weight" in ckpt:  # the LM head: checked, never used (tied or not, the encoder stops before it)
    expected["lm_head.weight"] = (cfg.vocab_size, cfg.hidden_size)
  ckpt.check(expected, where=ckpt.where)
  dt = jnp.dtype(dtype)
  abstract = nnx.eval_shape(lambda: Qwen3Encoder(cfg, depth=depth, rngs=nnx.Rngs(0), dtype=dt, param_dtype=dt))

  def produce(p, shape, dtype_):
    if p == ("embed",):
      return ckpt.read(f"{prefix}embed_tokens.weight")
    if p == ("norm", "scale"):
      return ckpt.read(f"{prefix}norm.weight")
    if p[0] != "layers" or tuple(p[1:]) not in _LAYER_TENSORS:
      raise ValueError(f"{ckpt.where}: no checkpoint tensor maps to the encoder's {'.'.join(map(str, p))}")
    name, transpose = _LAYER_TENSORS[tuple(p[1:])]
    out = np.empty(shape, dtype_)
    for layer in range(shape[0]):
      t = ckpt.read(f"{prefix}layers.{layer}.{name}")
      out[layer] = (t.T if transpose else t).reshape(shape[1:])
    return out

  return placement.materialize(abstract, produce, mesh=mesh, rules=rules)
