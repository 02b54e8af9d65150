"""AnchorGenerator: reference boxes tiled over every location of every feature level."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["AnchorGenerator"]


def _per_level(value: Sequence, num_levels: int, name: str) -> list[list[float]]:
    """Broadcast `[a, b]` (one list for all levels) or `[[a], [b], ...]` (one per level)."""
    value = list(value)
    if value and not isinstance(value[0], (list, tuple)):
        return [list(value)] * num_levels
    if len(value) == 1:
        return [list(value[0])] * num_levels
    if len(value) != num_levels:
        raise ValueError(f"AnchorGenerator: {name} has {len(value)} entries for {num_levels} levels")
    return [list(v) for v in value]


class AnchorGenerator(nn.Module):
    """Anchors of several sizes and aspect ratios at every feature location (Faster R-CNN).

    An anchor of size s and aspect ratio a (height / width) has width ``sqrt(s^2 / a)`` and
    height ``a * width``, centred on ``(offset + j) * stride, (offset + i) * stride`` for
    feature cell (i, j). Anchors of one cell are ordered size-major, then aspect ratio;
    cells row-major.

    Args:
        sizes: per level, the anchor sizes in pixels, e.g. ``[[32], [64], [128], [256], [512]]``.
        aspect_ratios: ``[0.5, 1.0, 2.0]`` for every level, or one list per level.
        strides: per level, input pixels per feature cell.
        offset: cell-relative centre, 0.0 (top-left corner) or 0.5 (cell centre).
        round_base_anchors: round the cell anchors to integers (torchvision does).
        strides_from_image_size: use ``padded_image_size // feature_size`` per axis as the
            stride instead of `strides` (torchvision does; it differs from the nominal
            stride on the coarsest level when the padded size is not divisible by it).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (4, 8, 16, 32, 64),
        offset: float = 0.0,
        round_base_anchors: bool = False,
        strides_from_image_size: bool = False,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        num_levels = len(self.strides)
        sizes = _per_level(sizes, num_levels, "sizes")
        ratios = _per_level(aspect_ratios, num_levels, "aspect_ratios")
        self.offset = offset
        self.strides_from_image_size = strides_from_image_size
        for i, (s, r) in enumerate(zip(sizes, ratios)):
            cell = self._cell_anchors(s, r, round_base_anchors)
            self.register_buffer(f"cell_anchors_{i}", cell, persistent=False)
        self.num_anchors = [len(s) * len(r) for s, r in zip(sizes, ratios)]
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @staticmethod
    def _cell_anchors(sizes: list[float], aspect_ratios: list[float], round_: bool) -> torch.Tensor:
        anchors = []
        for size in sizes:
            for ratio in aspect_ratios:
                w = math.sqrt(size**2 / ratio)
                h = ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        cell = torch.tensor(anchors, dtype=torch.float32)
        return cell.round() if round_ else cell

    def _apply(self, fn, recurse=True):  # a device/dtype move invalidates the cache
        self._cache = {}
        return super()._apply(fn, recurse)

    def forward(
        self, grid_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int]
    ) -> list[torch.Tensor]:
        """Anchors of every level for one (padded) image size; the same for each image.

        Args:
            grid_sizes: (H_l, W_l) of each feature level.
            image_size: (H, W) of the padded batch tensor.

        Returns:
            list[Tensor[H_l * W_l * A_l, 4]]: xyxy absolute pixels.
        """
        grid_sizes = [(int(h), int(w)) for h, w in grid_sizes]
        key = (tuple(grid_sizes), tuple(image_size) if self.strides_from_image_size else None)
        if key not in self._cache:
            if len(self._cache) > 64:  # bounded: multi-scale training sees a few dozen shapes
                self._cache.clear()
            self._cache[key] = [self._grid_anchors(i, gs, image_size) for i, gs in enumerate(grid_sizes)]
        return self._cache[key]

    def _grid_anchors(
        self, level: int, grid_size: tuple[int, int], image_size: tuple[int, int]
    ) -> torch.Tensor:
        cell = getattr(self, f"cell_anchors_{level}")
        h, w = grid_size
        if self.strides_from_image_size:
            stride_y, stride_x = image_size[0] // h, image_size[1] // w
        else:
            stride_y = stride_x = self.strides[level]
        ys = (torch.arange(h, device=cell.device, dtype=torch.float32) + self.offset) * stride_y
        xs = (torch.arange(w, device=cell.device, dtype=torch.float32) + self.offset) * stride_x
        ys, xs = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack((xs, ys, xs, ys), dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        return (shifts + cell.view(1, -1, 4)).reshape(-1, 4)  # (H*W*A, 4)

    def extra_repr(self) -> str:
        return f"strides={self.strides}, num_anchors={self.num_anchors}, offset={self.offset}"
