"""vbanana: an image generator that is also a generalist vision model (JAX / Flax)."""

__version__ = "0.1.0"
