"""Tiny registered models and a transform for the `tools/infer.py` tests: predictions that
can be checked by hand, for each task's output contract."""

from __future__ import annotations

import torch
from torch import nn

from densenets.config import MODELS, TRANSFORMS

__all__ = ["InferHalve", "InferTinyDetector", "InferTinySegmenter", "InferTinyUpscaler"]


@TRANSFORMS.register()
class InferHalve:
    """A test-time transform on the numpy item: keep every second row and column."""

    def __call__(self, item):
        item["image"] = item["image"][::2, ::2]
        return item


@MODELS.register()
class InferTinyDetector(nn.Module):
    """Two boxes per image at its original size: the centre half (0.9), the top-left quarter (0.3)."""

    seen_sizes: list = []

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        out = []
        for item in batch:
            self.seen_sizes.append((tuple(item["image"].shape[1:]), tuple(item["orig_size"])))
            h, w = item["orig_size"]
            boxes = torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, w / 2, h / 2]]) * self.scale
            out.append(
                {
                    "instances": {
                        "boxes": boxes,
                        "scores": torch.tensor([0.9, 0.3]),
                        "labels": torch.tensor([1, 0]),
                    }
                }
            )
        return out


@MODELS.register()
class InferTinySegmenter(nn.Module):
    """Class 1 where red > blue, at the input's (original) size."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]))

    def forward(self, batch):
        out = []
        for item in batch:
            img = item["image"].float()
            score = self.w[0] * img[0] + self.w[1] * img[2]
            out.append({"sem_seg": torch.stack([-score, score])})
        return out


@MODELS.register()
class InferTinyUpscaler(nn.Module):
    """×2 nearest-neighbour super-resolution of `lr`."""

    input_key = "lr"  # the item key the tools feed (as EDSR declares it)

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return [{"sr": item["lr"].repeat_interleave(2, 1).repeat_interleave(2, 2)} for item in batch]
