"""Deformable convolution and multi-scale deformable attention layers.

`DeformConv2d` (DCNv1, Dai et al., "Deformable Convolutional Networks", ICCV 2017) and
`ModulatedDeformConv2d` (DCNv2, Zhu et al., "Deformable ConvNets v2: More Deformable,
Better Results", CVPR 2019) predict their own offsets (and sigmoid mask) with a
zero-initialised convolution `conv_offset`, so a freshly built layer is exactly a plain
convolution (DCNv2: scaled by the initial mask 0.5) and learns to deform.
`DeformConv2dWithOffset` takes offsets (and an optional mask) computed elsewhere.
The `conv_offset` name and output layout (offsets of all points, then masks) follow
the common DCNv2 checkpoints, so their weights load by name.

`MultiScaleDeformableAttention` (Zhu et al., "Deformable DETR", ICLR 2021) has the
parameter names of the official `MSDeformAttn`, so its checkpoints load by name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deform_conv import deform_conv2d
from .ms_deform_attn import ms_deform_attn

__all__ = ["DeformConv2dWithOffset", "DeformConv2d", "ModulatedDeformConv2d", "MultiScaleDeformableAttention"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class DeformConv2dWithOffset(nn.Module):
    """Deformable convolution whose offsets (and mask) are given to `forward`.

    Args:
        in_channels, out_channels (int): C_in and C_out.
        kernel_size, stride, padding, dilation (int | tuple[int, int]): as in `nn.Conv2d`.
        groups (int): weight groups G (C_in and C_out divisible by G).
        deform_groups (int): deformable groups D; each has its own offsets (C_in divisible by D).
        bias (bool): learn an output bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels={out_channels} "
                f"must be divisible by groups={groups}"
            )
        if in_channels % deform_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by deform_groups={deform_groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`nn.Conv2d`'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def num_points(self) -> int:
        """D * K: the number of sampled points per output pixel (mask channels)."""
        return self.deform_groups * self.kernel_size[0] * self.kernel_size[1]

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.
            offset (Tensor[N, 2 * D * K, H_out, W_out]): (dy, dx) pairs, torchvision layout.
            mask (Tensor[N, D * K, H_out, W_out] | None): modulation (DCNv2), or None.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
        if self.groups != 1:
            s += f", groups={self.groups}"
        s += f", deform_groups={self.deform_groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class DeformConv2d(DeformConv2dWithOffset):
    """DCNv1 layer: offsets predicted from the input by `conv_offset` (zero-initialised).

    Same arguments as `DeformConv2dWithOffset`. `conv_offset` has the layer's kernel size,
    stride, padding and dilation, so its output grid is the layer's output grid.
    """

    _mask = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, deform_groups, bias
        )
        per_point = 3 if self._mask else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            per_point * self.num_points,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        return super().forward(x, self.conv_offset(x))


class ModulatedDeformConv2d(DeformConv2d):
    """DCNv2 layer: `conv_offset` predicts offsets and a sigmoid mask (initially 0.5).

    Same arguments as `DeformConv2dWithOffset`. `conv_offset` outputs 3 * D * K channels:
    the 2 * D * K offsets in torchvision's (dy, dx) layout, then the D * K mask logits.
    """

    _mask = True

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x (Tensor[N, C_in, H, W]): input features.

        Returns:
            Tensor[N, C_out, H_out, W_out]
        """
        out = self.conv_offset(x)
        offset, mask_logits = out.split([2 * self.num_points, self.num_points], dim=1)
        return DeformConv2dWithOffset.forward(self, x, offset, mask_logits.sigmoid())


class MultiScaleDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, Section 4.1, Eq. 3).

    Each query predicts, per head, P sampling offsets and attention weights on each of the
    L levels from its embedding (`sampling_offsets`, `attention_weights`), samples the
    projected values there (`ms_deform_attn`) and projects the heads' concatenation back
    (`output_proj`). Initialised as the paper's code: the offsets start on a ring around
    the reference point, head h pointing at angle 2 * pi * h / M, point p at distance
    p + 1 (a square ring of L-infinity radius p + 1); the attention starts uniform (zero
    weights and bias before the softmax).

    Shapes: N images, Q queries, S = sum(h_l * w_l) flattened pixels, E embed_dim,
    M heads, L levels, P points.

    Args:
        embed_dim (int): E, the query and value width; divisible by `num_heads`.
        num_heads (int): M.
        num_levels (int): L, the feature levels of the input.
        num_points (int): P, sampling points per head and level.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 4):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's initialisation (ring of offsets, uniform attention, Xavier projections)."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        ring = torch.stack([angles.cos(), angles.sin()], -1)  # (M, 2) as (x, y)
        ring = ring / ring.abs().max(-1, keepdim=True).values  # onto the unit square
        scale = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        grid = ring[:, None, None, :] * scale[None, None, :, None]  # (M, 1, P, 2)
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            query (Tensor[N, Q, E]): query embeddings (content + position).
            reference_points (Tensor[N, Q, L, 2] | Tensor[N, Q, L, 4]): per level, either
                points (x, y) in [0, 1] (offsets are in pixels of the level) or boxes
                (cx, cy, w, h) in [0, 1] (offsets are in units of half the box size / P).
            input_flatten (Tensor[N, S, E]): the levels flattened and concatenated.
            input_spatial_shapes (Tensor[L, 2]): int64 (h, w) of each level.
            input_level_start_index (Tensor[L]): int64 start of each level in S.
            input_padding_mask (Tensor[N, S] | None): bool, True at padding pixels (their
                values are zeroed).

        Returns:
            Tensor[N, Q, E]
        """
        n, q, _ = query.shape
        m, num_levels, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, input_flatten.shape[1], m, self.embed_dim // m)  # (N, S, M, C)
        offsets = self.sampling_offsets(query).view(n, q, m, num_levels, p, 2)
        weights = self.attention_weights(query).view(n, q, m, num_levels * p)
        weights = F.softmax(weights, -1).view(n, q, m, num_levels, p)
        locations = self._sampling_locations(reference_points, offsets, input_spatial_shapes)
        out = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(out)

    def _sampling_locations(
        self, reference_points: Tensor, offsets: Tensor, spatial_shapes: Tensor
    ) -> Tensor:
        """(N, Q, M, L, P, 2) locations in [0, 1] from reference points/boxes and offsets."""
        if reference_points.dim() != 4 or reference_points.shape[2] != self.num_levels:
            raise ValueError(
                f"MultiScaleDeformableAttention: reference_points shape {tuple(reference_points.shape)} "
                f"should be (N, Q, {self.num_levels}, 2 or 4)"
            )
        ref = reference_points[:, :, None, :, None, :]  # (N, Q, 1, L, 1, 2 or 4)
        if reference_points.shape[-1] == 2:
            normalizer = spatial_shapes.flip(-1).to(offsets.device, offsets.dtype)  # (L, 2) as (w, h)
            return ref + offsets / normalizer[None, None, None, :, None, :]
        if reference_points.shape[-1] == 4:
            return ref[..., :2] + offsets / self.num_points * ref[..., 2:] * 0.5
        raise ValueError(
            f"MultiScaleDeformableAttention: reference_points must end in 2 (points) or 4 (boxes), "
            f"got shape {tuple(reference_points.shape)}"
        )

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"num_levels={self.num_levels}, num_points={self.num_points}"
        )
