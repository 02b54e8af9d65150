"""Box RoI heads of Faster R-CNN (Ren et al., 2015) with FPN (Lin et al., 2017).

Shapes: N images, R RoIs (proposals) in the batch, R_i of image i, K foreground classes
(class K is background), C channels, S pooled side, D box-head output features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image

from densenets.config import HEADS, construct, instantiate, join_path, key_path
from densenets.layers import ShapeSpec, get_norm

from .box_coder import BoxCoder
from .matcher import Matcher
from .poolers import ROIPooler
from .rpn import in_feature_shapes
from .sampler import BalancedPositiveNegativeSampler

__all__ = ["StandardRoIHeads", "FastRCNNConvFCHead", "FastRCNNOutputLayers"]


class FastRCNNConvFCHead(nn.Module):
    """Box head: ``conv1..convM`` (3x3, optional norm) then ``fc1..fcF``, all with ReLU.

    ``fc_dims=[1024, 1024]`` is the "2fc" head; ``conv_dims=[256]*4, fc_dims=[1024]``
    with GN the "4conv1fc" head.

    Args:
        input_shape: pooled features, channels and side S (as ``ShapeSpec(C, S)``).
        conv_dims: output channels of each conv.
        fc_dims: output features of each fully connected layer.
        norm: norm after each conv ("", "GN", "BN", ...).
    """

    def __init__(
        self,
        input_shape: ShapeSpec,
        conv_dims: Sequence[int] = (),
        fc_dims: Sequence[int] = (1024, 1024),
        norm: str = "",
    ) -> None:
        super().__init__()
        channels, side = input_shape.channels, input_shape.stride
        self.num_convs = len(conv_dims)
        for i, dim in enumerate(conv_dims):
            layers = [nn.Conv2d(channels, dim, 3, padding=1, bias=not norm)]
            if norm:
                layers.append(get_norm(norm, dim))
            conv = nn.Sequential(*layers, nn.ReLU(inplace=True))
            nn.init.kaiming_normal_(conv[0].weight, mode="fan_out", nonlinearity="relu")
            if conv[0].bias is not None:
                nn.init.zeros_(conv[0].bias)
            self.add_module(f"conv{i + 1}", conv)
            channels = dim
        features = channels * side * side
        for i, dim in enumerate(fc_dims):
            fc = nn.Linear(features, dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)  # "Xavier" fill of Caffe2 / detectron2
            nn.init.zeros_(fc.bias)
            self.add_module(f"fc{i + 1}", fc)
            features = dim
        self.output_size = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[R, C, S, S] -> Tensor[R, D]."""
        for i in range(self.num_convs):
            x = getattr(self, f"conv{i + 1}")(x)
        x = x.flatten(1)
        for name, module in self.named_children():
            if name.startswith("fc"):
                x = F.relu(module(x))
        return x


