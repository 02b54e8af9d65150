"""What every meta-architecture shares: pixel normalisation, device, input key, padding.

A meta-architecture (Faster R-CNN, the DETR family, the segmentation encoder-decoder,
EDSR) is called as ``model(batch)`` on a list of dataset items (docs/contracts.md):
training mode returns a dict of scalar ``loss_*`` tensors, eval mode a list of
prediction dicts at each item's ``orig_size``. It moves the inputs to its own device,
normalises them with its `pixel_mean` / `pixel_std` in its `input_format` channel order
and pads them into an `ImageList`. `MetaArch` holds that part once.

Shapes: N images, uint8 ``Tensor[3, H_i, W_i]`` RGB inputs, a padded float batch
``Tensor[N, 3, H, W]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from densenets.layers import ImageList

__all__ = ["MetaArch", "INPUT_FORMATS", "input_key_of"]

INPUT_FORMATS = ("RGB", "BGR")


class MetaArch(nn.Module):
    """Base class of the meta-architectures.

    Args:
        pixel_mean: per-channel mean subtracted from the 0..255 pixels, in
            `input_format` order (the convention of the weights, so that foreign
            checkpoints load with their own).
        pixel_std: per-channel divisor, same order and scale.
        input_format: "RGB" or "BGR": the channel order the weights expect; items are
            always RGB and are flipped for "BGR".
        size_divisibility: pad a batch's height and width to a multiple of this in
            `preprocess` (0: no rounding; the batch is still padded to its largest image).

    Attributes:
        input_key: the item key that holds the model's input image (class attribute:
            "image"; EDSR reads "lr"). Tools that feed the model (predictor, export,
            benchmark) read it from the model.
        pixel_mean, pixel_std (Tensor[3, 1, 1]): float32 buffers, not saved in
            checkpoints (``persistent=False``): they come from the config.
    """

    input_key: ClassVar[str] = "image"

    def __init__(
        self,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        size_divisibility: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"{name}: input_format: expected 'RGB' or 'BGR', got {input_format!r}")
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(
                f"{name}: pixel_mean and pixel_std need 3 values, got {list(pixel_mean)}, {list(pixel_std)}"
            )
        self.input_format = input_format
        self.size_divisibility = int(size_divisibility)
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        """The device of the model's buffers (where inputs are moved)."""
        return self.pixel_mean.device

    @staticmethod
    def config_options(cfg: Mapping[str, Any], *children: str) -> dict[str, Any]:
        """The keys of a model config that go to the constructor as they are: every key
        but ``type`` and the `children` that `from_config` builds itself."""
        skip = {"type", *children}
        return {k: v for k, v in cfg.items() if k not in skip}

    def inputs(self, batch: Sequence[Mapping[str, Any]], key: str | None = None) -> list[torch.Tensor]:
        """The `key` tensor (default `input_key`) of every item, with an error naming the
        key and the item when one lacks it."""
        key = key or self.input_key
        out = []
        for i, item in enumerate(batch):
            if key not in item:
                where = item.get("file_name", item.get("image_id", f"item {i}"))
                raise KeyError(f"{type(self).__name__}: {where}: batch item has no {key!r} (uint8 [3, H, W])")
            out.append(item[key])
        return out

    def preprocess(
        self, batch: Sequence[Mapping[str, Any]], size_divisibility: int | None = None
    ) -> ImageList:
        """uint8 RGB items -> normalised float batch on the model's device.

        Args:
            batch: items whose `input_key` is a uint8 Tensor[3, H_i, W_i], RGB.
            size_divisibility: overrides the model's `size_divisibility` (0: pad only to
                the largest image).

        Returns:
            ImageList with ``tensor`` float32 Tensor[N, 3, H, W] (zero padding at the
            bottom/right) and each image's (H_i, W_i).
        """
        div = self.size_divisibility if size_divisibility is None else size_divisibility
        images = self.inputs(batch)
        return ImageList.from_uint8(images, self.pixel_mean, self.pixel_std, self.input_format, div)


def input_key_of(model: object) -> str:
    """The item key a model (instance or class) reads its image from: its `input_key`,
    "image" for a model that declares none (a plain `nn.Module` in user code)."""
    return getattr(model, "input_key", MetaArch.input_key)
