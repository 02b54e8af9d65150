"""DETR end to end: padding masks, the model contract, configs, a fast overfit run.

Shared helpers (`PatchBackbone`, `tiny_config`, `two_boxes_item`, `overfit`) are
imported by test_dab_detr.py.
"""

import math

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from densenets.config import MODELS, ConfigError, ConfigNode, build
from densenets.layers import ShapeSpec
from densenets.modeling.detection import DETR, DETRTransformer, HungarianMatcher, SetCriterion


class PatchBackbone(nn.Module):
    """A backbone whose features see only their own stride x stride cell (no padding leaks
    in through a receptive field), so batching with padding must not change anything."""

    def __init__(self, channels: int = 16, stride: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, stride, stride)
        self.stride = stride

    def forward(self, x):
        return {"res5": self.conv(x).relu()}

    def output_shape(self):
        return {"res5": ShapeSpec(self.conv.out_channels, self.stride)}


def tiny_config(model_type: str = "DETR", **overrides) -> ConfigNode:
    """A small model of the registered type: ResNet-18 up to res3, width 32."""
    focal = model_type == "DABDETR"
    cfg = {
        "type": model_type,
        "num_classes": 3,
        "num_queries": 6,
        "in_feature": "res3",
        "backbone": {
            "type": "ResNet",
            "depth": 18,
            "out_features": ["res3"],
            "norm": "FrozenBN",
            "freeze_at": 1,
        },
        "transformer": {
            "d_model": 32,
            "nhead": 4,
            "num_encoder_layers": 1,
            "num_decoder_layers": 2,
            "dim_feedforward": 64,
        },
        "criterion": {
            "matcher": {
                "cost_class": 2.0 if focal else 1.0,
                "class_cost_type": "focal" if focal else "softmax",
            },
            "class_loss_type": "focal" if focal else "softmax",
        },
        **overrides,
    }
    return ConfigNode(cfg, "model")


def random_item(h: int, w: int, boxes, labels, gen: torch.Generator) -> dict:
    return {
        "image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen),
        "instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels),
        },
        "orig_size": (2 * h, 2 * w),  # as if the transform halved the image
    }


def two_boxes_item() -> dict:
    """A 64x80 image with a red (label 0) and a blue (label 1) rectangle."""
    img = torch.full((3, 64, 80), 40, dtype=torch.uint8)
    img[0, 6:30, 10:44] = 220
    img[2, 28:60, 50:76] = 220
    boxes = torch.tensor([[10.0, 6, 44, 30], [50, 28, 76, 60]])
    return {
        "image": img,
        "instances": {"boxes": boxes, "labels": torch.tensor([0, 1])},
        "orig_size": (64, 80),
    }


