"""Matcher: assigns each prediction (anchor or proposal) to its best ground-truth box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Matcher"]


@dataclass(frozen=True)
class Matcher:
    """Matches predictions to ground truth by a quality matrix (IoU) and two thresholds.

    A prediction whose best IoU is below `low` is background (label 0), at least `high`
    is foreground (label 1), and in between is ignored (label -1). With a single
    threshold, `low == high` and nothing is ignored.

    Args:
        thresholds: ``[low, high]`` or ``[threshold]``; e.g. ``[0.3, 0.7]`` for the RPN,
            ``[0.5]`` for the box head.
        allow_low_quality_matches: also make foreground, for every ground-truth box, the
            predictions with the highest IoU to it (ties included), even below `high`,
            so that every box gets at least one positive (Faster R-CNN's RPN rule).
    """

    thresholds: Sequence[float] = (0.5,)
    allow_low_quality_matches: bool = False

    def __post_init__(self) -> None:
        thresholds = tuple(float(t) for t in self.thresholds)
        if len(thresholds) not in (1, 2) or thresholds[0] > thresholds[-1]:
            raise ValueError(
                f"Matcher: thresholds must be [low, high] with low <= high, got {list(thresholds)}"
            )
        object.__setattr__(self, "thresholds", thresholds)

    @property
    def low(self) -> float:
        return self.thresholds[0]

    @property
    def high(self) -> float:
        return self.thresholds[-1]

    def __call__(self, match_quality_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Match.

        Args:
            match_quality_matrix (Tensor[G, R]): IoU of G ground-truth boxes with R predictions.

        Returns:
            matched_idxs (Tensor[R], int64): the best ground-truth index of each prediction
                (0 when G == 0; meaningful only where the label is 1).
            match_labels (Tensor[R], int8): 1 foreground, 0 background, -1 ignore.
        """
        num_gt, num_pred = match_quality_matrix.shape
        device = match_quality_matrix.device
        if num_gt == 0:
            zeros = torch.zeros(num_pred, dtype=torch.int64, device=device)
            return zeros, zeros.to(torch.int8)
        matched_vals, matched_idxs = match_quality_matrix.max(dim=0)
        labels = torch.ones(num_pred, dtype=torch.int8, device=device)
        labels[matched_vals < self.high] = -1
        labels[matched_vals < self.low] = 0
        if self.allow_low_quality_matches:
            best_per_gt = match_quality_matrix.max(dim=1, keepdim=True).values  # (G, 1)
            best_preds = (match_quality_matrix == best_per_gt).nonzero()[:, 1]
            labels[best_preds] = 1
        return matched_idxs, labels
