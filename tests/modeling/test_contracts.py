"""The Backbone and MetaArch contracts (docs/contracts.md), over the registries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from densenets.config import BACKBONES, MODELS, NECKS, build
from densenets.layers import ImageList, ShapeSpec
from densenets.modeling.backbones import Backbone, Bottleneck, ResNet, conv3x3_class
from densenets.modeling.meta_arch import MetaArch, input_key_of
from densenets.ops import DeformConv2d, ModulatedDeformConv2d

_OWN = "densenets."


def _own(registry) -> list[str]:
    return sorted(name for name in registry if registry.get(name).__module__.startswith(_OWN))


@pytest.mark.parametrize("name", _own(BACKBONES) + _own(NECKS))
def test_every_backbone_and_neck_is_a_backbone(name):
    cls = BACKBONES.get(name) if name in BACKBONES else NECKS.get(name)
    assert issubclass(cls, Backbone)
    assert cls.output_shape is not Backbone.output_shape


_TINY = {
    "ResNet": {"type": "ResNet", "depth": 18, "out_features": ["res3", "res4"]},
    "EDSRBody": {"type": "EDSRBody", "num_blocks": 1, "channels": 8},
}


@pytest.mark.parametrize("name", sorted(_TINY))
def test_output_shape_and_size_divisibility_match_the_forward(name):
    torch.manual_seed(0)
    model = build(_TINY[name], BACKBONES).eval()
    shapes = model.output_shape()
    x = torch.randn(1, 3 if name == "ResNet" else 8, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert list(out) == list(shapes)
    for key, spec in shapes.items():
        assert out[key].shape[1] == spec.channels
        assert out[key].shape[-1] * spec.stride == 64
    assert model.size_divisibility == {"ResNet": 16, "EDSRBody": 0}[name]  # the coarsest stride
    expected = {"size_divisibility": model.size_divisibility} if model.size_divisibility else {}
    assert model.padding_constraints == expected


def test_necks_report_their_padding():
    from densenets.modeling.necks import FPN, ChannelMapper

    shapes = {"res3": ShapeSpec(8, 8), "res4": ShapeSpec(16, 16), "res5": ShapeSpec(32, 32)}
    assert FPN(shapes, ["res3", "res4", "res5"], 8).padding_constraints == {"size_divisibility": 32}
    assert ChannelMapper(shapes, out_channels=8, num_groups=4).padding_constraints == {}
    with pytest.raises(ValueError, match="in_features: 'res2' is not a backbone output"):
        FPN(shapes, ["res2", "res3"], 8)
    with pytest.raises(ValueError, match="in_features: strides must double"):
        ChannelMapper(shapes, ["res3", "res5"], 8, num_groups=4)


@pytest.mark.parametrize("name", ["FasterRCNN", "EncoderDecoder", "EDSR"])
def test_meta_architectures_share_the_base(name):
    cls = MODELS.get(name)
    assert issubclass(cls, MetaArch)
    for shared in ("preprocess", "device", "inputs", "config_options"):
        assert shared not in vars(cls) or (name, shared) == ("EDSR", "preprocess"), shared
    assert input_key_of(cls) == ("lr" if name == "EDSR" else "image")


def test_preprocess_normalises_flips_and_pads_like_image_list():
    torch.manual_seed(0)
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    model = MetaArch(mean, std, "BGR", size_divisibility=8)
    images = [
        torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8),
        torch.randint(0, 256, (3, 9, 4), dtype=torch.uint8),
    ]
    batch = model.preprocess([{"image": im} for im in images])
    assert batch.tensor.shape == (2, 3, 16, 8) and batch.image_sizes == [(5, 7), (9, 4)]
    first = (images[0].flip(0).float() - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(batch.tensor[0, :, :5, :7], first)
    assert batch.tensor[0, :, 5:].abs().sum() == 0
    unpadded = model.preprocess([{"image": images[0]}], size_divisibility=0)
    assert isinstance(unpadded, ImageList) and unpadded.tensor.shape == (1, 3, 5, 7)
    with pytest.raises(KeyError, match="x.png: batch item has no 'image'"):
        model.preprocess([{"lr": images[0], "file_name": "x.png"}])
    with pytest.raises(ValueError, match="input_format: expected 'RGB' or 'BGR', got 'YUV'"):
        MetaArch(input_format="YUV")


def test_pixel_buffers_stay_out_of_checkpoints():
    model = build(
        {"type": "EDSR", "body": {"type": "EDSRBody", "num_blocks": 1, "channels": 8},
         "upsampler": {"type": "PixelShuffleUpsampler", "scale": 2}},
        MODELS,
    )  # fmt: skip
    assert model.pixel_mean.dtype == torch.float32 and model.pixel_mean.shape == (3, 1, 1)
    assert not [k for k in model.state_dict() if "pixel" in k]


def test_edsr_reads_lr_and_needs_it():
    model = build(
        {"type": "EDSR", "body": {"type": "EDSRBody", "num_blocks": 1, "channels": 8},
         "upsampler": {"type": "PixelShuffleUpsampler", "scale": 2}},
        MODELS,
    ).eval()  # fmt: skip
    lr = torch.randint(0, 256, (3, 6, 5), dtype=torch.uint8)
    (out,) = model([{"lr": lr}])
    assert out["sr"].shape == (3, 12, 10)
    with pytest.raises(KeyError, match="batch item has no 'lr'"):
        model([{"image": lr}])


def test_bottleneck_takes_its_3x3_conv_class():
    assert conv3x3_class() is nn.Conv2d
    assert conv3x3_class(True) is DeformConv2d
    assert conv3x3_class(True, modulated=True) is ModulatedDeformConv2d
    block = Bottleneck(16, 16, 4, stride=2, dilation=2, groups=2, conv3x3=ModulatedDeformConv2d)
    assert isinstance(block.conv2, ModulatedDeformConv2d)
    assert (block.conv2.stride, block.conv2.padding, block.conv2.dilation, block.conv2.groups) == (
        (2, 2), (2, 2), (2, 2), 2,
    )  # fmt: skip
    net = ResNet(50, out_features=["res5"], stage_with_dcn=[False, False, True, True], dcn_modulated=True)
    kinds = {name: type(getattr(net, name)[0].conv2) for name in ("res2", "res3", "res4", "res5")}
    assert kinds == {
        "res2": nn.Conv2d,
        "res3": nn.Conv2d,
        "res4": ModulatedDeformConv2d,
        "res5": ModulatedDeformConv2d,
    }
