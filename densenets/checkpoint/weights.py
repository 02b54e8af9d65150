"""Pretrained backbone weights: resolve a `weights:` value, convert it, load it checked.

A `weights:` value is one of

- a local file: our own state dict (or a checkpoint holding one under ``model`` /
  ``state_dict``), or a torchvision / timm / detectron2 checkpoint, recognised by its
  key names and converted with `densenets.checkpoint.convert.resnet`; ``.pkl`` files are read
  with the restricted unpickler;
- ``torchvision://resnet50`` (torchvision's ``IMAGENET1K_V1`` weights of that model) or
  ``torchvision://resnet50.IMAGENET1K_V2`` (a named entry of its weights enum);
- ``detectron2://ImageNetPretrained/MSRA/R-50.pkl`` (a path under detectron2's model
  store, https://dl.fbaipublicfiles.com/detectron2/).

Named sources are downloaded once into the cache folder: ``$DENSENETS_CACHE`` when set,
else torch hub's ``<torch hub dir>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), where a
copy torch hub already holds is found too.
Without network access, place the file there: `WeightsUnavailableError` says which
file, from where, and the path.

Constructors never load: a backbone keeps its ``weights`` spec and the training
launcher applies it after construction (`load_pretrained_weights`), only when a run
starts from it, so evaluation, inference and benchmarks never download.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densenets.config import ConfigError

from .convert import convert
from .convert.resnet import find_prefix, unwrap_state_dict
from .pickle_io import load_pickle

__all__ = [
    "WeightsUnavailableError",
    "cache_dir",
    "load_weights",
    "load_pretrained_weights",
    "resolve_weights",
    "read_checkpoint",
    "detect_format",
    "load_state_dict_checked",
]

logger = logging.getLogger(__name__)

DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint file on the CPU: ``.pkl`` with the restricted unpickler, anything
    else with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no such file {path}")
    if path.suffix == ".pkl":
        return load_pickle(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a global outside weights_only's allow-list
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"weights: {path}: refused, not a plain weights file ({reason})") from None


def detect_format(obj: Any) -> str:
    """Name the layout of a loaded ResNet checkpoint.

    Returns:
        "densenets", "torchvision-resnet", "timm-resnet" or "detectron2".
    """
    sd = unwrap_state_dict(obj)
    if "conv1_w" in sd or "res_conv1_bn_s" in sd or find_prefix(sd, "stem.conv1.norm.weight") is not None:
        return "detectron2"
    if find_prefix(sd, "stem.norm1.weight") is not None:
        return "densenets"
    prefix = find_prefix(sd, "layer1.0.conv1.weight")
    if prefix is None:
        raise KeyError("weights: not a ResNet checkpoint in any known layout (no stem or layer1 keys)")
    timm_keys = re.compile(rf"{re.escape(prefix)}(conv1\.0\.weight|layer\d\.\d+\.downsample\.2\.weight)")
    return "timm-resnet" if any(timm_keys.fullmatch(k) for k in sd) else "torchvision-resnet"


def _ours(obj: Any) -> dict[str, torch.Tensor]:
    sd = unwrap_state_dict(obj)
    prefix = find_prefix(sd, "stem.norm1.weight") or ""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


class WeightsUnavailableError(FileNotFoundError):
    """Named initialisation weights are neither cached nor downloadable (one-line message)."""


def cache_dir() -> Path:
    """Where named weights are cached: ``$DENSENETS_CACHE``, else ``<torch hub dir>/checkpoints``."""
    env = os.environ.get("DENSENETS_CACHE")
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"


def _hub_file(url: str, relative: str, spec: str) -> Path:
    """Download `url` once to ``<cache dir>/<relative>`` and return the path (a copy
    already in torch hub's cache is used too)."""
    dst = cache_dir() / relative
    for path in (dst, Path(torch.hub.get_dir()) / "checkpoints" / relative):
        if path.is_file():
            return path
    dst.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dst)
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=True)
    except Exception as e:  # noqa: BLE001 - any failure means the same to the user
        reason = f"{type(e).__name__}: {e}".splitlines()[0]
        raise WeightsUnavailableError(
            f"weights {spec}: cannot download {url} ({reason}); without network access, "
            f"download it elsewhere and put it at {dst} (cache folder: $DENSENETS_CACHE, "
            "else torch hub's <TORCH_HOME>/hub/checkpoints)"
        ) from None
    return dst


