"""`--check`'s comparison of detections: the same detections as a set, near-tied scores
in either order, differences only at the top-k score cut-off of an output cut at the
model's maximum number of detections, and real mismatches caught."""

from __future__ import annotations

import pytest
import torch

from densenets.export.check import CheckError, compare, max_detections


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
    summary = compare("detection", {"instances": ref}, _reordered_with_cutoff_swaps(ref), 300)
    assert "300 detections" in summary and "2 at the score cut-off" in summary


def _five() -> dict[str, torch.Tensor]:
    """Five detections, the last two tied within 1e-6 at the lowest score."""
    return {
        "boxes": torch.tensor(
            [[0.0, 0, 50, 50], [60, 0, 120, 40], [0, 70, 30, 130], [200, 200, 260, 250], [300, 10, 350, 90]]
        ),
        "scores": torch.tensor([0.9, 0.7, 0.5, 0.3 + 1e-6, 0.3]),
        "labels": torch.tensor([1, 2, 3, 4, 5]),
    }


def _lowest_swapped(ref: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The last detection replaced by a candidate tied with it: another box and label."""
    boxes, scores, labels = (ref[k].clone() for k in ("boxes", "scores", "labels"))
    boxes[-1], scores[-1], labels[-1] = torch.tensor([400.0, 400, 480, 470]), 0.3 + 2e-6, 7
    return boxes, scores, labels


def test_swap_at_the_cutoff_passes_at_the_maximum():
    """Five of at most five came out: the output was cut, and a near-tied candidate of
    another label may be kept in place of the last."""
    summary = compare("detection", {"instances": _five()}, _lowest_swapped(_five()), max_detections=5)
    assert "5 detections" in summary and "1 at the score cut-off" in summary


@pytest.mark.parametrize("cap", [None, 6, 100])
def test_swap_at_the_lowest_score_fails_below_the_maximum(cap):
    """Five of at most six (or no maximum): nothing was cut off, every detection must pair."""
    with pytest.raises(CheckError, match=r"1 of 5 detections differ.* #4 \(label 5, score 0\.3,"):
        compare("detection", {"instances": _five()}, _lowest_swapped(_five()), max_detections=cap)


@pytest.mark.parametrize("cap", [None, 5, 100])
def test_missing_detection_fails_naming_it(cap):
    """The file drops the model's #2: one line naming its label, score and box."""
    ref = _five()
    exported = tuple(ref[k][[0, 1, 3, 4]] for k in ("boxes", "scores", "labels"))
    with pytest.raises(CheckError) as info:
        compare("detection", {"instances": ref}, exported, max_detections=cap)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("4 detections, the model has 5")
    assert "the model's #2 (label 3, score 0.5, box [0.0, 70.0, 30.0, 130.0]) has no partner" in message


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
        compare("detection", {"instances": ref}, (boxes, scores, labels), 300)


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


def test_max_detections_of_each_meta_architecture():
    """Where each model cuts its ranked candidates: Faster R-CNN after NMS, the `num_select`
    top-k of DAB-DETR / Deformable DETR / DINO; DETR keeps every query, no cut-off."""
    from test_export_deformable import DEFORMABLE, DEFORMABLE_SMALL, DINO
    from test_export_models import DETR_SMALL, build_model

    frcnn = build_model("configs/demo/faster_rcnn_r18_fpn_shapes.yaml")
    assert max_detections(frcnn) == frcnn.roi_heads.box_predictor.detections_per_image
    dab = build_model("configs/detection/dab_detr_r50_coco.yaml", *DETR_SMALL, "model.num_select=7")
    assert max_detections(dab) == 7
    assert max_detections(build_model("configs/detection/detr_r50_coco.yaml", *DETR_SMALL)) is None
    for config in (DEFORMABLE, DINO):
        assert max_detections(build_model(config, *DEFORMABLE_SMALL)) == 10  # model.num_select=10
    assert max_detections(build_model("configs/demo/fcn_r18_d8_shapes_city.yaml")) is None
