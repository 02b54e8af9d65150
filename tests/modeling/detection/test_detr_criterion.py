"""SetCriterion: losses against hand-computed values, normalisation, empty images."""

import math

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

import densenets.modeling.detection.criterion as criterion_module
from densenets.modeling.detection import HungarianMatcher, SetCriterion


def _one_match_setup(class_loss_type="softmax"):
    # Image 0: two queries, one object matched to query 1 (its box is exact);
    # image 1: two queries, no object.
    k = 2
    width = k + 1 if class_loss_type == "softmax" else k
    logits = torch.zeros(1, 2, 2, width)
    logits[0, 0, 1, 1] = 2.0
    boxes = torch.tensor(
        [[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]], [[0.5, 0.5, 0.3, 0.3], [0.4, 0.4, 0.2, 0.2]]]
    )
    boxes = boxes[None]  # (L=1, B=2, Q=2, 4)
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    targets = [
        {"labels": torch.tensor([1]), "boxes": gt},
        {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)},
    ]
    return logits, boxes, targets


def test_softmax_losses_by_hand():
    logits, boxes, targets = _one_match_setup()
    crit = SetCriterion(
        2, HungarianMatcher(), class_weight=1, bbox_weight=5, giou_weight=2, no_object_weight=0.1
    )
    losses = crit(logits, boxes, targets)
    # Cross-entropy, weighted mean: the matched query (weight 1) has logits [0, 2, 0], label 1;
    # three no-object queries (weight 0.1 each) have uniform logits.
    ce_match = -math.log(math.exp(2) / (2 + math.exp(2)))
    ce_empty = math.log(3)
    expected_ce = (1.0 * ce_match + 3 * 0.1 * ce_empty) / (1.0 + 3 * 0.1)
    assert losses["loss_class"].item() == pytest.approx(expected_ce, rel=1e-5)
    # L1 between cxcywh [0.5, 0.5, 0.2, 0.2] and [0.5, 0.5, 0.2, 0.4] over 1 box, weight 5.
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.2, rel=1e-5)
    giou = generalized_box_iou(
        box_convert(boxes[0, 0, 1:2], "cxcywh", "xyxy"), box_convert(targets[0]["boxes"], "cxcywh", "xyxy")
    )
    assert losses["loss_giou"].item() == pytest.approx(2 * (1 - giou.item()), rel=1e-5)
    assert set(losses) == {"loss_class", "loss_bbox", "loss_giou"}


def test_focal_losses_by_hand():
    logits, boxes, targets = _one_match_setup("focal")
    crit = SetCriterion(2, HungarianMatcher(2, 5, 2, "focal"), class_loss_type="focal")
    losses = crit(logits, boxes, targets)
    alpha, gamma = 0.25, 2.0

    def focal(x, t):
        p = 1 / (1 + math.exp(-x))
        pt = p if t else 1 - p
        a = alpha if t else 1 - alpha
        return -a * (1 - pt) ** gamma * math.log(pt)

    # Matched query: logits [0, 2], target one-hot [0, 1]; 3 other queries x 2 classes at 0.
    total = focal(0.0, 0) + focal(2.0, 1) + 6 * focal(0.0, 0)
    assert losses["loss_class"].item() == pytest.approx(total / 1.0, rel=1e-5)


def test_giou_loss_matches_torchvision_on_random_boxes():
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(1, 1, 6, 4, generator=gen) * 0.4 + 0.3
    gt = torch.rand(6, 4, generator=gen) * 0.4 + 0.3
    crit = SetCriterion(3, HungarianMatcher(), giou_weight=1.0)
    # Force the identity matching to compare pairwise.
    indices = [(torch.arange(6), torch.arange(6))]
    targets = [{"labels": torch.zeros(6, dtype=torch.long), "boxes": gt}]
    losses = crit.layer_losses(torch.zeros(1, 6, 4), pred[0], targets, indices, num_boxes=6.0)
    ref = 1 - torch.diag(
        generalized_box_iou(box_convert(pred[0, 0], "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy"))
    )
    assert losses["loss_giou"].item() == pytest.approx(ref.mean().item(), rel=1e-5)


def test_aux_losses_have_layer_suffixes():
    logits, boxes, targets = _one_match_setup()
    losses = SetCriterion(2, HungarianMatcher())(logits.repeat(3, 1, 1, 1), boxes.repeat(3, 1, 1, 1), targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0", "_1")}
    torch.testing.assert_close(losses["loss_class_0"], losses["loss_class"])


def test_no_objects_anywhere_gives_zero_box_losses_and_gradients():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    boxes = torch.rand(1, 2, 3, 4, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    for kind in ("softmax", "focal"):
        width = 3 if kind == "softmax" else 2
        crit = SetCriterion(2, HungarianMatcher(class_cost_type=kind), class_loss_type=kind)
        losses = crit(logits[..., :width], boxes, [empty, empty])
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
        assert losses["loss_class"].item() > 0  # everything is pushed to no-object
        sum(losses.values()).backward()
        assert logits.grad.abs().sum() > 0


def test_box_losses_are_normalised_by_boxes_over_processes(monkeypatch):
    logits, boxes, targets = _one_match_setup()
    crit = SetCriterion(2, HungarianMatcher())
    single = crit(logits, boxes, targets)
    # Simulate 2 processes where the other holds 3 boxes: divisor (1 + 3) / 2 = 2.
    monkeypatch.setattr(criterion_module, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module, "all_reduce_sum", lambda t: t.add_(3.0))
    assert SetCriterion.num_boxes(targets, torch.device("cpu")) == 2.0
    double = crit(logits, boxes, targets)
    assert double["loss_bbox"].item() == pytest.approx(single["loss_bbox"].item() / 2)
    assert double["loss_giou"].item() == pytest.approx(single["loss_giou"].item() / 2)
    assert double["loss_class"].item() == pytest.approx(single["loss_class"].item())  # CE is a mean


def test_num_boxes_is_at_least_one():
    empty = {"labels": torch.zeros(0, dtype=torch.long)}
    assert SetCriterion.num_boxes([empty], torch.device("cpu")) == 1.0
