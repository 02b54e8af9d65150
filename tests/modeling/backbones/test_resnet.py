"""ResNet family: parity with torchvision, shapes and strides, freezing, DCN, norms, options."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from densenets.checkpoint.convert.resnet import torchvision_resnet_to_densenets
from densenets.config import BACKBONES, ConfigError, build
from densenets.layers import FrozenBatchNorm2d
from densenets.modeling.backbones import BasicBlock, Bottleneck, ResNet

TORCHVISION_MODELS = {
    "resnet18": {"depth": 18},
    "resnet50": {"depth": 50},
    "resnet101": {"depth": 101},
    "resnext50_32x4d": {"depth": 50, "groups": 32, "width_per_group": 4},
    "wide_resnet50_2": {"depth": 50, "width_per_group": 128},
}


def randomize_norms(model: nn.Module) -> None:
    """Non-trivial norm statistics, so that a mapping mistake between norms shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)


def torchvision_pair(name: str, tv_kwargs=None, **ours_kwargs):
    """A random torchvision model and ours with its weights, both in eval mode."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(**(tv_kwargs or {}))
    randomize_norms(tv)
    ours = ResNet(**{**TORCHVISION_MODELS.get(name, {}), **ours_kwargs})
    result = ours.load_state_dict(torchvision_resnet_to_densenets(tv.state_dict()), strict=False)
    assert not result.missing_keys
    assert all(k.startswith("linear.") for k in result.unexpected_keys) and (
        "linear" in ours_kwargs["out_features"]
    ) == (not result.unexpected_keys)
    return tv.eval(), ours.eval()


def assert_parity(ours: ResNet, expected: dict, x: torch.Tensor) -> None:
    """Unfused, the same float32 operations in the same order: bit-identical results.
    Folding the norms into the convs changes only the rounding."""
    with torch.no_grad():
        ours.set_fuse_frozen_bn(False)
        exact = ours(x)
        ours.set_fuse_frozen_bn(True)
        fused = ours(x)
    for key, value in expected.items():
        assert torch.equal(exact[key], value), key
        torch.testing.assert_close(fused[key], value, rtol=1e-4, atol=1e-4 * value.abs().max().item())


@pytest.mark.parametrize("name", list(TORCHVISION_MODELS))
def test_torchvision_parity(name):
    tv, ours = torchvision_pair(name, out_features=["res5", "linear"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = tv(x)
        res5 = IntermediateLayerGetter(tv, {"layer4": "res5"})(x)["res5"]
    assert_parity(ours, {"res5": res5, "linear": logits}, x)


@pytest.mark.parametrize("replace, output_stride", [([False, False, True], 16), ([False, True, True], 8)])
def test_dilated_parity_with_torchvision(replace, output_stride):
    tv, ours = torchvision_pair(
        "resnet50",
        {"replace_stride_with_dilation": replace},
        out_features=["res4", "res5"],
        output_stride=output_stride,
        contract_dilation=True,
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = IntermediateLayerGetter(tv, {"layer3": "res4", "layer4": "res5"})(x)
    assert_parity(ours, ref, x)
    assert ref["res5"].shape[-1] == 64 // output_stride


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_shapes_and_strides(depth, output_stride):
    features = ["stem", "res2", "res3", "res4", "res5"]
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        model = ResNet(depth=depth, output_stride=output_stride, out_features=features, norm="FrozenBN")
        out = model(torch.empty(2, 3, 100, 132))
    shapes = model.output_shape()
    expansion = 1 if depth < 50 else 4
    expected = {"stem": (64, 4), "res2": (64 * expansion, 4), "res3": (128 * expansion, 8)}
    expected["res4"] = (256 * expansion, min(16, output_stride))
    expected["res5"] = (512 * expansion, output_stride)
    for f in features:
        channels, stride = expected[f]
        assert (shapes[f].channels, shapes[f].stride) == (channels, stride), f
        # stride-2 layers round up: a 100-pixel side is 50, 25, 13, 7, 4 at strides 2..32.
        h, w = 100, 132
        for _ in range(int(math.log2(stride))):
            h, w = (h + 1) // 2, (w + 1) // 2
        assert tuple(out[f].shape) == (2, channels, h, w), f
    assert model.size_divisibility == output_stride
    assert sum(len(getattr(model, s)) for s in ("res2", "res3", "res4", "res5")) == {
        18: 8, 34: 16, 50: 16, 101: 33, 152: 50
    }[depth]  # fmt: skip


def test_only_needed_stages_are_built():
    model = ResNet(depth=18, out_features=["res4"])
    assert not hasattr(model, "res5")
    assert list(model(torch.randn(1, 3, 32, 32))) == ["res4"]
    assert model.size_divisibility == 16


def test_pool_and_linear_outputs():
    model = ResNet(depth=18, out_features=["pool", "linear"], num_classes=7).eval()
    out = model(torch.randn(3, 3, 32, 48))
    assert out["pool"].shape == (3, 512) and out["linear"].shape == (3, 7)
    torch.testing.assert_close(out["linear"], model.linear(out["pool"]))
    assert model.output_shape()["linear"].channels == 7


@pytest.mark.parametrize("freeze_at", range(6))
def test_freeze_at(freeze_at):
    model = ResNet(depth=18, norm="BN", freeze_at=freeze_at).train()
    modules = [model.stem, model.res2, model.res3, model.res4, model.res5]
    before = {n: b.clone() for n, b in model.named_buffers() if "running_mean" in n}
    x = torch.randn(2, 3, 64, 64, requires_grad=True)  # a graph even when everything is frozen
    model(x)["res5"].sum().backward()
    for i, module in enumerate(modules):
        frozen = i < freeze_at
        assert all(p.requires_grad != frozen for p in module.parameters())
        assert all(m.training != frozen for m in module.modules() if isinstance(m, nn.BatchNorm2d))
        assert all((p.grad is None) == frozen for p in module.parameters())
    for name, value in before.items():
        stage = 0 if name.startswith("stem") else int(name[3]) - 1
        assert torch.equal(value, dict(model.named_buffers())[name]) == (stage < freeze_at), name


def test_frozen_bn_stays_in_eval_after_train():
    model = ResNet(depth=18, norm="BN", freeze_at=2)
    model.eval().train()
    assert not model.stem.norm1.training and not model.res2[0].norm1.training
    assert model.res3[0].norm1.training


def test_frozen_bn_folding_matches_unfused_values_and_gradients():
    torch.manual_seed(0)
    model = ResNet(depth=50, norm="FrozenBN", out_features=["res3"]).double()
    randomize_norms(model)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    results = []
    for fuse in (True, False):
        model.zero_grad()
        model.set_fuse_frozen_bn(fuse)
        out = model(x)["res3"]
        out.square().mean().backward()
        results.append(
            (out.detach(), model.res2[0].conv2.weight.grad.clone(), model.stem.conv1.weight.grad.clone())
        )
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-12)
    assert results[0][1].abs().sum() > 0


def test_eval_bn_folding_keeps_bn_gradients():
    model = ResNet(depth=18, norm="BN", out_features=["res2"]).eval()
    model(torch.randn(1, 3, 32, 32))["res2"].sum().backward()
    assert model.res2[0].norm1.weight.grad is not None and model.res2[0].norm1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("modulated", [False, True])
def test_dcn_stages_forward_backward(modulated):
    torch.manual_seed(0)
    dcn = ResNet(depth=50, stage_with_dcn=[False, True, True, True], dcn_modulated=modulated, norm="FrozenBN")
    plain = ResNet(depth=50, norm="FrozenBN")
    assert plain.load_state_dict(dcn.state_dict(), strict=False).unexpected_keys  # the offset convs
    assert type(dcn.res3[0].conv2).__name__ == ("ModulatedDeformConv2d" if modulated else "DeformConv2d")
    assert type(dcn.res2[0].conv2) is nn.Conv2d
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    out = dcn(x)
    out["res5"].sum().backward()
    assert torch.isfinite(x.grad).all()
    assert dcn.res4[0].conv2.conv_offset.weight.grad.abs().sum() > 0
    assert dcn.res4[0].conv2.weight.grad.abs().sum() > 0
    if not modulated:  # zero offsets at init: DCNv1 is exactly the plain network
        with torch.no_grad():
            torch.testing.assert_close(out["res5"], plain(x)["res5"], rtol=1e-4, atol=1e-4)


def test_dcn_needs_bottlenecks():
    with pytest.raises(ValueError, match="stage_with_dcn"):
        ResNet(depth=18, stage_with_dcn=[False, True, True, True])


def test_group_norm_trains_and_sync_bn_builds():
    gn = ResNet(depth=18, norm="GN", out_features=["res5"]).train()
    assert isinstance(gn.res3[0].norm1, nn.GroupNorm) and gn.res3[0].norm1.num_groups == 32
    gn(torch.randn(2, 3, 32, 32))["res5"].mean().backward()
    assert gn.stem.norm1.weight.grad is not None
    gn16 = ResNet(depth=18, norm={"type": "GN", "num_groups": 16})
    assert gn16.res2[0].norm1.num_groups == 16
    sync = ResNet(depth=18, norm="SyncBN", freeze_at=1)
    assert isinstance(sync.res2[0].norm1, nn.SyncBatchNorm)
    bn = ResNet(depth=18, norm="BN")
    bn.load_state_dict(sync.state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(sync.eval()(x)["res5"], bn.eval()(x)["res5"])


def test_stride_placement():
    msra = ResNet(depth=50, stride_in_1x1=True, out_features=["res3"])
    tv = ResNet(depth=50, stride_in_1x1=False, out_features=["res3"])
    assert msra.res3[0].conv1.stride == (2, 2) and msra.res3[0].conv2.stride == (1, 1)
    assert tv.res3[0].conv1.stride == (1, 1) and tv.res3[0].conv2.stride == (2, 2)
    assert msra(torch.randn(1, 3, 64, 64))["res3"].shape == tv(torch.randn(1, 3, 64, 64))["res3"].shape


def test_resnet_d_stem_and_shortcut():
    model = ResNet(depth=50, deep_stem=True, avg_down=True, out_features=["res4"])
    assert [getattr(model.stem, f"conv{i}").out_channels for i in (1, 2, 3)] == [32, 32, 64]
    assert model.res2[0].shortcut.pool is None  # stride 1: nothing to pool
    assert isinstance(model.res3[0].shortcut.pool, nn.AvgPool2d) and model.res3[0].shortcut.conv.stride == (
        1,
        1,
    )
    assert model(torch.randn(1, 3, 64, 64))["res4"].shape == (1, 1024, 4, 4)


def test_dilations_and_multi_grid():
    def dilations(m, stage):
        return [b.conv2.dilation[0] for b in getattr(m, stage)]

    os8 = ResNet(depth=50, output_stride=8)
    assert dilations(os8, "res4") == [2] * 6 and dilations(os8, "res5") == [4] * 3
    contracted = ResNet(depth=50, output_stride=8, contract_dilation=True)
    assert dilations(contracted, "res4") == [1] + [2] * 5 and dilations(contracted, "res5") == [2, 4, 4]
    grid = ResNet(depth=50, output_stride=16, multi_grid=[1, 2, 4])
    assert dilations(grid, "res5") == [2, 4, 8] and dilations(grid, "res4") == [1] * 6
    assert [b.conv2.padding[0] for b in grid.res5] == [2, 4, 8]
    with pytest.raises(ValueError, match="multi_grid"):
        ResNet(depth=50, multi_grid=[1, 2])


def test_drop_path_rates_and_behaviour():
    model = ResNet(depth=18, drop_path_rate=0.3)
    blocks = [b for s in ("res2", "res3", "res4", "res5") for b in getattr(model, s)]
    rates = [b.drop_path.p if b.drop_path is not None else 0.0 for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert all(b > a for a, b in zip(rates, rates[1:]))
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    model.train()
    a, b = model(x)["res5"], model(x)["res5"]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(x)["res5"], model(x)["res5"])


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = ResNet(depth=50, zero_init_residual=True, out_features=["res2"]).eval()
    block = model.res2[1]  # identity shortcut
    assert isinstance(block, Bottleneck) and not block.norm3.weight.any()
    x = torch.rand(1, 256, 8, 8)
    torch.testing.assert_close(block(x), x)
    basic = ResNet(depth=18, zero_init_residual=True).res3[1]
    assert isinstance(basic, BasicBlock) and not basic.norm2.weight.any()


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    a = ResNet(depth=18, norm="FrozenBN").eval()
    b = ResNet(depth=18, norm="FrozenBN", channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    assert out_b["res2"].is_contiguous(memory_format=torch.channels_last)
    for key in out_a:
        torch.testing.assert_close(out_a[key], out_b[key], rtol=1e-4, atol=1e-4)


def test_channels_last_eval_trains_nchw():
    """channels_last="eval": training runs NCHW, eval() goes back to channels-last (same
    parameters, same values); channels_last=True stays channels-last in training."""
    torch.manual_seed(0)
    a = ResNet(depth=18, norm="FrozenBN", freeze_at=2)
    b = ResNet(depth=18, norm="FrozenBN", freeze_at=2, channels_last="eval")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    b.train()
    weight = b.res3[0].conv1.weight
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    out_a, out_b = a(x), b(x)
    assert out_b["res4"].is_contiguous()
    sum(o.sum() for o in out_a.values()).backward()
    sum(o.sum() for o in out_b.values()).backward()
    torch.testing.assert_close(b.res3[0].conv1.weight.grad, a.res3[0].conv1.weight.grad, rtol=1e-4, atol=1e-4)
    b.eval()
    assert b.res3[0].conv1.weight is weight  # the same parameter, now channels-last (optimisers keep it)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert b(x)["res4"].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(b(x)["res4"], a.eval()(x)["res4"], rtol=1e-4, atol=1e-4)
    c = ResNet(depth=18, norm="FrozenBN", channels_last=True).train()
    assert c.res3[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert c(x)["res4"].is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="channels_last"):
        build({"type": "ResNet", "depth": 18, "channels_last": "train"}, BACKBONES)


def test_build_from_config_and_presets():
    model = build({"type": "ResNet", "depth": 18, "out_features": ["res4"], "norm": "FrozenBN"}, BACKBONES)
    assert isinstance(model.stem.norm1, FrozenBatchNorm2d)
    assert list(model.output_shape()) == ["res4"]
    with pytest.raises(ConfigError, match="did you mean depth"):
        build({"type": "ResNet", "deph": 18}, BACKBONES)
    x = ResNet.from_name("resnext50_32x4d", out_features=["res2"])
    assert x.res2[0].conv2.groups == 32 and x.res2[0].conv2.in_channels == 128


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 20}, "depth"),
        ({"out_features": ["res6"]}, "out_features"),
        ({"freeze_at": 6}, "freeze_at"),
        ({"output_stride": 4}, "output_stride"),
        ({"depth": 18, "groups": 32}, "groups"),
        ({"stage_with_dcn": [True]}, "stage_with_dcn"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**kwargs)
