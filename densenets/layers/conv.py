"""Convolution followed by a norm and an activation, with frozen norms computed cheaply.

A BatchNorm with fixed statistics (`FrozenBatchNorm2d`, or `BatchNorm2d` in eval mode) is
an affine map per channel, ``y = x * scale + shift``. After a convolution it is applied
in the cheaper of two exact ways (equal up to float rounding):

- folded into the convolution, ``conv(x, W * scale) + shift``: one pass over the weights
  instead of passes over the activations, when the weights are the smaller tensor
  (early, high-resolution stages);
- in place on the convolution's fresh output (``mul_``, ``add_``): no new activation
  tensors, when the activations are smaller (late stages, small images).

Both are recomputed at every forward from the current weights, so gradients still reach
the conv weight (and the norm's affine parameters when they train), and state dicts keep
the usual separate layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import FrozenBatchNorm2d, get_norm

__all__ = ["ConvNormAct", "conv_norm_act", "frozen_affine", "get_activation"]


def frozen_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel ``(scale, shift)`` of a norm that currently acts as a fixed affine map.

    Args:
        norm: a norm layer.

    Returns:
        ``(scale, shift)``, each Tensor[C], for `FrozenBatchNorm2d` and for
        `BatchNorm2d`/`SyncBatchNorm` in eval mode with running statistics; None for any
        other layer (GroupNorm, BatchNorm in training mode, ...).
    """
    if isinstance(norm, FrozenBatchNorm2d):
        weight, bias = norm.weight, norm.bias
    elif isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        if norm.training or norm.running_var is None:
            return None
        weight = norm.weight if norm.affine else torch.ones_like(norm.running_var)
        bias = norm.bias if norm.affine else torch.zeros_like(norm.running_var)
    else:
        return None
    scale = weight * (norm.running_var + norm.eps).rsqrt()
    return scale, bias - norm.running_mean * scale


def conv_norm_act(
    x: torch.Tensor,
    conv: nn.Module,
    norm: nn.Module | None = None,
    activation: nn.Module | None = None,
    fuse: bool = True,
) -> torch.Tensor:
    """``activation(norm(conv(x)))``, with a frozen norm folded or applied in place.

    Args:
        x (Tensor[N, C_in, H, W]): input.
        conv: any convolution module; only a zero-padded `nn.Conv2d` is folded into
            (other convs, e.g. deformable ones, get the in-place affine).
        norm: norm layer or None.
        activation: activation module or None.
        fuse: False computes the three steps separately (bit-for-bit the unfused result).

    Returns:
        Tensor[N, C_out, H_out, W_out].
    """
    affine = frozen_affine(norm) if fuse and norm is not None else None
    if affine is None:
        x = conv(x)
        if norm is not None:
            x = norm(x)
    elif type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and _fold_is_cheaper(conv, x):
        scale, shift = affine
        weight = conv.weight * scale.to(conv.weight.dtype).view(-1, 1, 1, 1)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        x = F.conv2d(x, weight, bias.to(weight.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
    else:
        scale, shift = (t.to(x.dtype).view(1, -1, 1, 1) for t in affine)
        # The conv output is a fresh tensor its backward does not need: safe to overwrite.
        x = conv(x).mul_(scale).add_(shift)
    return activation(x) if activation is not None else x


def _fold_is_cheaper(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether scaling the weights touches fewer numbers than scaling the output."""
    n, _, h, w = x.shape
    size = []
    for length, k, s, p, d in zip((h, w), conv.kernel_size, conv.stride, conv.padding, conv.dilation):
        size.append((length + 2 * p - d * (k - 1) - 1) // s + 1)
    return conv.weight.numel() <= n * conv.out_channels * size[0] * size[1]


def get_activation(activation: str | nn.Module | None) -> nn.Module | None:
    """Activation by name: "relu" (in place), "gelu", "silu", ""/None (none) or a module as is."""
    if activation is None or isinstance(activation, nn.Module):
        return activation
    table = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU, "silu": lambda: nn.SiLU(inplace=True)}
    if not activation:
        return None
    if activation not in table:
        raise ValueError(f"activation: unknown {activation!r} (one of {', '.join(table)})")
    return table[activation]()


class ConvNormAct(nn.Module):
    """A 2-D convolution, an optional norm and an optional activation.

    State-dict keys: ``conv.weight``, ``conv.bias`` (only without a norm, unless `bias`
    says otherwise) and ``norm.*``. A frozen norm is folded into the convolution.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        padding: zero padding; None means ``dilation * (kernel_size - 1) // 2`` ("same").
        dilation: kernel dilation.
        groups: convolution groups.
        bias: whether the conv has a bias; None means "only without a norm".
        norm: a `get_norm` spec ("BN", "FrozenBN", "GN", {"type": "GN", ...}) or "" for none.
        activation: "relu", "gelu", "silu", a module, or None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        norm: str | dict | None = "",
        activation: str | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        if bias is None:
            bias = not norm
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
        self.norm = get_norm(norm, out_channels)
        self.act = get_activation(activation)
        self.fuse_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, C_in, H, W] -> Tensor[N, C_out, H / stride, W / stride]."""
        return conv_norm_act(x, self.conv, self.norm, self.act, self.fuse_norm)
