r"""Model families: everything the trainer, the sampler, the evaluators, export and predict know of a model.

vbanana trains more than one kind of generator: its own joint-sequence DiT (`dit`, trained from scratch on
pixels), and open pretrained generators imported from their native format. A family is a small stateless
object with the methods below; `vbanana.setup.Setup` resolves `config.model.family` through `get(name)` once,
and nothing else in the program asks which family it runs. docs/interfaces.md, "Model families", is the
contract in words.

Config
  `config_class`, `default_size` the family's frozen config dataclass and its default size: base_config
                                 writes `config.model.family`, `.size` and one field per dataclass field,
                                 unset (None = the named size's value, or the data layout's)
  `model_config(config)`         the family's frozen config dataclass from an experiment config
  `config_from_dict(d)`          the same from a recorded dict (a checkpoint's model_config.json, an export)
Module
  `build(model_cfg, rngs, *, attention)`  the trainable nnx.Module; every parameter carries logical axis names
Image codec (images <-> what the model denoises)
  `encode_images(frozen, images)`  uint8 [0, 255] or float [-1, 1] images (..., H, W, 3) -> x
  `decode_images(frozen, x)`       x -> float images in [-1, 1] (B, H, W, 3)
  `denoised_shape(model_cfg, image_shape)`  the per-example shape of x for an (H, W) image
Text conditioner
  `condition(frozen, batch)`     the batch's instruction as the model reads it: a pytree of (B, ...) arrays
  `null_condition(frozen, cond)` the same rows with the instruction removed (dropout, guidance)
  `host_conditioned`, `text_conditioner(model_cfg, mesh, rules)`, `prepare_batch(model_cfg, conditioner,
                                 batch, sharding=None)`: a text conditioner that runs on the host (klein's
                                 Qwen3 behind a prompt cache) adds what the programs read to each batch before
                                 them (`Setup.shard_batch` and the setup's samplers call it); the DiT's is
                                 none (`host_conditioned = False`, conditioner None, batch unchanged)
Forward and schedule
  `apply(model, x_t, t, cond, inputs, input_mask)`  the network's output (config.flow.prediction's kind)
  `sample_times(model_cfg, steps, x_shape)`         (steps + 1,) times from 1 (noise) down to 0
  `train_flow(model_cfg, flow_cfg, x_shape)`        config.flow for a training batch of that denoised shape
                                                    (klein: optionally shifted by the image's token count)
Weights
  `frozen_params(model_cfg, mesh, rules, *, abstract, module, conditioner)`  the frozen parts' arrays (an
                                 autoencoder, a text encoder's outputs) placed on the mesh: `{}` when none;
                                 ShapeDtypeStructs with shardings on abstract devices. A module whose
                                 variables are not all nnx.Param (LoRA's frozen base weights) gets them back
                                 as frozen['module'], a tree like `module`, merged at every call
  `save(path, flat_params, model_cfg, metadata)`, `load(path) -> (model_cfg, flat_params, metadata)`: the
                                 family's standalone file format
  `load_params(path, abstract_params)` (klein) its native weights placed like `abstract_params`: init_from
                                 a downloaded folder, predict on one
  `resident_bytes(model_cfg, mesh, rules)` (optional; klein) bytes per device that stay on the devices
                                 beside every program (its Qwen3): vbanana.aot counts them in each total
Cost
  `forward_flops(model_cfg)`, `train_flops_per_example(model_cfg)`, `hardware_train_flops(model_cfg)`,
  `sample_flops(model_cfg, steps, method, passes)`
Batches
  `batch_layout(model_cfg, batch_size, shape)`      name -> (shape, dtype) of a training batch
"""

from __future__ import annotations

from typing import Any

FAMILIES = ("dit", "flux2")


def get(name: str) -> Any:
  """The family object named by config.model.family."""
  if name == "dit":
    from vbanana.families import dit  # pylint: disable=g-import-not-at-top
    return dit.FAMILY
  if name == "flux2":
    from vbanana.families import flux2  # pylint: disable=g-import-not-at-top
    return flux2.FAMILY
  raise ValueError(f"config.model.family={name!r}: expected one of {FAMILIES}")


__all__ = ["FAMILIES", "get"]
