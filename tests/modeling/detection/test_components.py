"""Faster R-CNN parts on hand-checkable numbers: box coder, anchors, matcher, sampler, pooler."""

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.ops import MultiScaleRoIAlign

from densenets.modeling.detection import (
    AnchorGenerator,
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    ROIPooler,
)


def _random_boxes(n: int, generator: torch.Generator, size: float = 500.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat((xy, xy + wh), dim=1)


# ---- BoxCoder -------------------------------------------------------------------------


def test_box_coder_hand_computed():
    coder = BoxCoder(weights=(10, 10, 5, 5))
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    deltas = coder.encode(ref, target)
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(deltas, expected)
    torch.testing.assert_close(coder.decode(deltas, ref), target)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_round_trip_and_torchvision(weights):
    g = torch.Generator().manual_seed(0)
    ref, target = _random_boxes(200, g), _random_boxes(200, g)
    coder = BoxCoder(weights)
    deltas = coder.encode(ref, target)
    torch.testing.assert_close(coder.decode(deltas, ref), target, atol=1e-3, rtol=1e-5)
    tv = TVBoxCoder(weights)
    torch.testing.assert_close(deltas, tv.encode_single(target, ref))
    many = torch.randn(200, 8, generator=g)  # two classes' deltas per box
    torch.testing.assert_close(coder.decode(many, ref), tv.decode_single(many, ref).reshape(200, 8))


def test_box_coder_clamps_scale():
    coder = BoxCoder()
    out = coder.decode(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))  # 16 px * 1000/16


# ---- AnchorGenerator ------------------------------------------------------------------


def test_anchors_hand_computed():
    gen = AnchorGenerator(sizes=[[32]], aspect_ratios=[0.5, 1.0, 2.0], strides=[16])
    (anchors,) = gen([(1, 2)], (16, 32))
    w_half = math.sqrt(32**2 / 0.5) / 2  # ratio 0.5: wide, 45.25 x 22.63
    expected_cell = torch.tensor(
        [
            [-w_half, -w_half * 0.5, w_half, w_half * 0.5],
            [-16.0, -16.0, 16.0, 16.0],
            [-w_half / 2, -w_half, w_half / 2, w_half],
        ]
    )
    assert anchors.shape == (6, 4)  # (1 x 2 cells) x 3 anchors, cell-major
    torch.testing.assert_close(anchors[:3], expected_cell)
    torch.testing.assert_close(anchors[3:], expected_cell + torch.tensor([16.0, 0.0, 16.0, 0.0]))
    offset = AnchorGenerator(sizes=[[32]], aspect_ratios=[1.0], strides=[16], offset=0.5)
    torch.testing.assert_close(offset([(1, 1)], (16, 16))[0], torch.tensor([[-8.0, -8.0, 24.0, 24.0]]))


def test_anchors_match_torchvision():
    sizes = ((32,), (64,), (128,), (256,), (512,))
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    ours = AnchorGenerator([[s[0]] for s in sizes], round_base_anchors=True, strides_from_image_size=True)
    grids = [(104, 152), (52, 76), (26, 38), (13, 19), (7, 10)]  # a 416 x 608 batch; P6 strides 59 / 60
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    expected = tv(TVImageList(torch.zeros(1, 3, 416, 608), [(400, 600)]), feats)[0]
    torch.testing.assert_close(torch.cat(ours(grids, (416, 608))), expected)


# ---- Matcher --------------------------------------------------------------------------


def test_matcher_thresholds_and_low_quality():
    iou = torch.tensor([[0.9, 0.5, 0.2, 0.0], [0.1, 0.6, 0.25, 0.0]])
    idx, labels = Matcher([0.3, 0.7])(iou)
    assert idx.tolist() == [0, 1, 1, 0]
    assert labels.tolist() == [1, -1, 0, 0]
    # Low-quality matches: gt 1's best prediction (0.6, column 1) becomes foreground.
    idx, labels = Matcher([0.3, 0.7], allow_low_quality_matches=True)(iou)
    assert labels.tolist() == [1, 1, 0, 0] and idx.tolist() == [0, 1, 1, 0]
    _, labels = Matcher([0.5])(iou)
    assert labels.tolist() == [1, 1, 0, 0]


def test_matcher_no_ground_truth_is_all_background():
    idx, labels = Matcher([0.3, 0.7], allow_low_quality_matches=True)(torch.zeros(0, 5))
    assert idx.tolist() == [0] * 5 and labels.tolist() == [0] * 5


def test_matcher_rejects_bad_thresholds():
    with pytest.raises(ValueError, match="thresholds"):
        Matcher([0.7, 0.3])


# ---- Sampler --------------------------------------------------------------------------


def test_sampler_caps_positives_and_fills_with_negatives():
    labels = torch.tensor([1] * 100 + [0] * 1000 + [-1] * 50, dtype=torch.int8)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.25)(labels)
    assert len(pos) == 64 and len(neg) == 192
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 64 and len(set(neg.tolist())) == 192


def test_sampler_few_positives_and_no_ground_truth():
    labels = torch.tensor([1] * 3 + [0] * 10, dtype=torch.int8)
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)(labels)
    assert len(pos) == 3 and len(neg) == 5  # negatives fill the missing positives
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)(torch.zeros(4, dtype=torch.int8))
    assert len(pos) == 0 and len(neg) == 4  # fewer candidates than samples: all of them


def test_sampler_more_ground_truth_than_samples():
    labels = torch.ones(1000, dtype=torch.int8)
    pos, neg = BalancedPositiveNegativeSampler(512, 0.25)(labels)
    assert len(pos) == 128 and len(neg) == 0


# ---- ROIPooler ------------------------------------------------------------------------


def test_pooler_matches_torchvision_multiscale_roi_align():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 8, 128 // s, 192 // s, generator=g) for s in (4, 8, 16, 32)]
    boxes = [_random_boxes(30, g, size=120.0), _random_boxes(20, g, size=120.0)]
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio=2)
    expected = tv(dict(zip("0123", feats)), boxes, [(128, 192), (128, 192)])
    ours = ROIPooler(7, strides=(4, 8, 16, 32), sampling_ratio=2, aligned=False)
    torch.testing.assert_close(ours(feats, boxes), expected)


def test_pooler_level_assignment():
    pooler = ROIPooler(7, strides=(4, 8, 16, 32))
    feats = [torch.zeros(1, 1, 512 // s, 512 // s) for s in (4, 8, 16, 32)]
    for level, s in enumerate(feats):
        s.fill_(level)
    boxes = torch.tensor(
        [[0, 0, 20, 20], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 500, 500.0], [0, 0, 111, 111]]
    )
    out = pooler(feats, [boxes])
    # sqrt(area) 224 -> level 4 (index 2); 112 -> level 3; 111 -> level 2; clamped at both ends
    assert out[:, 0, 3, 3].tolist() == [0.0, 1.0, 2.0, 3.0, 0.0]
