"""Visualisers: draw one prediction on its image (for `tools/infer.py`).

Each takes `class_names` and options, and `draw(image, prediction)` maps an
np.ndarray[H, W, 3] uint8 RGB image and a prediction dict (the model contract in
`docs/contracts.md`) to a new np.ndarray uint8 RGB image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from densenets.config import VISUALIZERS

__all__ = ["DetectionVisualizer", "SemSegVisualizer", "SRVisualizer", "color_palette"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_palette(n: int) -> np.ndarray:
    """`n` distinct, saturated RGB colours (golden-ratio hue steps): np.ndarray[n, 3] uint8."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 230)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _text_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple, scale: float) -> None:
    """Text on a filled box whose bottom-left corner is (x, y), kept inside the image."""
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x = int(np.clip(x, 0, max(0, img.shape[1] - w - 2)))
    y = int(np.clip(y, h + base + 2, img.shape[0]))
    cv2.rectangle(img, (x, y - h - base - 2), (x + w + 2, y), color, -1)
    cv2.putText(img, text, (x + 1, y - base), _FONT, scale, _text_color(color), thickness, cv2.LINE_AA)


@VISUALIZERS.register()
class DetectionVisualizer:
    """Boxes with class names and scores.

    Args:
        class_names: names for the contiguous labels (else the label number is shown).
        score_threshold: detections below it are not drawn.
        line_width: box outline width in pixels (0: scaled with the image size).
        font_scale: label text scale (0: scaled with the image size).
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        score_threshold: float = 0.5,
        line_width: int = 0,
        font_scale: float = 0.0,
    ) -> None:
        self.class_names, self.score_threshold = list(class_names or []), score_threshold
        self.line_width, self.font_scale = line_width, font_scale
        self.colors = color_palette(max(len(self.class_names), 1) + 1)

    def name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        """Draw `prediction["instances"]` (`boxes` [N, 4] xyxy pixels, `scores`, `labels`)."""
        inst = prediction["instances"]
        boxes, scores, labels = _numpy(inst["boxes"]), _numpy(inst["scores"]), _numpy(inst["labels"]).astype(int)
        out = np.ascontiguousarray(image.copy())
        size = max(image.shape[:2])
        lw = self.line_width or max(1, round(size / 400))
        scale = self.font_scale or max(0.35, size / 1600)
        keep = np.argsort(-scores)
        for i in keep[scores[keep] >= self.score_threshold][::-1]:  # highest score drawn last, on top
            color = tuple(int(c) for c in self.colors[labels[i] % len(self.colors)])
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
            cv2.rectangle(out, (x0, y0), (x1, y1), color, lw)
            _label(out, f"{self.name(labels[i])} {scores[i]:.2f}", x0, y0, color, scale)
        return out


@VISUALIZERS.register()
class SemSegVisualizer:
    """Colour overlay of the predicted classes, with a legend of the classes present.

    Args:
        class_names: one per class.
        palette: RGB colours per class (default: `color_palette`).
        alpha: overlay opacity.
        legend: append a legend panel at the right.
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        alpha: float = 0.5,
        legend: bool = True,
    ) -> None:
        self.class_names = list(class_names or [])
        self.palette = np.asarray(palette, dtype=np.uint8) if palette is not None else None
        self.alpha, self.legend = alpha, legend

    def colors(self, n: int) -> np.ndarray:
        if self.palette is not None and len(self.palette) >= n:
            return self.palette
        return color_palette(n)

    def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        """Draw `prediction["sem_seg"]` (scores [C, H, W], or labels [H, W])."""
        seg = _numpy(prediction["sem_seg"])
        labels = seg.argmax(0) if seg.ndim == 3 else seg.astype(np.int64)
        n = seg.shape[0] if seg.ndim == 3 else int(labels.max()) + 1
        if labels.shape != image.shape[:2]:
            labels = cv2.resize(labels.astype(np.int32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        colors = self.colors(max(n, len(self.class_names)))
        valid = (labels >= 0) & (labels < len(colors))
        color_map = colors[np.where(valid, labels, 0)]
        blend = image.astype(np.float32) * (1 - self.alpha) + color_map.astype(np.float32) * self.alpha
        out = np.where(valid[..., None], blend, image).round().astype(np.uint8)
        if not self.legend:
            return out
        present, counts = np.unique(labels[valid], return_counts=True)
        return self._with_legend(out, present[np.argsort(-counts)], colors)

    def _with_legend(self, img: np.ndarray, classes: np.ndarray, colors: np.ndarray) -> np.ndarray:
        scale = max(0.4, img.shape[0] / 1200)
        row = int(28 * scale / 0.5)
        names = [self.class_names[c] if c < len(self.class_names) else str(c) for c in classes]
        width = max([cv2.getTextSize(t, _FONT, scale, 1)[0][0] for t in names] + [40]) + row + 16
        height = max(img.shape[0], row * len(names) + 8)
        panel = np.full((height, width, 3), 255, np.uint8)
        for k, (c, name) in enumerate(zip(classes, names)):
            y = 4 + k * row
            cv2.rectangle(panel, (6, y + 3), (6 + row - 6, y + row - 3), tuple(int(v) for v in colors[c]), -1)
            cv2.putText(panel, name, (row + 8, y + int(row * 0.7)), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
        canvas = np.full((height, img.shape[1] + width, 3), 255, np.uint8)
        canvas[: img.shape[0], : img.shape[1]] = img
        canvas[:, img.shape[1] :] = panel
        return canvas


@VISUALIZERS.register()
class SRVisualizer:
    """The super-resolved image; with `compare`, the bicubic upscale of the input at
    its left for a side-by-side view.

    Args:
        class_names: unused (the common visualiser signature).
        compare: draw bicubic | SR side by side.
    """

    def __init__(self, class_names: Sequence[str] | None = None, compare: bool = False) -> None:
        self.compare = compare

    def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        """`prediction["sr"]`: uint8 [3, sH, sW] RGB."""
        sr = np.ascontiguousarray(_numpy(prediction["sr"]).transpose(1, 2, 0)).astype(np.uint8)
        if not self.compare:
            return sr
        bicubic = cv2.resize(image, (sr.shape[1], sr.shape[0]), interpolation=cv2.INTER_CUBIC)
        return np.concatenate([bicubic, sr], axis=1)
