"""Learning test: a small DINO trained from scratch on CPU finds the synthetic shapes.

The data, augmentation, optimiser and evaluation of the DAB-DETR learning test
(`test_detr_learning.py`): 400 training images of 128x128 with up to 4 circles /
squares / triangles, flips, AdamW 3e-4 (weight decay 1e-4), 100 warmup steps then a
cosine decay, gradient norm clipped at 1, batches of 4, COCOEvaluator on 50 held-out
images. The model: ResNet-18 to res4 (BatchNorm, no pretrained weights), ChannelMapper
to width 128 on res3, res4 and one extra level (strides 8/16/32), 2 encoder and 3
decoder deformable layers (8 heads, 4 points, FFN 512), 30 queries from mixed query
selection, contrastive denoising as in the paper (100 -> 25 groups of 4 objects),
DINO's losses and matcher. DINO is trained for 1500 steps, well under the 4000 of
DAB-DETR; docs/detr.md compares the two curves.

    pytest -m slow -s tests/modeling/detection/test_dino_learning.py
"""

import math
import random
import time

import pytest
import torch

from densenets.config import MODELS, ConfigNode, build
from densenets.data import COCODetection, DETRTransform
from densenets.data.synthetic import make_shapes
from densenets.evaluation.coco import COCOEvaluator

STEPS, BATCH, LR, WARMUP, EVAL_EVERY = 1500, 4, 3e-4, 100, 500


def small_dino(**changes) -> torch.nn.Module:
    feats = ["res3", "res4"]
    cfg = {
        "type": "DINO",
        "num_classes": 3,
        "num_queries": 30,
        "num_select": 100,
        "backbone": {"type": "ResNet", "depth": 18, "out_features": feats, "norm": "BN"},
        "neck": {"type": "ChannelMapper", "in_features": feats, "out_channels": 128, "num_extra_levels": 1},
        "transformer": {
            "d_model": 128,
            "nhead": 8,
            "num_encoder_layers": 2,
            "num_decoder_layers": 3,
            "dim_feedforward": 512,
        },
        "denoising": {"num_queries": 100, "label_noise_ratio": 0.5, "box_noise_scale": 1.0},
        "criterion": {"matcher": {"cost_class": 2.0, "class_cost_type": "focal"}, "class_loss_type": "focal"},
        **changes,
    }
    return build(ConfigNode(cfg, "model"), MODELS)


def evaluate(model: torch.nn.Module, dataset: COCODetection) -> dict[str, float]:
    evaluator = COCOEvaluator(dataset, per_category=False)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), 10):
            batch = [dataset[i] for i in range(start, min(start + 10, len(dataset)))]
            evaluator.process(batch, model(batch))
    model.train()
    return evaluator.evaluate()


def lr_factor(step: int) -> float:
    if step < WARMUP:
        return 0.001 + 0.999 * step / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP)))


def train_and_evaluate(root) -> dict[int, float]:
    paths = make_shapes(root, num_train=400, num_val=50, image_size=128, seed=0, max_objects=4,
                        object_size=(0.15, 0.5))  # fmt: skip
    transform = DETRTransform(scales=[128], max_size=128, crop_prob=0.0, flip_prob=0.5, seed=0)
    train = COCODetection(paths["train_images"], paths["train_ann"], transforms=transform)
    val = COCODetection(paths["val_images"], paths["val_ann"])
    torch.manual_seed(0)
    model = small_dino()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = random.Random(0)
    start = time.perf_counter()
    curve = {}
    model.train()
    for step in range(1, STEPS + 1):
        loss = sum(model([train[rng.randrange(len(train))] for _ in range(BATCH)]).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(
                f"step {step}: loss {loss.item():.3f}, {(time.perf_counter() - start) / 60:.1f} min",
                flush=True,
            )
        if step % EVAL_EVERY == 0 or step == 250:
            metrics = evaluate(model, val)
            curve[step] = metrics["bbox/AP50"]
            print(f"step {step}: loss {loss.item():.3f}, held-out AP50 {metrics['bbox/AP50']:.2f}, "
                  f"AP {metrics['bbox/AP']:.2f}, {(time.perf_counter() - start) / 60:.1f} min", flush=True)  # fmt: skip
    return curve


@pytest.mark.slow
@pytest.mark.timeout(5400)
def test_small_dino_learns_synthetic_shapes(tmp_path):
    curve = train_and_evaluate(tmp_path)
    # DAB-DETR's learning test reaches AP50 1.5 / 9.7 after 1000 / 2000 steps and 31.6
    # after 4000 (docs/detr.md). DINO must beat DAB-DETR's final number in 1500 steps.
    assert curve[STEPS] > 31.6, curve
    assert curve[STEPS] > curve[250], curve


if __name__ == "__main__":  # the same run as a script, for a background job
    import sys
    import tempfile

    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    with tempfile.TemporaryDirectory() as d:
        print(train_and_evaluate(d))
