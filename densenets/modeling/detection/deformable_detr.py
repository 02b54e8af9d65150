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
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import BACKBONES, MODELS, NECKS, build
from ...layers import ImageList
from ...layers.position_encoding import PositionEmbeddingSine, sine_box_embedding
from ...ops import MultiScaleDeformableAttention
from .box_refinement import refine_boxes, topk_detections
from .criterion import SetCriterion
from .deformable_transformer import DeformableDecoder, DeformableEncoder, MultiScaleMemory, flatten_levels
from .detr import DETR, Batch, build_criterion, build_plain
from .query_selection import encoder_proposals, gather_rows
from .transformer import MLP

__all__ = ["DeformableDETR", "DeformableTransformer", "DEFORMABLE_DETR_EPS", "level_masks"]

# The official Deformable DETR clamps inverse_sigmoid at 1e-5 (util/misc.py).
DEFORMABLE_DETR_EPS = 1e-5


def level_masks(images: ImageList, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Padding masks (B, h, w) of each feature map: the pixel mask resized by nearest
    interpolation, as the official code does for every level (the extra one included)."""
    pixel_mask = images.padding_mask()[None].float()
    return [F.interpolate(pixel_mask, size=f.shape[-2:])[0].bool() for f in features]


class DeformableTransformer(nn.Module):
    """Deformable DETR's encoder and decoder with its sine encoding and level embedding.

    Args:
        d_model: width D.
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth N_dec.
        dim_feedforward: feed-forward hidden width (1024 in the paper).
        dropout: dropout.
        activation: feed-forward activation.
        num_levels: feature levels L (the neck's outputs).
        enc_n_points: sampling points per head and level in the encoder.
        dec_n_points: the same in the decoder.
    """

    eps = DEFORMABLE_DETR_EPS

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
    ) -> None:
        super().__init__()
        # Sine encoding of pixel centres (-0.5 offset), temperature 10000.
        self.position_encoding = PositionEmbeddingSine(d_model // 2, 10000.0, normalize=True, offset=-0.5)
        self._build(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
            num_levels, enc_n_points, dec_n_points, {},
        )  # fmt: skip

    def _build(
        self, d_model, nhead, num_enc, num_dec, ffn, dropout, activation, levels, enc_p, dec_p, dec_opts
    ):
        self.d_model, self.num_levels, self.num_decoder_layers = d_model, levels, num_dec
        kw = dict(d_model=d_model, nhead=nhead, dim_feedforward=ffn, dropout=dropout, activation=activation)
        self.level_embed = nn.Parameter(torch.empty(levels, d_model))
        self.encoder = DeformableEncoder(num_enc, num_levels=levels, num_points=enc_p, **kw)
        self.decoder = DeformableDecoder(
            num_dec, num_levels=levels, num_points=dec_p, eps=self.eps, **kw, **dec_opts
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def encode(self, srcs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> MultiScaleMemory:
        """Per-level features (B, D, h, w) and padding masks (B, h, w) -> the encoded memory."""
        pos = [self.position_encoding(m) for m in masks]
        mem = flatten_levels(srcs, masks, pos, self.level_embed)
        mem.src = self.encoder(mem)
        return mem


def _head_list(head: nn.Module, n: int, shared: bool) -> nn.ModuleList:
    """`n` heads: the same module repeated (shared weights) or independent copies."""
    return nn.ModuleList(head if shared else copy.deepcopy(head) for _ in range(n))


def _class_head(d: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(d, num_classes)
    nn.init.constant_(head.bias, -math.log((1 - 0.01) / 0.01))  # prior probability 0.01
    return head


def _box_head(d: int) -> MLP:
    head = MLP(d, d, 4, 3)
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)
    return head


@MODELS.register()
class DeformableDETR(DETR):
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
        aux_loss, pixel_mean, pixel_std, input_format: as `DETR`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        transformer: DeformableTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 300,
        num_select: int = 100,
        with_box_refine: bool = False,
        two_stage: bool = False,
        aux_loss: bool = True,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
    ) -> None:
        nn.Module.__init__(self)
        self._init_parts(
            backbone, neck, transformer, criterion, num_classes, num_queries, num_select, aux_loss
        )
        self._init_pixels(pixel_mean, pixel_std, input_format)
        self.with_box_refine, self.two_stage = with_box_refine, two_stage
        d, n = transformer.d_model, transformer.num_decoder_layers + int(two_stage)
        self.class_embed = _head_list(_class_head(d, num_classes), n, shared=not with_box_refine)
        self.bbox_embed = _head_list(_box_head(d), n, shared=not with_box_refine)
        if not two_stage:  # small initial boxes (the official init touches the first head only)
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias[2:], -2.0)
        if two_stage:
            self.enc_output, self.enc_output_norm = nn.Linear(d, d), nn.LayerNorm(d)
            self.pos_trans, self.pos_trans_norm = nn.Linear(2 * d, 2 * d), nn.LayerNorm(2 * d)
            for layer in (self.enc_output, self.pos_trans):
                nn.init.xavier_uniform_(layer.weight)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * d)  # positional and content halves
            self.reference_points = nn.Linear(d, 2)
            nn.init.xavier_uniform_(self.reference_points.weight)
            nn.init.zeros_(self.reference_points.bias)

    def _init_parts(
        self, backbone, neck, transformer, criterion, num_classes, num_queries, num_select, aux_loss
    ):
        levels = len(neck.output_shape())
        if levels != transformer.num_levels:
            raise ValueError(
                f"transformer.num_levels: {transformer.num_levels}, but the neck has {levels} outputs"
            )
        self.backbone, self.neck, self.transformer, self.criterion = backbone, neck, transformer, criterion
        self.num_classes, self.num_queries, self.num_select = num_classes, num_queries, num_select
        self.aux_loss = aux_loss

    @classmethod
    def from_config(cls, cfg: Mapping, transformer_cls: type = DeformableTransformer) -> DeformableDETR:
        path = getattr(cfg, "_key_path", "model")
        children = ("type", "backbone", "neck", "transformer", "criterion")
        kwargs = {k: v for k, v in cfg.items() if k not in children}
        backbone = build(cfg["backbone"], BACKBONES)
        neck = build(cfg["neck"], NECKS, input_shape=backbone.output_shape())
        levels = len(neck.output_shape())
        return cls(
            backbone=backbone,
            neck=neck,
            transformer=build_plain(
                transformer_cls, cfg.get("transformer"), f"{path}.transformer", num_levels=levels
            ),
            criterion=build_criterion(cfg.get("criterion"), f"{path}.criterion", cfg["num_classes"]),
            **kwargs,
        )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Losses (training) or predictions (eval) for a list of items (see docs/contracts.md)."""
        images = self.preprocess(batch)
        logits, boxes, enc = self.predict(images)  # (N_dec, B, Q, K), (N_dec, B, Q, 4)
        if not self.training:
            return self.postprocess(*self.inference(logits[-1], boxes[-1]), batch)
        targets = self.prepare_targets(batch, images)
        if not self.aux_loss:
            logits, boxes = logits[-1:], boxes[-1:]
        losses = self.criterion(logits, boxes, targets)
        if enc is not None:  # proposals are class-agnostic: every object is class 0
            binary = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in targets]
            enc_losses = self.criterion(enc[0][None], enc[1][None], binary)
            losses.update({f"{k}_enc": v for k, v in enc_losses.items()})
        return losses

    def features(self, images: ImageList) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Neck outputs (B, D, h, w) finest first and their padding masks (B, h, w)."""
        srcs = list(self.neck(self.backbone(images.tensor)).values())
        return srcs, level_masks(images, srcs)

    def predict(self, images: ImageList) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
        """Class logits (N_dec, B, Q, K), boxes (N_dec, B, Q, 4) and, two-stage, the encoder's
        proposal logits (B, S, K) and boxes (B, S, 4) (else None)."""
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
        eps = self.transformer.eps
        logits = torch.stack([self.class_embed[i](h) for i, h in enumerate(hs)])
        boxes = torch.stack(
            [refine_boxes(self.bbox_embed[i](h), r, eps) for i, (h, r) in enumerate(zip(hs, refs))]
        )
        return logits, boxes, enc

    def two_stage_queries(self, mem: MultiScaleMemory) -> tuple:
        """Top-Q encoder proposals -> content and positional queries, reference boxes, and the
        proposal logits (B, S, K) and boxes (B, S, 4) for the encoder loss."""
        memory, proposals = encoder_proposals(mem.src, mem.mask, mem.spatial_shapes)
        memory = self.enc_output_norm(self.enc_output(memory))
        last = self.transformer.num_decoder_layers
        enc_logits = self.class_embed[last](memory)
        enc_coords = self.bbox_embed[last](memory) + proposals  # inverse-sigmoid space
        k = min(self.num_queries, memory.shape[1])  # fewer pixels than queries: tiny images only
        topk = enc_logits[..., 0].topk(k, dim=1).indices  # column 0 ranks, as official
        reference = gather_rows(enc_coords, topk).detach().sigmoid()
        d = self.transformer.d_model
        emb = sine_box_embedding(reference, d // 2)  # (y, x, w, h) -> the official (x, y, w, h)
        emb = torch.cat([emb[..., d // 2 : d], emb[..., : d // 2], emb[..., d:]], -1)
        query_pos, tgt = self.pos_trans_norm(self.pos_trans(emb)).split(d, -1)
        return tgt, query_pos, reference, (enc_logits, enc_coords.sigmoid())

    def inference(self, logits: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The `num_select` best (query, class) pairs by sigmoid score (see `topk_detections`)."""
        return topk_detections(logits, boxes, self.num_select)
