"""Official DETR / DAB-DETR checkpoint layouts -> ours: every key maps, outputs are kept.

The official files cannot be downloaded here, so each test writes a checkpoint in the
official layout (key names as in facebookresearch/detr and IDEA-Research/DAB-DETR: a
torchvision ResNet under ``backbone.0.body.``, ``multihead_attn``, flat ``linear1``,
``refpoint_embed``, the decoder's copy of ``bbox_embed``, class heads indexed by COCO
category id) from a model of ours plus a torchvision ResNet, converts it back and checks
that the converted model computes the same outputs.
"""

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from official_detr import official_dab_detr, official_detr, randomise_frozen_norms, source_root
from skimage import data
from test_detr import tiny_config

from densenets.checkpoint.convert import CONVERTERS, convert
from densenets.checkpoint.convert.detr import COCO_CATEGORY_IDS
from densenets.config import MODELS, build, load_config
from densenets.modeling.detection import dab_detr as dab_detr_module


def _model(model_type: str):
    cfg = tiny_config(
        model_type,
        num_classes=80,
        in_feature="res5",
        backbone={
            "type": "ResNet",
            "depth": 18,
            "out_features": ["res5"],
            "norm": "FrozenBN",
            "freeze_at": 2,
        },
    )
    torch.manual_seed(0)
    return build(cfg, MODELS).eval()


def _torchvision_backbone() -> dict:
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    for m in net.modules():  # non-trivial frozen statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {f"backbone.0.body.{k}": v for k, v in net.state_dict().items()}
    # DETR's FrozenBatchNorm2d has no num_batches_tracked and the body has no fc.
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked") and ".fc." not in k}


def _class_head(ours: torch.Tensor, rows: int, no_object: bool) -> torch.Tensor:
    full = torch.randn(rows, *ours.shape[1:])
    full[list(COCO_CATEGORY_IDS)] = ours[:80]
    if no_object:
        full[-1] = ours[80]
    return full


def _official_detr(model) -> dict:
    out = _torchvision_backbone()
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            continue
        k = k.replace(".ffn.", ".")
        k = re.sub(r"(decoder\.layers\.\d+)\.cross_attn", r"\1.multihead_attn", k)
        out[k] = _class_head(v, 92, True) if k.startswith("class_embed") else v
    return out


def _official_dab(model) -> dict:
    out = _torchvision_backbone()
    for k, v in model.state_dict().items():
        if k.startswith("backbone.") or k.startswith("anchor_"):
            continue
        k = re.sub(r"(encoder\.layers\.\d+)\.ffn\.", r"\1.", k)
        out[k] = _class_head(v, 91, False) if k.startswith("class_embed") else v
        if k.startswith("bbox_embed."):
            out["transformer.decoder." + k] = v.clone()  # the decoder's shared copy
    out["refpoint_embed.weight"] = torch.cat([model.anchor_xy, model.anchor_wh], 1)
    return out


def _backbone_matches_torchvision(model, official: dict) -> None:
    net = torchvision.models.resnet18(weights=None)
    body = {k[len("backbone.0.body.") :]: v for k, v in official.items() if k.startswith("backbone.0.body.")}
    net.load_state_dict(body, strict=False)
    net.eval()
    x = torch.randn(1, 3, 64, 96)
    ref = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    torch.testing.assert_close(model.backbone(x)["res5"], ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "model_type, name, build_official, known_keys",
    [
        (
            "DETR",
            "detr",
            _official_detr,
            ["query_embed.weight", "transformer.decoder.layers.1.multihead_attn.in_proj_weight",
             "transformer.encoder.layers.0.linear1.weight", "backbone.0.body.layer1.0.bn1.running_var"],
        ),
        (
            "DABDETR",
            "dab-detr",
            _official_dab,
            ["refpoint_embed.weight", "transformer.encoder.layers.0.activation.weight",
             "transformer.decoder.layers.0.ca_qpos_proj.weight", "transformer.decoder.bbox_embed.layers.2.bias",
             "transformer.encoder.query_scale.layers.1.weight", "transformer.decoder.ref_anchor_head.layers.0.weight"],
        ),
    ],
)  # fmt: skip
def test_official_layout_converts_and_keeps_outputs(model_type, name, build_official, known_keys):
    source = _model(model_type)
    official = build_official(source)
    assert set(known_keys) <= set(official)  # the layout really is the official one
    converted = convert(name, {"model": official, "epoch": 49})

    target = _model(model_type)
    for p in target.parameters():  # make sure nothing survives from initialisation
        p.data.normal_()
    target.load_state_dict(converted, strict=True)  # no key missing, none left over
    _backbone_matches_torchvision(target, official)

    source.backbone.load_state_dict(target.backbone.state_dict())  # same backbone in both
    item = {"image": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8), "orig_size": (128, 192)}
    with torch.no_grad():
        want, got = source([item])[0]["instances"], target([item])[0]["instances"]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(got[key], want[key])


