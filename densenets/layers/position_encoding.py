"""Sine position encodings for DETR-style transformers.

Two flavours of the same formula, ``PE(p, 2i) = sin(p / T^(2i/F))``,
``PE(p, 2i+1) = cos(p / T^(2i/F))``:

* `PositionEmbeddingSine` encodes every pixel of a feature map from its padding mask
  (DETR, Carion et al., 2020), so padded pixels do not shift the encoding of real ones;
* `sine_box_embedding` encodes normalised points or anchor boxes (DAB-DETR, Liu et al.,
  2022), the positional queries of the DAB decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_box_embedding"]


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """Tensor[F]: T^(2*floor(i/2)/F), so that channels 2i and 2i+1 share a frequency."""
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd channels."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine encoding of a padded feature map.

    Coordinates count valid (unpadded) pixels only: ``y = cumsum(~mask, rows)``,
    normalised by the image's own height (``y / h * scale``) when `normalize`, so an
    image's encoding is the same whether or not it is batched with larger images.

    Args:
        num_pos_feats: channels per axis F; the output has 2F channels (y first, then x).
        temperature: T of the formula along y and x; a pair gives (T_y, T_x)
            (DAB-DETR uses 20 for both, DETR 10000).
        normalize: normalise coordinates to [0, scale] per image.
        scale: the range of normalised coordinates (2*pi by default).
        offset: added to the 1-based pixel counts before normalising (Deformable DETR
            uses -0.5, pixel centres; DETR, DAB-DETR and DINO 0).
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float | tuple[float, float] = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        t = temperature if isinstance(temperature, (tuple, list)) else (temperature, temperature)
        self.temperature_y, self.temperature_x = float(t[0]), float(t[1])
        self.normalize = normalize
        self.scale = scale
        self.offset = offset

    @torch.no_grad()
    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Encode every position of a padded batch.

        Args:
            mask (Tensor[B, H, W] bool): True on padded positions.

        Returns:
            Tensor[B, 2F, H, W] float32: y encoding in channels [0, F), x in [F, 2F).
        """
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)  # (B, H, W): 1..h in each column
        x = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = (y + self.offset) / (y[:, -1:, :] + eps) * self.scale
            x = (x + self.offset) / (x[:, :, -1:] + eps) * self.scale
        fy = _frequencies(self.num_pos_feats, self.temperature_y, mask.device)
        fx = _frequencies(self.num_pos_feats, self.temperature_x, mask.device)
        pos_y = _interleave_sin_cos(y[..., None] / fy)  # (B, H, W, F)
        pos_x = _interleave_sin_cos(x[..., None] / fx)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature=({self.temperature_y}, "
            f"{self.temperature_x}), normalize={self.normalize}, offset={self.offset}"
        )


def sine_box_embedding(
    boxes: torch.Tensor, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine embedding of normalised points or anchor boxes.

    Args:
        boxes (Tensor[..., 2] or Tensor[..., 4]): (x, y) or (x, y, w, h), each in [0, 1].
        num_pos_feats: channels per coordinate F.
        temperature: T of the formula.
        scale: coordinates are multiplied by `scale` first (2*pi maps [0, 1] to a turn).

    Returns:
        Tensor[..., 2F] or Tensor[..., 4F]: embeddings in the order (y, x) or
        (y, x, w, h) -- y before x, as in the feature-map encoding above.
    """
    if boxes.shape[-1] not in (2, 4):
        raise ValueError(f"sine_box_embedding: expected 2 or 4 coordinates, got shape {tuple(boxes.shape)}")
    freqs = _frequencies(num_pos_feats, temperature, boxes.device)
    emb = _interleave_sin_cos((boxes * scale)[..., None] / freqs)  # (..., C, F)
    order = [1, 0] if boxes.shape[-1] == 2 else [1, 0, 2, 3]
    return emb[..., order, :].flatten(-2)
