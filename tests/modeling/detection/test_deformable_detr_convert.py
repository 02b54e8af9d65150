"""Official Deformable DETR -> ours through `tools/convert_checkpoint.py --from deformable-detr`.

With the official sources (``DEFORMABLE_DETR_SRC``, see `official_code`), the official
model is built on CPU (a small transformer on their ResNet-50 backbone, every weight
perturbed), its state dict is written as a checkpoint, converted by the command-line
tool and loaded strictly into ours; both run in float64 on two crops of a real photo
(a padded batch) and every decoder layer's logits and boxes, and the two-stage proposals,
must agree. The official code computes reference points, valid ratios and proposals
in float32 whatever the model's dtype, so agreement is to ~1e-5, not 1e-12.

Without the sources, a checkpoint in the official layout is built from our own model
(key names as in the official files) and must convert back to the same outputs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from official_code import official_imports, official_input, official_tree, photo_crops, randomise

from densenets.checkpoint.convert import convert
from densenets.checkpoint.convert.detr import COCO_CATEGORY_IDS
from densenets.config import MODELS, build

ROOT = Path(__file__).parents[3]
VARIANTS = {  # name: (with_box_refine, two_stage, levels); two-stage needs D = 256 (official constant)
    "multi-scale": (False, False, 4),
    "single-scale": (False, False, 1),
    "refine": (True, False, 4),
    "two-stage": (True, True, 4),
}
Q, L = 20, 3


def _width(two_stage: bool) -> int:
    return 256 if two_stage else 64


def _ours(refine: bool, two_stage: bool, levels: int, depth: int = 50):
    feats = ["res3", "res4", "res5"] if levels > 1 else ["res5"]
    d = _width(two_stage)
    cfg = {
        "type": "DeformableDETR", "num_classes": 80, "num_queries": Q, "num_select": 50,
        "with_box_refine": refine, "two_stage": two_stage,
        "backbone": {"type": "ResNet", "depth": depth, "out_features": feats, "norm": "FrozenBN"},
        "neck": {"type": "ChannelMapper", "in_features": feats, "out_channels": d, "num_extra_levels": levels - len(feats)},
        "transformer": {"d_model": d, "nhead": 4, "num_encoder_layers": 2, "num_decoder_layers": L,
                        "dim_feedforward": 96, "dropout": 0.0},
        "criterion": {"matcher": {"class_cost_type": "focal"}, "class_loss_type": "focal"},
    }  # fmt: skip
    return build(cfg, MODELS)


def _official(root: Path, refine: bool, two_stage: bool, levels: int):
    """The official model (91 COCO-id classes), perturbed, and its outputs on the photo crops."""
    import models.backbone as bb
    from models.deformable_detr import DeformableDETR
    from models.deformable_transformer import DeformableTransformer
    from models.position_encoding import PositionEmbeddingSine
    from util.misc import nested_tensor_from_tensor_list

    bb.is_main_process = lambda: False  # no ImageNet download
    d = _width(two_stage)
    backbone = bb.Joiner(
        bb.Backbone("resnet50", True, levels > 1, False), PositionEmbeddingSine(d // 2, normalize=True)
    )
    transformer = DeformableTransformer(
        d_model=d, nhead=4, num_encoder_layers=2, num_decoder_layers=L, dim_feedforward=96, dropout=0.0,
        return_intermediate_dec=True, num_feature_levels=levels, two_stage=two_stage, two_stage_num_proposals=Q,
    )  # fmt: skip
    torch.manual_seed(0)
    model = DeformableDETR(backbone, transformer, 91, Q, levels, True, refine, two_stage)
    randomise(model)
    model = model.double().eval()
    with torch.no_grad():
        out = model(nested_tensor_from_tensor_list(official_input(photo_crops())))
    return model.state_dict(), out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_model_converts_to_the_same_outputs(variant, tmp_path):
    refine, two_stage, levels = VARIANTS[variant]
    root = official_tree("DEFORMABLE_DETR_SRC", tmp_path)
    with official_imports(root):
        state_dict, out = _official(root, refine, two_stage, levels)
    src, dst = tmp_path / "official.pth", tmp_path / "ours.pth"
    torch.save({"model": state_dict, "epoch": 49}, src)
    cmd = [
        sys.executable,
        str(ROOT / "tools/convert_checkpoint.py"),
        "--from",
        "deformable-detr",
        str(src),
        str(dst),
    ]
    subprocess.run(cmd, check=True, capture_output=True)

    model = _ours(refine, two_stage, levels)
    model.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    model = model.double().eval()
    batch = [{"image": i, "orig_size": tuple(i.shape[-2:])} for i in photo_crops()]
    with torch.no_grad():
        logits, boxes, enc = model.predict(model.preprocess(batch))
    layers = [*out["aux_outputs"], out]
    want_logits = torch.stack([o["pred_logits"] for o in layers])[..., list(COCO_CATEGORY_IDS)]
    want_boxes = torch.stack([o["pred_boxes"] for o in layers])
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(boxes, want_boxes, atol=1e-5, rtol=1e-5)
    if two_stage:  # column 0 ranks the proposals: it must be the official row 0
        torch.testing.assert_close(
            enc[0][..., 0], out["enc_outputs"]["pred_logits"][..., 0], atol=1e-4, rtol=1e-5
        )
        torch.testing.assert_close(enc[1], out["enc_outputs"]["pred_boxes"], atol=1e-5, rtol=1e-5)


def _official_layout(model, two_stage: bool) -> dict:
    """Our state dict under the official key names (class heads widened to 91 COCO ids)."""
    sd, out = model.state_dict(), {}
    n_dec, n = model.transformer.num_decoder_layers, len(model.neck.convs)
    for k, v in sd.items():
        if k.startswith("backbone."):
            continue
        k2 = re.sub(r"\.ffn\.", ".", k)
        k2 = re.sub(
            r"decoder\.layers\.(\d+)\.norm([12])", lambda m: f"decoder.layers.{m[1]}.norm{3 - int(m[2])}", k2
        )
        k2 = re.sub(r"^neck\.convs\.(\d+)\.conv", r"input_proj.\1.0", k2)
        k2 = re.sub(r"^neck\.convs\.(\d+)\.norm", r"input_proj.\1.1", k2)
        k2 = re.sub(r"^neck\.extra_convs\.(\d+)\.conv", lambda m, n=n: f"input_proj.{n + int(m[1])}.0", k2)
        k2 = re.sub(r"^neck\.extra_convs\.(\d+)\.norm", lambda m, n=n: f"input_proj.{n + int(m[1])}.1", k2)
        k2 = re.sub(
            r"^(reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\.",
            r"transformer.\1.",
            k2,
        )
        if m := re.fullmatch(r"class_embed\.(\d+)\.(weight|bias)", k2):
            full = torch.randn(91, *v.shape[1:])
            rows = (
                [0, *COCO_CATEGORY_IDS[1:]] if two_stage and int(m[1]) == n_dec else list(COCO_CATEGORY_IDS)
            )
            full[rows] = v
            v = full
        out[k2] = v
        if k2.startswith(("bbox_embed.", "class_embed.")) and (model.with_box_refine or two_stage):
            out["transformer.decoder." + k2] = v
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_official_layout_round_trip(variant):
    """Always runs: the official key layout, rebuilt from our model, converts back losslessly."""
    refine, two_stage, levels = VARIANTS[variant]
    torch.manual_seed(0)
    source = _ours(refine, two_stage, levels, depth=18).eval()
    randomise(source)
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    official = {
        f"backbone.0.body.{k}": v
        for k, v in tv.state_dict().items()
        if "fc." not in k and "num_batches" not in k
    }
    official.update(_official_layout(source, two_stage))
    assert "transformer.decoder.layers.0.cross_attn.sampling_offsets.weight" in official
    converted = convert("deformable-detr", {"model": official})
    target = _ours(refine, two_stage, levels, depth=18).eval()
    target.load_state_dict(converted, strict=True)
    source.backbone.load_state_dict(target.backbone.state_dict())
    batch = [{"image": i, "orig_size": tuple(i.shape[-2:])} for i in photo_crops()]
    with torch.no_grad():
        want, got = source.predict(source.preprocess(batch)), target.predict(target.preprocess(batch))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_unmapped_keys_are_all_listed():
    source = _ours(False, False, 4, depth=18)
    official = _official_layout(source, False)
    official["transformer.mystery.weight"] = torch.zeros(1)
    official["transformer.decoder.layers.0.enigma.bias"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"2 checkpoint keys have no rule: .*mystery.*enigma"):
        convert("deformable-detr", official)
