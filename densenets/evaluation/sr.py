"""Super-resolution evaluation (`SRMetrics`): PSNR and SSIM on the luma (Y) channel with a shaved border,
the protocol of the SR literature since SRCNN (Dong et al., 2014) and of EDSR.

* Y: ITU-R BT.601 studio-range luma of RGB in 0..255,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (MATLAB's ``rgb2ycbcr``), in
  float, not rounded.
* Border: `crop_border` pixels (default: the scale) are removed from every side,
  since the first rows and columns of an upscaled image lack context.
* PSNR: ``10 log10(255^2 / MSE)``.
* SSIM (Wang et al., "Image Quality Assessment: From Error Visibility to Structural
  Similarity", TIP 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  L = 255, population statistics, averaged over positions where the window fits.
  Equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)``.

The image functions (`rgb_to_y`, `psnr`, `ssim`) are in `densenets.utils.image_metrics`,
where the SR visualiser also finds them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from densenets.config import EVALUATORS
from densenets.utils import comm
from densenets.utils.image_metrics import psnr, rgb_to_y, ssim

from .base import DatasetEvaluator

__all__ = ["SRMetrics"]

@EVALUATORS.register()
class SRMetrics(DatasetEvaluator):
    """PSNR and SSIM of `sr` predictions against the items' `hr`, per image and averaged.

    Args:
        dataset: the evaluated dataset (unused; items carry their `hr`).
        output_dir: where `sr_metrics.json` (per-image values) goes; None = nowhere.
        crop_border: pixels shaved from each side; None = the scale (`sr` height /
            `lr` height).
        y_channel: measure on BT.601 Y (True) or on all RGB channels (False).
    """

    def __init__(
        self,
        dataset: Any = None,
        output_dir: str | os.PathLike | None = None,
        crop_border: int | None = None,
        y_channel: bool = True,
    ) -> None:
        self.output_dir = output_dir
        self.crop_border = crop_border
        self.y_channel = y_channel
        self.reset()

    def reset(self) -> None:
        self._results: list[dict[str, Any]] = []

    def measure(self, sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, float]:
        """PSNR and SSIM of uint8 Tensor[3, H, W] images after Y conversion and shaving."""
        if sr.shape != hr.shape:
            raise ValueError(f"SRMetrics: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in size")
        b = scale if self.crop_border is None else self.crop_border
        if self.y_channel:
            sr, hr = rgb_to_y(sr), rgb_to_y(hr)
        else:
            sr, hr = sr.to(torch.float64), hr.to(torch.float64)
        if b > 0:
            sr, hr = sr[..., b:-b, b:-b], hr[..., b:-b, b:-b]
        if sr.ndim == 3:  # RGB: SSIM averaged over channels
            s = sum(ssim(x, y) for x, y in zip(sr, hr)) / sr.shape[0]
        else:
            s = ssim(sr, hr)
        return {"PSNR": psnr(sr, hr), "SSIM": s}

    def process(self, batch: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
        for item, pred in zip(batch, predictions):
            sr, hr = pred["sr"].cpu(), item["hr"].cpu()
            scale = round(sr.shape[-2] / item["lr"].shape[-2])
            result = {"image_id": item.get("image_id"), **self.measure(sr, hr, scale)}
            self._results.append(result)

    def evaluate(self) -> dict[str, float]:
        results = [r for part in comm.all_gather_object(self._results) for r in part]
        if not comm.is_main_process():
            return {}
        if not results:
            raise RuntimeError("SRMetrics: no predictions were processed")
        if self.output_dir is not None:
            path = Path(self.output_dir) / "sr_metrics.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))
        return {f"sr/{k}": sum(r[k] for r in results) / len(results) for k in ("PSNR", "SSIM")}
