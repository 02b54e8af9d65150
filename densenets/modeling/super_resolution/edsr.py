"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017): mean shift -> head conv -> residual body -> sub-pixel
upsampler -> mean shift back.

Shapes: N images, h x w the low-resolution size, s the scale, C body channels.
Pixels are RGB in 0..255 throughout, as in the paper's code and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import BACKBONES, HEADS, MODELS, ConfigNode, build
from densenets.data.sr import DIV2K_RGB_MEAN
from densenets.layers import ImageList
from densenets.modeling.backbones.base import Backbone
from densenets.modeling.meta_arch import MetaArch

from .inference import self_ensemble, tiled_forward

__all__ = ["EDSR"]


@MODELS.register()
class EDSR(MetaArch):
    """Single-image super-resolution: low-resolution RGB in, `scale` times larger out.

    Args:
        body: a backbone mapping C channels to C channels at the same size, with
            `output_shape()["body"]` (e.g. `EDSRBody`).
        upsampler: a head mapping the body's features to the image `scale` times larger,
            with attribute `scale` (e.g. `PixelShuffleUpsampler`).
        pixel_mean: per-channel mean in 0..255 subtracted before the head conv and
            added back at the end.
        pixel_std: per-channel divisor applied with the mean (1 in EDSR).
        tile_size: eval: largest LR tile side for tiled inference; None = whole image.
        tile_overlap: eval: LR context pixels around each tile.
        self_ensemble: eval: average over the 8 flips/rotations (EDSR+).

    Attributes:
        input_key: "lr": items carry the low-resolution image under ``lr`` (and the
            target under ``hr``), so the tools feed ``lr``.
    """

    input_key: ClassVar[str] = "lr"

    def __init__(
        self,
        body: Backbone,
        upsampler: nn.Module,
        pixel_mean: Sequence[float] = DIV2K_RGB_MEAN,
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        tile_size: int | None = None,
        tile_overlap: int = 16,
        self_ensemble: bool = False,
    ) -> None:
        super().__init__(pixel_mean, pixel_std)
        channels = body.output_shape()["body"].channels
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = body
        self.upsampler = upsampler
        self.scale: int = upsampler.scale
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.self_ensemble = self_ensemble

    @classmethod
    def from_config(cls, cfg: ConfigNode, **extra: Any) -> EDSR:
        body = build(cfg["body"], BACKBONES)
        upsampler = build(cfg["upsampler"], HEADS, input_shape=body.output_shape()["body"])
        return cls(body=body, upsampler=upsampler, **cls.config_options(cfg, "body", "upsampler"), **extra)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor[N, 3, h, w]): float RGB in 0..255.

        Returns:
            Tensor[N, 3, s*h, s*w]: float RGB in about 0..255, not clamped.
        """
        x = (x - self.pixel_mean) / self.pixel_std  # (N, 3, h, w) - (3, 1, 1)
        x = self.head(x)
        x = self.body(x)["body"]
        x = self.upsampler(x)
        return x * self.pixel_std + self.pixel_mean

    def forward(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """
        Args:
            batch: items with `lr` uint8 [3, h, w] and, in training, `hr` uint8
                [3, s*h, s*w] (all items of a training batch the same size).

        Returns:
            training: {"loss_l1": scalar}; eval: [{"sr": uint8 [3, s*h, s*w]}] per item.
        """
        if self.training:
            lr = self.preprocess(batch).tensor
            hr = self._stack(batch, "hr")
            return self.losses(self.network(lr), hr)
        return [{"sr": self.postprocess(self.inference(self.preprocess([item]).tensor))[0]} for item in batch]

    def preprocess(
        self, batch: Sequence[Mapping[str, Any]], size_divisibility: int | None = None
    ) -> ImageList:
        """``lr`` images -> float RGB in 0..255, Tensor[N, 3, h, w] on the model's device.

        Not normalised here: the mean shift is part of `network` (it is added back to the
        output). Images of one batch must have one size; `size_divisibility` is ignored
        (padding would change the super-resolved image).
        """
        lr = self._stack(batch, self.input_key)
        return ImageList(lr, [tuple(lr.shape[-2:])] * len(batch))

    def losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1 between prediction and target in 0..255 (Lim et al., Sec. 4.2)."""
        if sr.shape != hr.shape:
            raise ValueError(
                f"EDSR: prediction {tuple(sr.shape)} and hr {tuple(hr.shape)} differ "
                f"(hr must be exactly {self.scale}x lr)"
            )
        return {"loss_l1": F.l1_loss(sr, hr)}

    @torch.no_grad()
    def inference(self, lr: torch.Tensor) -> torch.Tensor:
        """Float SR of `lr` (Tensor[N, 3, h, w]) with the configured tiling and ensemble."""

        def run(x: torch.Tensor) -> torch.Tensor:
            return tiled_forward(self.network, x, self.scale, self.tile_size, self.tile_overlap)

        return self_ensemble(run, lr) if self.self_ensemble else run(lr)

    @staticmethod
    def postprocess(sr: torch.Tensor) -> torch.Tensor:
        """Float 0..255 -> uint8 (clamped, rounded), on the CPU."""
        return sr.clamp(0, 255).round().to(torch.uint8).cpu()

    def _stack(self, batch: Sequence[Mapping[str, Any]], key: str) -> torch.Tensor:
        images = self.inputs(batch, key)
        if len({tuple(t.shape) for t in images}) > 1:
            raise ValueError(
                f"EDSR: {key!r} images of one batch differ in size: {[tuple(t.shape) for t in images]}"
            )
        return torch.stack(images).to(self.device, torch.float32)
