"""Image-quality functions of the super-resolution protocol: BT.601 luma, PSNR, SSIM.

`densenets.evaluation.sr.SRMetrics` (border shave, averaging, the protocol's details are
described there) and the SR visualiser both use them, so they sit at the bottom of the
package, beside the visualisers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["rgb_to_y", "psnr", "ssim"]

_Y_WEIGHTS = (65.481 / 255, 128.553 / 255, 24.966 / 255)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma: Tensor[..., 3, H, W] RGB 0..255 -> float64 Tensor[..., H, W] in 16..235."""
    img = img.to(torch.float64)
    w = img.new_tensor(_Y_WEIGHTS)
    return 16.0 + (img * w[:, None, None]).sum(dim=-3)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> float:
    """PSNR in dB of two same-shape arrays (inf when equal)."""
    mse = torch.mean((a.to(torch.float64) - b.to(torch.float64)) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> float:
    """Mean SSIM of two single-channel images Tensor[H, W] (both sides >= 11)."""
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"ssim: images must be at least 11x11, got {tuple(a.shape)}")
    g = _gaussian_window().to(a.device)
    x = torch.stack([a, b]).to(torch.float64)[:, None]  # (2, 1, H, W)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter
        t = F.conv2d(t, g.view(1, 1, -1, 1))
        return F.conv2d(t, g.view(1, 1, 1, -1))

    mu = blur(x)
    mu_a, mu_b = mu[0, 0], mu[1, 0]
    var_a = blur(x[0:1] ** 2)[0, 0] - mu_a**2
    var_b = blur(x[1:2] ** 2)[0, 0] - mu_b**2
    cov = blur(x[0:1] * x[1:2])[0, 0] - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean().item()
