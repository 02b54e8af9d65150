"""Every shipped recipe and demo evaluates periodically, so metrics.jsonl and metrics.png
hold the AP / mIoU / PSNR curve over training, not one point at the end."""

from fractions import Fraction
from pathlib import Path

import pytest

from densenets.config import load_config
from densenets.engine.lr_schedules import epoch_to_iter

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = sorted(
    p for d in ("detection", "segmentation", "super_resolution", "demo") for p in (CONFIGS / d).glob("*.yaml")
)


# Training-set lengths of the recipes whose milestones count epochs (`by_epoch`):
# COCO train2017's images with objects, as the trainer counts an epoch.
TRAIN_IMAGES = {"COCODetection": 117266}


def _train(path: Path) -> dict:
    cfg = load_config(path)
    if not cfg.get("evaluation") or not (cfg.get("train") or {}).get("optimizer"):
        pytest.skip(f"{path.name}: not a training recipe with an evaluation section")
    return cfg.train, cfg.data


def _milestones(train: dict, data: dict) -> list[int]:
    """The scheduler's steps in iterations."""
    steps = train.scheduler.get("steps") or []
    if not train.scheduler.get("by_epoch"):
        return steps
    per_epoch = Fraction(TRAIN_IMAGES[data.train.type], train.batch_size)
    return [epoch_to_iter(s, per_epoch) for s in steps]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_evaluates_periodically(path):
    train, data = _train(path)
    period = train.get("eval_period", 0)
    assert period > 0, f"{path.name}: train.eval_period is {period} (evaluates only at the end)"
    if train.get("max_iter"):
        end = train.max_iter
    else:  # epoch schedules: evaluations must come before the LR drop
        end = min(_milestones(train, data) or [float("inf")])
    assert period < end, f"{path.name}: eval_period {period} >= {end}: a single evaluation"
