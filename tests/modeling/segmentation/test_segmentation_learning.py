"""Learning tests: a small DeepLabV3+ (ResNet-18 up to res3, random init) trained on CPU
on synthetic street scenes written in the Cityscapes layout (`make_shapes_city`).

Measured (docs/segmentation.md): the fast test goes from 1.4 to 71.8 mIoU (pixel accuracy
92.6%) on the two scenes it trains on in 30 iterations; the slow test reaches 62.4 mIoU
(road 91.2, sky 88.1 IoU; thin poles and small people are not learned yet) on 10
held-out scenes after 150 iterations.
"""

import numpy as np
import pytest
import torch

from densenets.config import MODELS, build
from densenets.data import Cityscapes, SemSegTrainTransform
from densenets.data.synthetic import make_shapes_city
from densenets.evaluation import SemSegEvaluator


def small_deeplabv3plus() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {
        "type": "EncoderDecoder",
        "backbone": {"type": "ResNet", "depth": 18, "out_features": ["res2", "res3"]},
        "decode_head": {
            "type": "DeepLabV3PlusHead",
            "num_classes": 19,
            "in_feature": "res3",
            "aspp": {"channels": 32, "rates": [2, 4, 6]},
            "channels": 64,
            "low_level_channels": 16,
            "separable": False,
            "dropout": 0.0,
        },
    }
    return build(cfg, MODELS)


def train(model, dataset, iters: int, batch_size: int, lr: float = 2e-3, seed: int = 0) -> list[float]:
    """AdamW with poly decay; returns the total loss per iteration."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = lr * (1 - it / iters) ** 0.9
        batch = [dataset[int(i)] for i in rng.choice(len(dataset), batch_size, replace=len(dataset) < batch_size)]
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def evaluate(model, dataset) -> dict[str, float]:
    model.eval()
    evaluator = SemSegEvaluator(dataset=dataset)
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = [dataset[i]]
            evaluator.process(batch, model(batch))
    return evaluator.evaluate()


def test_small_model_overfits_two_scenes(tmp_path):
    make_shapes_city(tmp_path, num_train=2, num_val=1, image_size=(64, 128), seed=0)
    data = Cityscapes(tmp_path, split="train")
    model = small_deeplabv3plus()
    before = evaluate(model, data)["sem_seg/mIoU"]
    losses = train(model, data, iters=30, batch_size=2)
    after = evaluate(model, data)
    assert losses[-1] < 0.5 * losses[0]
    assert after["sem_seg/mIoU"] > 50.0 and after["sem_seg/mIoU"] > before + 30
    assert after["sem_seg/pAcc"] > 85.0


@pytest.mark.slow
def test_small_model_learns_held_out_scenes(tmp_path):
    make_shapes_city(tmp_path, num_train=40, num_val=10, image_size=(64, 128), seed=0)
    transform = SemSegTrainTransform(crop_size=(64, 128), ratio_range=(0.75, 1.5), photometric=False)
    train_set = Cityscapes(tmp_path, split="train", transforms=transform)
    val_set = Cityscapes(tmp_path, split="val")
    model = small_deeplabv3plus()
    train(model, train_set, iters=150, batch_size=4)
    metrics = evaluate(model, val_set)
    assert metrics["sem_seg/mIoU"] > 55.0, metrics
    assert metrics["sem_seg/IoU-road"] > 80.0 and metrics["sem_seg/IoU-sky"] > 80.0
