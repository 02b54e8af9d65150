"""Every model family exports to ONNX and matches the PyTorch model in ONNX Runtime, on
two image sizes of one dynamic file (random weights, ResNet-18 sizes, small images)."""

from __future__ import annotations

import pytest
import torch

from densenets.config import MODELS, build, load_config
from densenets.export import example_image, export_onnx, wrap_model
from densenets.export.check import CheckError, compare, max_detections


def build_model(config: str, *overrides: str) -> torch.nn.Module:
    """The config's model with random weights (seeded; no pretrained backbone), in eval mode."""
    if "edsr" not in config:
        overrides = ("model.backbone.weights=null", *overrides)
    cfg = load_config(config, list(overrides))
    torch.manual_seed(0)
    return build(cfg.model, MODELS).eval()


def onnx_outputs(path, image: torch.Tensor) -> list[torch.Tensor]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {"image": image.numpy()})]


SIZES = ((67, 91), (80, 59))  # neither a multiple of the size divisibility
DETR_SMALL = (
    "model.backbone.depth=18",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=2",
    "model.transformer.d_model=64",
    "model.transformer.dim_feedforward=128",
)


def _reference(model: torch.nn.Module, image: torch.Tensor, key: str = "image") -> dict:
    with torch.no_grad():
        return model([{key: image, "orig_size": tuple(image.shape[-2:])}])[0]


def _export_and_compare(model, tmp_path, key: str = "image", sizes=SIZES) -> list:
    path = tmp_path / "model.onnx"
    wrapper = wrap_model(model)
    export_onnx(wrapper, example_image(*sizes[0]), path, dynamic=True)
    results = []
    for i, size in enumerate(sizes):
        image = example_image(*size, seed=i + 1)
        outputs = onnx_outputs(path, image)
        compare(
            wrapper.task, _reference(model, image, key), outputs, max_detections(model)
        )  # raises CheckError
        results.append(outputs)
    return results


def test_fcn_two_sizes(tmp_path):
    model = build_model("configs/demo/fcn_r18_d8_shapes_city.yaml")
    (seg,), _ = _export_and_compare(model, tmp_path)
    assert seg.dtype == torch.int64 and tuple(seg.shape) == SIZES[0]


@pytest.mark.slow
def test_deeplabv3plus_two_sizes(tmp_path):
    model = build_model(
        "configs/segmentation/deeplabv3plus_r50_d8_cityscapes_512x1024_80k.yaml",
        "model.backbone.depth=18",
        "model.backbone.norm=BN",
        "model.decode_head.norm=BN",
        "model.decode_head.channels=64",
        "model.decode_head.aspp.channels=64",
        "model.auxiliary_head=null",
    )
    _export_and_compare(model, tmp_path)


def test_edsr_two_sizes(tmp_path):
    model = build_model("configs/demo/edsr_baseline_x2_photos.yaml")
    (sr,), _ = _export_and_compare(model, tmp_path, key="lr", sizes=((40, 52), (33, 21)))
    assert sr.dtype == torch.uint8 and tuple(sr.shape) == (3, 80, 104)


@pytest.mark.slow
def test_faster_rcnn_fpn_two_sizes_multilevel_pooler(tmp_path):
    """R18-FPN with RoIs pooled from P2-P5 by box size, as the COCO configs do; every
    RoI x class is a candidate (score threshold 0): more than 100, capped at 100."""
    model = build_model(
        "configs/detection/faster_rcnn_r50_fpn_1x_coco.yaml",
        "model.backbone.depth=18",
        "model.neck.out_channels=64",
        "model.roi_heads.box_head.fc_dims=[128, 128]",
        "model.roi_heads.num_classes=5",
        "model.roi_heads.box_predictor.score_thresh=0.0",
    )
    outs = _export_and_compare(model, tmp_path)
    assert all(len(o[0]) == 100 for o in outs)  # more than 100 candidates, capped


def test_faster_rcnn_no_detection(tmp_path):
    """A threshold no score passes: empty outputs of the right shapes (torchvision #2251)."""
    model = build_model("configs/demo/faster_rcnn_r18_fpn_shapes.yaml")
    path = tmp_path / "model.onnx"
    model.roi_heads.box_predictor.score_thresh = 1.0  # softmax never exceeds 1
    export_onnx(wrap_model(model), example_image(*SIZES[0]), path, dynamic=True)
    boxes, scores, labels = onnx_outputs(path, example_image(*SIZES[1]))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    compare("detection", _reference(model, example_image(*SIZES[1])), (boxes, scores, labels))


def test_detr_two_sizes(tmp_path):
    model = build_model("configs/detection/detr_r50_coco.yaml", *DETR_SMALL)
    _export_and_compare(model, tmp_path)


def test_dab_detr_two_sizes(tmp_path):
    model = build_model("configs/detection/dab_detr_r50_coco.yaml", *DETR_SMALL)
    _export_and_compare(model, tmp_path)


def test_compare_fails_on_other_labels():
    # One detection, below any maximum > 1: nothing was cut off, so its label must match.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    ref = {"instances": {"boxes": boxes, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}}
    for cap in (None, 100):
        with pytest.raises(CheckError, match="differ"):
            compare("detection", ref, (boxes, torch.tensor([0.9]), torch.tensor([2])), cap)
    with pytest.raises(CheckError, match="grey levels"):
        sr = torch.zeros(3, 4, 4, dtype=torch.uint8)
        compare("super_resolution", {"sr": sr}, (sr + 2,))