class FastRCNNOutputLayers(nn.Module):
    """Class scores and class-specific box deltas; their losses and the final detections.

    Args:
        input_dim: D, features per RoI.
        num_classes: K foreground classes (logits have K + 1, background last).
        box_coder: RoI <-> box deltas.
        smooth_l1_beta: beta of the box loss; 0 is L1.
        score_thresh: detections must score above this (0.05).
        nms_thresh: per-class NMS IoU threshold (0.5).
        detections_per_image: at most this many detections per image (100).
        min_box_size: detections with a side not larger than this are dropped.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        box_coder: BoxCoder = BoxCoder((10.0, 10.0, 5.0, 5.0)),
        smooth_l1_beta: float = 0.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        min_box_size: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(input_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(input_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box_coder = box_coder
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.min_box_size = min_box_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tensor[R, D] -> logits Tensor[R, K+1], deltas Tensor[R, K*4]."""
        return self.cls_score(x), self.bbox_pred(x)

    def losses(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        proposals: torch.Tensor,
        gt_classes: torch.Tensor,
        gt_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over K+1 classes; smooth-L1 on the true class's deltas of foreground RoIs.

        Args:
            logits (Tensor[R, K+1]), deltas (Tensor[R, K*4]): predictions of the sampled RoIs.
            proposals (Tensor[R, 4]): the sampled RoIs, xyxy.
            gt_classes (Tensor[R], int64): 0..K-1 foreground, K background.
            gt_boxes (Tensor[F, 4]): matched boxes of the F foreground RoIs, in order.

        Returns:
            ``loss_cls`` and ``loss_box_reg``; both averaged over the R sampled RoIs.
        """
        loss_cls = F.cross_entropy(logits, gt_classes, reduction="mean")
        fg = (gt_classes < self.num_classes).nonzero()[:, 0]
        fg_deltas = deltas.view(len(deltas), self.num_classes, 4)[fg, gt_classes[fg]]  # (F, 4)
        targets = self.box_coder.encode(proposals[fg], gt_boxes)
        loss_box = F.smooth_l1_loss(fg_deltas, targets, beta=self.smooth_l1_beta, reduction="sum")
        return {"loss_cls": loss_cls, "loss_box_reg": loss_box / max(gt_classes.numel(), 1)}

    @torch.no_grad()
    def inference(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Per-class boxes -> score threshold -> per-class NMS -> top detections.

        Args:
            logits (Tensor[R, K+1]), deltas (Tensor[R, K*4]): predictions for all RoIs.
            proposals: per image Tensor[R_i, 4]; image_sizes: (h, w) per image.

        Returns:
            Per image ``{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64}``,
            boxes in the input (resized, unpadded) image's pixels.
        """
        boxes = self.box_coder.decode(deltas, torch.cat(proposals)).view(-1, self.num_classes, 4)  # (R, K, 4)
        probs = F.softmax(logits, dim=-1)[:, :-1]  # (R, K), background dropped
        counts = [len(p) for p in proposals]
        results = []
        for b, p, size in zip(boxes.split(counts), probs.split(counts), image_sizes):
            b = clip_boxes_to_image(b, size)
            roi_idx, labels = (p > self.score_thresh).nonzero().unbind(1)
            b, s = b[roi_idx, labels], p[roi_idx, labels]
            if self.min_box_size > 0:
                keep = ((b[:, 2] - b[:, 0]) > self.min_box_size) & ((b[:, 3] - b[:, 1]) > self.min_box_size)
                b, s, labels = b[keep], s[keep], labels[keep]
            keep = batched_nms(b, s, labels, self.nms_thresh)[: self.detections_per_image]
            results.append({"boxes": b[keep], "scores": s[keep], "labels": labels[keep]})
        return results


@HEADS.register()
class StandardRoIHeads(nn.Module):
    """Box branch of Faster R-CNN: sample RoIs, pool, box head, predictor.

    Args:
        num_classes: K foreground classes.
        pooler: multi-level RoIAlign.
        box_head: pooled features -> per-RoI features.
        box_predictor: per-RoI features -> scores and deltas (losses and inference).
        in_features: pooled feature names, finest first.
        matcher: proposal labelling.
        sampler: RoIs per image in the loss.
        proposal_append_gt: add the ground-truth boxes to the proposals in training.
    """

    def __init__(
        self,
        num_classes: int,
        pooler: ROIPooler,
        box_head: FastRCNNConvFCHead,
        box_predictor: FastRCNNOutputLayers,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        matcher: Matcher = Matcher((0.5,)),
        sampler: BalancedPositiveNegativeSampler = BalancedPositiveNegativeSampler(512, 0.25),
        proposal_append_gt: bool = True,
    ) -> None:
        super().__init__()
        if box_predictor.num_classes != num_classes:
            raise ValueError(
                f"StandardRoIHeads: num_classes {num_classes} != predictor's {box_predictor.num_classes}"
            )
        self.num_classes = num_classes
        self.in_features = list(in_features)
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.matcher = matcher
        self.sampler = sampler
        self.proposal_append_gt = proposal_append_gt

    @classmethod
    def from_config(cls, cfg: Mapping, input_shape: Mapping[str, ShapeSpec]) -> StandardRoIHeads:
        """Pooler strides, box-head input and predictor width from the neck's `input_shape`."""
        path = key_path(cfg, "roi_heads")
        shapes = in_feature_shapes(cls, cfg, input_shape)
        pooler = instantiate(
            ROIPooler, cfg.get("pooler"), join_path(path, "pooler"), strides=[s.stride for s in shapes]
        )
        pooled = ShapeSpec(channels=shapes[0].channels, stride=pooler.output_size[0])
        box_head = instantiate(
            FastRCNNConvFCHead, cfg.get("box_head"), join_path(path, "box_head"), input_shape=pooled
        )
        box_predictor = instantiate(
            FastRCNNOutputLayers,
            cfg.get("box_predictor"),
            join_path(path, "box_predictor"),
            input_dim=box_head.output_size,
            num_classes=cfg["num_classes"],
        )
        return construct(cls, cfg, path, pooler=pooler, box_head=box_head, box_predictor=box_predictor)

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Losses in training, detections (input-image pixels) in eval.

        Args:
            features: feature maps by name, Tensor[N, C, H_l, W_l].
            proposals: per image Tensor[R_i, 4] xyxy.
            image_sizes: (h, w) of each image before padding.
            targets: per image ``boxes`` Tensor[G, 4], ``labels`` Tensor[G] (training only).
        """
        feats = [features[f] for f in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("StandardRoIHeads: targets are required in training mode")
            proposals, gt_classes, gt_boxes = self.label_and_sample_proposals(proposals, targets)
            logits, deltas = self.box_predictor(self.box_head(self.pooler(feats, proposals)))
            return self.box_predictor.losses(logits, deltas, torch.cat(proposals), gt_classes, gt_boxes)
        logits, deltas = self.box_predictor(self.box_head(self.pooler(feats, proposals)))
        return self.box_predictor.inference(logits, deltas, proposals, image_sizes)

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Match proposals (plus ground truth) to ground truth and sample them.

        Returns:
            sampled: per image Tensor[S_i, 4], foreground first.
            gt_classes (Tensor[S], int64): class of each sampled RoI, K for background.
            gt_boxes (Tensor[F, 4]): matched box of each foreground RoI, in order.
        """
        sampled, classes, boxes = [], [], []
        for props, target in zip(proposals, targets):
            gt = target["boxes"].to(props)
            if self.proposal_append_gt:
                props = torch.cat((props, gt))
            matched_idxs, match_labels = self.matcher(box_iou(gt, props))
            pos, neg = self.sampler(match_labels)
            sampled.append(props[torch.cat((pos, neg))])
            fg_idx = matched_idxs[pos]
            classes += [target["labels"][fg_idx], torch.full_like(neg, self.num_classes)]
            boxes.append(gt[fg_idx])
        return sampled, torch.cat(classes), torch.cat(boxes)
