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

__all__ = ["DetectionVisualizer", "SemSegVisualizer", "SRVisualizer", "color_palette", "colorize", "place_labels"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_palette(n: int) -> np.ndarray:
    """`n` distinct, saturated RGB colours (golden-ratio hue steps): np.ndarray[n, 3] uint8."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    hsv = np.stack([hues * 179, np.full(n, 200), np.full(n, 230)], axis=1).astype(np.uint8)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def colorize(
    label: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray, ignore_color: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """np.ndarray[H, W] of class indices -> np.ndarray[H, W, 3] uint8 RGB, class c in
    `palette[c]`; indices outside the palette (e.g. 255) get `ignore_color`."""
    table = np.tile(np.asarray(ignore_color, dtype=np.uint8), (256, 1))
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return table[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _text_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _text_box(text: str, scale: float) -> tuple[int, int, int, int]:
    """(width, height, baseline, thickness) of a label's filled box."""
    thickness = max(1, int(round(scale * 2)))
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    return w + 2, h + base + 2, base, thickness


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple, scale: float) -> None:
    """Text on a filled box whose top-left corner is (x, y)."""
    w, h, base, thickness = _text_box(text, scale)
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, -1)
    cv2.putText(
        img, text, (x + 1, y + h - 1 - base), _FONT, scale, _text_color(color), thickness, cv2.LINE_AA
    )


def _first_free(
    spots: np.ndarray, w: int, h: int, width: int, height: int, placed: np.ndarray, fallback: bool = False
) -> np.ndarray | None:
    """The first of `spots` (S, 2), clipped into the image, whose w x h box covers none of
    `placed` (P, 4); with `fallback`, else the one covering the fewest pixels."""
    spots = spots.copy()
    spots[:, 0] = np.clip(spots[:, 0], 0, max(0, width - w))
    spots[:, 1] = np.clip(spots[:, 1], 0, max(0, height - h))
    rects = np.concatenate([spots, spots + [w, h]], axis=1)  # (S, 4)
    ix = np.minimum(rects[:, None, 2], placed[None, :, 2]) - np.maximum(rects[:, None, 0], placed[None, :, 0])
    iy = np.minimum(rects[:, None, 3], placed[None, :, 3]) - np.maximum(rects[:, None, 1], placed[None, :, 1])
    cost = (np.clip(ix, 0, None) * np.clip(iy, 0, None)).sum(axis=1)  # (S,) covered pixels
    free = np.flatnonzero(cost == 0)
    if len(free):
        return rects[free[0]]
    return rects[int(np.argmin(cost))] if fallback else None


