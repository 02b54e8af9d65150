"""conv_norm_act / ConvNormAct (frozen-norm folding and in-place affine) and DropPath."""

import pytest
import torch
from torch import nn

from densenets.layers import ConvNormAct, DropPath, FrozenBatchNorm2d, conv_norm_act, frozen_affine


def random_frozen_bn(channels: int) -> FrozenBatchNorm2d:
    bn = FrozenBatchNorm2d(channels)
    bn.weight.uniform_(0.5, 1.5)
    bn.bias.uniform_(-1, 1)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    return bn


# (in, out, kernel, stride, image size): a small weight on a big map is folded into the
# conv, a big weight on a small map gets the affine in place; both must match.
CASES = [(3, 8, 7, 2, 32), (64, 64, 3, 1, 4), (16, 32, 1, 2, 9)]


@pytest.mark.parametrize("c_in, c_out, k, stride, size", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_norm_paths_match_conv_then_norm(c_in, c_out, k, stride, size, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=bias).double()
    norm = random_frozen_bn(c_out).double()
    x = torch.randn(2, c_in, size, size, dtype=torch.float64, requires_grad=True)
    fast = conv_norm_act(x, conv, norm, nn.ReLU(inplace=True))
    fast_grads = torch.autograd.grad(fast.square().sum(), [x, conv.weight])
    slow = torch.relu(norm(conv(x)))
    slow_grads = torch.autograd.grad(slow.square().sum(), [x, conv.weight])
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_training_batchnorm_is_not_folded_and_eval_batchnorm_is():
    bn = nn.BatchNorm2d(4)
    assert frozen_affine(bn.train()) is None
    scale, shift = frozen_affine(bn.eval())
    torch.testing.assert_close(scale, torch.full((4,), 1 / (1 + 1e-5) ** 0.5))
    assert frozen_affine(nn.GroupNorm(2, 4)) is None
    block = ConvNormAct(3, 4, 3, norm="BN", activation="relu").train()
    block(torch.randn(2, 3, 8, 8))
    assert block.norm.num_batches_tracked == 1  # a real BN step, statistics updated


def test_conv_norm_act_block_layout_and_defaults():
    block = ConvNormAct(
        8, 16, 3, stride=2, dilation=2, norm={"type": "GN", "num_groups": 4}, activation="relu"
    )
    assert sorted(block.state_dict()) == ["conv.weight", "norm.bias", "norm.weight"]
    assert block.conv.padding == (2, 2) and isinstance(block.act, nn.ReLU)
    assert block(torch.randn(1, 8, 16, 16)).shape == (1, 16, 8, 8)
    plain = ConvNormAct(8, 16, 1)
    assert plain.conv.bias is not None and plain.norm is None and plain.act is None
    with pytest.raises(ValueError, match="activation: unknown 'tanhh'"):
        ConvNormAct(8, 16, 1, activation="tanhh")


def test_drop_path():
    torch.manual_seed(0)
    x = torch.ones(2000, 3, 2, 2)
    layer = DropPath(0.25).train()
    y = layer(x)
    kept = y[:, 0, 0, 0] != 0
    assert 0.7 < kept.float().mean() < 0.8  # per-sample decisions
    assert torch.all(y[kept] == 1 / 0.75) and torch.all(y[~kept] == 0)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match="drop_path"):
        DropPath(1.0)
