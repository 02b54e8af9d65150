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
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...config import MODELS
from ...layers import ImageList
from ..backbones.base import Backbone
from .criterion import SetCriterion
from .deformable_detr import MultiScaleDETR, head_list
from .deformable_transformer import DINO_EPS, DINOTransformer, MultiScaleMemory
from .denoising import ContrastiveDenoising, DenoisingQueries
from .detr_base import delta_box_head, focal_class_head
from .query_selection import gather_rows

__all__ = ["DINO", "DINO_EPS"]


@MODELS.register()
class DINO(MultiScaleDETR):
    """DINO (Zhang et al., 2022), 4-scale (res3-res5 + one extra level) or 5-scale (res2-res5 + one).

    Args:
        backbone, neck, criterion, num_classes, **options: as `DeformableDETR`.
        transformer: a `DINOTransformer`.
        denoising: the contrastive denoising queries (None: no denoising; a config without
            the key builds them with their defaults).
        num_queries: Q matching queries (900).
        num_select: detections kept per image (top scores over (query, class) pairs).
    """

    def __init__(
        self,
        backbone: Backbone,
        neck: Backbone,
        transformer: DINOTransformer,
        criterion: SetCriterion,
        denoising: ContrastiveDenoising | None,
        num_classes: int,
        num_queries: int = 900,
        num_select: int = 300,
        **options: Any,
    ) -> None:
        super().__init__(backbone, neck, transformer, criterion, num_classes, num_queries, **options)
        self.num_select = num_select
        d, n = transformer.d_model, transformer.num_decoder_layers
        class_head, box_head = focal_class_head(d, num_classes), delta_box_head(d)
        self.class_embed = head_list(class_head, n, shared=True)
        self.bbox_embed = head_list(box_head, n, shared=True)
        self.enc_class_embed, self.enc_bbox_embed = copy.deepcopy(class_head), copy.deepcopy(box_head)
        self.enc_output, self.enc_output_norm = nn.Linear(d, d), nn.LayerNorm(d)
        self.tgt_embed = nn.Embedding(num_queries, d)
        for p in (self.enc_output.weight, self.tgt_embed.weight):
            nn.init.xavier_uniform_(p)
        self.denoising = denoising

    @classmethod
    def build_children(cls, cfg: Mapping, path: str) -> dict[str, nn.Module | None]:
        """`MultiScaleDETR`'s children and the denoising queries (label embedding of width D)."""
        children = super().build_children(cfg, path)
        d = children["transformer"].d_model
        children["denoising"] = cls.build_child(
            "denoising", cfg, path, num_classes=cfg["num_classes"], d_model=d
        )
        return children

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
        return (*self.layer_outputs(hs, refs), interm, dn)

    def select_queries(self, mem: MultiScaleMemory) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Mixed query selection: learned content queries (B, Q, D), the top-Q proposals'
        boxes in inverse-sigmoid space (B, Q, 4, detached), and those proposals' logits
        (B, Q, K) and boxes (B, Q, 4) for the intermediate loss."""
        enc_logits, enc_coords = self.encoder_outputs(mem, self.enc_class_embed, self.enc_bbox_embed)
        topk = self.top_queries(enc_logits.max(-1).values)
        coords = gather_rows(enc_coords, topk)
        # A copy, not a view: a no-grad view of a parameter confuses autograd hooks (FLOP counter).
        tgt = self.tgt_embed.weight[: topk.shape[1]].unsqueeze(0).repeat(mem.src.shape[0], 1, 1)
        return tgt, coords.detach(), (gather_rows(enc_logits, topk), coords.sigmoid())

    def losses(self, outputs: tuple, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The matching queries' set losses, the selected proposals' (suffix ``_interm``) and
        the denoising queries' (`denoising_losses`)."""
        logits, boxes, interm, dn = outputs  # (N_dec, B, P + Q, K), (..., 4)
        p = 0 if dn is None else dn.num_queries
        losses = super().losses((logits[:, :, p:], boxes[:, :, p:]), targets)
        interm_losses = self.criterion(interm[0][None], interm[1][None], targets)
        losses.update({f"{k}_interm": v for k, v in interm_losses.items()})
        if not self.aux_loss:
            logits, boxes = logits[-1:], boxes[-1:]
        losses.update(self.denoising_losses(logits[:, :, :p], boxes[:, :, :p], targets, dn))
        return losses

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