def _torchvision_url(spec: str) -> tuple[str, str]:
    """``resnet50`` or ``resnet50.IMAGENET1K_V2`` -> (url, file name)."""
    import torchvision

    model, _, entry = spec.partition(".")
    try:
        enum = torchvision.models.get_model_weights(model)
    except ValueError as e:
        raise ValueError(f"weights: torchvision://{spec}: unknown torchvision model {model!r}") from e
    entry = entry or "IMAGENET1K_V1"
    if entry not in enum.__members__:
        raise ValueError(
            f"weights: torchvision://{spec}: no entry {entry!r} (one of {', '.join(enum.__members__)})"
        )
    url = enum[entry].url
    return url, url.rsplit("/", 1)[-1]


def resolve_weights(weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """Turn a `weights:` value into a state dict in our ResNet layout.

    Args:
        weights: a path, ``torchvision://MODEL[.ENTRY]`` or ``detectron2://PATH``.

    Returns:
        (state dict, the format it was converted from).
    """
    if weights.startswith("torchvision://"):
        url, name = _torchvision_url(weights[len("torchvision://") :])
        obj, fmt = (
            torch.load(_hub_file(url, name, weights), map_location="cpu", weights_only=True),
            "torchvision-resnet",
        )
    elif weights.startswith("detectron2://"):
        rel = weights[len("detectron2://") :]
        obj, fmt = (
            read_checkpoint(_hub_file(DETECTRON2_URL + rel, f"detectron2/{rel}", weights)),
            "detectron2",
        )
    elif "://" in weights:
        raise ValueError(
            f"weights: unknown source {weights!r} (a path, torchvision://... or detectron2://...)"
        )
    else:
        obj = read_checkpoint(weights)
        fmt = detect_format(obj)
    return (_ours(obj) if fmt == "densenets" else convert(fmt, obj)), fmt


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[list, list]:
    """Load `state_dict` non-strictly: shape mismatches are errors, missing and unexpected
    keys are logged.

    Returns:
        (missing keys, unexpected keys).

    Raises:
        ValueError: a tensor's shape differs from the model's; the message names the key.
    """
    own = model.state_dict()
    for key, value in state_dict.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"weights {source}: shape mismatch for {key}: checkpoint {tuple(value.shape)}, "
                f"model {tuple(own[key].shape)}"
            )
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        logger.warning(
            "weights %s: %d keys missing from the checkpoint: %s", source, len(missing), ", ".join(missing)
        )
    if result.unexpected_keys:
        unexpected = result.unexpected_keys
        logger.warning(
            "weights %s: %d checkpoint keys unused: %s", source, len(unexpected), ", ".join(unexpected)
        )
    logger.info("weights %s: loaded %d tensors", source, len(state_dict) - len(result.unexpected_keys))
    return missing, list(result.unexpected_keys)


def load_weights(model: nn.Module, weights: str) -> tuple[list, list]:
    """Resolve `weights` (see the module docstring), convert and load them into `model`.

    Returns:
        (missing keys, unexpected keys), both also logged.
    """
    state_dict, fmt = resolve_weights(weights)
    logger.info("weights %s: %s layout", weights, fmt)
    with torch.no_grad():
        return load_state_dict_checked(model, state_dict, weights)


def load_pretrained_weights(model: nn.Module) -> list[str]:
    """Load the initialisation weights every submodule names in its ``weights`` spec
    (ResNet's ``weights``: a file, ``torchvision://...``, ``detectron2://...``).

    Called by the training launcher once the model is built, and only when a run starts
    from these weights (not on resume, nor when ``train.weights`` gives a full
    checkpoint).

    Returns:
        The specs loaded, in module order.
    """
    loaded = []
    for module in model.modules():
        spec = getattr(module, "weights", None)
        if isinstance(spec, str) and spec and callable(getattr(module, "load_pretrained", None)):
            module.load_pretrained()
            loaded.append(spec)
    return loaded