def place_labels(
    sizes: Sequence[tuple[int, int]], boxes: np.ndarray, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Greedy placement of label boxes that do not cover each other.

    Each label (in the given order, most important first) takes the first free spot
    among: just above its box's top-left corner, inside it, below the box, above its
    top-right corner, then rows ever further from the top edge (at the box's left or
    right edge); all spots are clipped into the image. Where none is free, the spot
    covering the fewest pixels of labels already placed.

    Args:
        sizes: (w, h) of each label box.
        boxes: np.ndarray[N, 4] xyxy pixels, the box each label belongs to.
        width, height: the image's size.

    Returns:
        (x0, y0, x1, y1) of each label, exclusive ends.
    """
    placed = np.zeros((0, 4), np.int64)
    for (w, h), (bx0, by0, bx1, by1) in zip(sizes, np.round(np.asarray(boxes)).astype(int).tolist()):
        near = np.array([(bx0, by0 - h), (bx0, by0), (bx0, by1), (bx1 - w, by0 - h)], np.int64)
        best = _first_free(near, w, h, width, height, placed)
        if best is None:  # the four usual spots are taken: scan every row, nearest first
            rows = np.arange(0, max(1, height - h + 1), max(1, h // 4))
            rows = rows[np.argsort(np.abs(rows - (by0 - h)), kind="stable")]
            far = np.array([(x, y) for y in rows.tolist() for x in (bx0, bx1 - w)], np.int64)
            best = _first_free(np.concatenate([near, far]), w, h, width, height, placed, fallback=True)
        placed = np.concatenate([placed, best[None]])
    return [tuple(int(v) for v in r) for r in placed]


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

    def _shown(self, image: np.ndarray, prediction: dict):
        """(boxes, scores, labels) above the threshold, highest score first, and the sizes."""
        inst = prediction["instances"]
        boxes, scores, labels = (
            _numpy(inst["boxes"]),
            _numpy(inst["scores"]),
            _numpy(inst["labels"]).astype(int),
        )
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= self.score_threshold]
        size = max(image.shape[:2])
        lw = self.line_width or max(1, round(size / 400))
        scale = self.font_scale or max(0.35, size / 1600)
        return boxes[order].reshape(-1, 4), scores[order], labels[order], lw, scale

    def label_boxes(self, image: np.ndarray, prediction: dict) -> list[tuple[int, int, int, int]]:
        """Where the labels of the drawn detections go, (x0, y0, x1, y1) each, highest score first."""
        boxes, scores, labels, _, scale = self._shown(image, prediction)
        texts = [f"{self.name(lab)} {s:.2f}" for lab, s in zip(labels, scores)]
        sizes = [_text_box(t, scale)[:2] for t in texts]
        return place_labels(sizes, boxes, image.shape[1], image.shape[0])

    def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
        """Draw `prediction["instances"]` (`boxes` [N, 4] xyxy pixels, `scores`, `labels`).

        Boxes first (the highest score on top), then every label, placed so that labels
        do not cover each other (`place_labels`).
        """
        boxes, scores, labels, lw, scale = self._shown(image, prediction)
        out = np.ascontiguousarray(image.copy())
        colors = [tuple(int(c) for c in self.colors[lab % len(self.colors)]) for lab in labels]
        for i in reversed(range(len(boxes))):
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
            cv2.rectangle(out, (x0, y0), (x1, y1), colors[i], lw)
        for i, (x0, y0, _, _) in enumerate(self.label_boxes(image, prediction)):
            _label(out, f"{self.name(labels[i])} {scores[i]:.2f}", x0, y0, colors[i], scale)
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


def _caption(img: np.ndarray, text: str, scale: float) -> None:
    """White text on a dark box at the top-left corner of `img` (in place, clipped to it)."""
    w, h, base, thickness = _text_box(text, scale)
    cv2.rectangle(img, (0, 0), (w + 3, h + 3), (0, 0, 0), -1)
    cv2.putText(img, text, (3, h + 1 - base), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def _y_psnr(image: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR on the Y channel with `shave` border pixels removed, as `SRMetrics` measures."""
    from densenets.utils.image_metrics import psnr, rgb_to_y

    ya, yb = (rgb_to_y(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)) for x in (image, hr))
    if shave:
        ya, yb = ya[shave:-shave, shave:-shave], yb[shave:-shave, shave:-shave]
    return psnr(ya, yb)


@VISUALIZERS.register()
class SRVisualizer:
    """The super-resolved image; with `compare`, the bicubic upscale of the input at
    its left for a side-by-side view, each half captioned (bicubic | model). Given the
    ground truth, the captions show each half's PSNR (Y channel, border of `scale`
    pixels shaved, as the SR evaluator measures it).

    Args:
        class_names: unused (the common visualiser signature).
        compare: draw bicubic | SR side by side.
    """

    def __init__(self, class_names: Sequence[str] | None = None, compare: bool = False) -> None:
        self.compare = compare

    def captions(self, image: np.ndarray, prediction: dict, hr: np.ndarray | None = None) -> list[str]:
        """The captions of the halves drawn: `["bicubic", "model"]` (with `compare`) or
        `["model"]`, each followed by its PSNR in dB when `hr` is given."""
        sr = self._sr(prediction)
        halves = {"bicubic": self._bicubic(image, sr), "model": sr} if self.compare else {"model": sr}
        if hr is None:
            return list(halves)
        if hr.shape != sr.shape:
            raise ValueError(f"SRVisualizer: ground truth {hr.shape} differs from the output {sr.shape}")
        shave = int(round(sr.shape[0] / image.shape[0]))
        return [f"{name} {_y_psnr(img, hr, shave):.2f} dB" for name, img in halves.items()]

    def draw(self, image: np.ndarray, prediction: dict, hr: np.ndarray | None = None) -> np.ndarray:
        """`prediction["sr"]`: uint8 [3, sH, sW] RGB; `hr`: the ground truth [sH, sW, 3] RGB."""
        sr = self._sr(prediction)
        if not self.compare and hr is None:
            return sr
        halves = [self._bicubic(image, sr), sr.copy()] if self.compare else [sr.copy()]
        scale = max(0.35, max(sr.shape[:2]) / 1600)
        for half, text in zip(halves, self.captions(image, prediction, hr)):
            _caption(half, text, scale)
        return np.concatenate(halves, axis=1)

    @staticmethod
    def _sr(prediction: dict) -> np.ndarray:
        return np.ascontiguousarray(_numpy(prediction["sr"]).transpose(1, 2, 0)).astype(np.uint8)

    @staticmethod
    def _bicubic(image: np.ndarray, sr: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (sr.shape[1], sr.shape[0]), interpolation=cv2.INTER_CUBIC)
