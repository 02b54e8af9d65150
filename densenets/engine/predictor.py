"""`Predictor`: a model from a config and weights, applied to numpy images."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from densenets.config import DATASETS, MODELS, TRANSFORMS, VISUALIZERS, ConfigNode, build

from .checkpoint import load_model_weights
from .launch import get_class_names, resolve_device
from .schema import parse_section

__all__ = ["Predictor", "build_transforms", "build_visualizer"]

logger = logging.getLogger(__name__)

_DEFAULT_VISUALIZERS = {"instances": "DetectionVisualizer", "sem_seg": "SemSegVisualizer", "sr": "SRVisualizer"}


def build_transforms(node: Mapping | Sequence | None) -> list[Callable]:
    """`data.val.transforms`: one component or a list of them (from `TRANSFORMS`)."""
    if node is None:
        return []
    nodes = [node] if isinstance(node, Mapping) else list(node)
    return [build(n, TRANSFORMS) for n in nodes]


def _val_class_names(cfg: ConfigNode) -> list[str] | None:
    names = get_class_names(cfg)
    if names:
        return names
    val = (cfg.get("data") or {}).get("val")
    if not val:
        return None
    try:
        return get_class_names(cfg, build(val, DATASETS))
    except Exception as e:  # noqa: BLE001 - the dataset may simply not be on this machine
        logger.warning("no class names: data.val could not be built (%s); set data.class_names", e)
        return None


def build_visualizer(cfg: ConfigNode, prediction: Mapping | None = None) -> Any:
    """`infer.visualizer` with the config's class names; without one, the visualiser
    matching the prediction's kind (`instances`, `sem_seg`, `sr`)."""
    node = parse_section("infer", cfg.get("infer")).visualizer
    if node is None:
        kind = next((k for k in _DEFAULT_VISUALIZERS if prediction is not None and k in prediction), None)
        if kind is None:
            raise ValueError("infer.visualizer: not set, and the prediction is none of instances, sem_seg, sr")
        node = ConfigNode({"type": _DEFAULT_VISUALIZERS[kind]}, "infer.visualizer")
    return build(node, VISUALIZERS, class_names=_val_class_names(cfg))


class Predictor:
    """Builds `cfg.model`, loads `weights` (EMA weights when present) and predicts.

    Args:
        cfg: the experiment config (`model`, `data.val.transforms`, `infer`).
        weights: a checkpoint path, or None to keep the model's initial weights.
        device: `auto`, `cpu`, `cuda`.

    Example:
        >>> predictor = Predictor(load_config("configs/x.yaml"), "runs/x/last.pth")
        >>> prediction = predictor(read_image("street.jpg"))  # dict at the image's size
    """

    def __init__(self, cfg: ConfigNode, weights: str | os.PathLike | None = None, device: str = "auto") -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.infer = parse_section("infer", cfg.get("infer"))
        self.model = build(cfg.model, MODELS).to(self.device).eval()
        if weights:
            load_model_weights(self.model, weights, strict=True, use_ema=True)
        val = (cfg.get("data") or {}).get("val") or {}
        self.transforms = build_transforms(val.get("transforms"))

    def prepare(self, image: np.ndarray, **meta: Any) -> dict[str, Any]:
        """The model input item for an HWC uint8 RGB image (test-time transforms applied)."""
        item: dict[str, Any] = {"image": image, "orig_size": tuple(image.shape[:2]), "image_id": 0, "file_name": ""}
        item.update(meta)
        for t in self.transforms:
            item = t(item)
        tensor = torch.from_numpy(np.ascontiguousarray(item.pop("image").transpose(2, 0, 1)))
        item[self.infer.input_key] = tensor
        return item

    @torch.no_grad()
    def predict(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions for prepared items, moved to the CPU."""
        if not batch:
            return []
        return [_to_cpu(p) for p in self.model(batch)]

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        return self.predict([self.prepare(image)])[0]


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, Mapping):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
