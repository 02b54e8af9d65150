"""Pixel-wise cross-entropy for semantic segmentation, with class weights and OHEM.

Shapes: N images, K classes, H x W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SemSegLoss"]


class SemSegLoss(nn.Module):
    """Cross-entropy over labelled pixels, optionally on the hard pixels only (OHEM).

    The loss is the mean over the kept pixels (weighted by `class_weight` as
    `torch.nn.functional.cross_entropy` does), times `loss_weight`. Pixels labelled
    `ignore_index` never count.

    Online hard example mining (Shrivastava et al., 2016, as used for segmentation by
    Wu et al., 2016, "Bridging category-level and instance-level semantic image
    segmentation"): a pixel is kept when the predicted probability of its true class is
    below `ohem_thresh`; if that keeps fewer than `ohem_min_kept` pixels, the
    `ohem_min_kept` lowest-probability pixels are kept instead.

    Args:
        loss_weight: multiplies the loss.
        ignore_index: label of pixels without ground truth.
        class_weight: K per-class weights, or None.
        ohem_thresh: probability threshold of OHEM; None disables OHEM.
        ohem_min_kept: the fewest pixels OHEM keeps (per batch).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        ignore_index: int = 255,
        class_weight: Sequence[float] | None = None,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 100000,
    ) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.ignore_index = int(ignore_index)
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = int(ohem_min_kept)
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits (Tensor[N, K, H, W]): class scores, same size as `targets`.
            targets (Tensor[N, H, W]): int64 class indices in [0, K) or `ignore_index`.

        Returns:
            Scalar loss (zero, still attached to the graph, when no pixel is labelled).
        """
        if self.class_weight is not None and self.class_weight.numel() != logits.shape[1]:
            raise ValueError(
                f"class_weight: {self.class_weight.numel()} weights for {logits.shape[1]} classes"
            )
        weight = None if self.class_weight is None else self.class_weight.to(logits.dtype)
        per_pixel = F.cross_entropy(
            logits, targets, weight=weight, ignore_index=self.ignore_index, reduction="none"
        )  # (N, H, W); 0 on ignored pixels
        valid = targets != self.ignore_index
        keep = self._hard_pixels(logits, targets, valid) if self.ohem_thresh is not None else valid
        # `per_pixel` already carries the class weights; the mean divides by their sum.
        kept = keep.to(per_pixel.dtype)
        denom = kept.sum() if weight is None else (kept * weight[targets.masked_fill(~valid, 0)]).sum()
        # No kept pixel: 0 / eps = 0, still attached to the graph (and no host sync).
        return self.loss_weight * (per_pixel * kept).sum() / denom.clamp(min=1e-12)

    @torch.no_grad()
    def _hard_pixels(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Bool Tensor[N, H, W]: the pixels OHEM keeps."""
        num_valid = int(valid.sum())
        if num_valid == 0:
            return valid
        prob = logits.float().softmax(dim=1)
        true_prob = prob.gather(1, targets.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)  # (N, H, W)
        true_prob = true_prob.masked_fill(~valid, 1.0)
        hard = true_prob < self.ohem_thresh
        min_kept = min(self.ohem_min_kept, num_valid)
        if min_kept > 0:
            # Also keep the `min_kept` lowest-probability pixels (ties at the k-th value too).
            kth = true_prob[valid].kthvalue(min_kept).values
            hard |= true_prob <= kth
        return hard & valid

    def extra_repr(self) -> str:
        ohem = "" if self.ohem_thresh is None else f", ohem_thresh={self.ohem_thresh}, min_kept={self.ohem_min_kept}"
        return f"loss_weight={self.loss_weight}, ignore_index={self.ignore_index}{ohem}"