def test_converters_are_registered_and_reject_foreign_keys():
    assert {"detr", "dab-detr"} <= set(CONVERTERS)
    official = _official_detr(_model("DETR"))
    official["transformer.decoder.layers.0.mystery.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="mystery"):
        convert("detr", official)


# --- The official models built from their source (DETR_SRC / DAB_DETR_SRC), float64 ---

ROOT = Path(__file__).parents[3]
_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64)
_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64)


def _photos() -> list[torch.Tensor]:
    """Two real photos whose sizes are not multiples of 32 (uint8 CHW): 301x451 and 250x400."""
    return [
        torch.from_numpy(data.astronaut()[:301, :451]).permute(2, 0, 1).contiguous(),
        torch.from_numpy(data.coffee()[:250, :400]).permute(2, 0, 1).contiguous(),
    ]


def _official_input(image: torch.Tensor) -> torch.Tensor:
    """The official evaluation transform: ToTensor, then Normalize with ImageNet statistics."""
    x = image.double() / 255
    return (x - _MEAN[:, None, None]) / _STD[:, None, None]


def _official_predict(model, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, B, Q, C) logits and (L, B, Q, 4) boxes of every decoder layer."""
    out = model([_official_input(i) for i in images])
    layers = [*out["aux_outputs"], out]
    return torch.stack([o["pred_logits"] for o in layers]), torch.stack([o["pred_boxes"] for o in layers])


def _ours(config: str, converter: str, official: dict) -> torch.nn.Module:
    cfg = load_config(ROOT / "configs/detection" / config, ["model.backbone.weights=null"])
    model = build(cfg.model, MODELS)
    model.load_state_dict(convert(converter, {"model": official, "epoch": 49}), strict=True)
    model.double().eval()
    # The pixel statistics are float32 buffers; in float64 use the exact values (255 * ImageNet's).
    model.pixel_mean.copy_(torch.tensor(cfg.model.pixel_mean, dtype=torch.float64).view(-1, 1, 1))
    model.pixel_std.copy_(torch.tensor(cfg.model.pixel_std, dtype=torch.float64).view(-1, 1, 1))
    return model


def _assert_same_on_photos(ours, official, class_rows: list[int], alone: bool = True) -> None:
    """Batched (and one by one), ours equals the official model run the same way."""
    photos = _photos()
    with torch.no_grad():
        for images in (photos, photos[:1], photos[1:]) if alone else (photos,):
            want_logits, want_boxes = _official_predict(official, images)
            got_logits, got_boxes = ours.predict(ours.preprocess([{"image": i} for i in images]))
            torch.testing.assert_close(got_logits, want_logits[..., class_rows], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(got_boxes, want_boxes, rtol=1e-9, atol=1e-9)


def _randomised(model) -> dict:
    """Random weights everywhere, including the zero-initialised box head and frozen norms."""
    torch.manual_seed(0)
    randomise_frozen_norms(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("bbox_embed.", "class_embed.")):
                p.normal_(0, 0.1)
    return model.double().eval()


@pytest.mark.slow
def test_official_detr_r50_matches_batched_and_alone_on_photos():
    official = _randomised(official_detr(source_root("DETR_SRC")))
    ours = _ours("detr_r50_coco.yaml", "detr", official.state_dict())
    _assert_same_on_photos(ours, official, [*COCO_CATEGORY_IDS, 91])

    # Marking ceil(h / 32) feature rows valid instead (one row fewer for the 250-row photo
    # in the 301-row batch) departs from the official model.
    def ceil_mask(images, size):
        mask = torch.ones((len(images), *size), dtype=torch.bool)
        for i, (h, w) in enumerate(images.image_sizes):
            mask[i, : math.ceil(h / 32), : math.ceil(w / 32)] = False
        return mask

    ours.feature_mask = ceil_mask
    with pytest.raises(AssertionError):
        _assert_same_on_photos(ours, official, [*COCO_CATEGORY_IDS, 91], alone=False)


@pytest.mark.slow
def test_official_dab_detr_dc5_3pat_matches_with_border_anchors(monkeypatch):
    official = _randomised(official_dab_detr(source_root("DAB_DETR_SRC"), dilation=True, num_patterns=3))
    with torch.no_grad():  # 12 anchors on the border: x, y, w or h within 1e-3 of 0 or 1
        rows = torch.arange(12)
        official.refpoint_embed.weight[rows, rows % 4] = torch.tensor(
            [-8.0, 8.0], dtype=torch.float64
        ).repeat(6)  # sigmoid 3e-4 / 1-3e-4
    ours = _ours("dab_detr_r50_dc5_3pat_coco.yaml", "dab-detr", official.state_dict())
    assert ours.transformer.patterns.weight.shape == (3, 256)
    _assert_same_on_photos(ours, official, list(COCO_CATEGORY_IDS))

    # The border anchors make the clamp visible: Deformable DETR's 1e-5 would not match.
    monkeypatch.setattr(dab_detr_module, "DAB_DETR_EPS", 1e-5)
    with pytest.raises(AssertionError):
        _assert_same_on_photos(ours, official, list(COCO_CATEGORY_IDS), alone=False)
