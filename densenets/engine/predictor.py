"""`Predictor`: a model from a config and weights, applied to numpy images.

predictor = Predictor("configs/demo/faster_rcnn_r18_fpn_shapes.yaml", "runs/demo/best.pth")
image = read_image("shapes.jpg")
write_image("shapes_pred.jpg", predictor.draw(image, predictor(image)))
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densenets.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from densenets.config import (
    DATASETS,
    MODELS,
    TRANSFORMS,
    VISUALIZERS,
    ConfigError,
    ConfigNode,
    build,
    load_config,
)
from densenets.modeling.meta_arch import input_key_of

from .device import resolve_device
from .schema import parse_section

__all__ = ["Predictor", "build_transforms", "build_visualizer", "resolve_weights"]

logger = logging.getLogger(__name__)

_DEFAULT_VISUALIZERS = {
    "instances": "DetectionVisualizer",
    "sem_seg": "SemSegVisualizer",
    "sr": "SRVisualizer",
}
_NEEDS_NAMES = ("instances", "sem_seg")  # super-resolution has no classes


def build_transforms(node: Mapping | Sequence | None) -> list[Callable]:
    """`data.val.transforms`: one component or a list of them (from `TRANSFORMS`)."""
    if node is None:
        return []
    nodes = [node] if isinstance(node, Mapping) else list(node)
    return [build(n, TRANSFORMS) for n in nodes]


def resolve_weights(flag: str | None, cfg: ConfigNode) -> str | None:
    """The checkpoint a tool loads: `--weights W`, else `infer.weights` of the config;
    `none` on purpose keeps the model's initial weights (returns None).

    Raises:
        ConfigError: neither is given (a randomly initialised model's numbers mean nothing).
    """
    weights = flag if flag is not None else parse_section("infer", cfg.get("infer")).weights
    if weights is None:
        raise ConfigError(
            "--weights: no checkpoint given (and the config sets no infer.weights); "
            "pass --weights FILE, or --weights none to run the randomly initialised model on purpose"
        )
    return None if str(weights).lower() == "none" else str(weights)


def _coco_image_ids(dataset: Any) -> dict[str, int]:
    """Resolved image path (and unique base name) -> COCO image id, for `COCODetection`."""
    coco, root = getattr(dataset, "coco", None), getattr(dataset, "root", None)
    if coco is None or root is None:
        return {}
    by_path, by_name = {}, {}
    for image_id, info in coco.imgs.items():
        by_path[str((Path(root) / info["file_name"]).resolve())] = image_id
        name = Path(info["file_name"]).name
        by_name[name] = None if name in by_name else image_id
    return {**{k: v for k, v in by_name.items() if v is not None}, **by_path}


class Metadata:
    """Class names, dataset category ids and COCO image ids of a model's outputs.

    Sources, first found wins: `data.class_names` of the config; the val dataset the
    config names (`data.val`, e.g. `COCODetection`: names, category ids, image ids); the
    checkpoint's `meta` (written by the trainer and by the COCO converters).
    """

    def __init__(self, cfg: ConfigNode, checkpoint_meta: Mapping | None = None) -> None:
        self.cfg, self.checkpoint_meta = cfg, dict(checkpoint_meta or {})

    @functools.cached_property
    def dataset(self) -> Any:
        val = (self.cfg.get("data") or {}).get("val")
        if not val:
            return None
        try:
            return build(val, DATASETS)
        except Exception as e:  # noqa: BLE001 - the dataset may simply not be on this machine
            logger.info("data.val could not be built (%s); class metadata from the checkpoint", e)
            return None

    @functools.cached_property
    def class_names(self) -> list[str] | None:
        names = (self.cfg.get("data") or {}).get("class_names")
        names = names or getattr(self.dataset, "class_names", None) or self.checkpoint_meta.get("class_names")
        if not names:
            logger.warning("no class names: set data.class_names, or use a checkpoint that stores them")
        return list(names) if names else None

    @functools.cached_property
    def category_ids(self) -> list[int] | None:
        ids = getattr(self.dataset, "label_to_category_id", None) or self.checkpoint_meta.get("category_ids")
        return [int(i) for i in ids] if ids else None

    @functools.cached_property
    def image_ids(self) -> dict[str, int]:
        return _coco_image_ids(self.dataset)

    def image_id(self, file_name: str, default: Any) -> Any:
        """The dataset's id of the image at `file_name`, else `default`."""
        if not self.image_ids:
            return default
        found = self.image_ids.get(str(Path(file_name).resolve()))
        return found if found is not None else self.image_ids.get(Path(file_name).name, default)


def build_visualizer(
    cfg: ConfigNode, prediction: Mapping | None = None, metadata: Metadata | None = None
) -> Any:
    """`infer.visualizer` with the class names of `metadata`; without one, the visualiser
    matching the prediction's kind (`instances`, `sem_seg`, `sr`)."""
    node = parse_section("infer", cfg.get("infer")).visualizer
    if node is None:
        kind = next((k for k in _DEFAULT_VISUALIZERS if prediction is not None and k in prediction), None)
        if kind is None:
            raise ValueError(
                "infer.visualizer: not set, and the prediction is none of instances, sem_seg, sr"
            )
        node = ConfigNode({"type": _DEFAULT_VISUALIZERS[kind]}, "infer.visualizer")
    needs_names = prediction is None or any(k in prediction for k in _NEEDS_NAMES)
    metadata = metadata or Metadata(cfg)
    return build(node, VISUALIZERS, class_names=metadata.class_names if needs_names else None)


class Predictor:
    """Builds `cfg.model`, loads `weights` (EMA weights when present) and predicts.

    Args:
        cfg: the experiment config (`model`, `data.val.transforms`, `infer`), or its path.
        weights: a checkpoint path, or None to keep the model's initial weights; an
            `.onnx` / `.pt2` file of `tools/export.py` runs that file instead of the model.
        device: `auto`, `cpu`, `cuda`, `cuda:1`.

    Example:
        >>> predictor = Predictor("configs/x.yaml", "runs/x/best.pth")
        >>> image = read_image("street.jpg")
        >>> prediction = predictor(image)  # dict at the image's size
        >>> write_image("street_pred.jpg", predictor.draw(image, prediction))
    """

    def __init__(
        self,
        cfg: ConfigNode | str | os.PathLike,
        weights: str | os.PathLike | None = None,
        device: str = "auto",
    ) -> None:
        self.cfg = cfg if isinstance(cfg, Mapping) else load_config(cfg)
        self.device = resolve_device(device)
        self.infer = parse_section("infer", self.cfg.get("infer"))
        meta = None
        if _is_exported(weights):  # an .onnx / .pt2 file of tools/export.py runs in place of the model
            from densenets.export.runtime import ExportedModel

            model_type = (self.cfg.get("model") or {}).get("type")  # None: the file's task tells
            key = input_key_of(MODELS.get(model_type, path="model.type")) if model_type else None
            self.model = ExportedModel(weights, key, self.device)
        else:
            self.model = build(self.cfg.model, MODELS).to(self.device).eval()
        self.input_key = input_key_of(self.model)  # the item key of the image ("lr" for EDSR)
        if weights and not _is_exported(weights):
            checkpoint = load_checkpoint(weights)
            try:
                load_model_weights(self.model, checkpoint, strict=True, use_ema=True)
            except CheckpointError as e:
                raise CheckpointError(str(e).replace("state dict:", f"{weights}:", 1)) from None
            meta = checkpoint.get("meta")
        self.metadata = Metadata(self.cfg, meta)
        val = (self.cfg.get("data") or {}).get("val") or {}
        self.transforms = build_transforms(val.get("transforms"))
        self._visualizer: Any = None

    @property
    def class_names(self) -> list[str] | None:
        return self.metadata.class_names

    def prepare(self, image: np.ndarray, **meta: Any) -> dict[str, Any]:
        """The model input item for an HWC uint8 RGB image (test-time transforms applied)."""
        item: dict[str, Any] = {
            "image": image,
            "orig_size": tuple(image.shape[:2]),
            "image_id": 0,
            "file_name": "",
        }
        item.update(meta)
        for t in self.transforms:
            item = t(item)
        tensor = torch.from_numpy(np.ascontiguousarray(item.pop("image").transpose(2, 0, 1)))
        item[self.input_key] = tensor
        return item

    @torch.no_grad()
    def predict(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Predictions for prepared items, moved to the CPU."""
        if not batch:
            return []
        return [_to_cpu(p) for p in self.model(batch)]

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        """The prediction for an np.ndarray[H, W, 3] uint8 RGB image, at its size."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"Predictor: expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        return self.predict([self.prepare(image)])[0]

    def visualizer(self, prediction: Mapping) -> Any:
        """The visualiser for this kind of prediction (built once)."""
        if self._visualizer is None:
            self._visualizer = build_visualizer(self.cfg, prediction, self.metadata)
        return self._visualizer

    def draw(self, image: np.ndarray, prediction: Mapping, **kwargs: Any) -> np.ndarray:
        """`prediction` drawn on `image` (np.ndarray[H, W, 3] uint8 RGB) by the config's visualiser."""
        return self.visualizer(prediction).draw(image, prediction, **kwargs)


def _is_exported(weights: Any) -> bool:
    return weights is not None and str(weights).lower().endswith((".onnx", ".pt2"))


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, Mapping):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
