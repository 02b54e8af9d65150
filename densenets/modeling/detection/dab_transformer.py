"""DAB-DETR's transformer (Liu et al., "DAB-DETR: Dynamic Anchor Boxes are Better Queries for DETR", ICLR 2022).

Each query is a 4-D anchor box (x, y, w, h). Per decoder layer the anchor's sine
embedding gives the positional query; the cross-attention's positional part is
modulated by the anchor's width and height; the layer predicts a box delta in
inverse-sigmoid space, refining the anchor for the next layer. Classes use a sigmoid
focal loss. Shapes: B images, Q queries, K classes, S = H*W positions, D width,
L decoder layers. Anchors and boxes are normalised cxcywh in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.position_encoding import PositionEmbeddingSine, sine_box_embedding
from ...ops import Dropout
from .box_refinement import refine_boxes
from .transformer import MLP, TransformerEncoder, flatten_features, make_activation

__all__ = ["DABTransformer", "DABDecoder", "DABDecoderLayer", "DAB_DETR_EPS"]


# The official DAB-DETR clamps at 1e-3 (util/misc.py); Deformable DETR / DINO use 1e-5.
# The constant matters whenever a box touches the image border.
DAB_DETR_EPS = 1e-3


class _Attention(nn.Module):
    """Multi-head attention on already-projected q, k, v; only the output projection is learned.

    q and k may be wider than v (DAB-DETR's cross-attention concatenates content and
    position per head); scores are scaled by 1/sqrt(head width of q).
    """

    def __init__(self, d_value: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.nhead = nhead
        self.dropout = dropout
        self.out_proj = nn.Linear(d_value, d_value)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q (B, Q, Dq), k (B, S, Dq), v (B, S, Dv), padding_mask (B, S) True = ignore -> (B, Q, Dv)."""
        b, nq, _ = q.shape
        q, k, v = (t.unflatten(-1, (self.nhead, -1)).transpose(1, 2) for t in (q, k, v))  # (B, h, *, d)
        allowed = None if padding_mask is None else ~padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))


