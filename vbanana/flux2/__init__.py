"""FLUX.2 [klein] in JAX: the transformer (and, with the next issues, its VAE, text encoder and pipeline),
read from and written back to diffusers' layout. docs/klein.md shows the commands.

  model = vbanana.flux2.load_transformer("FLUX.2-klein-base-4B")        # a pipeline or transformer/ folder
  vbanana.flux2.save_transformer(model, "out/transformer")             # diffusers' layout again
"""

from vbanana.flux2.api import load_transformer, save_transformer

__all__ = ["load_transformer", "save_transformer"]
from vbanana.flux2.vae import load_vae, save_vae
from vbanana.flux2.text_encoder import load_text_encoder
from vbanana.flux2.prompt_cache import encode_prompts
from vbanana.flux2.pipeline import load_pipeline
