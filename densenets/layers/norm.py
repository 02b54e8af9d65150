"""Normalisation layers chosen by name: BN, SyncBN, FrozenBN, GN, LN (channels-first)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FrozenBatchNorm2d", "get_norm", "freeze_batchnorm", "LayerNorm2d"]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers).

    It computes ``x * scale + shift`` with ``scale = weight / sqrt(var + eps)``, the
    form detectron2 and torchvision use, and loads BatchNorm2d state dicts (the
    `num_batches_tracked` entry is ignored).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Return `module` with every BatchNorm2d/SyncBatchNorm replaced by a frozen copy."""
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            frozen = cls(module.num_features, module.eps)
            if module.affine:
                frozen.weight.copy_(module.weight.detach())
                frozen.bias.copy_(module.bias.detach())
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new = cls.convert(child)
            if new is not child:
                setattr(module, name, new)
        return module


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def get_norm(norm: str | dict | None, channels: int) -> nn.Module | None:
    """Build a norm layer by name.

    Args:
        norm: "BN", "SyncBN", "FrozenBN", "GN" (32 groups), "LN", "" / None (no norm), or
            a dict ``{"type": "GN", "num_groups": 16}`` with the layer's arguments.
        channels: number of channels.

    Returns:
        The layer, or None for no norm.
    """
    if not norm:
        return None
    kwargs = {}
    if isinstance(norm, dict):
        kwargs = {k: v for k, v in norm.items() if k != "type"}
        norm = norm["type"]
    if norm == "GN":
        return nn.GroupNorm(kwargs.pop("num_groups", 32), channels, **kwargs)
    layers = {
        "BN": nn.BatchNorm2d,
        "SyncBN": nn.SyncBatchNorm,
        "FrozenBN": FrozenBatchNorm2d,
        "LN": LayerNorm2d,
    }
    if norm not in layers:
        raise ValueError(f"norm: unknown type {norm!r} (one of {', '.join([*layers, 'GN'])})")
    return layers[norm](channels, **kwargs)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm in `module` in eval mode with frozen parameters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
