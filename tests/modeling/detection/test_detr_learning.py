"""Learning test: a small DAB-DETR trained from scratch on CPU finds the synthetic shapes.

ResNet-18 up to res3 (stride 8, BatchNorm, no pretrained weights), a 128-wide
transformer (8 heads, FFN 512, no dropout) with 2 encoder and 3 decoder layers, 30
anchor queries with fixed random centres (the paper's random-xy option); 400 training
images of 128x128 with up to 4 circles / squares / triangles, DETR's flip augmentation;
AdamW 3e-4 (weight decay 1e-4), 100 warmup steps then a cosine decay, gradient norm
clipped at 1; 4000 steps of 4 images, run by the engine's Trainer with its optimiser and
LR schedule (`build_optimizer`, `WarmupLR`). Scored with COCOEvaluator on 50 held-out
images every 1000 steps by its EvalHook (docs/detr.md has the measured curve and time).

    pytest -m slow -s tests/modeling/detection/test_detr_learning.py
"""

import random
import time
from collections.abc import Iterator

import pytest
import torch

from densenets.config import MODELS, ConfigNode, build
from densenets.data import COCODetection, DETRTransform
from densenets.data.synthetic import make_shapes
from densenets.engine.hooks import EvalHook
from densenets.engine.inference import inference_on_dataset
from densenets.engine.optim import WarmupLR, build_optimizer
from densenets.engine.schema import ClipGradConfig, OptimizerConfig, SchedulerConfig
from densenets.engine.trainer import Trainer
from densenets.evaluation.coco import COCOEvaluator

STEPS, BATCH, LR, WARMUP, EVAL_EVERY = 4000, 4, 3e-4, 100, 1000


def small_dab_detr() -> torch.nn.Module:
    cfg = {
        "type": "DABDETR",
        "num_classes": 3,
        "num_queries": 30,
        "fixed_anchor_xy": True,
        "in_feature": "res3",
        "backbone": {"type": "ResNet", "depth": 18, "out_features": ["res3"], "norm": "BN"},
        "transformer": {
            "d_model": 128,
            "nhead": 8,
            "num_encoder_layers": 2,
            "num_decoder_layers": 3,
            "dim_feedforward": 512,
            "dropout": 0.0,
        },
        "criterion": {"matcher": {"cost_class": 2.0, "class_cost_type": "focal"}, "class_loss_type": "focal"},
    }
    return build(ConfigNode(cfg, "model"), MODELS)


def random_batches(dataset: COCODetection, seed: int = 0) -> Iterator[list[dict]]:
    """Endless batches of BATCH items drawn at random (with replacement)."""
    rng = random.Random(seed)
    while True:
        yield [dataset[rng.randrange(len(dataset))] for _ in range(BATCH)]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 20 min on an idle 2-core CPU
def test_small_dab_detr_learns_synthetic_shapes(tmp_path):
    paths = make_shapes(tmp_path, num_train=400, num_val=50, image_size=128, seed=0, max_objects=4,
                        object_size=(0.15, 0.5))  # fmt: skip
    transform = DETRTransform(scales=[128], max_size=128, crop_prob=0.0, flip_prob=0.5, seed=0)
    train = COCODetection(paths["train_images"], paths["train_ann"], transforms=transform)
    val = COCODetection(paths["val_images"], paths["val_ann"])
    torch.manual_seed(0)
    model = small_dab_detr()
    optimizer = build_optimizer(model, OptimizerConfig(type="AdamW", lr=LR, weight_decay=1e-4))
    # Linear warmup from 0.001 x LR over WARMUP steps, times a cosine from LR to 0 over the run.
    schedule = SchedulerConfig(type="CosineLR", warmup_iters=WARMUP, warmup_factor=0.001)
    trainer = Trainer(
        model,
        optimizer,
        WarmupLR(optimizer, schedule, max_iter=STEPS),
        loader_fn=lambda start_iter: random_batches(train),
        max_iter=STEPS,
        clip_grad=ClipGradConfig(type="norm", max=1.0),
    )
    val_batches = [[val[i] for i in range(s, min(s + 10, len(val)))] for s in range(0, len(val), 10)]
    start, curve = time.perf_counter(), {}

    def evaluate() -> dict[str, float]:
        metrics = inference_on_dataset(
            model, val_batches, COCOEvaluator(val, per_category=False), progress=False
        )
        curve[trainer.iter] = metrics["bbox/AP50"]
        print(f"step {trainer.iter}: loss {trainer.latest['loss']:.3f}, held-out AP50 {metrics['bbox/AP50']:.2f}, "
              f"AP {metrics['bbox/AP']:.2f}, {(time.perf_counter() - start) / 60:.1f} min")  # fmt: skip
        return metrics

    trainer.register_hooks([EvalHook(evaluate, period=EVAL_EVERY)])
    trainer.train()
    # Measured with the engine's Trainer (docs/detr.md), one torch thread: AP50 1.3 / 14.4 /
    # 23.2 / 25.4 after 1000 / 2000 / 3000 / 4000 steps (AP 12.4 at the end), 23.6 min; the
    # earlier hand-written loop gave 1.5 / 9.7 / 27.1 / 31.6. The threshold leaves room for
    # run-to-run variation and sits far above a model that has not learned to localise
    # (below 2).
    assert curve[STEPS] > 20.0, curve
    assert curve[STEPS] > curve[EVAL_EVERY], curve
