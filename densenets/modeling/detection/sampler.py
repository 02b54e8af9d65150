"""BalancedPositiveNegativeSampler: a fixed-size, fixed-ratio sample of matched predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BalancedPositiveNegativeSampler"]


@dataclass(frozen=True)
class BalancedPositiveNegativeSampler:
    """Samples up to `batch_size_per_image` predictions of one image, at most
    `positive_fraction` of them foreground; negatives fill the rest.

    Args:
        batch_size_per_image: samples per image (256 for the RPN, 512 for the box head).
        positive_fraction: largest share of foreground samples (0.5 RPN, 0.25 box head).
    """

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.batch_size_per_image <= 0 or not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(
                "BalancedPositiveNegativeSampler: need batch_size_per_image > 0 and "
                f"0 <= positive_fraction <= 1, got {self.batch_size_per_image}, {self.positive_fraction}"
            )

    def __call__(self, match_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample one image.

        Args:
            match_labels (Tensor[R]): 1 foreground, 0 background, -1 ignore (Matcher labels).

        Returns:
            pos_idx (Tensor[P], int64), neg_idx (Tensor[Q], int64): sampled indices into R,
            each in random order; P + Q <= batch_size_per_image.
        """
        positive = (match_labels == 1).nonzero()[:, 0]
        negative = (match_labels == 0).nonzero()[:, 0]
        num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
        # One randperm per set, positives first: the same random stream as torchvision's sampler.
        perm_pos = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
        perm_neg = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
        return positive[perm_pos], negative[perm_neg]
