"""The contract every backbone and neck implements.

A backbone maps a normalised image batch to named feature maps; a neck maps those to
other named feature maps (an FPN's ``p2``..``p6``). Both declare, before any forward:

- `output_shape()`: name -> `ShapeSpec(channels, stride)` of every returned map, so
  that the modules built after them take their sizes from it (no channel count is
  written twice in a config);
- `size_divisibility`: the multiple the input's height and width must be padded to
  for the outputs to align (an FPN adds coarse maps to upsampled fine ones), 0 = none;
- `padding_constraints`: the same requirement as a dict, ``{"size_divisibility": 32}``
  (``{}`` when there is none), for code that pads by constraints.

Meta-architectures read these directly (``backbone.size_divisibility``), never with a
fallback, so a module that breaks the contract fails where it is built.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from densenets.layers import ShapeSpec

__all__ = ["Backbone", "check_in_features"]


class Backbone(nn.Module):
    """Base class of backbones and necks.

    Subclasses implement `forward` (``Tensor[N, C, H, W]`` or a dict of features ->
    dict name -> ``Tensor[N, C_k, H / s_k, W / s_k]``) and `output_shape`, and set
    `size_divisibility` (an instance or class attribute) when their outputs need one.

    Attributes:
        size_divisibility: pad the input's height and width to a multiple of this
            before the forward (0: any size works).
    """

    size_divisibility: int = 0

    def forward(self, x: Any) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Feature name -> channels and stride of every map `forward` returns, in its order."""
        raise NotImplementedError(f"{type(self).__name__} must implement output_shape()")

    @property
    def padding_constraints(self) -> dict[str, int]:
        """How inputs must be padded: ``{"size_divisibility": d}`` for d > 0, else ``{}``."""
        return {"size_divisibility": self.size_divisibility} if self.size_divisibility > 0 else {}


def check_in_features(input_shape: dict[str, ShapeSpec], in_features: list[str]) -> list[int]:
    """Check a neck's `in_features` against its input and return their strides.

    Args:
        input_shape: the previous module's `output_shape()`.
        in_features: the features the neck reads, finest first.

    Returns:
        The strides of `in_features`, each twice the previous one.

    Raises:
        ValueError: a feature is not in `input_shape`, or the strides do not double.
    """
    if not in_features:
        raise ValueError("in_features: expected at least one backbone output")
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(
            f"in_features: {missing[0]!r} is not a backbone output (have {', '.join(input_shape)})"
        )
    strides = [input_shape[f].stride for f in in_features]
    for s0, s1 in zip(strides, strides[1:]):
        if s1 != 2 * s0:
            raise ValueError(f"in_features: strides must double from level to level, got {strides}")
    return strides
