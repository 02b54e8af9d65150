"""Official DINO -> ours through `tools/convert_checkpoint.py --from dino`.

With the official sources (``DINO_SRC``, see `official_code`), the official DINO
(4-scale and 5-scale; a small transformer of width 256, which its sine embeddings
hard-code, on their ResNet-50; every weight perturbed) is saved as a checkpoint,
converted by the command-line tool and loaded strictly into ours; both run in float64
on two crops of a real photo and every decoder layer's logits and boxes and the
selected proposals must agree (to ~1e-5: the official code computes reference points,
valid ratios and proposals in float32).

Without the sources, a checkpoint in the official layout is built from our own model
and must convert back to the same outputs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from official_code import official_imports, official_input, official_tree, photo_crops, randomise

from densenets.checkpoint.convert import convert
from densenets.checkpoint.convert.detr import COCO_CATEGORY_IDS
from densenets.config import MODELS, build

ROOT = Path(__file__).parents[3]
D, Q, L = 256, 30, 3
SCALES = {"4scale": ["res3", "res4", "res5"], "5scale": ["res2", "res3", "res4", "res5"]}


def _ours(scale: str, depth: int = 50):
    feats = SCALES[scale]
    cfg = {
        "type": "DINO", "num_classes": 80, "num_queries": Q, "num_select": 50,
        "backbone": {"type": "ResNet", "depth": depth, "out_features": feats, "norm": "FrozenBN"},
        "neck": {"type": "ChannelMapper", "in_features": feats, "out_channels": D, "num_extra_levels": 1},
        "transformer": {"d_model": D, "nhead": 8, "num_encoder_layers": 2, "num_decoder_layers": L, "dim_feedforward": 128},
        "criterion": {"matcher": {"cost_class": 2.0, "class_cost_type": "focal"}, "class_loss_type": "focal"},
    }  # fmt: skip
    return build(cfg, MODELS)


def _official(scale: str):
    import models.dino.backbone as bb
    from models.dino.deformable_transformer import DeformableTransformer
    from models.dino.dino import DINO
    from models.dino.position_encoding import PositionEmbeddingSineHW
    from util.misc import nested_tensor_from_tensor_list

    bb.is_main_process = lambda: False  # no ImageNet download
    levels = len(SCALES[scale]) + 1
    indices = [0, 1, 2, 3] if scale == "5scale" else [1, 2, 3]
    backbone = bb.Joiner(
        bb.Backbone("resnet50", True, False, indices), PositionEmbeddingSineHW(D // 2, 20, 20, True)
    )
    backbone.num_channels = [256, 512, 1024, 2048][4 - len(indices) :]
    transformer = DeformableTransformer(
        d_model=D, nhead=8, num_queries=Q, num_encoder_layers=2, num_decoder_layers=L, dim_feedforward=128,
        dropout=0.0, return_intermediate_dec=True, query_dim=4, modulate_hw_attn=True, deformable_encoder=True,
        deformable_decoder=True, num_feature_levels=levels, learnable_tgt_init=True, two_stage_type="standard",
        embed_init_tgt=True, decoder_sa_type="sa", module_seq=["sa", "ca", "ffn"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = DINO(
        backbone, transformer, num_classes=91, num_queries=Q, aux_loss=True, iter_update=True, query_dim=4,
        num_feature_levels=levels, two_stage_type="standard", two_stage_class_embed_share=False,
        two_stage_bbox_embed_share=False, dn_number=100, dn_box_noise_scale=1.0, dn_label_noise_ratio=0.5,
        dn_labelbook_size=91,
    )  # fmt: skip
    randomise(model)
    # Proposals are ranked by their best class over all 91 columns; in a trained model
    # the 11 ids that are no COCO class are never targets and score low. Ours has 80.
    unused = [i for i in range(91) if i not in COCO_CATEGORY_IDS]
    with torch.no_grad():
        model.transformer.enc_out_class_embed.bias[unused] = -30.0
    model = model.double().eval()
    with torch.no_grad():
        out = model(nested_tensor_from_tensor_list(official_input(photo_crops())))
    return model.state_dict(), out


@pytest.mark.parametrize("scale", list(SCALES))
def test_official_model_converts_to_the_same_outputs(scale, tmp_path):
    root = official_tree("DINO_SRC", tmp_path)
    with official_imports(root):
        state_dict, out = _official(scale)
    assert state_dict["label_enc.weight"].shape[0] == 92  # the denoising labels travel too
    src, dst = tmp_path / "official.pth", tmp_path / "ours.pth"
    torch.save({"model": state_dict, "epoch": 11}, src)
    cmd = [sys.executable, str(ROOT / "tools/convert_checkpoint.py"), "--from", "dino", str(src), str(dst)]
    subprocess.run(cmd, check=True, capture_output=True)

    model = _ours(scale)
    model.load_state_dict(torch.load(dst, weights_only=True)["model"], strict=True)
    model = model.double().eval()
    ids = list(COCO_CATEGORY_IDS)
    torch.testing.assert_close(model.denoising.label_enc.weight, state_dict["label_enc.weight"][ids])
    batch = [{"image": i, "orig_size": tuple(i.shape[-2:])} for i in photo_crops()]
    with torch.no_grad():
        logits, boxes, interm, _ = model.predict(model.preprocess(batch))
    layers = [*out["aux_outputs"], out]
    want_logits = torch.stack([o["pred_logits"] for o in layers])[..., ids]
    torch.testing.assert_close(logits, want_logits, atol=5e-4, rtol=1e-5)
    torch.testing.assert_close(boxes, torch.stack([o["pred_boxes"] for o in layers]), atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(
        interm[0], out["interm_outputs"]["pred_logits"][..., ids], atol=5e-4, rtol=1e-5
    )
    torch.testing.assert_close(interm[1], out["interm_outputs"]["pred_boxes"], atol=5e-5, rtol=1e-5)


def _official_layout(model) -> dict:
    """Our state dict under the official DINO key names (class-indexed tensors widened to COCO ids)."""
    n = len(model.neck.convs)
    rules = [
        (r"\.ffn\.", "."),
        (r"decoder\.layers\.(\d+)\.norm([12])", lambda m: f"decoder.layers.{m[1]}.norm{3 - int(m[2])}"),
        (r"^neck\.convs\.(\d+)\.conv", r"input_proj.\1.0"),
        (r"^neck\.convs\.(\d+)\.norm", r"input_proj.\1.1"),
        (r"^neck\.extra_convs\.(\d+)\.conv", lambda m: f"input_proj.{n + int(m[1])}.0"),
        (r"^neck\.extra_convs\.(\d+)\.norm", lambda m: f"input_proj.{n + int(m[1])}.1"),
        (r"^(tgt_embed|enc_output|enc_output_norm)\.", r"transformer.\1."),
        (r"^enc_class_embed\.", "transformer.enc_out_class_embed."),
        (r"^enc_bbox_embed\.", "transformer.enc_out_bbox_embed."),
        (r"^denoising\.label_enc\.", "label_enc."),
    ]
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            continue
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        if re.fullmatch(r"(class_embed\.\d+|transformer\.enc_out_class_embed|label_enc)\.(weight|bias)", k):
            full = torch.randn(92 if k.startswith("label_enc") else 91, *v.shape[1:])
            full[list(COCO_CATEGORY_IDS)] = v
            v = full
        out[k] = v
        if k.startswith(("bbox_embed.", "class_embed.")):
            out["transformer.decoder." + k] = v
    for k in [k for k in out if re.match(r"(transformer\.decoder\.)?class_embed\.\d+\.", k)]:
        out[k] = out[re.sub(r"class_embed\.\d+\.", "class_embed.0.", k)]  # one shared head
    return out


@pytest.mark.parametrize("scale", list(SCALES))
def test_official_layout_round_trip(scale):
    """Always runs: the official key layout, rebuilt from our model, converts back losslessly."""
    torch.manual_seed(0)
    source = _ours(scale, depth=18).eval()
    randomise(source)
    tv = torchvision.models.resnet18(weights=None)
    official = {
        f"backbone.0.body.{k}": v
        for k, v in tv.state_dict().items()
        if "fc." not in k and "num_batches" not in k
    }
    official.update(_official_layout(source))
    assert {
        "label_enc.weight",
        "transformer.tgt_embed.weight",
        "transformer.decoder.ref_point_head.layers.0.weight",
    } <= set(official)
    target = _ours(scale, depth=18).eval()
    target.load_state_dict(convert("dino", {"model": official}), strict=True)
    source.backbone.load_state_dict(target.backbone.state_dict())
    batch = [{"image": i, "orig_size": tuple(i.shape[-2:])} for i in photo_crops()]
    with torch.no_grad():
        want, got = source.predict(source.preprocess(batch)), target.predict(target.preprocess(batch))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_unshared_heads_and_unknown_keys_are_rejected():
    official = _official_layout(_ours("4scale", depth=18))
    bad = dict(official, **{"class_embed.2.bias": official["class_embed.2.bias"] + 1})
    bad["transformer.decoder.class_embed.2.bias"] = bad["class_embed.2.bias"]
    with pytest.raises(ValueError, match="class_embed.2.bias differs"):
        convert("dino", bad)
    official["transformer.refpoint_embed.weight"] = torch.zeros(3, 4)
    with pytest.raises(KeyError, match="refpoint_embed"):
        convert("dino", official)
