"""`--from mmdet`: mmdetection's Faster R-CNN (R50/R101-FPN, pytorch and caffe style, DCNv1
and modulated DCNv2 in res3-res5) built by mmdetection itself with random weights, saved
as its training saves them, converted with tools/convert_checkpoint.py and run in float64
on a real photo (sides not multiples of 32) next to mmdetection's own inference."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from testkit.mm_reference import build_mmdet, photo, randomise_offsets, require, save_like_training

from densenets.checkpoint.convert import convert
from densenets.config import MODELS, build, load_config
from densenets.tools.convert_checkpoint import main as convert_main

CONFIGS = Path(__file__).parents[2] / "configs" / "detection"
COCO = tuple(f"class{i}" for i in range(80))
SIZE = (290, 435)  # padded to 320 x 448 by both

CASES = {
    "r50": ("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "mmdet_faster_rcnn_r50_fpn_1x_coco.yaml"),
    "r50_caffe": ("faster_rcnn/faster-rcnn_r50-caffe_fpn_1x_coco.py", "mmdet_faster_rcnn_r50_caffe_fpn_1x_coco.yaml"),
    "r101": ("faster_rcnn/faster-rcnn_r101_fpn_1x_coco.py", "mmdet_faster_rcnn_r101_fpn_1x_coco.yaml"),
    "dconv": ("dcn/faster-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py", "mmdet_faster_rcnn_r50_dconv_c3_c5_fpn_1x_coco.yaml"),
    "mdconv": ("dcnv2/faster-rcnn_r50-mdconv-c3-c5_fpn_1x_coco.py", "mmdet_faster_rcnn_r50_mdconv_c3_c5_fpn_1x_coco.yaml"),
}  # fmt: skip


def _calibrate_heads(ref, x: torch.Tensor) -> None:
    """Random head weights scaled to the features of `x`: objectness logits of std ~2,
    class logits of std ~3 (so that some scores pass the 0.05 threshold; mmdet's init
    gives ~uniform ones under it), box deltas small as trained ones are. Continuous
    random scores leave no ties, so both models' orderings are defined."""
    g = torch.Generator().manual_seed(3)
    rpn, head = ref.rpn_head, ref.roi_head.bbox_head
    seen = {}
    hook = head.fc_cls.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))  # returns None
    with torch.no_grad():
        feats = ref.extract_feat(x)
        t = torch.cat([F.relu(rpn.rpn_conv(f)).flatten(2) for f in feats], dim=2)
        rms = t.pow(2).mean().sqrt() * t.shape[1] ** 0.5  # std of a unit-weight 1x1 conv output
        _fill(rpn.rpn_cls, 2.0 / rms, g)
        _fill(rpn.rpn_reg, 0.1 / rms, g)
        ref.predict(x, [_sample(x, x.shape[-2:])])
        rms = seen["x"].pow(2).mean().sqrt() * seen["x"].shape[1] ** 0.5
        _fill(head.fc_cls, 3.0 / rms, g)
        _fill(head.fc_reg, 0.5 / rms, g)
    hook.remove()


def _fill(layer: torch.nn.Module, std: float, g: torch.Generator) -> None:
    layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
    layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.1)


def _sample(x: torch.Tensor, size: tuple[int, int]):
    from mmdet.structures import DetDataSample

    meta = {"img_shape": tuple(size), "ori_shape": tuple(size), "scale_factor": (1.0, 1.0),
            "pad_shape": tuple(x.shape[-2:]), "batch_input_shape": tuple(x.shape[-2:])}  # fmt: skip
    return DetDataSample(metainfo=meta)


def _reference(ref, x: torch.Tensor, size: tuple[int, int]):
    """mmdetection's `predict` on the padded batch (as its data preprocessor pads it)."""
    with torch.no_grad():
        inst = ref.predict(x, [_sample(x, size)], rescale=True)[0].pred_instances
        feats = ref.extract_feat(x)
    return inst, feats


