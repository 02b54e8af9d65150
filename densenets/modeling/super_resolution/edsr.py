"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017): mean shift -> head conv -> residual body -> sub-pixel
upsampler -> mean shift back.

Shapes: N images, h x w the low-resolution size, s the scale, C body channels.
Pixels are RGB in 0..255 throughout, as in the paper's code and checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import BACKBONES, HEADS, MODELS, ConfigNode, build
from densenets.data.sr import DIV2K_RGB_MEAN

from .inference import self_ensemble, tiled_forward

__all__ = ["EDSR"]


@MODELS.register()
class EDSR(nn.Module):
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
    """

    def __init__(
        self,
        body: nn.Module,
        upsampler: nn.Module,
        pixel_mean: Sequence[float] = DIV2K_RGB_MEAN,
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
        tile_size: int | None = None,
        tile_overlap: int = 16,
        self_ensemble: bool = False,
    ) -> None:
        super().__init__()
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError(f"EDSR: pixel_mean and pixel_std need 3 values, got {pixel_mean}, {pixel_std}")
        channels = body.output_shape()["body"].channels
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = body
        self.upsampler = upsampler
        self.scale: int = upsampler.scale
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.self_ensemble = self_ensemble

    @classmethod
    def from_config(cls, cfg: ConfigNode, **extra: Any) -> EDSR:
        body = build(cfg["body"], BACKBONES)
        upsampler = build(cfg["upsampler"], HEADS, input_shape=body.output_shape()["body"])
        options = {k: v for k, v in cfg.items() if k not in ("type", "body", "upsampler")}
        return cls(body=body, upsampler=upsampler, **options, **extra)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (Tensor[N, 3, h, w]): float RGB in 0..255.

        Returns:
            Tensor[N, 3, s*h, s*w]: float RGB in about 0..255, not clamped.
        """
        x = (x - self.pixel_mean) / self.pixel_std
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
            lr = self._stack(batch, "lr")
            hr = self._stack(batch, "hr")
            return self.losses(self.network(lr), hr)
        return [{"sr": self.postprocess(self.inference(self._stack([item], "lr")))[0]} for item in batch]

    def losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """L1 between prediction and target in 0..255 (Lim et al., Sec. 4.2)."""
        if sr.shape != hr.shape:
            raise ValueError(f"EDSR: prediction {tuple(sr.shape)} and hr {tuple(hr.shape)} differ "
                             f"(hr must be exactly {self.scale}x lr)")
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

    def _stack(self, batch: list[dict[str, Any]], key: str) -> torch.Tensor:
        try:
            images = [item[key] for item in batch]
        except KeyError:
            raise KeyError(f"EDSR: every batch item needs {key!r} (uint8 [3, H, W])") from None
        if len({tuple(t.shape) for t in images}) > 1:
            raise ValueError(f"EDSR: {key!r} images of one batch differ in size: {[tuple(t.shape) for t in images]}")
        return torch.stack(images).to(self.device, torch.float32)
