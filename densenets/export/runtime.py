"""Run an exported file like a model: `ExportedModel(path)(batch)` returns the prediction
dicts of docs/contracts.md, so `Predictor` (and `tools/infer.py --weights model.onnx`)
use it in place of the PyTorch model.

ONNX files run in ONNX Runtime (CPU, or CUDA when onnxruntime-gpu is installed and the
device is a GPU); `.pt2` files are `torch.export` programs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .wrappers import OUTPUT_NAMES

__all__ = ["EXPORT_SUFFIXES", "ExportedModel", "is_exported_file"]

EXPORT_SUFFIXES = (".onnx", ".pt2")


def is_exported_file(path: str | os.PathLike | None) -> bool:
    """True for an `.onnx` or `.pt2` path (what `tools/export.py` writes)."""
    return path is not None and str(path).lower().endswith(EXPORT_SUFFIXES)


def _onnx_session(path: str, device: torch.device) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(
            f"{path}: running an ONNX file needs onnxruntime (pip install densenets[export])"
        ) from None
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(path, providers=providers)


class ExportedModel:
    """A model-like adapter around an exported file (eval only, one image per call).

    Args:
        path: an `.onnx` file or a `.pt2` program written by `tools/export.py`.
        input_key: the item key of the image: the exported model's `input_key` (`image`;
            `lr` for EDSR); None takes it from the task the file's outputs name.
        device: where the outputs go (ONNX Runtime picks its provider from it).
    """

    training = False

    def __init__(
        self, path: str | os.PathLike, input_key: str | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.path = str(path)
        self.device = torch.device(device)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such exported model")
        if self.path.lower().endswith(".onnx"):
            self.session = _onnx_session(self.path, self.device)
            self.program = None
            names = tuple(o.name for o in self.session.get_outputs())
        else:
            from .exporter import load_program

            self.session = None
            self.program = load_program(self.path).module()
            names = tuple(s.arg.name for s in load_program(self.path).graph_signature.output_specs)
        self.task = next((t for t, n in OUTPUT_NAMES.items() if n == names), None)
        if self.task is None:  # a program's outputs are unnamed: take the task from their count
            self.task = {3: "detection"}.get(
                len(names), "super_resolution" if input_key == "lr" else "segmentation"
            )
        if input_key is None:  # the task tells the model family, whose class declares its key
            from densenets.modeling.super_resolution import EDSR

            input_key = EDSR.input_key if self.task == "super_resolution" else "image"
        self.input_key = input_key

    def eval(self) -> ExportedModel:
        return self

    def to(self, device: Any) -> ExportedModel:
        return self

    def run(self, image: torch.Tensor) -> Sequence[torch.Tensor]:
        """The raw outputs for one uint8 Tensor[3, H, W] RGB image."""
        if self.session is not None:
            outs = self.session.run(None, {"image": np.ascontiguousarray(image.cpu().numpy())})
            return tuple(torch.from_numpy(o) for o in outs)
        out = self.program(image.cpu())
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.predict_one(item) for item in batch]

    def predict_one(self, item: dict[str, Any]) -> dict[str, Any]:
        """One item -> its prediction dict at `orig_size` (as the PyTorch model returns)."""
        image = item[self.input_key]
        outs = self.run(image)
        h, w = image.shape[-2:]
        oh, ow = (int(s) for s in item.get("orig_size", (h, w)))
        if self.task == "detection":
            boxes, scores, labels = outs
            scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=torch.float32)
            boxes = boxes * scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            return {"instances": {"boxes": boxes, "scores": scores, "labels": labels.long()}}
        if self.task == "segmentation":
            labels = outs[0]
            if (oh, ow) != (h, w):
                labels = F.interpolate(labels[None, None].float(), size=(oh, ow), mode="nearest")[0, 0].long()
            return {"sem_seg": labels}
        return {"sr": outs[0]}
