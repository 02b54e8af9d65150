"""The DETR transformer (Carion et al., "End-to-End Object Detection with Transformers", 2020).

Post-norm encoder-decoder of "Attention Is All You Need" with the positional encoding
added to queries and keys of every attention (not to values). Shapes: B images,
S = H*W feature positions, Q queries, D model width, L decoder layers. Tensors are
batch-first, (B, S, D).

The encoder is shared with DAB-DETR, whose encoder rescales the positional encoding
per layer from the content (`pos_scale=True`) and uses PReLU activations.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import get_activation
from ...layers.position_encoding import PositionEmbeddingSine
from ...ops import Dropout

__all__ = [
    "MLP",
    "TransformerEncoderLayer",
    "TransformerEncoder",
    "TransformerDecoderLayer",
    "TransformerDecoder",
    "DETRTransformer",
]


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (DETR's box head, 3 layers)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def make_activation(name: str) -> nn.Module:
    """`get_activation` names plus "prelu" (one learned slope, DAB-DETR's choice), never in place.

    An in-place activation on a `Linear`'s 3-D output (a view of its 2-D GEMM result) makes
    autograd copy and zero-fill the whole hidden tensor in the backward (`CopySlices`).
    """
    out_of_place = {"prelu": nn.PReLU, "relu": nn.ReLU, "silu": nn.SiLU}
    return out_of_place[name]() if name in out_of_place else get_activation(name)


class _FeedForward(nn.Module):
    """linear1 -> activation -> dropout -> linear2; the residual and norm live outside."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = make_activation(activation)
        self.dropout = Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        if isinstance(self.activation, nn.ReLU) and not h.requires_grad:
            h = h.relu_()  # no autograd to confuse: in place saves a hidden-sized tensor
        else:
            h = self.activation(h)
        return self.linear2(self.dropout(h))


class TransformerEncoderLayer(nn.Module):
    """Self-attention over feature positions, then a feed-forward block (post-norm)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.ffn = _FeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """src, pos (Tensor[B, S, D]); padding_mask (Tensor[B, S] bool, True = padded) -> (B, S, D)."""
        q = k = src + pos
        attn = self.self_attn(q, k, src, key_padding_mask=padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers.

    Args:
        num_layers: number of layers.
        pos_scale: rescale the positional encoding before each layer by an MLP of the
            layer's input, ``pos * MLP(src)`` (DAB-DETR's encoder).
        **layer_kwargs: `TransformerEncoderLayer` arguments.
    """

    def __init__(self, num_layers: int, pos_scale: bool = False, **layer_kwargs) -> None:
        super().__init__()
        layer = TransformerEncoderLayer(**layer_kwargs)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        d = layer_kwargs["d_model"]
        self.query_scale = MLP(d, d, d, 2) if pos_scale else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            layer_pos = pos if self.query_scale is None else pos * self.query_scale(src)
            src = layer(src, layer_pos, padding_mask)
        return src


class TransformerDecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the encoder memory, feed-forward (post-norm)."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = Dropout(dropout)
        self.ffn = _FeedForward(d_model, dim_feedforward, dropout, activation)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout3 = Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        """tgt, query_pos (Tensor[B, Q, D]); memory, pos (Tensor[B, S, D]);
        padding_mask (Tensor[B, S] bool) -> Tensor[B, Q, D]."""
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(
            tgt + query_pos, memory + pos, memory, key_padding_mask=padding_mask, need_weights=False
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class TransformerDecoder(nn.Module):
    """A stack of decoder layers; returns every layer's output through a shared final LayerNorm."""

    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        layer = TransformerDecoderLayer(**layer_kwargs)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(layer_kwargs["d_model"])

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        memory: torch.Tensor,
        pos: torch.Tensor,
        padding_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Returns Tensor[L, B, Q, D]: the normalised output of each layer (auxiliary losses)."""
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos, padding_mask)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


def flatten_features(
    src: torch.Tensor, mask: torch.Tensor, position_encoding: PositionEmbeddingSine
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, D, H, W) features and (B, H, W) padding mask -> src, pos (B, S, D), mask (B, S)."""
    pos = position_encoding(mask).to(src.dtype)
    return src.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), mask.flatten(1)


class DETRTransformer(nn.Module):
    """DETR's encoder-decoder with its sine positional encoding.

    Args:
        d_model: width D (the input projection maps backbone channels to D).
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth L.
        dim_feedforward: hidden width of the feed-forward blocks.
        dropout: dropout in attention and feed-forward blocks.
        activation: feed-forward activation.
        temperature: temperature of the positional encoding.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        temperature: float = 10000.0,
    ) -> None:
        super().__init__()
        layer_kwargs = dict(
            d_model=d_model,
            nhead=nhead,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=activation,
        )
        self.d_model = d_model
        self.position_encoding = PositionEmbeddingSine(d_model // 2, temperature, normalize=True)
        self.encoder = TransformerEncoder(num_encoder_layers, **layer_kwargs)
        self.decoder = TransformerDecoder(num_decoder_layers, **layer_kwargs)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src: torch.Tensor, mask: torch.Tensor, query_embed: torch.Tensor) -> torch.Tensor:
        """Encode the features and decode the object queries.

        Args:
            src (Tensor[B, D, H, W]): projected backbone features.
            mask (Tensor[B, H, W] bool): True on padded positions.
            query_embed (Tensor[Q, D]): learned object queries (positional part).

        Returns:
            Tensor[L, B, Q, D]: decoder outputs of every layer.
        """
        src, pos, mask = flatten_features(src, mask, self.position_encoding)
        memory = self.encoder(src, pos, mask)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)  # (B, Q, D)
        tgt = torch.zeros_like(query_pos)
        return self.decoder(tgt, query_pos, memory, pos, mask)
