"""Learning test: a ResNet-18-FPN Faster R-CNN trained from scratch on CPU on the
synthetic "shapes" dataset (COCO layout) reaches AP50 >= 0.8 on held-out images.

Slow (minutes): run with ``pytest -m slow``. ``python tests/modeling/detection/test_faster_rcnn_learning.py``
prints the AP50 and the time taken.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from pathlib import Path

import pytest
import torch

from densenets.config import MODELS, ConfigNode, build
from densenets.data import COCODetection
from densenets.data.synthetic import make_shapes
from densenets.evaluation import COCOEvaluator

MODEL = {
    "type": "FasterRCNN",
    "backbone": {
        "type": "ResNet",
        "depth": 18,
        "norm": "BN",
        "out_features": ["res2", "res3", "res4", "res5"],
    },
    "neck": {"type": "FPN", "out_channels": 128},
    "rpn": {
        "type": "RPN",
        "anchor_generator": {"sizes": [[16], [32], [64], [128], [256]]},
        "pre_nms_topk": [1000, 500],
        "post_nms_topk": [500, 200],
    },
    "roi_heads": {
        "type": "StandardRoIHeads",
        "num_classes": 3,
        "box_head": {"fc_dims": [256, 256]},
        "sampler": {"batch_size_per_image": 128},
    },
}
ITERATIONS, BATCH, LR, WARMUP, STEPS = 600, 4, 0.02, 50, (480, 560)
TARGET_AP50 = 80.0


def train_and_evaluate(root: Path, seed: int = 0) -> tuple[float, float]:
    """Returns (AP50 in percent, minutes)."""
    start = time.perf_counter()
    paths = make_shapes(root, num_train=300, num_val=60, image_size=320, seed=seed)
    train_tf = {
        "type": "DetectionTransform",
        "min_size": 320,
        "max_size": 320,
        "flip_prob": 0.5,
        "seed": seed,
    }
    train_set = COCODetection(
        paths["train_images"], paths["train_ann"], transforms=train_tf, filter_empty=True
    )
    val_set = COCODetection(
        paths["val_images"],
        paths["val_ann"],
        transforms={"type": "DetectionTransform", "min_size": 320, "max_size": 320},
    )
    torch.manual_seed(seed)
    model = build(ConfigNode(copy.deepcopy(MODEL), "model"), MODELS).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    order = random.Random(seed)
    indices: list[int] = []
    for it in range(ITERATIONS):
        if len(indices) < BATCH:
            indices += order.sample(range(len(train_set)), len(train_set))
        batch = [train_set[indices.pop()] for _ in range(BATCH)]
        factor = min(1.0, 0.001 + it / WARMUP) * 0.1 ** sum(it >= s for s in STEPS)
        for group in optim.param_groups:
            group["lr"] = LR * factor
        losses = model(batch)
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
    model.eval()
    evaluator = COCOEvaluator(dataset=val_set)
    with torch.no_grad():
        for i in range(0, len(val_set), 4):
            batch = [val_set[j] for j in range(i, min(i + 4, len(val_set)))]
            evaluator.process(batch, model(batch))
    metrics = evaluator.evaluate()
    return metrics["bbox/AP50"], (time.perf_counter() - start) / 60


@pytest.mark.slow
def test_learns_shapes(tmp_path):
    ap50, minutes = train_and_evaluate(tmp_path / "shapes")
    print(f"AP50 {ap50:.1f} after {ITERATIONS} iterations, {minutes:.1f} min")
    assert ap50 >= TARGET_AP50


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ap, minutes = train_and_evaluate(Path(tmp) / "shapes")
    print(
        f"AP50 {ap:.1f} after {ITERATIONS} iterations of {BATCH} images, {minutes:.1f} min on {torch.get_num_threads()} threads"
    )
    sys.exit(0 if ap >= TARGET_AP50 else 1)
