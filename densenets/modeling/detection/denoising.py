"""Contrastive denoising training (DINO, Zhang et al., 2022, Section 3.3; after DN-DETR, Li et al., 2022).

During training, extra decoder queries are made from the ground truth: each group
holds a *positive* copy of every object (box jittered by less than half its size,
label flipped with some probability) that must reconstruct the object, and a
*negative* copy (jittered by one to two half-sizes) that must predict "no object".
The number of groups is ``2 * num_queries // (2 * max objects per image)``, so the
extra queries stay about ``2 * num_queries``. An attention mask keeps the matching
queries from seeing the denoising ones and each group from seeing the others.

Layout of the P = 2 * G * T denoising queries of an image (G groups, T = the largest
object count in the batch): group g holds positives at ``2gT + j`` and negatives at
``(2g + 1)T + j`` for object j; slots past an image's own objects are padding (zero
label embedding, box logits 0). Boxes are normalised cxcywh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import box_convert

from .box_refinement import inverse_sigmoid

__all__ = ["ContrastiveDenoising", "DenoisingQueries"]


@dataclass
class DenoisingQueries:
    """Denoising queries of a batch.

    Attributes:
        content (Tensor[B, P, D]): label embeddings of the (noised) labels.
        boxes (Tensor[B, P, 4]): noised boxes in inverse-sigmoid space.
        attn_mask (Tensor[P + Q, P + Q] bool): True where a query may not attend; the
            denoising queries come first.
        num_groups: G.
        group_size: T, the largest object count of the batch.
    """

    content: torch.Tensor
    boxes: torch.Tensor
    attn_mask: torch.Tensor
    num_groups: int
    group_size: int

    @property
    def num_queries(self) -> int:
        """P, denoising queries per image."""
        return 2 * self.num_groups * self.group_size

    def positive_indices(
        self, targets: list[dict[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(query_idx, target_idx) per image: each positive query reconstructs its object."""
        out = []
        for t in targets:
            n = len(t["labels"])
            obj = torch.arange(n, dtype=torch.int64).repeat(self.num_groups)
            group = torch.arange(self.num_groups, dtype=torch.int64).repeat_interleave(n)
            out.append((group * 2 * self.group_size + obj, obj))
        return out


class ContrastiveDenoising(nn.Module):
    """Makes `DenoisingQueries` from the targets; holds the label embedding.

    Args:
        num_classes: K.
        d_model: D, the width of the label embedding (the decoder's content queries).
        num_queries: the official ``dn_number``: about twice this many denoising queries
            per image, split into groups of the largest object count.
        label_noise_ratio: twice the probability of replacing a label by a random one
            (the official code flips with probability ``label_noise_ratio * 0.5``).
        box_noise_scale: the jitter of the corners in units of half the box size
            (DINO's training scripts use 1.0; its config file says 0.4).
    """

    def __init__(
        self,
        num_classes: int,
        d_model: int,
        num_queries: int = 100,
        label_noise_ratio: float = 0.5,
        box_noise_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale
        self.label_enc = nn.Embedding(num_classes, d_model)

    def num_groups(self, max_objects: int) -> int:
        """G for a batch whose largest image has `max_objects` objects (the official rule)."""
        n = 2 * self.num_queries
        if n >= 100:
            n = n // (2 * max_objects)
        return max(n, 1)

    def forward(
        self, targets: list[dict[str, torch.Tensor]], num_matching: int, eps: float
    ) -> DenoisingQueries | None:
        """Noised queries of a batch, or None when no image has an object.

        Args:
            targets: B dicts with ``labels`` (Tensor[T_b] int64) and ``boxes`` (Tensor[T_b, 4]).
            num_matching: Q, the matching queries that follow (for the attention mask).
            eps: the inverse-sigmoid clamp of the boxes.
        """
        sizes = [len(t["labels"]) for t in targets]
        t_max = max(sizes, default=0)
        if t_max == 0 or self.num_queries <= 0:
            return None
        groups = self.num_groups(t_max)
        labels = torch.cat([t["labels"] for t in targets]).repeat(2 * groups)  # (2G * N,)
        boxes = torch.cat([t["boxes"] for t in targets]).repeat(2 * groups, 1)
        negative = torch.arange(2 * groups, device=boxes.device).repeat_interleave(sum(sizes)) % 2 == 1
        labels = self._noise_labels(labels)
        boxes = inverse_sigmoid(self._noise_boxes(boxes, negative), eps)

        b, p = len(targets), 2 * groups * t_max
        image = torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(sizes)]).repeat(
            2 * groups
        )
        slot = torch.cat([torch.arange(n) for n in sizes])  # object index in its image
        slot = torch.cat([slot + t_max * r for r in range(2 * groups)]).to(boxes.device)
        image = image.to(boxes.device)
        embed = self.label_enc(labels)
        content = embed.new_zeros(b, p, embed.shape[-1])
        content[image, slot] = embed
        query_boxes = boxes.new_zeros(b, p, 4)
        query_boxes[image, slot] = boxes
        mask = self._attn_mask(groups, t_max, num_matching, boxes.device)
        return DenoisingQueries(content, query_boxes, mask, groups, t_max)

    def _noise_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if self.label_noise_ratio <= 0:
            return labels
        flip = torch.rand(labels.shape, device=labels.device) < self.label_noise_ratio * 0.5
        random = torch.randint_like(labels, 0, self.num_classes)
        return torch.where(flip, random, labels)

    def _noise_boxes(self, boxes: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Jitter each corner by up to one half-size (positives) or by one to two (negatives)."""
        if self.box_noise_scale <= 0:
            return boxes
        xyxy = box_convert(boxes, "cxcywh", "xyxy")
        half = boxes[:, 2:].repeat(1, 2) / 2  # (w/2, h/2, w/2, h/2)
        sign = torch.randint(0, 2, boxes.shape, device=boxes.device).to(boxes.dtype) * 2 - 1
        part = torch.rand_like(boxes) + negative[:, None].to(boxes.dtype)
        xyxy = (xyxy + part * sign * half * self.box_noise_scale).clamp(0.0, 1.0)
        return box_convert(xyxy, "xyxy", "cxcywh")

    @staticmethod
    def _attn_mask(groups: int, group_size: int, num_matching: int, device: torch.device) -> torch.Tensor:
        """True = blocked: matching queries see no denoising query; a group sees only itself."""
        p = 2 * groups * group_size
        group = torch.arange(p, device=device) // (2 * group_size)
        mask = torch.zeros(p + num_matching, p + num_matching, dtype=torch.bool, device=device)
        mask[p:, :p] = True
        mask[:p, :p] = group[:, None] != group[None, :]
        return mask

    def extra_repr(self) -> str:
        return (
            f"num_queries={self.num_queries}, label_noise_ratio={self.label_noise_ratio}, "
            f"box_noise_scale={self.box_noise_scale}"
        )
