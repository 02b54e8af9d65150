"""Official DETR / DAB-DETR checkpoint layouts -> ours: every key maps, outputs are kept.

The official files cannot be downloaded here, so each test writes a checkpoint in the
official layout (key names as in facebookresearch/detr and IDEA-Research/DAB-DETR: a
torchvision ResNet under ``backbone.0.body.``, ``multihead_attn``, flat ``linear1``,
``refpoint_embed``, the decoder's copy of ``bbox_embed``, class heads indexed by COCO
category id) from a model of ours plus a torchvision ResNet, converts it back and checks
that the converted model computes the same outputs.
"""

import re

import pytest
import torch
import torchvision
from test_detr import tiny_config

from densenets.config import MODELS, build
from densenets.engine.convert import CONVERTERS, convert
from densenets.engine.convert.detr import COCO_CATEGORY_IDS


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
