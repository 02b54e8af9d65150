"""Deformable DETR: Zhu et al., "Deformable DETR: Deformable Transformers for End-to-End Object Detection", ICLR 2021.

backbone -> multi-scale neck (`ChannelMapper`: res3-res5 + a stride-64 level, or res5
alone for the single-scale model) -> deformable encoder over all levels -> Q queries
decoded by deformable cross-attention around reference points -> per layer sigmoid
class logits and a box relative to the layer's reference. Options of the one model:
iterative box refinement (each decoder layer refines the boxes of the previous one, a
box head per layer) and two-stage (the encoder proposes the queries' reference boxes
and positional queries). Shapes: B images, Q queries, K classes, D width, N_dec
decoder layers, S flattened pixels of all levels; boxes normalised cxcywh.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import BACKBONES, MODELS, NECKS, build
from ...layers import ImageList
from ...layers.position_encoding import sine_box_embedding
from ..backbones.base import Backbone
from .box_refinement import refine_boxes, topk_detections
from .criterion import SetCriterion
from .deformable_transformer import DEFORMABLE_DETR_EPS, DeformableTransformer, MultiScaleMemory
from .detr_base import DETRBase, delta_box_head, focal_class_head
from .query_selection import encoder_proposals, gather_rows

__all__ = ["DeformableDETR", "MultiScaleDETR", "DEFORMABLE_DETR_EPS", "level_masks"]


def level_masks(images: ImageList, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Padding masks (B, h, w) of each feature map: the pixel mask resized by nearest
    interpolation, as the official code does for every level (the extra one included)."""
    pixel_mask = images.padding_mask()[None].float()
    return [F.interpolate(pixel_mask, size=f.shape[-2:])[0].bool() for f in features]


def head_list(head: nn.Module, n: int, shared: bool) -> nn.ModuleList:
    """`n` heads: the same module repeated (shared weights) or independent copies."""
    return nn.ModuleList(head if shared else copy.deepcopy(head) for _ in range(n))


