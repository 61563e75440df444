"""Data: sources of raw samples (scenes, TFDS adapters, folders), augmentation, and the Grain mixture.

`make_train_iterator(data_cfg)` and `make_eval_batches(data_cfg, component, split, batch_size)` are the
entry points (vbanana/data/pipeline.py); docs/data.md describes the sources and the config.
"""

from vbanana.data.pipeline import make_eval_batches, make_train_iterator

__all__ = ["make_eval_batches", "make_train_iterator"]
