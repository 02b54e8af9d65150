"""EDSR body: shapes, parameter counts of the paper's two sizes, residual structure."""

import torch

from densenets.config import BACKBONES, build
from densenets.modeling.backbones.edsr import EDSRBody, ResBlock


def _conv3(cin, cout):
    return 9 * cin * cout + cout


def test_shapes_and_output_shape():
    body = build({"type": "EDSRBody", "num_blocks": 3, "channels": 16}, BACKBONES)
    out = body(torch.randn(2, 16, 11, 7))
    assert out["body"].shape == (2, 16, 11, 7)
    assert body.output_shape()["body"].channels == 16 and body.output_shape()["body"].stride == 1
    assert body.size_divisibility == 0


def test_paper_sizes_parameter_counts():
    # EDSR: 32 blocks x 256 channels; baseline: 16 x 64. Two convs per block + a closing conv.
    for blocks, c in [(32, 256), (16, 64)]:
        body = EDSRBody(num_blocks=blocks, channels=c)
        assert sum(p.numel() for p in body.parameters()) == (2 * blocks + 1) * _conv3(c, c)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in EDSRBody().modules())


def test_residual_scaling_and_long_skip():
    torch.manual_seed(0)
    block = ResBlock(8, res_scale=0.1)
    x = torch.randn(1, 8, 6, 6)
    expected = x + 0.1 * block.conv2(torch.relu(block.conv1(x)))
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    body = EDSRBody(num_blocks=2, channels=8)
    torch.nn.init.zeros_(body.conv.weight)
    torch.nn.init.zeros_(body.conv.bias)
    torch.testing.assert_close(body(x)["body"], x, rtol=0, atol=0)  # long skip alone