@pytest.mark.parametrize(
    "name",
    ["r50", *(pytest.param(n, marks=pytest.mark.slow) for n in ("r50_caffe", "r101", "dconv", "mdconv"))],
)
def test_mmdet_checkpoint_gives_mmdet_detections(tmp_path, name):
    require("mmdet")
    mm_config, config = CASES[name]
    ref = build_mmdet(mm_config)
    if name in ("dconv", "mdconv"):
        assert randomise_offsets(ref) == 13  # every 3x3 conv of res3..res5 (4 + 6 + 3 blocks)
    model_cfg = load_config(CONFIGS / config, ["model.backbone.weights=null"]).model
    rgb = torch.from_numpy(photo(*SIZE)).permute(2, 0, 1).contiguous()  # uint8 [3, H, W]
    pre = ref.data_preprocessor
    image = rgb if pre._channel_conversion else rgb.flip(0)  # mmdet reads BGR files
    # our statistics are float32 buffers (as mmdet's): both models get these exact inputs
    mean = torch.tensor(model_cfg.pixel_mean, dtype=torch.float32).double().view(3, 1, 1)
    std = torch.tensor(model_cfg.pixel_std, dtype=torch.float32).double().view(3, 1, 1)
    x = (image.double() - mean) / std
    x = F.pad(x, (0, 448 - SIZE[1], 0, 320 - SIZE[0]))[None]
    # our input convention (pixel_mean/std, input_format) is mmdet's data preprocessor's
    mm_x = pre({"inputs": [rgb.flip(0)], "data_samples": None}, training=False)["inputs"]
    torch.testing.assert_close(mm_x.double(), x, rtol=0, atol=1e-4)
    _calibrate_heads(ref, x.float())

    save_like_training(ref, tmp_path / "mm.pth", "mmdet", COCO)
    assert convert_main(["--from", "mmdet", str(tmp_path / "mm.pth"), str(tmp_path / "ours.pth")]) == 0
    ours = build(model_cfg, MODELS)
    ours.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True)["model"], strict=True)
    ours, ref = ours.eval().double(), ref.double()

    inst, feats = _reference(ref, x, SIZE)
    with torch.no_grad():
        proposals = ref.rpn_head.predict(feats, [_sample(x, SIZE)], rescale=False)[0]
        images = ours.preprocess([{"image": rgb}])
        ours_feats = ours.extract_features(images.tensor)
        ours_proposals, ours_logits, _ = ours.rpn(images, ours_feats)
        det = ours([{"image": rgb, "orig_size": SIZE}])[0]["instances"]
    torch.testing.assert_close(images.tensor, x, rtol=0, atol=0)
    for level, f in zip(("p2", "p3", "p4", "p5", "p6"), feats):
        torch.testing.assert_close(ours_feats[level], f, rtol=1e-9, atol=1e-9 * f.abs().max().item())
    # the same proposals in the same order (mmdet scores are sigmoids of our logits)
    torch.testing.assert_close(ours_proposals[0], proposals.bboxes, rtol=1e-9, atol=1e-7)
    torch.testing.assert_close(ours_logits[0].sigmoid(), proposals.scores, rtol=1e-9, atol=1e-12)
    assert len(inst.scores) >= 20, "the random heads should give detections over the threshold"
    assert torch.equal(det["labels"], inst.labels)
    torch.testing.assert_close(det["scores"], inst.scores, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(det["boxes"], inst.bboxes, rtol=1e-9, atol=1e-7)


def test_layouts_ours_cannot_hold_are_refused():
    sd = {
        "backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
        "rpn_head.rpn_conv.weight": torch.zeros(1),
        "rpn_head.rpn_cls.weight": torch.zeros(6, 256, 1, 1),  # softmax objectness: 2 per anchor
        "rpn_head.rpn_reg.weight": torch.zeros(12, 256, 1, 1),
        "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024),
        "roi_head.bbox_head.fc_reg.weight": torch.zeros(320, 1024),
    }
    with pytest.raises(ValueError, match="only sigmoid objectness"):
        convert("mmdet", {"meta": {}, "state_dict": sd})
    sd["rpn_head.rpn_cls.weight"] = torch.zeros(3, 256, 1, 1)
    sd["roi_head.bbox_head.fc_reg.weight"] = torch.zeros(4, 1024)
    with pytest.raises(ValueError, match="only class-specific regression"):
        convert("mmdet", {"meta": {}, "state_dict": sd})
    with pytest.raises(KeyError, match="roi_head.mask_head.conv_logits.weight"):
        convert("mmdet", {"state_dict": {**sd, "roi_head.mask_head.conv_logits.weight": torch.zeros(1)}})
