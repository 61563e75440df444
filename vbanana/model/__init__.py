"""The diffusion transformer: `ModelConfig` and named sizes, the joint-sequence `DiT`, the text tokenizer."""

from vbanana.model.config import SIZES, ModelConfig, config_for
from vbanana.model.dit import DiT, PatchTokenizer
from vbanana.model.text import tokenize

__all__ = ["SIZES", "ModelConfig", "config_for", "DiT", "PatchTokenizer", "tokenize"]
