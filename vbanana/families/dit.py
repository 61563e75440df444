"""The `dit` family: vbanana's own joint-sequence DiT (vbanana/model/), trained on pixels from scratch.

Its image codec is the identity on pixels (the module patchifies inside), its text conditioner the byte
tokens that the module's own text encoder reads (or precomputed embeddings from the data), its sampler
schedule the uniform grid, and its standalone format the safetensors export of vbanana.export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from vbanana import flow
from vbanana.model import config as config_mod
from vbanana.model import flops as flops_lib

ModelConfig = config_mod.ModelConfig

# Model fields that are the data's layout: config.data decides them, the model config records them.
LAYOUT_FIELDS = (("image_size", "resolution"), ("text_len", "text_length"), ("max_inputs", "max_inputs"),
                 ("image_shapes", "shapes"))


def _layout(value):
  """Lists and tuples compare equal (a ConfigDict keeps what the config file wrote)."""
  return tuple(_layout(v) for v in value) if isinstance(value, (list, tuple)) else value


def _as_dict(section) -> dict:
  return section.to_dict() if hasattr(section, "to_dict") else dict(section or {})


class DiTFamily:
  """See vbanana/families/__init__.py for what each method promises."""

  name = "dit"
  config_class = ModelConfig  # config_lib.base_config writes a config.model field per dataclass field
  default_size = "tiny"
  host_conditioned = False  # the programs read the batch as the data pipeline makes it

  # --------------------------------------------------------------------------------------------------------
  # Config.
  # --------------------------------------------------------------------------------------------------------
  def model_config(self, config) -> ModelConfig:
    """`config.model.size` with the other set `config.model` fields as overrides, and the sequence layout
    (image size, text length, input slots, aspect buckets) from `config.data`, so the model, its FLOP count
    and its export always match the batches. A set `config.model` layout field that disagrees with
    `config.data` is an error naming both."""
    overrides = {k: v for k, v in _as_dict(config.model).items() if k not in ("size", "family") and v is not None}
    data = _as_dict(config.data)
    for model_field, data_field in LAYOUT_FIELDS:
      if data.get(data_field) is None:
        continue
      if model_field in overrides and _layout(overrides[model_field]) != _layout(data[data_field]):
        raise ValueError(f"config.model.{model_field}={overrides[model_field]!r} disagrees with "
                         f"config.data.{data_field}={data[data_field]!r}; set one (config.data decides the "
                         "layout)")
      overrides[model_field] = data[data_field]
    if overrides.get("image_shapes") is not None:
      overrides["image_shapes"] = tuple(tuple(s) for s in overrides["image_shapes"])
    return config_mod.config_for(config.model.size, **overrides)

  def set_model(self, config, model_cfg: ModelConfig) -> None:
    """Writes `model_cfg` into an experiment config (its model fields and the data layout it implies): the
    inverse of `model_config`, for a model known only by its recorded config (predict, export)."""
    for key, value in model_cfg.to_dict().items():
      config.model[key] = value
    config.data.resolution = model_cfg.image_size
    config.data.text_length = model_cfg.text_len
    config.data.max_inputs = model_cfg.max_inputs
    config.data.shapes = [list(s) for s in model_cfg.image_shapes] or None

  def config_from_dict(self, d: Mapping[str, Any]) -> ModelConfig:
    return ModelConfig.from_dict({k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                      if isinstance(v, list) else v) for k, v in d.items()})

  # --------------------------------------------------------------------------------------------------------
  # Module.
  # --------------------------------------------------------------------------------------------------------
  def build(self, model_cfg: ModelConfig, rngs, *, attention: str | None = None):
    from vbanana.model import dit  # pylint: disable=g-import-not-at-top
    if attention is not None:
      model_cfg = model_cfg.replace(attention=attention)
    return dit.DiT(model_cfg, rngs=rngs)

  # --------------------------------------------------------------------------------------------------------
  # Image codec: pixels are what the DiT denoises (it patchifies inside).
  # --------------------------------------------------------------------------------------------------------
  def encode_images(self, frozen, images):
    del frozen
    return flow.to_float(images)

  def decode_images(self, frozen, x):
    del frozen
    return x

  def denoised_shape(self, model_cfg: ModelConfig, image_shape) -> tuple[int, ...]:
    return (int(image_shape[0]), int(image_shape[1]), model_cfg.channels)

  # --------------------------------------------------------------------------------------------------------
  # Text conditioner: byte tokens (the module's encoder reads them) or precomputed embeddings.
  # --------------------------------------------------------------------------------------------------------
  def condition(self, frozen, batch) -> dict:
    del frozen
    cond = {"text": batch["text"]}
    if batch.get("text_embeddings") is not None:
      cond["text_embeddings"] = batch["text_embeddings"]
    return cond

  def null_condition(self, frozen, cond) -> dict:
    """All padding (tokens 0) and zero embeddings: what the model learns as 'no instruction'."""
    del frozen
    return jax.tree.map(jnp.zeros_like, cond)

  # --------------------------------------------------------------------------------------------------------
  # Forward and schedule.
  # --------------------------------------------------------------------------------------------------------
  def apply(self, model, x_t, t, cond, inputs, input_mask):
    return model(x_t, t, cond["text"], inputs, input_mask, text_embeddings=cond.get("text_embeddings"))

  def sample_times(self, model_cfg, steps: int, x_shape) -> jax.Array:
    del model_cfg, x_shape
    return jnp.linspace(1.0, 0.0, steps + 1)

  def train_flow(self, model_cfg, flow_cfg, x_shape):
    del model_cfg, x_shape
    return flow_cfg

  # --------------------------------------------------------------------------------------------------------
  # Weights.
  # --------------------------------------------------------------------------------------------------------
  def frozen_params(self, model_cfg, mesh=None, rules=None, **unused) -> dict:
    del model_cfg, mesh, rules, unused
    return {}

  def text_conditioner(self, model_cfg, mesh=None, rules=None):
    del model_cfg, mesh, rules
    return None

  def prepare_batch(self, model_cfg, conditioner, batch, sharding=None) -> dict:
    del model_cfg, conditioner, sharding
    return dict(batch)

  def save(self, path: str, flat_params: Mapping[str, Any], model_cfg: ModelConfig, metadata: Mapping[str, str]):
    from vbanana import export  # pylint: disable=g-import-not-at-top
    export.write(path, dict(flat_params), model_cfg.to_dict(), extra=dict(metadata),
                 prediction=metadata.get("prediction", "v"))

  def load(self, path: str):
    """(ModelConfig, flat params, metadata) of an exported file."""
    from vbanana import export  # pylint: disable=g-import-not-at-top
    cfg_dict, flat = export.read(path)
    return self.config_from_dict(cfg_dict), flat, {"prediction": export.read_prediction(path)}

  # --------------------------------------------------------------------------------------------------------
  # Cost and batches.
  # --------------------------------------------------------------------------------------------------------
  def forward_flops(self, model_cfg, **kw) -> float:
    return flops_lib.forward_flops(model_cfg, **kw)

  def train_flops_per_example(self, model_cfg, **kw) -> float:
    return flops_lib.train_flops_per_example(model_cfg, **kw)

  def hardware_train_flops(self, model_cfg, **kw) -> float:
    return flops_lib.hardware_train_flops(model_cfg, **kw)

  def sample_flops(self, model_cfg, steps: int, method: str = "euler", passes: int = 1) -> float:
    return flops_lib.sample_flops(model_cfg, steps, method, passes)

  def batch_layout(self, model_cfg: ModelConfig, batch_size: int, shape=None) -> dict:
    """name -> (shape, dtype) of a training batch of images `shape` (H, W; default the model's first, the
    square without buckets): docs/interfaces.md, 'Batch' (vbanana.data.pipeline.to_arrays writes the same)."""
    (h, w), k = shape or model_cfg.shapes[0], model_cfg.max_inputs
    return dict(text=((batch_size, model_cfg.text_len), "int32"),
                inputs=((batch_size, k, h, w, model_cfg.channels), "uint8"),
                input_mask=((batch_size, k), "bool"),
                target=((batch_size, h, w, model_cfg.channels), "uint8"),
                task=((batch_size,), "int32"))

  def describe(self, model_cfg: ModelConfig) -> str:
    return (f"DiT width {model_cfg.width} depth {model_cfg.depth}, {model_cfg.image_size} px patch "
            f"{model_cfg.patch_size} ({model_cfg.tokens_per_image} tokens per image, sequence "
            f"{model_cfg.seq_len()}), {model_cfg.dtype} activations, remat {model_cfg.remat}")


FAMILY = DiTFamily()