class MultiScaleDETR(DETRBase):
    """A DETR-family member on a neck's levels through a `DeformableTransformer` (Deformable
    DETR, DINO): one class and box head per decoder layer (`class_embed`, `bbox_embed`),
    boxes refined from each layer's reference, and the `num_select` best (query, class)
    pairs as detections."""

    @classmethod
    def build_children(cls, cfg: Mapping, path: str) -> dict[str, nn.Module | None]:
        """The backbone, the neck on its outputs, a transformer over the neck's levels, the criterion."""
        backbone = build(cfg["backbone"], BACKBONES)
        neck = build(cfg["neck"], NECKS, input_shape=backbone.output_shape())
        levels = len(neck.output_shape())
        return {
            "backbone": backbone,
            "neck": neck,
            "transformer": cls.build_child("transformer", cfg, path, num_levels=levels),
            "criterion": cls.build_child("criterion", cfg, path, num_classes=cfg["num_classes"]),
        }

    def features(self, images: ImageList) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Neck outputs (B, D, h, w) finest first and their padding masks (B, h, w)."""
        srcs = list(self.neck(self.backbone(images.tensor)).values())
        return srcs, level_masks(images, srcs)

    def encoder_outputs(
        self, mem: MultiScaleMemory, class_head: nn.Module, box_head: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One proposal per encoder pixel through `enc_output` and the given heads: logits
        (B, S, K) and boxes (B, S, 4) in inverse-sigmoid space (two-stage and DINO)."""
        memory, proposals = encoder_proposals(mem.src, mem.mask, mem.spatial_shapes)
        memory = self.enc_output_norm(self.enc_output(memory))
        return class_head(memory), box_head(memory) + proposals

    def top_queries(self, scores: torch.Tensor) -> torch.Tensor:
        """Indices (B, Q') of the Q' = min(Q, S) best of scores (B, S) (fewer pixels than
        queries: tiny images only)."""
        return scores.topk(min(self.num_queries, scores.shape[1]), dim=1).indices

    def layer_outputs(
        self, hs: torch.Tensor, references: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer's heads on the decoder outputs hs (N_dec, B, Q, D): logits (N_dec, B, Q, K)
        and boxes (N_dec, B, Q, 4) refined from that layer's reference."""
        eps = self.transformer.eps
        logits = torch.stack([self.class_embed[i](h) for i, h in enumerate(hs)])
        boxes = torch.stack(
            [refine_boxes(self.bbox_embed[i](h), r, eps) for i, (h, r) in enumerate(zip(hs, references))]
        )
        return logits, boxes

    def inference(self, logits: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The `num_select` best (query, class) pairs by sigmoid score (see `topk_detections`)."""
        return topk_detections(logits, boxes, self.num_select)


@MODELS.register()
class DeformableDETR(MultiScaleDETR):
    """Deformable DETR (Zhu et al., 2021).

    Args:
        backbone: a backbone with the neck's `in_features`.
        neck: a `ChannelMapper` (its number of outputs is the transformer's levels).
        transformer: a `DeformableTransformer`.
        criterion: the set losses (sigmoid focal classification).
        num_classes: K.
        num_queries: Q.
        num_select: detections kept per image: the top scores over (query, class) pairs.
        with_box_refine: iterative box refinement (a class and box head per layer).
        two_stage: queries from encoder proposals, ranked by column 0 of an extra class
            head (the official code's choice; trained with every object as class 0).
        **options: `aux_loss`, `pixel_mean`, `pixel_std`, `input_format` (see `DETRBase`).
    """

    def __init__(
        self,
        backbone: Backbone,
        neck: Backbone,
        transformer: DeformableTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 300,
        num_select: int = 100,
        with_box_refine: bool = False,
        two_stage: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(backbone, neck, transformer, criterion, num_classes, num_queries, **options)
        self.num_select = num_select
        self.with_box_refine, self.two_stage = with_box_refine, two_stage
        d, n = transformer.d_model, transformer.num_decoder_layers + int(two_stage)
        self.class_embed = head_list(focal_class_head(d, num_classes), n, shared=not with_box_refine)
        self.bbox_embed = head_list(delta_box_head(d), n, shared=not with_box_refine)
        if two_stage:
            self.enc_output, self.enc_output_norm = nn.Linear(d, d), nn.LayerNorm(d)
            self.pos_trans, self.pos_trans_norm = nn.Linear(2 * d, 2 * d), nn.LayerNorm(2 * d)
            for layer in (self.enc_output, self.pos_trans):
                nn.init.xavier_uniform_(layer.weight)
        else:  # small initial boxes (the official init touches the first head only)
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
            self.query_embed = nn.Embedding(num_queries, 2 * d)  # positional and content halves
            self.reference_points = nn.Linear(d, 2)
            nn.init.xavier_uniform_(self.reference_points.weight)
            nn.init.zeros_(self.reference_points.bias)

    def predict(
        self, images: ImageList, targets: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """Class logits (N_dec, B, Q, K), boxes (N_dec, B, Q, 4) and, two-stage, the encoder's
        proposal logits (B, S, K) and boxes (B, S, 4) (else None). `targets` unused."""
        mem = self.transformer.encode(*self.features(images))
        if self.two_stage:
            tgt, query_pos, reference, enc = self.two_stage_queries(mem)
        else:
            b, d = mem.src.shape[0], self.transformer.d_model
            query_pos, tgt = (
                self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1).split(d, -1)
            )  # a copy, see DINO
            reference, enc = self.reference_points(query_pos).sigmoid(), None
        heads = self.bbox_embed if self.with_box_refine else None
        hs, refs = self.transformer.decoder(tgt, reference, mem, query_pos, heads)
        return (*self.layer_outputs(hs, refs), enc)

    def two_stage_queries(self, mem: MultiScaleMemory) -> tuple:
        """Top-Q encoder proposals -> content and positional queries, reference boxes, and the
        proposal logits (B, S, K) and boxes (B, S, 4) for the encoder loss."""
        last = self.transformer.num_decoder_layers
        enc_logits, enc_coords = self.encoder_outputs(mem, self.class_embed[last], self.bbox_embed[last])
        topk = self.top_queries(enc_logits[..., 0])  # column 0 ranks, as official
        reference = gather_rows(enc_coords, topk).detach().sigmoid()
        d = self.transformer.d_model
        emb = sine_box_embedding(reference, d // 2)  # (y, x, w, h) -> the official (x, y, w, h)
        emb = torch.cat([emb[..., d // 2 : d], emb[..., : d // 2], emb[..., d:]], -1)
        query_pos, tgt = self.pos_trans_norm(self.pos_trans(emb)).split(d, -1)
        return tgt, query_pos, reference, (enc_logits, enc_coords.sigmoid())

    def losses(self, outputs: tuple, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The decoder layers' set losses, and two-stage the proposals' (suffix ``_enc``),
        class-agnostic: every object is class 0."""
        losses = super().losses(outputs, targets)
        enc = outputs[2]
        if enc is not None:
            binary = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
            enc_losses = self.criterion(enc[0][None], enc[1][None], binary)
            losses.update({f"{k}_enc": v for k, v in enc_losses.items()})
        return losses
