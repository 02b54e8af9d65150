"""Region Proposal Network (Ren et al., 2015, "Faster R-CNN"), on every FPN level.

Shapes: N images, L levels, A anchors per location, H_l x W_l cells on level l,
M = sum_l H_l W_l A anchors per image, G ground-truth boxes of an image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from densenets.config import HEADS, config_value, construct, instantiate, join_path, key_path
from densenets.layers import ImageList, ShapeSpec

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import Matcher
from .sampler import BalancedPositiveNegativeSampler

__all__ = ["RPN", "RPNHead", "in_feature_shapes"]


def in_feature_shapes(cls: type, cfg: Mapping, input_shape: Mapping[str, ShapeSpec]) -> list[ShapeSpec]:
    """The shapes in `input_shape` of `cfg`'s `in_features` (else the default of `cls`).

    Raises:
        ValueError: a feature the neck does not give, naming the key path.
    """
    in_features = list(config_value(cfg, cls, "in_features"))
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        path = join_path(key_path(cfg), "in_features")
        raise ValueError(f"{path}: {missing} not in the neck's outputs {list(input_shape)}")
    return [input_shape[f] for f in in_features]


class RPNHead(nn.Module):
    """The RPN's shared head: 3x3 conv + ReLU, then 1x1 convs for objectness and deltas.

    Args:
        in_channels: channels of every input level.
        num_anchors: anchors per location A.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: logits Tensor[N, A, H_l, W_l] and deltas Tensor[N, A*4, H_l, W_l]."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


