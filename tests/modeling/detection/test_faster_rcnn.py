"""FasterRCNN end to end: the model contract, empty images, rescaling, a fast overfit."""

import copy

import pytest
import torch

from densenets.config import MODELS, ConfigNode, build

SMALL = {
    "type": "FasterRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "norm": "BN", "out_features": ["res2", "res3", "res4", "res5"]},
    "neck": {"type": "FPN", "out_channels": 64},
    "rpn": {
        "type": "RPN",
        "anchor_generator": {"sizes": [[16], [32], [64], [128], [256]]},
        "pre_nms_topk": [300, 200],
        "post_nms_topk": [200, 100],
    },
    "roi_heads": {
        "type": "StandardRoIHeads",
        "num_classes": 3,
        "box_head": {"fc_dims": [128, 128]},
        "sampler": {"batch_size_per_image": 64},
    },
}


def _model(**changes) -> torch.nn.Module:
    cfg = copy.deepcopy(SMALL)
    for key, value in changes.items():
        cfg[key].update(value)
    torch.manual_seed(0)
    return build(ConfigNode(cfg, "model"), MODELS)


def _scene(h: int = 128, w: int = 160) -> dict:
    """A grey image with two filled rectangles (class 0 and 2)."""
    image = torch.full((3, h, w), 90, dtype=torch.uint8)
    image[:, 20:70, 30:90] = torch.tensor([230, 40, 40], dtype=torch.uint8)[:, None, None]
    image[:, 80:120, 100:150] = torch.tensor([40, 40, 230], dtype=torch.uint8)[:, None, None]
    boxes = torch.tensor([[30.0, 20.0, 90.0, 70.0], [100.0, 80.0, 150.0, 120.0]])
    return {"image": image, "image_id": 1, "orig_size": (h, w), "instances": {"boxes": boxes, "labels": torch.tensor([0, 2])}}


def _empty(h: int = 96, w: int = 128) -> dict:
    return {
        "image": torch.randint(0, 255, (3, h, w), dtype=torch.uint8),
        "image_id": 2,
        "orig_size": (h, w),
        "instances": {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    }


def test_training_step_gives_finite_losses_with_gradients():
    model = _model().train()
    losses = model([_scene(), _empty()])
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.rpn.head.conv.weight.grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_only_empty_images_train():
    model = _model().train()
    losses = model([_empty(), _empty(64, 64)])
    assert losses["loss_rpn_loc"] == 0 and losses["loss_box_reg"] == 0
    assert losses["loss_rpn_cls"] > 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()


def test_crowd_boxes_are_left_out_of_targets():
    model = _model().train()
    item = _scene()
    item["instances"]["iscrowd"] = torch.tensor([0, 1])
    targets = model.targets([item])
    assert targets[0]["boxes"].tolist() == [[30.0, 20.0, 90.0, 70.0]] and targets[0]["labels"].tolist() == [0]


def test_eval_output_contract_and_rescaling():
    model = _model(roi_heads={"box_predictor": {"score_thresh": 0.0}}).eval()
    item = _scene()
    with torch.no_grad():
        (out,) = model([item])
        (big,) = model([{**item, "orig_size": (256, 320)}])  # the file was twice as large
    inst = out["instances"]
    assert set(inst) == {"boxes", "scores", "labels"}
    n = len(inst["boxes"])
    assert 0 < n <= 100 and inst["boxes"].shape == (n, 4) and inst["scores"].shape == (n,)
    assert inst["labels"].dtype == torch.int64 and inst["labels"].min() >= 0 and inst["labels"].max() < 3
    assert (inst["boxes"][:, 2:] <= torch.tensor([160.0, 128.0])).all() and (inst["boxes"] >= 0).all()
    assert (inst["scores"][:-1] >= inst["scores"][1:]).all()
    torch.testing.assert_close(big["instances"]["boxes"], inst["boxes"] * 2)


def test_eval_on_blank_image_and_batch_of_different_sizes():
    model = _model().eval()
    blank = {"image": torch.zeros(3, 70, 50, dtype=torch.uint8), "orig_size": (70, 50)}
    with torch.no_grad():
        outs = model([blank, _scene()])
    assert len(outs) == 2
    assert (outs[0]["instances"]["boxes"][:, 2:] <= torch.tensor([50.0, 70.0])).all()


def test_bgr_input_format_flips_channels():
    model = _model()
    model.input_format = "BGR"
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    image[0] = 255  # red in RGB
    x = model.preprocess([{"image": image}]).tensor
    expected_blue = (255 - model.pixel_mean[2]) / model.pixel_std[2]
    torch.testing.assert_close(x[0, 2, 0, 0], expected_blue[0, 0])


def test_bad_config_key_names_its_path():
    cfg = copy.deepcopy(SMALL)
    cfg["rpn"]["matcher"] = {"threshold": [0.3, 0.7]}
    with pytest.raises(ValueError, match=r"model\.rpn\.matcher\.threshold: unknown key, did you mean thresholds"):
        build(ConfigNode(cfg, "model"), MODELS)


def test_overfits_one_scene():
    """A ResNet-18-FPN from scratch learns two boxes in 60 SGD steps: after training both
    are detected (IoU > 0.5, right class, score > 0.3)."""
    from torchvision.ops import box_iou

    model = _model().train()
    image = torch.full((3, 96, 128), 90, dtype=torch.uint8)
    image[:, 10:50, 20:70] = torch.tensor([230, 40, 40], dtype=torch.uint8)[:, None, None]
    image[:, 55:90, 80:120] = torch.tensor([40, 40, 230], dtype=torch.uint8)[:, None, None]
    boxes = torch.tensor([[20.0, 10.0, 70.0, 50.0], [80.0, 55.0, 120.0, 90.0]])
    labels = torch.tensor([0, 2])
    item = {"image": image, "orig_size": (96, 128), "instances": {"boxes": boxes, "labels": labels}}
    flipped_boxes = torch.stack((128 - boxes[:, 2], boxes[:, 1], 128 - boxes[:, 0], boxes[:, 3]), 1)
    flipped = {"image": image.flip(-1), "instances": {"boxes": flipped_boxes, "labels": labels}}
    optim = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(60):
        for group in optim.param_groups:
            group["lr"] = 0.01 * min(1.0, (step + 1) / 10)  # warmup: BatchNorm from scratch
        losses = model([item, flipped])
        optim.zero_grad()
        sum(losses.values()).backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        inst = model([item])[0]["instances"]
    for box, label in zip(boxes, labels):
        iou = box_iou(box[None], inst["boxes"])[0]
        hit = (iou > 0.5) & (inst["labels"] == label) & (inst["scores"] > 0.3)
        assert hit.any(), f"box {box.tolist()} (class {label}) not detected: {inst}"
