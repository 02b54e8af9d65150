"""ImageList: a batch of differently sized images padded into one tensor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ImageList"]


@dataclass
class ImageList:
    """A padded batch.

    Attributes:
        tensor (Tensor[N, C, H, W]): images padded at the bottom/right to a common size.
        image_sizes (list[tuple[int, int]]): (h, w) of each image before padding.
    """

    tensor: torch.Tensor
    image_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, device: torch.device | str) -> ImageList:
        return ImageList(self.tensor.to(device), self.image_sizes)

    def padding_mask(self) -> torch.Tensor:
        """Bool Tensor[N, H, W]: True on padded pixels (the DETR convention)."""
        n, _, h, w = self.tensor.shape
        mask = torch.ones((n, h, w), dtype=torch.bool, device=self.tensor.device)
        for i, (ih, iw) in enumerate(self.image_sizes):
            mask[i, :ih, :iw] = False
        return mask

    @staticmethod
    def from_uint8(
        images: Sequence[torch.Tensor],
        pixel_mean: torch.Tensor,
        pixel_std: torch.Tensor,
        input_format: str = "RGB",
        size_divisibility: int = 0,
    ) -> ImageList:
        """Normalise uint8 RGB images the way a model's weights expect, then pad.

        Args:
            images: uint8 Tensor[3, H, W] RGB each (any device).
            pixel_mean, pixel_std (Tensor[3, 1, 1]): on the model's device, in
                `input_format` channel order.
            input_format: "RGB", or "BGR" for weights trained on BGR input.
            size_divisibility: pad height and width up to a multiple of this.
        """
        out = []
        for image in images:
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"image must be a [3, H, W] tensor, got {list(image.shape)}")
            image = image.to(pixel_mean.device, non_blocking=True)
            if input_format == "BGR":
                image = image.flip(0)
            out.append((image.float() - pixel_mean) / pixel_std)
        return ImageList.from_tensors(out, size_divisibility)

    @staticmethod
    def from_tensors(
        tensors: Sequence[torch.Tensor], size_divisibility: int = 0, pad_value: float = 0.0
    ) -> ImageList:
        """Pad CHW tensors to the largest (h, w), rounded up to `size_divisibility`."""
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors: got no images")
        sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        if size_divisibility > 1:
            d = size_divisibility
            max_h = (max_h + d - 1) // d * d
            max_w = (max_w + d - 1) // d * d
        if len(tensors) == 1:
            t = tensors[0]
            pad = (0, max_w - t.shape[-1], 0, max_h - t.shape[-2])
            batched = F.pad(t, pad, value=pad_value).unsqueeze(0)
        else:
            batched = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], max_h, max_w), pad_value)
            for i, t in enumerate(tensors):
                batched[i, ..., : t.shape[-2], : t.shape[-1]].copy_(t)
        return ImageList(batched.contiguous(), sizes)
