"""`dropout`: dropout in one pass on CPUs, with a one-byte mask for the backward.

`torch.nn.functional.dropout` on a CPU draws a Bernoulli tensor from the sequential
Mersenne twister and multiplies by it (four passes over the activation, a float mask
kept for the backward). The kernel of `densenets._C` decides each element with a
stateless hash of (seed, element index): one vectorised pass writes the output and a
bool mask, and the backward is one pass. The seed is drawn from PyTorch's default
generator, so `torch.manual_seed` (and a checkpoint's saved RNG state) make the pattern
reproducible; it does not depend on the thread count. On other devices, or without the
extension, `F.dropout` runs (the CUDA one is already a fused kernel).

The distribution is dropout's: every element is zeroed independently with probability p
(rounded to a multiple of 2^-32) and the others are scaled by 1 / (1 - p). The random
stream differs from `F.dropout`'s, so a given seed zeroes other elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .deform_conv import _LOAD_ERROR

__all__ = ["dropout", "Dropout"]

_OP = "densenets::dropout"
_BACKWARD_OP = "densenets::dropout_backward"
_HAVE_OP = _LOAD_ERROR is None and hasattr(torch.ops.densenets, "dropout")


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Dropout with `F.dropout`'s arguments (not in place).

    Args:
        input (Tensor): any shape, floating point.
        p (float): probability of zeroing an element, in [0, 1].
        training (bool): apply dropout; when False, return `input`.

    Returns:
        Tensor: the shape of `input` (contiguous on the CPU path).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    if not _HAVE_OP or input.device.type != "cpu" or not input.is_floating_point():
        return F.dropout(input, p, training)
    seed = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)
    return torch.ops.densenets.dropout(input, p, seed)[0]


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, attributes and state) running `dropout` on CPUs.

    In-place dropout (``inplace=True``) runs `F.dropout`.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace:
            return F.dropout(input, self.p, self.training, inplace=True)
        return dropout(input, self.p, self.training)


def _register() -> None:
    @torch.library.register_fake(_OP)
    def _(input, p, seed):
        shape = input.shape
        return input.new_empty(shape), input.new_empty(shape, dtype=torch.bool)

    @torch.library.register_fake(_BACKWARD_OP)
    def _(grad_output, mask, scale):
        return grad_output.new_empty(grad_output.shape)

    def setup_context(ctx, inputs, output):
        _, p, _ = inputs
        ctx.scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    def backward(ctx, grad_output, _grad_mask):
        (mask,) = ctx.saved_tensors
        return torch.ops.densenets.dropout_backward(grad_output, mask, ctx.scale), None, None

    torch.library.register_autograd(_OP, backward, setup_context=setup_context)


if _HAVE_OP:
    _register()
