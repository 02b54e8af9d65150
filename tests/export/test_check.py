"""`--check`'s comparison of detections: the same detections as a set, near-tied scores
in either order, differences only at the top-k score cut-off, and real mismatches caught."""

from __future__ import annotations

import pytest
import torch

from densenets.export.check import CheckError, compare


def _detections(n: int = 300, seed: int = 0) -> dict[str, torch.Tensor]:
    """n detections sorted by score, with runs of scores tied within 1e-6 (as a random-weight
    DINO gives) and a tied tail at the cut-off."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 700
    boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 200], 1)
    scores = torch.linspace(0.9, 0.2, n)
    scores[10:14] = 0.6  # a near-tie in the middle
    scores[10:14] += torch.tensor([3e-6, 2e-6, 1e-6, 0.0])
    scores[-6:] = 0.2 + torch.tensor([5e-6, 4e-6, 3e-6, 2e-6, 1e-6, 0.0])  # tied at the cut-off
    labels = torch.randint(0, 80, (n,), generator=g)
    return {"boxes": boxes, "scores": scores, "labels": labels}


def _reordered_with_cutoff_swaps(ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """What a second runtime gives: float noise, tied scores in another order, and the
    last two detections replaced by two candidates tied with them at the cut-off."""
    order = torch.arange(len(ref["scores"]))
    order[10:14] = torch.tensor([13, 11, 10, 12])  # tied scores: another top-k/sort tie-break
    order[-6:-2] = order[-6:-2].flip(0)
    boxes, scores, labels = (ref[k][order].clone() for k in ("boxes", "scores", "labels"))
    boxes = boxes * (1 + 2e-4) + 1e-4
    scores = scores + 9e-6 * torch.sin(torch.arange(len(scores), dtype=torch.float32))
    boxes[-2:] = torch.tensor([[1.0, 2.0, 50.0, 60.0], [300.0, 310.0, 420.0, 500.0]])
    labels[-2:] = torch.tensor([7, 8])
    scores[-2:] = 0.2 + 1e-6
    return boxes, scores, labels


def test_near_tied_scores_and_cutoff_swaps_pass():
    ref = _detections()
    summary = compare("detection", {"instances": ref}, _reordered_with_cutoff_swaps(ref))
    assert "300 detections" in summary and "2 at the score cut-off" in summary


def test_matching_is_one_to_one_not_greedy():
    """Two near-duplicate boxes: the first exported one fits both reference boxes, the
    second only the first; a greedy match in order leaves the second without a partner."""
    ref = {
        "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.09, 100.0]]),
        "scores": torch.tensor([0.5, 0.5]),
        "labels": torch.tensor([3, 3]),
    }
    boxes = torch.tensor([[0.0, 0.0, 100.05, 100.0], [0.0, 0.0, 99.92, 100.0]])
    compare("detection", {"instances": ref}, (boxes, ref["scores"].clone(), ref["labels"].clone()))


@pytest.mark.parametrize(
    "corrupt",
    ["label", "box", "score", "order", "replaced above the cut-off", "count"],
)
def test_real_mismatch_fails(corrupt):
    ref = _detections()
    boxes, scores, labels = _reordered_with_cutoff_swaps(ref)
    if corrupt == "label":
        labels[100] = (labels[100] + 1) % 80
    elif corrupt == "box":
        boxes[150, 2] += 0.01 * boxes[150, 2]  # 1 % off: ten times the tolerance
    elif corrupt == "score":
        scores[50] += 1e-2
    elif corrupt == "order":  # two detections with scores 0.05 apart come swapped
        for t in (boxes, scores, labels):
            t[[40, 60]] = t[[60, 40]]
    elif corrupt == "replaced above the cut-off":  # a candidate tied with the cut-off, 0.3 above it
        boxes[200] = torch.tensor([5.0, 5.0, 60.0, 70.0])
    else:
        boxes, scores, labels = boxes[:-1], scores[:-1], labels[:-1]
    with pytest.raises(CheckError):
        compare("detection", {"instances": ref}, (boxes, scores, labels))


def test_empty_sets_are_equal_and_empty_vs_one_fails():
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert "0 detections" in compare("detection", {"instances": empty}, tuple(empty.values()))
    one = {
        "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([1]),
    }
    with pytest.raises(CheckError, match="1 detections|0 detections"):
        compare("detection", {"instances": one}, tuple(empty.values()))
