"""FPN: parity with torchvision's FeaturePyramidNetwork (Faster R-CNN and RetinaNet styles),
output names and strides, norms, errors."""

import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from densenets.checkpoint.convert.resnet import torchvision_fpn_to_densenets, torchvision_resnet_to_densenets
from densenets.config import BACKBONES, NECKS, build
from densenets.layers import ShapeSpec
from densenets.modeling.necks import FPN

RES = {
    "res2": ShapeSpec(256, 4),
    "res3": ShapeSpec(512, 8),
    "res4": ShapeSpec(1024, 16),
    "res5": ShapeSpec(2048, 32),
}


def random_features(names, h=40, w=52, channels_scale=1):
    """Backbone-like features for an h*4 x w*4 image (odd sizes on purpose)."""
    out = {}
    for name in names:
        s = RES[name].stride // 4
        out[name] = torch.randn(1, RES[name].channels // channels_scale, -(-h // s), -(-w // s))
    return out


def test_faster_rcnn_backbone_parity_with_torchvision():
    """ResNet-50 + FPN with torchvision's fasterrcnn_resnet50_fpn weights give its features."""
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    backbone = build({"type": "ResNet", "depth": 50, "norm": "BN", "freeze_at": 2}, BACKBONES)
    neck = build({"type": "FPN"}, NECKS, input_shape=backbone.output_shape())
    sd = tv.state_dict()
    assert not backbone.load_state_dict(
        torchvision_resnet_to_densenets(sd, "backbone.body."), strict=False
    ).missing_keys
    neck.load_state_dict(torchvision_fpn_to_densenets(sd, "backbone.fpn."))  # strict
    x = torch.randn(1, 3, 100, 130)  # not a multiple of 32: exercises size-matched upsampling
    with torch.no_grad():
        expected = tv.backbone(x)
        backbone.eval().set_fuse_frozen_bn(False)
        out = neck.eval()(backbone(x))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for (name, value), ref in zip(out.items(), expected.values()):
        assert torch.equal(value, ref), name


@pytest.mark.parametrize("source", ["p5", "c5"])
def test_p6p7_parity_with_torchvision(source):
    torch.manual_seed(0)
    names = ["res3", "res4", "res5"]
    channels = [RES[n].channels for n in names]
    extra = LastLevelP6P7(256, 256) if source == "p5" else LastLevelP6P7(2048, 256)
    tv = FeaturePyramidNetwork(channels, 256, extra_blocks=extra).eval()
    ours = FPN({n: RES[n] for n in names}, in_features=names, top_block="p6p7", top_block_in=source).eval()
    ours.load_state_dict(torchvision_fpn_to_densenets(tv.state_dict(), "", levels=(3, 4, 5)))
    feats = random_features(names)
    with torch.no_grad():
        expected = tv(dict(feats))
        out = ours(feats)
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
    assert list(ours.output_shape().values())[-1] == ShapeSpec(256, 128)
    for (name, value), ref in zip(out.items(), expected.values()):
        torch.testing.assert_close(value, ref, rtol=0, atol=0, msg=name)


def test_output_shapes_match_outputs_and_norm_is_used():
    fpn = FPN(RES, out_channels=64, norm="GN").train()
    assert fpn.lateral3.norm is not None and fpn.lateral3.conv.bias is None
    out = fpn(random_features(RES))
    shapes = fpn.output_shape()
    assert list(out) == list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    for name, value in out.items():
        assert value.shape[1] == shapes[name].channels == 64
        assert value.shape[-2] == -(-160 // shapes[name].stride)  # 40 rows at stride 4 = 160 pixels
    sum(v.sum() for v in out.values()).backward()
    assert fpn.output2.norm.weight.grad is not None
    assert fpn.size_divisibility == 32
    assert list(FPN(RES, top_block=None).output_shape()) == ["p2", "p3", "p4", "p5"]


def test_torchvision_fpn_map_handles_norm_and_old_key_forms():
    sd = {
        "backbone.fpn.inner_blocks.0.0.weight": torch.ones(1),
        "backbone.fpn.inner_blocks.1.1.running_var": torch.ones(1),
        "backbone.fpn.layer_blocks.3.bias": torch.ones(1),  # torchvision < 0.13 form
        "backbone.body.conv1.weight": torch.ones(1),
    }
    assert sorted(torchvision_fpn_to_densenets(sd, dst_prefix="neck.")) == [
        "neck.lateral2.conv.weight",
        "neck.lateral3.norm.running_var",
        "neck.output5.conv.bias",
    ]


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="'res6' is not a backbone output"):
        FPN(RES, in_features=["res5", "res6"])
    with pytest.raises(ValueError, match="strides must double"):
        FPN(RES, in_features=["res2", "res4"])
    with pytest.raises(ValueError, match="top_block: must be"):
        FPN(RES, top_block="p6")
    with pytest.raises(ValueError, match="top_block_in"):
        FPN(RES, top_block="p6p7", top_block_in="res5")