@HEADS.register()
class RPN(nn.Module):
    """Region Proposal Network over several feature levels.

    Args:
        head: the conv head shared by all levels.
        anchor_generator: anchors per level.
        in_features: feature names to use, finest first.
        box_coder: anchor <-> proposal deltas.
        matcher: anchor labelling.
        sampler: anchors per image in the loss.
        pre_nms_topk: (train, test) proposals kept per level before NMS.
        post_nms_topk: (train, test) proposals kept per image after NMS.
        nms_thresh: NMS IoU threshold, applied per level.
        min_box_size: proposals with a side not larger than this are dropped (after clipping).
        smooth_l1_beta: beta of the box loss; 0 is L1.
        loss_normalizer: "batch_size" divides both losses by
            ``sampler.batch_size_per_image * N`` (detectron2); "num_sampled" by the number
            of anchors actually sampled (torchvision).
    """

    def __init__(
        self,
        head: RPNHead,
        anchor_generator: AnchorGenerator,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        box_coder: BoxCoder = BoxCoder((1.0, 1.0, 1.0, 1.0)),
        matcher: Matcher = Matcher((0.3, 0.7), allow_low_quality_matches=True),
        sampler: BalancedPositiveNegativeSampler = BalancedPositiveNegativeSampler(256, 0.5),
        pre_nms_topk: Sequence[int] = (2000, 1000),
        post_nms_topk: Sequence[int] = (1000, 1000),
        nms_thresh: float = 0.7,
        min_box_size: float = 0.0,
        smooth_l1_beta: float = 0.0,
        loss_normalizer: str = "batch_size",
    ) -> None:
        super().__init__()
        if loss_normalizer not in ("batch_size", "num_sampled"):
            raise ValueError(
                f"RPN: loss_normalizer must be batch_size or num_sampled, got {loss_normalizer!r}"
            )
        self.in_features = list(in_features)
        self.head = head
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.matcher = matcher
        self.sampler = sampler
        self.pre_nms_topk = tuple(pre_nms_topk)
        self.post_nms_topk = tuple(post_nms_topk)
        self.nms_thresh = nms_thresh
        self.min_box_size = min_box_size
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer = loss_normalizer

    @classmethod
    def from_config(cls, cfg: Mapping, input_shape: Mapping[str, ShapeSpec]) -> RPN:
        """The head and anchor strides from the neck's `input_shape`; the rest from `cfg`."""
        path = key_path(cfg, "rpn")
        shapes = in_feature_shapes(cls, cfg, input_shape)
        channels = {shape.channels for shape in shapes}
        if len(channels) != 1:
            raise ValueError(f"{join_path(path, 'in_features')}: levels have different channels {channels}")
        anchor_generator = instantiate(
            AnchorGenerator,
            cfg.get("anchor_generator"),
            join_path(path, "anchor_generator"),
            strides=[shape.stride for shape in shapes],
        )
        if len(set(anchor_generator.num_anchors)) != 1:
            raise ValueError(
                f"{join_path(path, 'anchor_generator')}: every level needs the same number of anchors"
            )
        head = RPNHead(channels.pop(), anchor_generator.num_anchors[0])
        return construct(cls, cfg, path, head=head, anchor_generator=anchor_generator)

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, torch.Tensor]]:
        """Propose boxes (and compute the RPN losses in training).

        Args:
            images: the padded batch (its image sizes clip the proposals).
            features: feature maps by name, each Tensor[N, C, H_l, W_l].
            targets: per image, ``boxes`` Tensor[G, 4] xyxy absolute pixels (training only).

        Returns:
            proposals: per image Tensor[P_i, 4], xyxy, sorted by decreasing objectness.
            scores: per image Tensor[P_i], objectness logits.
            losses: ``loss_rpn_cls``, ``loss_rpn_loc`` in training, else empty.
        """
        feats = [features[f] for f in self.in_features]
        logits, deltas = self.head(feats)
        anchors = self.anchor_generator([f.shape[-2:] for f in feats], tuple(images.tensor.shape[-2:]))
        n = len(images)
        logits = [x.permute(0, 2, 3, 1).reshape(n, -1) for x in logits]  # (N, H*W*A), anchor-minor
        deltas = [  # (N, H*W*A, 4)
            x.view(n, -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
            for x in deltas
        ]
        proposals, scores = self.find_top_proposals(anchors, logits, deltas, images.image_sizes)
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN: targets are required in training mode")
            losses = self.losses(torch.cat(anchors), torch.cat(logits, 1), torch.cat(deltas, 1), targets)
        return proposals, scores, losses

    @torch.no_grad()
    def find_top_proposals(
        self,
        anchors: list[torch.Tensor],
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Top-k per level, decode only those, then clip, drop tiny boxes, NMS per level.

        Args:
            anchors: per level Tensor[M_l, 4]; logits: per level Tensor[N, M_l];
            deltas: per level Tensor[N, M_l, 4]; image_sizes: (h, w) per image.

        Returns:
            Per image, proposal boxes Tensor[P_i, 4] and their logits Tensor[P_i].
        """
        pre_k = self.pre_nms_topk[0 if self.training else 1]
        post_k = self.post_nms_topk[0 if self.training else 1]
        n = logits[0].shape[0]
        batch = torch.arange(n, device=logits[0].device)[:, None]
        boxes, scores, levels = [], [], []
        for level, (anc, lg, dl) in enumerate(zip(anchors, logits, deltas)):
            k = min(pre_k, lg.shape[1])
            top_scores, top_idx = lg.topk(k, dim=1)  # (N, k)
            decoded = self.box_coder.decode(dl[batch, top_idx].reshape(-1, 4), anc[top_idx].reshape(-1, 4))
            boxes.append(decoded.view(n, k, 4))
            scores.append(top_scores)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=lg.device))
        boxes, scores, levels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(levels)
        out_boxes, out_scores = [], []
        for b, s, size in zip(boxes, scores, image_sizes):
            b = clip_boxes_to_image(b, size)
            keep = ((b[:, 2] - b[:, 0]) > self.min_box_size) & ((b[:, 3] - b[:, 1]) > self.min_box_size)
            keep &= torch.isfinite(b).all(dim=1) & torch.isfinite(s)
            b, s, lv = b[keep], s[keep], levels[keep]
            keep = batched_nms(b, s, lv, self.nms_thresh)[:post_k]
            out_boxes.append(b[keep])
            out_scores.append(s[keep])
        return out_boxes, out_scores

    def losses(
        self,
        anchors: torch.Tensor,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Objectness (binary cross-entropy) and box (smooth-L1) losses on sampled anchors.

        Args:
            anchors (Tensor[M, 4]): all anchors of an image (the same for every image).
            logits (Tensor[N, M]): objectness logits.
            deltas (Tensor[N, M, 4]): predicted anchor deltas.
            targets: per image ``boxes`` Tensor[G, 4].

        Returns:
            ``loss_rpn_cls`` and ``loss_rpn_loc``, scalar tensors.
        """
        sel_logits, sel_labels, pos_deltas, pos_targets = [], [], [], []
        for i, target in enumerate(targets):
            gt = target["boxes"].to(anchors)
            matched_idxs, match_labels = self.matcher(box_iou(gt, anchors))
            pos, neg = self.sampler(match_labels)
            sel_logits.append(logits[i, torch.cat((pos, neg))])
            sel_labels.append(torch.cat((torch.ones_like(pos), torch.zeros_like(neg))))
            pos_deltas.append(deltas[i, pos])
            # Only sampled positives get regression targets: a few hundred encodes, not M.
            pos_targets.append(self.box_coder.encode(anchors[pos], gt[matched_idxs[pos]]))
        sel_labels = torch.cat(sel_labels).to(logits.dtype)
        if self.loss_normalizer == "batch_size":
            normalizer = float(self.sampler.batch_size_per_image * len(targets))
        else:
            normalizer = float(max(sel_labels.numel(), 1))
        loss_cls = F.binary_cross_entropy_with_logits(torch.cat(sel_logits), sel_labels, reduction="sum")
        loss_loc = F.smooth_l1_loss(
            torch.cat(pos_deltas), torch.cat(pos_targets), beta=self.smooth_l1_beta, reduction="sum"
        )
        return {"loss_rpn_cls": loss_cls / normalizer, "loss_rpn_loc": loss_loc / normalizer}
