"""DINO: Zhang et al., "DINO: DETR with Improved DeNoising Anchor Boxes for End-to-End Object Detection", ICLR 2023.

Deformable DETR's encoder-decoder with box refinement, plus:

* mixed query selection: the top-Q encoder proposals (scored by the best class of a
  proposal head) give the decoder's reference boxes; the content queries stay learned
  (``tgt_embed``);
* contrastive denoising training (`ContrastiveDenoising`);
* look-forward-twice: each layer's prediction is built on the previous layer's box
  before it is detached, so a layer's loss also trains the layer before it;
* positional queries from the sine embedding of the reference box; a LayerNorm on
  every decoder layer's output; sigmoid focal loss, matching costs class 2 / L1 5 /
  GIoU 2; inference keeps the top 300 (query, class) scores, without NMS.

Shapes: B images, Q queries (900), P denoising queries, K classes, D width, N_dec
decoder layers, S flattened pixels; boxes normalised cxcywh.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...config import BACKBONES, MODELS, NECKS, build
from ...layers import ImageList
from ...layers.position_encoding import PositionEmbeddingSine
from .box_refinement import refine_boxes
from .criterion import SetCriterion
from .deformable_detr import DeformableDETR, DeformableTransformer, _box_head, _class_head, _head_list
from .deformable_transformer import MultiScaleMemory
from .denoising import ContrastiveDenoising, DenoisingQueries
from .detr import Batch, build_criterion, build_plain
from .query_selection import encoder_proposals, gather_rows

__all__ = ["DINO", "DINOTransformer", "DINO_EPS"]

# The official DINO clamps inverse_sigmoid at 1e-3 (util/misc.py).
DINO_EPS = 1e-3


class DINOTransformer(DeformableTransformer):
    """DINO's deformable encoder-decoder: sine temperature 20 without Deformable DETR's
    -0.5 offset, positional queries from reference boxes, a shared output LayerNorm,
    look-forward-twice refinement. Arguments as `DeformableTransformer`, with DINO's
    defaults (feed-forward 2048, no dropout)."""

    eps = DINO_EPS

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        num_levels: int = 4,
        enc_n_points: int = 4,
        dec_n_points: int = 4,
    ) -> None:
        nn.Module.__init__(self)
        self.position_encoding = PositionEmbeddingSine(d_model // 2, 20.0, normalize=True)
        decoder = dict(query_pos_head=True, norm=True, look_forward_twice=True)
        self._build(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
            num_levels, enc_n_points, dec_n_points, decoder,
        )  # fmt: skip


@MODELS.register()
class DINO(DeformableDETR):
    """DINO (Zhang et al., 2022), 4-scale (res3-res5 + one extra level) or 5-scale (res2-res5 + one).

    Args:
        backbone, neck, criterion, num_classes, aux_loss, pixel_mean, pixel_std,
            input_format: as `DeformableDETR`.
        transformer: a `DINOTransformer`.
        num_queries: Q matching queries (900).
        num_select: detections kept per image (top scores over (query, class) pairs).
        denoising: the contrastive denoising queries (None: no denoising).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        transformer: DINOTransformer,
        criterion: SetCriterion,
        num_classes: int,
        num_queries: int = 900,
        num_select: int = 300,
        denoising: ContrastiveDenoising | None = None,
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
        d, n = transformer.d_model, transformer.num_decoder_layers
        class_head, box_head = _class_head(d, num_classes), _box_head(d)
        self.class_embed = _head_list(class_head, n, shared=True)
        self.bbox_embed = _head_list(box_head, n, shared=True)
        self.enc_class_embed, self.enc_bbox_embed = copy.deepcopy(class_head), copy.deepcopy(box_head)
        self.enc_output, self.enc_output_norm = nn.Linear(d, d), nn.LayerNorm(d)
        self.tgt_embed = nn.Embedding(num_queries, d)
        for p in (self.enc_output.weight, self.tgt_embed.weight):
            nn.init.xavier_uniform_(p)
        self.denoising = denoising

    @classmethod
    def from_config(cls, cfg: Mapping) -> DINO:
        path = getattr(cfg, "_key_path", "model")
        children = ("type", "backbone", "neck", "transformer", "criterion", "denoising")
        kwargs = {k: v for k, v in cfg.items() if k not in children}
        backbone = build(cfg["backbone"], BACKBONES)
        neck = build(cfg["neck"], NECKS, input_shape=backbone.output_shape())
        levels = len(neck.output_shape())
        transformer = build_plain(
            DINOTransformer, cfg.get("transformer"), f"{path}.transformer", num_levels=levels
        )
        denoising = cfg.get("denoising", {})
        if denoising is not None:
            denoising = build_plain(
                ContrastiveDenoising, denoising, f"{path}.denoising",
                num_classes=cfg["num_classes"], d_model=transformer.d_model,
            )  # fmt: skip
        criterion = build_criterion(cfg.get("criterion"), f"{path}.criterion", cfg["num_classes"])
        return cls(backbone, neck, transformer, criterion, denoising=denoising, **kwargs)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        """Losses (training) or predictions (eval) for a list of items (see docs/contracts.md)."""
        images = self.preprocess(batch)
        if not self.training:
            logits, boxes, _, _ = self.predict(images)
            return self.postprocess(*self.inference(logits[-1], boxes[-1]), batch)
        targets = self.prepare_targets(batch, images)
        logits, boxes, interm, dn = self.predict(images, targets)  # (N_dec, B, P + Q, K), (..., 4)
        p = 0 if dn is None else dn.num_queries
        if not self.aux_loss:
            logits, boxes = logits[-1:], boxes[-1:]
        losses = self.criterion(logits[:, :, p:], boxes[:, :, p:], targets)
        interm_losses = self.criterion(interm[0][None], interm[1][None], targets)
        losses.update({f"{k}_interm": v for k, v in interm_losses.items()})
        losses.update(self.denoising_losses(logits[:, :, :p], boxes[:, :, :p], targets, dn))
        return losses

    def predict(
        self, images: ImageList, targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, DenoisingQueries | None]:
        """Decoder outputs of every layer for the denoising queries (first P, training with
        targets only) and the matching queries: logits (N_dec, B, P + Q, K), boxes
        (N_dec, B, P + Q, 4); the selected proposals' logits (B, Q, K) and boxes (B, Q, 4);
        and the denoising queries (None without)."""
        mem = self.transformer.encode(*self.features(images))
        tgt, box_logits, interm = self.select_queries(mem)
        dn, mask = None, None
        if targets is not None and self.denoising is not None:
            dn = self.denoising(targets, tgt.shape[1], self.transformer.eps)
        if dn is not None:
            tgt, box_logits = torch.cat([dn.content, tgt], 1), torch.cat([dn.boxes, box_logits], 1)
            mask = dn.attn_mask
        hs, refs = self.transformer.decoder(tgt, box_logits.sigmoid(), mem, None, self.bbox_embed, mask)
        if self.denoising is not None:  # the label embedding takes part in every graph (DDP)
            hs = hs + 0.0 * self.denoising.label_enc.weight[0, 0]
        eps = self.transformer.eps
        logits = torch.stack([self.class_embed[i](h) for i, h in enumerate(hs)])
        boxes = torch.stack(
            [refine_boxes(self.bbox_embed[i](h), r, eps) for i, (h, r) in enumerate(zip(hs, refs))]
        )
        return logits, boxes, interm, dn

    def select_queries(self, mem: MultiScaleMemory) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Mixed query selection: learned content queries (B, Q, D), the top-Q proposals'
        boxes in inverse-sigmoid space (B, Q, 4, detached), and those proposals' logits
        (B, Q, K) and boxes (B, Q, 4) for the intermediate loss."""
        memory, proposals = encoder_proposals(mem.src, mem.mask, mem.spatial_shapes)
        memory = self.enc_output_norm(self.enc_output(memory))
        enc_logits = self.enc_class_embed(memory)
        enc_coords = self.enc_bbox_embed(memory) + proposals  # inverse-sigmoid space
        k = min(self.num_queries, memory.shape[1])  # fewer pixels than queries: tiny images only
        topk = enc_logits.max(-1).values.topk(k, dim=1).indices
        coords = gather_rows(enc_coords, topk)
        # A copy, not a view: a no-grad view of a parameter confuses autograd hooks (FLOP counter).
        tgt = self.tgt_embed.weight[:k].unsqueeze(0).repeat(mem.src.shape[0], 1, 1)
        return tgt, coords.detach(), (gather_rows(enc_logits, topk), coords.sigmoid())

    def denoising_losses(
        self,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        dn: DenoisingQueries | None,
    ) -> dict[str, torch.Tensor]:
        """Losses of the denoising queries (suffix ``_dn``, ``_dn_<layer>``): positives are
        matched to their own object, negatives and padding must predict no object. The
        divisor is the object count times the number of groups. Zeros without queries."""
        losses, last = {}, logits.shape[0] - 1
        num_boxes = self.criterion.num_boxes(targets, logits.device)
        for layer in range(logits.shape[0]):
            suffix = "_dn" if layer == last else f"_dn_{layer}"
            if dn is None:
                zero = logits.sum() * 0.0
                values = {"loss_class": zero, "loss_bbox": zero, "loss_giou": zero}
            else:
                indices = dn.positive_indices(targets)
                values = self.criterion.layer_losses(
                    logits[layer], boxes[layer], targets, indices, num_boxes * dn.num_groups
                )
            losses.update({k + suffix: v for k, v in values.items()})
        return losses
