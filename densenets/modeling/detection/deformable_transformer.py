"""The deformable encoder-decoder of Deformable DETR (Zhu et al., ICLR 2021) and DINO (Zhang et al., ICLR 2023).

Encoder: every pixel of every level attends, by multi-scale deformable attention, to a
few sampled points around its own position on all levels. Decoder: query
self-attention, then deformable cross-attention around each query's reference point
(2-d) or box (4-d), then a feed-forward block; post-norm throughout. With box heads,
each layer refines the reference for the next (iterative box refinement).

Shapes: B images, L levels of sizes (h_l, w_l), S = sum(h_l * w_l) flattened pixels,
Q queries, D width, N_dec decoder layers. Tensors are batch-first. Reference points and
boxes are normalised to the *valid* (unpadded) part of each image, and rescaled by
each level's valid ratio before sampling, as in the official code.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...layers.position_encoding import PositionEmbeddingSine, sine_box_embedding
from ...ops import Dropout, MultiScaleDeformableAttention
from .box_refinement import refine_boxes
from .transformer import MLP, _FeedForward

__all__ = [
    "DeformableTransformer",
    "DINOTransformer",
    "DEFORMABLE_DETR_EPS",
    "DINO_EPS",
    "DeformableEncoderLayer",
    "DeformableEncoder",
    "DeformableDecoderLayer",
    "DeformableDecoder",
    "MultiScaleMemory",
    "flatten_levels",
    "valid_ratios",
]


# The inverse-sigmoid clamps of the official code bases (util/misc.py of each).
DEFORMABLE_DETR_EPS = 1e-5
DINO_EPS = 1e-3


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """(B, h, w) padding mask -> Tensor[B, 2]: the unpadded fraction of the width and height."""
    h, w = mask.shape[-2:]
    valid_h = (~mask[:, :, 0]).sum(1).float() / h
    valid_w = (~mask[:, 0, :]).sum(1).float() / w
    return torch.stack([valid_w, valid_h], -1)


@dataclass
class MultiScaleMemory:
    """Flattened multi-scale features and what attention over them needs.

    Attributes:
        src (Tensor[B, S, D]): the levels flattened row-major and concatenated (the
            encoder's output after encoding).
        pos (Tensor[B, S, D]): positional encoding plus the level embedding.
        mask (Tensor[B, S] bool): True on padded pixels.
        spatial_shapes (Tensor[L, 2] int64): (h, w) of each level.
        level_start_index (Tensor[L] int64): start of each level in S.
        valid_ratios (Tensor[B, L, 2]): unpadded (w, h) fraction of each level.
    """

    src: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor


def flatten_levels(
    srcs: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    pos: Sequence[torch.Tensor],
    level_embed: torch.Tensor | None,
) -> MultiScaleMemory:
    """Per-level (B, D, h, w) features, (B, h, w) masks and (B, D, h, w) encodings -> one sequence."""
    shapes = [tuple(s.shape[-2:]) for s in srcs]
    src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    mask = torch.cat([m.flatten(1) for m in masks], 1)
    flat_pos = []
    for lvl, p in enumerate(pos):
        p = p.to(src.dtype).flatten(2).transpose(1, 2)
        flat_pos.append(p if level_embed is None else p + level_embed[lvl].view(1, 1, -1))
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src.device)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    ratios = torch.stack([valid_ratios(m) for m in masks], 1).to(src.dtype)
    return MultiScaleMemory(src, torch.cat(flat_pos, 1), mask, spatial_shapes, level_start_index, ratios)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a feed-forward block (post-norm)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_levels: int,
        num_points: int,
        dim_feedforward: int,
        dropout: float,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(d_model, nhead, num_levels, num_points)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = _FeedForward(d_model, dim_feedforward, dropout, activation)
        self.dropout2 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: torch.Tensor, reference_points: torch.Tensor, mem: MultiScaleMemory
    ) -> torch.Tensor:
        """src (B, S, D), reference_points (B, S, L, 2) -> (B, S, D)."""
        attn = self.self_attn(
            src + mem.pos, reference_points, src, mem.spatial_shapes, mem.level_start_index, mem.mask
        )
        src = self.norm1(src + self.dropout1(attn))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DeformableEncoder(nn.Module):
    """A stack of encoder layers; every pixel's reference point is its own centre."""

    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        layer = DeformableEncoderLayer(**layer_kwargs)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    @staticmethod
    def reference_points(mem: MultiScaleMemory) -> torch.Tensor:
        """Tensor[B, S, L, 2]: pixel centres normalised by each image's valid size, then
        rescaled to every level's valid ratio (the official `get_reference_points`)."""
        refs = []
        ratios = mem.valid_ratios
        for lvl, (h, w) in enumerate(mem.spatial_shapes.tolist()):
            ys = torch.linspace(0.5, h - 0.5, h, dtype=ratios.dtype, device=ratios.device)
            xs = torch.linspace(0.5, w - 0.5, w, dtype=ratios.dtype, device=ratios.device)
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            ref_y = ref_y.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(refs, 1)[:, :, None] * ratios[:, None]

    def forward(self, mem: MultiScaleMemory) -> torch.Tensor:
        """Returns the encoded memory, Tensor[B, S, D]."""
        reference_points = self.reference_points(mem)
        src = mem.src
        for layer in self.layers:
            src = layer(src, reference_points, mem)
        return src


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention, feed-forward (post-norm).

    The official files name the norms by creation order (``norm1`` after the
    cross-attention, ``norm2`` after the self-attention); here they follow the order
    of use, as in DETR's decoder, and the converters swap them.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_levels: int,
        num_points: int,
        dim_feedforward: int,
        dropout: float,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MultiScaleDeformableAttention(d_model, nhead, num_levels, num_points)
        self.dropout2 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = _FeedForward(d_model, dim_feedforward, dropout, activation)
        self.dropout3 = Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        mem: MultiScaleMemory,
        self_attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt, query_pos (B, Q, D); reference_points (B, Q, L, 2 or 4); self_attn_mask
        (Q, Q) bool, True = may not attend -> (B, Q, D)."""
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.cross_attn(
            tgt + query_pos, reference_points, mem.src, mem.spatial_shapes, mem.level_start_index, mem.mask
        )
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class DeformableDecoder(nn.Module):
    """Decoder layers with optional iterative box refinement.

    Deformable DETR: the positional query is given (learned or from two-stage
    proposals); a layer's refined box is detached before the next layer and is also the
    reference of that layer's prediction. DINO (Zhang et al., 2022): the positional
    query is an MLP of the sine embedding of the reference box (`query_pos_head`), every
    layer's output goes through a shared LayerNorm (`norm`), and "look forward twice":
    the next layer starts from the detached box, but the prediction of layer l+1 is
    built on layer l's box *before* detaching, so layer l+1's loss also trains layer l.

    Args:
        num_layers: N_dec.
        query_pos_head: DINO's positional queries from the reference boxes.
        norm: a LayerNorm on every layer's output (DINO).
        look_forward_twice: return undetached references (DINO).
        eps: the inverse-sigmoid clamp of the refinement (Deformable DETR 1e-5, DINO 1e-3).
        **layer_kwargs: `DeformableDecoderLayer` arguments.
    """

    def __init__(
        self,
        num_layers: int,
        query_pos_head: bool = False,
        norm: bool = False,
        look_forward_twice: bool = False,
        eps: float = 1e-5,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        d = layer_kwargs["d_model"]
        self.d_model = d
        layer = DeformableDecoderLayer(**layer_kwargs)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.ref_point_head = MLP(2 * d, d, d, 2) if query_pos_head else None
        self.norm = nn.LayerNorm(d) if norm else None
        self.look_forward_twice = look_forward_twice
        self.eps = eps

    def forward(
        self,
        tgt: torch.Tensor,
        reference: torch.Tensor,
        mem: MultiScaleMemory,
        query_pos: torch.Tensor | None = None,
        box_heads: Sequence[nn.Module] | None = None,
        self_attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode, refining the references when `box_heads` are given.

        Args:
            tgt (Tensor[B, Q, D]): content queries.
            reference (Tensor[B, Q, 2] or Tensor[B, Q, 4]): initial points or boxes in (0, 1).
            mem: the encoded memory.
            query_pos (Tensor[B, Q, D]): positional queries (None with `query_pos_head`).
            box_heads: one box head per layer (the same module repeated when shared),
                mapping (..., D) to a (..., 4) delta; None: no refinement.
            self_attn_mask (Tensor[Q, Q] bool): True where a query may not attend.

        Returns:
            hs (Tensor[N_dec, B, Q, D]): every layer's output (normalised with `norm`).
            references (list of N_dec Tensor[B, Q, 2 or 4]): the reference each layer's
            box prediction is built on (2-d until the first refinement).
        """
        ratios = mem.valid_ratios[:, None]  # (B, 1, L, 2)
        hs, references = [], [reference]
        for i, layer in enumerate(self.layers):
            scale = ratios if reference.shape[-1] == 2 else torch.cat([ratios, ratios], -1)
            ref_input = reference[:, :, None] * scale  # (B, Q, L, 2 or 4)
            if self.ref_point_head is not None:
                query_pos = self.ref_point_head(sine_box_embedding(ref_input[:, :, 0], self.d_model // 2))
            tgt = layer(tgt, query_pos, ref_input, mem, self_attn_mask)
            hs.append(tgt if self.norm is None else self.norm(tgt))
            if box_heads is not None and i < len(self.layers) - 1:
                new_reference = refine_boxes(box_heads[i](tgt), reference, self.eps)
                reference = new_reference.detach()
                references.append(new_reference if self.look_forward_twice else reference)
            elif i < len(self.layers) - 1:
                references.append(reference)
        return torch.stack(hs), references


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

    eps: ClassVar[float] = DEFORMABLE_DETR_EPS
    decoder_options: ClassVar[dict[str, bool]] = {}  # `DeformableDecoder` switches (DINO's)

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
        self.position_encoding = self.make_position_encoding(d_model)
        self.d_model, self.num_levels, self.num_decoder_layers = d_model, num_levels, num_decoder_layers
        kw = dict(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
        )
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        self.encoder = DeformableEncoder(
            num_encoder_layers, num_levels=num_levels, num_points=enc_n_points, **kw
        )
        self.decoder = DeformableDecoder(
            num_decoder_layers, num_levels=num_levels, num_points=dec_n_points, eps=self.eps,
            **kw, **self.decoder_options,
        )  # fmt: skip
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MultiScaleDeformableAttention):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def make_position_encoding(d_model: int) -> PositionEmbeddingSine:
        """Sine encoding of pixel centres (-0.5 offset), temperature 10000."""
        return PositionEmbeddingSine(d_model // 2, 10000.0, normalize=True, offset=-0.5)

    def encode(self, srcs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> MultiScaleMemory:
        """Per-level features (B, D, h, w) and padding masks (B, h, w) -> the encoded memory."""
        pos = [self.position_encoding(m) for m in masks]
        mem = flatten_levels(srcs, masks, pos, self.level_embed)
        mem.src = self.encoder(mem)
        return mem


class DINOTransformer(DeformableTransformer):
    """DINO's deformable encoder-decoder: sine temperature 20 without Deformable DETR's
    -0.5 offset, positional queries from reference boxes, a shared output LayerNorm,
    look-forward-twice refinement. Arguments as `DeformableTransformer`, with DINO's
    defaults (feed-forward 2048, no dropout)."""

    eps: ClassVar[float] = DINO_EPS
    decoder_options: ClassVar[dict[str, bool]] = dict(query_pos_head=True, norm=True, look_forward_twice=True)

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
        super().__init__(
            d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
            num_levels, enc_n_points, dec_n_points,
        )  # fmt: skip

    @staticmethod
    def make_position_encoding(d_model: int) -> PositionEmbeddingSine:
        """Sine encoding of 1-based pixel counts, temperature 20."""
        return PositionEmbeddingSine(d_model // 2, 20.0, normalize=True)