class DABDecoderLayer(nn.Module):
    """Conditional self- and cross-attention with separate content and position projections.

    Args:
        d_model: width D.
        nhead: heads.
        dim_feedforward: feed-forward hidden width.
        dropout: dropout.
        activation: feed-forward activation.
        is_first: the first layer also adds the projected positional query to the
            cross-attention content (later layers rely on the concatenated sine part).
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, activation: str, is_first: bool
    ) -> None:
        super().__init__()
        self.nhead = nhead
        self.sa_qcontent_proj, self.sa_qpos_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.sa_kcontent_proj, self.sa_kpos_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.sa_v_proj = nn.Linear(d_model, d_model)
        self.self_attn = _Attention(d_model, nhead, dropout)
        self.ca_qcontent_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_proj = nn.Linear(d_model, d_model) if is_first else None
        self.ca_kcontent_proj, self.ca_kpos_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.ca_v_proj = nn.Linear(d_model, d_model)
        self.ca_qpos_sine_proj = nn.Linear(d_model, d_model)
        self.cross_attn = _Attention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = make_activation(activation)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (Dropout(dropout) for _ in range(4))

    def _heads_cat(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B, N, D) x 2 -> (B, N, 2D) with a and b side by side inside every head."""
        return torch.cat([a.unflatten(-1, (self.nhead, -1)), b.unflatten(-1, (self.nhead, -1))], -1).flatten(
            -2
        )

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
        query_pos: torch.Tensor,
        query_sine: torch.Tensor,
    ) -> torch.Tensor:
        """tgt, query_pos, query_sine (B, Q, D); memory, pos (B, S, D); padding_mask (B, S) -> (B, Q, D)."""
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, self.sa_v_proj(tgt))))

        q, k, k_pos = self.ca_qcontent_proj(tgt), self.ca_kcontent_proj(memory), self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:
            q, k = q + self.ca_qpos_proj(query_pos), k + k_pos
        q = self._heads_cat(q, self.ca_qpos_sine_proj(query_sine))  # (B, Q, 2D)
        k = self._heads_cat(k, k_pos)  # (B, S, 2D)
        tgt = self.norm2(tgt + self.dropout2(self.cross_attn(q, k, self.ca_v_proj(memory), padding_mask)))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class DABDecoder(nn.Module):
    """Decoder layers that refine anchor boxes; see the module docstring.

    Args:
        num_layers: L.
        modulate_hw_attn: scale the x / y halves of the positional query by
            (predicted reference width / anchor width) and (height / anchor height).
        **layer_kwargs: `DABDecoderLayer` arguments except `is_first`.
    """

    def __init__(self, num_layers: int, modulate_hw_attn: bool = True, **layer_kwargs) -> None:
        super().__init__()
        d = layer_kwargs["d_model"]
        self.d_model = d
        self.layers = nn.ModuleList(
            DABDecoderLayer(**layer_kwargs, is_first=i == 0) for i in range(num_layers)
        )
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(2 * d, d, d, 2)
        self.ref_anchor_head = MLP(d, d, 2, 2) if modulate_hw_attn else None
        self.norm = nn.LayerNorm(d)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
        anchors: torch.Tensor,
        box_head: nn.Module,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode and refine.

        Args:
            tgt (Tensor[B, Q, D]): content queries (zeros).
            memory, pos (Tensor[B, S, D]): encoder output and its positional encoding.
            padding_mask (Tensor[B, S] bool): True on padded positions.
            anchors (Tensor[B, Q, 4]): initial anchors, cxcywh in (0, 1).
            box_head: maps (..., D) to a (..., 4) delta in inverse-sigmoid space.

        Returns:
            hs (Tensor[L, B, Q, D]): normalised outputs of every layer.
            references (Tensor[L, B, Q, 4]): the anchor each layer started from. Only
            the first is tied to the learned anchors in the positional path; the
            refinements are detached before feeding the next layer, as in the paper.
        """
        d, ref = self.d_model, anchors
        hs, references = [], [anchors]
        for i, layer in enumerate(self.layers):
            sine = sine_box_embedding(ref, d // 2)  # (B, Q, 2D): y, x, w, h
            query_pos = self.ref_point_head(sine)
            query_sine = sine[..., :d] if i == 0 else sine[..., :d] * self.query_scale(tgt)  # y, x halves
            if self.ref_anchor_head is not None:
                hw = self.ref_anchor_head(tgt).sigmoid()  # (B, Q, 2): reference w, h
                y_scale = (hw[..., 1] / ref[..., 3]).unsqueeze(-1)
                x_scale = (hw[..., 0] / ref[..., 2]).unsqueeze(-1)
                query_sine = torch.cat(
                    [query_sine[..., : d // 2] * y_scale, query_sine[..., d // 2 :] * x_scale], -1
                )
            tgt = layer(tgt, memory, pos, padding_mask, query_pos, query_sine)
            new_ref = refine_boxes(box_head(tgt), ref, DAB_DETR_EPS)
            if i < len(self.layers) - 1:
                references.append(new_ref)
            ref = new_ref.detach()
            hs.append(self.norm(tgt))
        return torch.stack(hs), torch.stack(references)


class DABTransformer(nn.Module):
    """DAB-DETR's encoder (position rescaled per layer) and anchor-refining decoder.

    Args:
        d_model: width D.
        nhead: heads.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth L.
        dim_feedforward: feed-forward hidden width.
        dropout: dropout (the paper's recipe uses none).
        activation: feed-forward activation (the paper's recipe: PReLU).
        temperature: temperature of the feature-map positional encoding (20 in the paper).
        modulate_hw_attn: width/height-modulated cross-attention.
        num_patterns: P learned content embeddings (Anchor DETR's patterns; the
            official DAB-DETR-DC5-3pat uses 3). Every anchor is decoded once per pattern,
            so the decoder sees P*Q queries; 0 starts every query from zeros.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "prelu",
        temperature: float = 20.0,
        modulate_hw_attn: bool = True,
        num_patterns: int = 0,
    ) -> None:
        super().__init__()
        if num_patterns < 0:
            raise ValueError(f"num_patterns: expected >= 0, got {num_patterns}")
        kw = dict(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
        )
        self.d_model = d_model
        self.position_encoding = PositionEmbeddingSine(d_model // 2, temperature, normalize=True)
        self.encoder = TransformerEncoder(num_encoder_layers, pos_scale=True, **kw)
        self.decoder = DABDecoder(num_decoder_layers, modulate_hw_attn, **kw)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # Created after the Xavier pass, so N(0, 1) as an nn.Embedding (as the official code).
        self.patterns = nn.Embedding(num_patterns, d_model) if num_patterns > 0 else None

    def forward(
        self, src: torch.Tensor, mask: torch.Tensor, anchors: torch.Tensor, box_head: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, D, H, W), mask (B, H, W), anchors (Q, 4) in (0, 1) -> hs, references (see DABDecoder).

        With P patterns the decoder has P*Q queries, pattern-major: query p*Q + j starts
        from pattern p and anchor j (the official order, which checkpoints rely on).
        """
        src, pos, mask = flatten_features(src, mask, self.position_encoding)
        memory = self.encoder(src, pos, mask)
        b, q = src.shape[0], anchors.shape[0]
        if self.patterns is None:
            tgt = src.new_zeros(b, q, self.d_model)
        else:
            tgt = self.patterns.weight.to(src.dtype).repeat_interleave(q, 0).expand(b, -1, -1)  # (B, P*Q, D)
            anchors = anchors.repeat(self.patterns.num_embeddings, 1)  # (P*Q, 4)
        anchors = anchors.unsqueeze(0).expand(b, -1, -1)  # (B, P*Q, 4)
        return self.decoder(tgt, memory, pos, mask, anchors, box_head)
