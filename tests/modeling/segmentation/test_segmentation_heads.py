"""Segmentation heads and their loss: shapes, layouts, cross-entropy parity, OHEM."""

import pytest
import torch
import torch.nn.functional as F

from densenets.config import ConfigError
from densenets.layers import ShapeSpec
from densenets.modeling.segmentation import ASPP, DeepLabV3Head, DeepLabV3PlusHead, FCNHead, SemSegLoss

SHAPES = {"res2": ShapeSpec(32, 4), "res4": ShapeSpec(48, 8), "res5": ShapeSpec(64, 8)}


def _features(n=2, h=8, w=12):
    torch.manual_seed(0)
    return {
        "res2": torch.randn(n, 32, 2 * h, 2 * w),
        "res4": torch.randn(n, 48, h, w),
        "res5": torch.randn(n, 64, h, w),
    }


@pytest.mark.parametrize(
    "head",
    [
        lambda: FCNHead(SHAPES, 5, channels=16),
        lambda: FCNHead(SHAPES, 5, in_feature="res4", channels=16, num_convs=1, concat_input=False),
        lambda: FCNHead(SHAPES, 5, channels=64, num_convs=0, concat_input=False),
        lambda: DeepLabV3Head(SHAPES, 5, aspp={"channels": 8, "rates": [1, 2, 3]}, channels=16),
        lambda: DeepLabV3Head(SHAPES, 5, aspp={"channels": 8, "project": False, "separable": True}, channels=16),
        lambda: DeepLabV3PlusHead(SHAPES, 5, aspp={"channels": 8}, channels=16, low_level_channels=4),
        lambda: DeepLabV3PlusHead(SHAPES, 5, aspp={"channels": 8}, channels=16, separable=False),
    ],
)
def test_heads_give_logits_at_their_feature_stride_and_train(head):
    head = head()
    feats = _features()
    logits = head(feats)
    stride4 = isinstance(head, DeepLabV3PlusHead)
    assert logits.shape == ((2, 5, 16, 24) if stride4 else (2, 5, 8, 12))
    targets = torch.randint(0, 5, (2, 32, 48))
    loss = head.losses(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_aspp_branches_and_width():
    aspp = ASPP(64, channels=8, rates=(2, 4), project=False)
    assert len(aspp.branches) == 3 and aspp.out_channels == 4 * 8
    assert [b.conv.dilation for b in aspp.branches[1:]] == [(2, 2), (4, 4)]
    out = aspp.eval()(torch.randn(1, 64, 5, 7))
    assert out.shape == (1, 32, 5, 7)
    # the image-pooling branch is constant over the map
    pooled = out[:, 24:]
    assert torch.allclose(pooled, pooled[..., :1, :1].expand_as(pooled))
    sep = ASPP(64, channels=8, rates=(3,), separable=True)
    assert sep.branches[1].depthwise.conv.groups == 64 and sep.branches[1].depthwise.conv.dilation == (3, 3)
    assert sep.out_channels == 8


def test_loss_equals_torch_cross_entropy_with_ignore_and_class_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5)
    targets = torch.randint(0, 4, (2, 6, 5))
    targets[0, :2] = 255
    w = [1.0, 2.0, 0.5, 3.0]
    ours = SemSegLoss(class_weight=w, loss_weight=0.4)(logits, targets)
    ref = 0.4 * F.cross_entropy(logits, targets, weight=torch.tensor(w), ignore_index=255)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(SemSegLoss()(logits, targets), F.cross_entropy(logits, targets, ignore_index=255))


def test_loss_on_all_ignored_pixels_is_zero_with_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = SemSegLoss()(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
    loss = SemSegLoss(ohem_thresh=0.7)(logits, torch.full((1, 4, 4), 255))
    assert loss.item() == 0.0


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    # 10 pixels, probability of the true class known: 5 easy (p ~ 0.99), 5 hard (p ~ 0.1)
    logits = torch.zeros(1, 2, 1, 10)
    logits[0, 0, 0, :5] = 5.0  # class 0 very likely
    logits[0, 0, 0, 5:] = -2.2  # class 0 unlikely (p ~ 0.1)
    targets = torch.zeros(1, 1, 10, dtype=torch.long)
    per_pixel = F.cross_entropy(logits, targets, reduction="none")[0, 0]
    loss = SemSegLoss(ohem_thresh=0.7, ohem_min_kept=2)
    torch.testing.assert_close(loss(logits, targets), per_pixel[5:].mean())  # only the hard ones
    loss = SemSegLoss(ohem_thresh=0.05, ohem_min_kept=3)  # no pixel below 0.05: the 3 hardest
    kept = loss._hard_pixels(logits, targets, targets != 255)
    assert int(kept.sum()) >= 3 and not kept[0, 0, :5].any()
    loss = SemSegLoss(ohem_thresh=0.05, ohem_min_kept=7)  # 7 > 5 hard ones: 2 easy join
    assert int(loss._hard_pixels(logits, targets, targets != 255).sum()) == 10  # the easy ones tie


def test_bad_head_configs_name_the_key():
    with pytest.raises(ValueError, match="in_feature: backbone has no feature 'res3'"):
        FCNHead(SHAPES, 3, in_feature="res3")
    with pytest.raises(ConfigError, match="loss.ohem_thres: unknown key, did you mean ohem_thresh"):
        FCNHead(SHAPES, 3, loss={"ohem_thres": 0.7})
    with pytest.raises(ConfigError, match="aspp.rate: unknown key, did you mean rates"):
        DeepLabV3Head(SHAPES, 3, aspp={"rate": [1]})
    with pytest.raises(ValueError, match="num_convs: 0 needs"):
        FCNHead(SHAPES, 3, channels=8, num_convs=0)


def test_aspp_pool_first_moves_only_the_pooled_block():
    """mmsegmentation's order [pool, 1x1, rates...] is the default order [1x1, rates...,
    pool] with the pooled block moved to the front; parameters and keys are the same."""
    torch.manual_seed(0)
    last = ASPP(64, channels=8, rates=(2, 4), project=False).eval()
    first = ASPP(64, channels=8, rates=(2, 4), project=False, pool_first=True).eval()
    first.load_state_dict(last.state_dict(), strict=True)
    x = torch.randn(1, 64, 5, 7)
    a, b = last(x), first(x)
    torch.testing.assert_close(b, torch.cat([a[:, 24:], a[:, :24]], dim=1), rtol=0, atol=0)
