"""HungarianMatcher: optimality against brute force, hand-computed costs, empty targets."""

import itertools
import math

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from densenets.modeling.detection import HungarianMatcher


def _random_problem(gen, q, sizes, k, focal):
    b = len(sizes)
    logits = torch.randn(b, q, k if focal else k + 1, generator=gen)
    boxes = torch.rand(b, q, 4, generator=gen) * 0.5 + 0.25  # cxcywh with positive w, h
    targets = [
        {
            "labels": torch.randint(0, k, (t,), generator=gen),
            "boxes": torch.rand(t, 4, generator=gen) * 0.5 + 0.25,
        }
        for t in sizes
    ]
    return logits, boxes, targets


@pytest.mark.parametrize("focal", [False, True])
def test_matching_is_optimal_against_brute_force(focal):
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(2, 5, 2, "focal") if focal else HungarianMatcher(1, 5, 2)
    for trial in range(20):
        q = 5
        sizes = [trial % 4, (trial + 2) % 6]  # up to 5 objects, 0 included
        logits, boxes, targets = _random_problem(gen, q, sizes, 3, focal)
        matches = matcher(logits, boxes, targets)
        for i, (rows, cols) in enumerate(matches):
            t = sizes[i]
            assert len(rows) == len(cols) == min(q, t)
            assert sorted(cols.tolist()) == list(range(t))  # every object matched once
            assert len(set(rows.tolist())) == len(rows)  # to distinct queries
            if t == 0:
                continue
            cost = matcher.cost_matrix(logits[i], boxes[i], targets[i]["labels"], targets[i]["boxes"])
            found = cost[rows, cols].sum().item()
            best = min(
                sum(cost[p[j], j].item() for j in range(t)) for p in itertools.permutations(range(q), t)
            )
            assert found == pytest.approx(best, abs=1e-5)


def test_softmax_cost_by_hand():
    # One query, one object: class prob, L1 and GIoU computed by hand.
    logits = torch.tensor([[0.0, math.log(3.0), 0.0]])  # K=2 + no-object: p = [1/5, 3/5, 1/5]
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])  # xyxy [0.4, 0.4, 0.6, 0.6]
    gt = torch.tensor([[0.55, 0.5, 0.2, 0.4]])  # xyxy [0.45, 0.3, 0.65, 0.7]
    cost = HungarianMatcher(cost_class=1, cost_bbox=5, cost_giou=2).cost_matrix(
        logits, box, torch.tensor([1]), gt
    )
    inter = 0.15 * 0.2
    union = 0.04 + 0.08 - inter
    enclose = 0.25 * 0.4
    giou = inter / union - (enclose - union) / enclose
    expected = -3 / 5 + 5 * (0.05 + 0.0 + 0.0 + 0.2) + 2 * -giou
    assert cost.item() == pytest.approx(expected, abs=1e-6)


def test_focal_cost_by_hand():
    logit = 0.3
    p = 1 / (1 + math.exp(-logit))
    alpha, gamma = 0.25, 2.0
    expected = alpha * (1 - p) ** gamma * -math.log(p) - (1 - alpha) * p**gamma * -math.log(1 - p)
    matcher = HungarianMatcher(cost_class=1, cost_bbox=0, cost_giou=0, class_cost_type="focal")
    box = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    cost = matcher.cost_matrix(torch.tensor([[-2.0, logit]]), box, torch.tensor([1]), box)
    assert cost.item() == pytest.approx(expected, abs=1e-6)


def test_giou_cost_matches_torchvision():
    gen = torch.Generator().manual_seed(1)
    boxes = torch.rand(7, 4, generator=gen) * 0.5 + 0.2
    gt = torch.rand(4, 4, generator=gen) * 0.5 + 0.2
    matcher = HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=1)
    cost = matcher.cost_matrix(torch.zeros(7, 3), boxes, torch.zeros(4, dtype=torch.long), gt)
    ref = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy"))
    torch.testing.assert_close(cost, -ref)


def test_more_objects_than_queries_matches_every_query():
    gen = torch.Generator().manual_seed(2)
    logits, boxes, targets = _random_problem(gen, 3, [5], 2, False)
    rows, cols = HungarianMatcher()(logits, boxes, targets)[0]
    assert sorted(rows.tolist()) == [0, 1, 2] and len(set(cols.tolist())) == 3


def test_empty_targets_give_empty_matches():
    logits, boxes = torch.randn(2, 4, 3), torch.rand(2, 4, 4)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    for rows, cols in HungarianMatcher()(logits, boxes, [empty, empty]):
        assert rows.numel() == 0 and cols.numel() == 0 and rows.dtype == torch.int64


def test_non_finite_predictions_are_a_clear_error():
    logits, boxes = torch.randn(1, 2, 3), torch.full((1, 2, 4), float("nan"))
    target = {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}
    with pytest.raises(FloatingPointError, match="NaN"):
        HungarianMatcher()(logits, boxes, [target])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="class_cost_type"):
        HungarianMatcher(class_cost_type="sigmoid")
    with pytest.raises(ValueError, match="all costs"):
        HungarianMatcher(0, 0, 0)
