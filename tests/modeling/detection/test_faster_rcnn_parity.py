"""FasterRCNN vs torchvision's `fasterrcnn_resnet50_fpn`: same weights, same outputs.

torchvision's random weights (with random BatchNorm statistics) are converted with our
checkpoint converter into the model of `faster_rcnn_r50_fpn_torchvision.yaml`; on a real
photo both give the same proposals, boxes, scores and labels (score threshold 0, so every
one of the 100 detections is compared), and, with the same random seed, the same losses.
"""

import pickle
from pathlib import Path

import pytest
import skimage.data
import torch
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import box_iou

from densenets.checkpoint.convert import convert
from densenets.config import MODELS, build, load_config

CONFIG = Path(__file__).parents[3] / "configs/detection/faster_rcnn_r50_fpn_torchvision.yaml"


def _randomise_batchnorm(model: torch.nn.Module, generator: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=generator) * 0.3 + 0.1
            m.bias.data = torch.randn(m.num_features, generator=generator) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=generator) * 0.1
            m.running_var = torch.rand(m.num_features, generator=generator) + 0.5


def _spread_scores(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Larger classifier weights than the default init: with logits spread over a few
    units, float rounding (BatchNorm folded into convs here, not there) cannot reorder
    near-tied scores, so top-k and NMS pick the same boxes in both models."""
    for layer, std in ((model.rpn.head.cls_logits, 1.0), (model.roi_heads.box_predictor.cls_score, 0.5)):
        layer.weight.data = torch.randn(layer.weight.shape, generator=generator) * std


# skimage's coffee photo (400x600) and a 200x300 crop of it. torchvision resizes the
# short side to min_size, set to the image's so that its resize is the identity. The
# padded batches (416x608, 224x320) give P6 grids (7x10, 4x5) whose torchvision strides
# (59/60, 56/64) are not 64, which the reference config reproduces.
CASES = [
    pytest.param((slice(100, 300), slice(150, 450)), id="200x300"),
    pytest.param((slice(None), slice(None)), id="400x600", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=CASES)
def image(request):
    rows, cols = request.param
    return torch.from_numpy(skimage.data.coffee()[rows, cols].copy()).permute(2, 0, 1)  # uint8 [3, H, W]


@pytest.fixture(scope="module")
def models(image):
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=image.shape[1], box_score_thresh=0.0
    )
    _randomise_batchnorm(tv, torch.Generator().manual_seed(1))
    _spread_scores(tv, torch.Generator().manual_seed(2))
    tv.eval()
    # NCHW like torchvision: channels-last convolutions round differently, which can
    # swap near-tied proposals at the top-k boundary of a full-size image.
    cfg = load_config(
        CONFIG,
        [
            "model.backbone.weights=null",
            "model.roi_heads.box_predictor.score_thresh=0.0",
            "model.backbone.channels_last=false",
        ],
    )
    ours = build(cfg.model, MODELS)
    ours.load_state_dict(convert("torchvision-faster-rcnn", tv.state_dict()))
    ours.eval()
    return tv, ours


def test_inference_matches_torchvision(models, image):
    tv, ours = models
    size = tuple(image.shape[1:])
    with torch.no_grad():
        images, _ = tv.transform([image.float() / 255])
        tv_features = tv.backbone(images.tensors)
        tv_proposals, _ = tv.rpn(images, tv_features)
        tv_dets = tv.roi_heads(tv_features, tv_proposals, images.image_sizes)[0]
        tv_out = tv.transform.postprocess(tv_dets, images.image_sizes, [size])[0]

        batch = [{"image": image, "orig_size": size}]
        padded = ours.preprocess(batch)
        features = ours.extract_features(padded.tensor)
        proposals, _, _ = ours.rpn(padded, features)
        out = ours(batch)[0]["instances"]

    torch.testing.assert_close(padded.tensor, images.tensors, atol=1e-5, rtol=0)
    for level, tv_level in zip(["p2", "p3", "p4", "p5", "p6"], tv_features.values()):
        torch.testing.assert_close(features[level], tv_level, atol=1e-4, rtol=1e-4)
    assert proposals[0].shape == tv_proposals[0].shape and len(proposals[0]) > 500
    # Exactly tied objectness (e.g. equal features in the padding) may list two proposals
    # in either order, so compare them as sets: each has an identical box in the other.
    iou = box_iou(proposals[0], tv_proposals[0])
    assert iou.max(dim=1).values.min() > 0.9999 and iou.max(dim=0).values.min() > 0.9999
    assert len(out["boxes"]) == len(tv_out["boxes"]) == 100
    torch.testing.assert_close(out["scores"], tv_out["scores"], atol=1e-5, rtol=0)
    _assert_same_detections(out, tv_out, label_offset=1)  # torchvision's label 0 is background


def _assert_same_detections(ours: dict, theirs: dict, label_offset: int) -> None:
    """Each detection has one of the same class, box and score in the other list.

    Scores equal up to float rounding may be ordered either way, so detections are
    matched, not compared by index; at the 100-detection cut, ties may keep either box.
    """
    cut = ours["scores"][-1].item() + 1e-5
    for a, b, offset in ((ours, theirs, label_offset), (theirs, ours, -label_offset)):
        same_class = (a["labels"][:, None] + offset) == b["labels"][None, :]
        iou = box_iou(a["boxes"], b["boxes"]) * same_class
        score_close = (a["scores"][:, None] - b["scores"][None, :]).abs() < 1e-5
        found = ((iou > 0.9999) & score_close).any(dim=1)
        assert found[a["scores"] > cut].all(), f"{(~found).sum()} detections without a match"


def test_training_losses_match_torchvision(models, image):
    tv, ours = models
    h, w = image.shape[1:]
    boxes = torch.tensor(
        [[0.02, 0.05, 0.4, 0.95], [0.5, 0.25, 0.98, 0.75], [0.7, 0.1, 0.8, 0.22]]
    ) * torch.tensor([w, h, w, h])
    labels = torch.tensor([46, 0, 61])  # our labels; torchvision's are one more
    tv.train()
    ours.train()
    try:
        tv.transform.eval()  # its training-mode resize draws a random size (consuming the RNG)
        for m in tv.modules():  # weights_backbone=None builds BatchNorm2d; keep it frozen like ours
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        torch.manual_seed(123)
        tv_losses = tv([image.float() / 255], [{"boxes": boxes, "labels": labels + 1}])
        torch.manual_seed(123)
        losses = ours([{"image": image, "instances": {"boxes": boxes, "labels": labels}}])
    finally:
        tv.eval()
        ours.eval()
    names = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_loc",
             "loss_classifier": "loss_cls", "loss_box_reg": "loss_box_reg"}  # fmt: skip
    assert set(losses) == set(names.values())
    for tv_name, name in names.items():
        torch.testing.assert_close(losses[name], tv_losses[tv_name], atol=1e-5, rtol=1e-4)
    assert all(v > 0 for v in losses.values())


# --- detectron2's recipe: the MSRA caffe2 backbone under faster_rcnn_r50_fpn_detectron2.yaml ---

D2_CONFIG = Path(__file__).parents[3] / "configs/detection/faster_rcnn_r50_fpn_detectron2.yaml"


def _stride_in_1x1(net: torch.nn.Module) -> torch.nn.Module:
    """torchvision's ResNet with each stage's stride moved to the first 1x1 (MSRA/caffe2)."""
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return net


@pytest.mark.slow
def test_detectron2_recipe_backbone_computes_what_detectron2_computes(tmp_path):
    """The detectron2-layout config started from a caffe2 `R-50.pkl` gives, in float64 on a
    real photo, the features detectron2 computes from it: BGR minus the MSRA mean, stride in
    the 1x1 convs, and every caffe2 norm as `F.batch_norm(x, 0, 1, s, b, eps=1e-5)` (the
    running_var = 1 that detectron2/layers/batch_norm.py fills in when loading such files).
    """
    from testkit.caffe2_resnet import EPS, detectron2_network, msra_blobs

    g = torch.Generator().manual_seed(0)
    tv = _stride_in_1x1(resnet50())
    _randomise_batchnorm(tv, g)
    blobs = msra_blobs(tv)
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(blobs, f, protocol=2)
    cfg = load_config(
        D2_CONFIG, [f"model.backbone.weights={tmp_path / 'R-50.pkl'}", "model.backbone.channels_last=false"]
    )
    ours = build(cfg.model, MODELS)
    from densenets.checkpoint.weights import load_pretrained_weights

    assert load_pretrained_weights(ours) == [str(tmp_path / "R-50.pkl")]  # what training starts from
    ours = ours.double().eval()
    ours.pixel_mean.copy_(torch.tensor(cfg.model.pixel_mean, dtype=torch.float64).view(-1, 1, 1))
    ref = detectron2_network(tv, blobs)
    assert EPS == 1e-5

    image = torch.from_numpy(skimage.data.coffee()[:250, :375].copy()).permute(2, 0, 1)  # uint8 RGB
    with torch.no_grad():
        padded = ours.preprocess([{"image": image}])
        bgr = (
            image.flip(0).double()
            - torch.tensor([103.53, 116.28, 123.675], dtype=torch.float64)[:, None, None]
        )
        x = torch.zeros_like(padded.tensor)
        x[0, :, :250, :375] = bgr  # detectron2 pads to a multiple of 32 with zeros too
        torch.testing.assert_close(padded.tensor, x, rtol=0, atol=1e-12)
        got = ours.backbone(padded.tensor)
        res2 = ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))
        res3 = ref.layer2(res2)
        res5 = ref.layer4(ref.layer3(res3))
    for name, want in (("res2", res2), ("res3", res3), ("res5", res5)):
        torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-10 * want.abs().max().item())
