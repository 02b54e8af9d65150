"""Every registered model, parametrised over the registry.

Each one builds from a config under configs/, trains a step on two tiny images with
finite losses (one of them with empty targets), and in eval mode returns predictions
that obey the data contract (docs/contracts.md) at the original image size.
"""

import functools
from pathlib import Path

import pytest
import torch

from densenets.config import MODELS, build, load_config

CONFIGS = Path(__file__).parents[2] / "configs"
TASK_OF_EVALUATOR = {
    "COCOEvaluator": "detection",
    "SemSegEvaluator": "segmentation",
    "SRMetrics": "super_resolution",
}


@functools.cache
def _config_paths() -> dict:
    """model type -> the smallest experiment config that builds it (demo configs first)."""
    paths = sorted(p for p in CONFIGS.rglob("*.yaml") if "_base_" not in p.parts)
    paths.sort(key=lambda p: (p.parts[-2] != "demo", len(p.name)))
    found = {}
    for path in paths:
        found.setdefault(load_config(path).get("model", {}).get("type"), path)
    return found


def _config_for(model_type: str):
    path = _config_paths().get(model_type)
    return (path, load_config(path)) if path else (None, None)


def _drop_weights(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "weights" and isinstance(v, str):
                node[k] = None
            else:
                _drop_weights(v)


def _detection_batch(g):
    batch = []
    for i, (h, w) in enumerate([(64, 80), (72, 64)]):
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        boxes = (
            torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 40.0]]) if i == 0 else torch.zeros(0, 4)
        )
        labels = torch.tensor([0, 1]) if i == 0 else torch.zeros(0, dtype=torch.int64)
        batch.append(
            {
                "image": image,
                "image_id": i,
                "file_name": f"{i}.png",
                "orig_size": (2 * h, 2 * w),
                "instances": {"boxes": boxes, "labels": labels},
            }
        )
    return batch


def _segmentation_batch(g):
    batch = []
    for i in range(2):
        image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g)
        sem_seg = torch.randint(0, 2, (64, 64), generator=g)
        sem_seg[:8] = 255
        if i == 1:
            sem_seg[:] = 255  # nothing labelled
        batch.append(
            {
                "image": image,
                "sem_seg": sem_seg,
                "image_id": i,
                "file_name": f"{i}.png",
                "orig_size": (64, 64),
            }
        )
    return batch


def _sr_batch(g, scale):
    return [
        {
            "lr": torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=g),
            "hr": torch.randint(0, 256, (3, 12 * scale, 12 * scale), dtype=torch.uint8, generator=g),
            "image_id": i,
            "file_name": f"{i}.png",
            "orig_size": (12 * scale, 12 * scale),
        }
        for i in range(2)
    ]


def _check_predictions(task, batch, preds, model):
    assert isinstance(preds, list) and len(preds) == len(batch)
    for item, pred in zip(batch, preds):
        h, w = item["orig_size"]
        if task == "detection":
            inst = pred["instances"]
            n = inst["boxes"].shape[0]
            assert (
                inst["boxes"].shape == (n, 4)
                and inst["scores"].shape == (n,)
                and inst["labels"].shape == (n,)
            )
            assert inst["labels"].dtype == torch.int64
            boxes = inst["boxes"]
            assert torch.isfinite(boxes).all()
            assert (boxes[:, 2:] >= boxes[:, :2]).all(), "boxes must be xyxy"
            # In original-image pixels: centres lie inside the original image, not the resized one.
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            assert (centres >= -1).all() and (centres[:, 0] <= w + 1).all() and (centres[:, 1] <= h + 1).all()
        elif task == "segmentation":
            seg = pred["sem_seg"]
            assert seg.dtype.is_floating_point and seg.dim() == 3 and tuple(seg.shape[1:]) == (h, w)
        else:
            sr = pred["sr"]
            assert sr.dtype == torch.uint8 and tuple(sr.shape) == (3, h, w)


# Models shipped by densenets (test modules may register their own tiny models).
SHIPPED = [name for name in MODELS if MODELS[name].__module__.startswith("densenets.")]


@pytest.mark.parametrize("model_type", SHIPPED)
def test_registered_model(model_type):
    path, cfg = _config_for(model_type)
    assert path is not None, f"no config under configs/ builds {model_type}"
    task = TASK_OF_EVALUATOR[cfg.evaluation.type]
    _drop_weights(cfg)
    torch.manual_seed(0)
    model = build(cfg.model, MODELS)
    g = torch.Generator().manual_seed(0)
    if task == "detection":
        batch = _detection_batch(g)
    elif task == "segmentation":
        batch = _segmentation_batch(g)
    else:
        scale = cfg.model.upsampler.scale  # the model's factor; the dataset's LR folder must agree
        assert cfg.data.train.scale == cfg.data.val.scale == scale, (
            f"{path.name}: data and model scales differ"
        )
        batch = _sr_batch(g, scale)

    model.train()
    losses = model(batch)
    assert losses and all(k.startswith("loss") for k in losses), f"{path.name}: {sorted(losses)}"
    total = sum(losses.values())
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), f"{path.name}: {losses}"
    total.backward()
    assert any(p.grad is not None for p in model.parameters())

    model.eval()
    with torch.no_grad():
        preds = model(batch)
    _check_predictions(task, batch, preds, model)
