"""Checkpoints: saving and loading, the restricted unpickler, foreign-format converters,
backbone initialisation weights.

This package sits below `densenets.modeling` and `densenets.engine` (it imports neither):
the model builder and the trainer apply weights to a model after constructing it.

- `checkpointer`: training checkpoints (atomic saves, checksums, rotation, RNG state),
  `load_model_weights` for a trained model.
- `pickle_io`: `load_pickle`, a restricted unpickler for detectron2 / caffe2 ``.pkl`` files.
- `convert`: `CONVERTERS`, key maps from official / torchvision / mmdet / mmseg layouts.
- `weights`: `weights:` specs of backbones (files, ``torchvision://``, ``detectron2://``).
"""

from .checkpointer import (
    Checkpointer,
    CheckpointError,
    NonFiniteError,
    check_finite,
    get_rng_state,
    load_checkpoint,
    load_model_weights,
    remove_temporary_files,
    save_atomic,
    set_rng_state,
    state_digest,
    unwrap_model,
)
from .convert import CONVERTERS, convert, register_converter
from .pickle_io import RestrictedUnpickler, load_pickle
from .weights import (
    WeightsUnavailableError,
    cache_dir,
    detect_format,
    load_pretrained_weights,
    load_state_dict_checked,
    load_weights,
    read_checkpoint,
    resolve_weights,
)

__all__ = [
    "Checkpointer",
    "CheckpointError",
    "NonFiniteError",
    "check_finite",
    "get_rng_state",
    "set_rng_state",
    "load_checkpoint",
    "load_model_weights",
    "remove_temporary_files",
    "save_atomic",
    "state_digest",
    "unwrap_model",
    "CONVERTERS",
    "convert",
    "register_converter",
    "RestrictedUnpickler",
    "load_pickle",
    "WeightsUnavailableError",
    "cache_dir",
    "detect_format",
    "load_pretrained_weights",
    "load_state_dict_checked",
    "load_weights",
    "read_checkpoint",
    "resolve_weights",
]