def overfit(model: nn.Module, item: dict, iters: int, lr: float = 1e-3) -> dict:
    """Train on one image and return its eval-mode prediction."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(iters):
        loss = sum(model([item]).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        return model([item])[0]["instances"]


def assert_found_both_boxes(pred: dict, item: dict, min_score: float) -> None:
    top = pred["scores"].argsort(descending=True)[:2]
    gt = item["instances"]
    iou = box_iou(pred["boxes"][top], gt["boxes"])  # (2 predictions, 2 objects)
    best = iou.argmax(1)
    assert sorted(best.tolist()) == [0, 1], f"top-2 predictions do not cover both objects: IoU {iou}"
    assert (iou.max(1).values > 0.8).all(), f"IoU too low: {iou}"
    assert pred["labels"][top].tolist() == gt["labels"][best].tolist()
    assert (pred["scores"][top] > min_score).all(), pred["scores"][top]


def _patch_detr(num_classes=3) -> DETR:
    transformer = DETRTransformer(32, 4, 2, 2, 64, dropout=0.1)
    return DETR(PatchBackbone(), transformer, SetCriterion(num_classes, HungarianMatcher()), num_classes, 7)


def assert_batching_does_not_change_predictions(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    a = random_item(64, 96, [[0, 0, 10, 10]], [0], gen)
    b = random_item(96, 48, [[0, 0, 10, 10]], [1], gen)
    model.eval()
    with torch.no_grad():
        together = model([a, b])
        alone = [model([a])[0], model([b])[0]]
    for t, s in zip(together, alone):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(t["instances"][key], s["instances"][key], atol=2e-5, rtol=1e-4)


def test_padding_mask_two_sizes_batched_equal_each_alone():
    torch.manual_seed(0)
    assert_batching_does_not_change_predictions(_patch_detr())


def test_padding_matters_without_the_mask():
    # The same check fails when the mask is ignored, so the test above has teeth.
    torch.manual_seed(0)
    model = _patch_detr()
    model.feature_mask = lambda images, size: torch.zeros((len(images), *size), dtype=torch.bool)
    with pytest.raises(AssertionError):
        assert_batching_does_not_change_predictions(model)


def test_feature_mask_is_the_pixel_mask_shrunk_by_nearest_neighbour():
    # The official DETR (models/backbone.py): F.interpolate(pixel_mask, feature size), mode
    # "nearest": feature row i is padding when pixel row floor(i * H / h) of the batch is.
    model = _patch_detr()
    sizes = [(301, 451), (250, 400)]  # padded to 301 x 451; a ResNet's res5 is 10 x 15
    images = model.preprocess([{"image": torch.zeros(3, h, w, dtype=torch.uint8)} for h, w in sizes])
    mask = model.feature_mask(images, (10, 15))
    for m, (h, w) in zip(mask, sizes):
        rows = [math.floor(i * 301 / 10) < h for i in range(10)]
        cols = [math.floor(j * 451 / 15) < w for j in range(15)]
        want = ~(torch.tensor(rows)[:, None] & torch.tensor(cols)[None, :])
        assert torch.equal(m, want)
    # 250 rows: 9 valid feature rows (pixel 240 < 250), where ceil(250 / 32) = 8.
    assert (~mask[1]).sum(0).tolist() == [9] * 14 + [0]


@pytest.mark.parametrize("model_type", ["DETR", "DABDETR"])
def test_registered_model_trains_and_predicts_per_contract(model_type):
    torch.manual_seed(0)
    model = build(tiny_config(model_type), MODELS)
    gen = torch.Generator().manual_seed(0)
    batch = [
        random_item(48, 64, [[4, 4, 30, 40], [10, 12, 60, 44]], [0, 2], gen),
        random_item(40, 56, [], [], gen),  # an image without objects
    ]
    model.train()
    losses = model(batch)
    assert losses and all(
        k.startswith("loss_") and v.dim() == 0 and torch.isfinite(v) for k, v in losses.items()
    )
    assert "loss_class_0" in losses  # auxiliary losses of the first decoder layer
    sum(losses.values()).backward()
    assert model.input_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.stem.parameters())  # frozen stem

    model.eval()
    with torch.no_grad():
        preds = model(batch)
    assert len(preds) == 2
    for pred, item in zip(preds, batch):
        inst = pred["instances"]
        n = inst["boxes"].shape[0]
        assert inst["boxes"].shape == (n, 4) and inst["boxes"].dtype == torch.float32
        assert inst["scores"].shape == (n,) and ((inst["scores"] >= 0) & (inst["scores"] <= 1)).all()
        assert inst["labels"].dtype == torch.int64 and ((inst["labels"] >= 0) & (inst["labels"] < 3)).all()
        h, w = item["orig_size"]
        centres = (inst["boxes"][:, :2] + inst["boxes"][:, 2:]) / 2  # sigmoid centres lie in the image
        assert (centres >= 0).all() and (centres[:, 0] <= w).all() and (centres[:, 1] <= h).all()


def test_detr_outputs_every_query():
    torch.manual_seed(0)
    model = build(tiny_config("DETR"), MODELS).eval()
    with torch.no_grad():
        pred = model([two_boxes_item()])[0]["instances"]
    assert pred["boxes"].shape == (6, 4)


def test_bgr_input_format_flips_channels():
    torch.manual_seed(0)
    rgb = build(tiny_config("DETR", pixel_mean=[1.0, 2.0, 3.0], pixel_std=[1.0, 2.0, 4.0]), MODELS)
    bgr = build(
        tiny_config("DETR", pixel_mean=[3.0, 2.0, 1.0], pixel_std=[4.0, 2.0, 1.0], input_format="BGR"), MODELS
    )
    item = two_boxes_item()
    x_rgb = rgb.preprocess([item]).tensor
    x_bgr = bgr.preprocess([item]).tensor
    torch.testing.assert_close(x_bgr, x_rgb.flip(1))


def test_config_typos_name_the_key_path():
    with pytest.raises(ConfigError, match=r"model\.transformer\.nhed: unknown key, did you mean nhead"):
        cfg = tiny_config()
        cfg.transformer["nhed"] = 4
        build(cfg, MODELS)
    with pytest.raises(ConfigError, match=r"model\.criterion\.matcher\.cost_clas: unknown key"):
        cfg = tiny_config()
        cfg.criterion.matcher["cost_clas"] = 1
        build(cfg, MODELS)
    with pytest.raises(ValueError, match="in_feature"):
        build(tiny_config(in_feature="res5"), MODELS)


def test_overfits_one_image():
    torch.manual_seed(0)
    model = build(tiny_config("DETR", num_classes=2, num_queries=8, transformer={"d_model": 64, "nhead": 4,
                  "num_encoder_layers": 1, "num_decoder_layers": 2, "dim_feedforward": 128, "dropout": 0.0},
                  backbone={"type": "ResNet", "depth": 18, "out_features": ["res3"], "norm": "FrozenBN"}), MODELS)  # fmt: skip
    item = two_boxes_item()
    assert_found_both_boxes(overfit(model, item, iters=100), item, min_score=0.7)
