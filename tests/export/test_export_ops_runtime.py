"""Custom ops in exported files (deformable convolution, RoIAlign, NMS), torch.export
round trips, and running exported files through Predictor / tools/infer.py."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from densenets.export import deform_conv2d_grid_sample, example_image, export_onnx, export_program, wrap_model
from densenets.export.check import compare, max_detections
from densenets.ops import DeformConv2d, ModulatedDeformConv2d, deform_conv2d, roi_align

STANDARD = {"", "ai.onnx"}  # no custom domain: stock ONNX Runtime runs the file


def _ops(path) -> set[tuple[str, str]]:
    def walk(graph):
        for node in graph.node:
            yield node.domain, node.op_type
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    yield from walk(attr.g)

    return set(walk(onnx.load(str(path)).graph))


@pytest.mark.parametrize("stride, padding, dilation, modulated", [(1, 1, 1, True), (2, 2, 2, False)])
def test_deform_conv2d_grid_sample_matches_the_op(stride, padding, dilation, modulated):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 11, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)  # 2 weight groups
    h_out = (9 + 2 * padding - dilation * 2 - 1) // stride + 1
    w_out = (11 + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.randn(2, 2 * 2 * 9, h_out, w_out, generator=g) * 4  # 2 offset groups, points leave the map
    mask = torch.rand(2, 2 * 9, h_out, w_out, generator=g) if modulated else None
    args = (torch.randn(6, generator=g), stride, padding, dilation, mask)
    torch.testing.assert_close(
        deform_conv2d_grid_sample(x, offset, weight, *args), deform_conv2d(x, offset, weight, *args)
    )


class _DCNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = DeformConv2d(3, 8, 3, padding=1)
        self.b = ModulatedDeformConv2d(8, 4, 3, stride=2, padding=1)
        for m in (self.a, self.b):  # non-zero offsets: the sampling must be tested, not the grid
            nn.init.normal_(m.conv_offset.weight, std=0.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(image[None].float() / 255)))


def test_deform_conv_modules_run_in_stock_onnxruntime(tmp_path):
    net = _DCNNet().eval()
    path = tmp_path / "dcn.onnx"
    with torch.no_grad():
        from densenets.export.ops import onnx_export_mode

        with onnx_export_mode():
            torch.onnx.export(
                net,
                (example_image(24, 30),),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["image"],
                dynamic_axes={"image": {1: "h", 2: "w"}},
            )
    assert {op for d, op in _ops(path)} >= {"GridSample", "MatMul"}
    assert all(d in STANDARD for d, _ in _ops(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((24, 30), (17, 21)):
        image = example_image(*size, seed=2)
        with torch.no_grad():
            expected = net(image)
        got = torch.from_numpy(session.run(None, {"image": image.numpy()})[0])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_maps_to_onnx_roialign(tmp_path, aligned):
    class Pool(nn.Module):
        def forward(self, x, rois):
            return roi_align(x, rois, (3, 3), spatial_scale=0.5, sampling_ratio=0, aligned=aligned)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 12, 16, generator=g)
    xy = torch.rand(5, 2, generator=g) * 20
    rois = torch.cat(
        (torch.tensor([[0.0], [1], [0], [1], [0]]), xy, xy + torch.rand(5, 2, generator=g) * 10 + 0.3), 1
    )
    path = tmp_path / "roi.onnx"
    from densenets.export.ops import onnx_export_mode

    with onnx_export_mode():
        torch.onnx.export(
            Pool(), (x, rois), str(path), dynamo=False, opset_version=17, input_names=["x", "rois"]
        )
    assert ("", "RoiAlign") in _ops(path)
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy(), "rois": rois.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), Pool()(x, rois), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_dcn_faster_rcnn_runs_in_stock_onnxruntime(tmp_path):
    """The DCN config (R50, DCNv2 in res3-res5), random weights: GridSample, RoiAlign,
    NonMaxSuppression, no custom domain, same detections as PyTorch."""
    from densenets.config import MODELS, build, load_config

    cfg = load_config(
        "configs/detection/faster_rcnn_dcn_r50_fpn_1x_coco.yaml", ["model.backbone.weights=null"]
    )
    torch.manual_seed(0)
    model = build(cfg.model, MODELS).eval()
    path = tmp_path / "dcn.onnx"
    export_onnx(wrap_model(model), example_image(160, 192), path)
    ops = _ops(path)
    assert all(d in STANDARD for d, _ in ops)
    assert {"GridSample", "RoiAlign", "NonMaxSuppression"} <= {op for _, op in ops}
    image = example_image(160, 192, seed=1)
    out = [torch.from_numpy(o) for o in ort.InferenceSession(str(path)).run(None, {"image": image.numpy()})]
    with torch.no_grad():
        compare("detection", model([{"image": image}])[0], out, max_detections(model))


def _tiny_faster_rcnn():
    from densenets.config import MODELS, build, load_config

    cfg = load_config("configs/demo/faster_rcnn_r18_fpn_shapes.yaml")
    torch.manual_seed(0)
    return cfg, build(cfg.model, MODELS).eval()


@pytest.mark.slow
def test_torch_export_round_trip_faster_rcnn(tmp_path):
    """The .pt2 keeps densenets::roi_align as a custom op, loads back, and gives the
    model's detections on two sizes (dynamic)."""
    from densenets.export import load_program, run_program

    _, model = _tiny_faster_rcnn()
    path = tmp_path / "model.pt2"
    program = export_program(wrap_model(model), example_image(170, 190), path)
    assert any("densenets.roi_align" in str(n.target) for n in program.graph.nodes)
    loaded = load_program(path)
    for i, size in enumerate(((170, 190), (201, 163))):
        image = example_image(*size, seed=i + 1)
        with torch.no_grad():
            compare(
                "detection", model([{"image": image}])[0], run_program(loaded, image), max_detections(model)
            )


@pytest.mark.slow
def test_torch_export_round_trip_segmentation(tmp_path):
    from densenets.config import MODELS, build, load_config
    from densenets.export import load_program, run_program

    cfg = load_config("configs/demo/fcn_r18_d8_shapes_city.yaml")
    torch.manual_seed(0)
    model = build(cfg.model, MODELS).eval()
    path = tmp_path / "model.pt2"
    export_program(wrap_model(model), example_image(67, 91), path)
    loaded = load_program(path)
    for i, size in enumerate(((67, 91), (80, 59))):
        image = example_image(*size, seed=i + 1)
        with torch.no_grad():
            compare("segmentation", model([{"image": image}])[0], run_program(loaded, image))


@pytest.mark.slow
def test_predictor_runs_an_onnx_file_like_the_model(tmp_path):
    """Predictor with an .onnx file: the same prediction dict as with the PyTorch model,
    boxes rescaled to the original image by the test transform, and it draws."""
    from densenets.engine.predictor import Predictor

    cfg, model = _tiny_faster_rcnn()
    path = tmp_path / "model.onnx"
    model.roi_heads.box_predictor.score_thresh = 0.0
    export_onnx(wrap_model(model), example_image(192, 192), path)
    photo = np.ascontiguousarray(np.asarray(example_image(150, 220, seed=4).permute(1, 2, 0)))
    torch_pred = Predictor(cfg, None)
    torch_pred.model = model
    onnx_pred = Predictor(cfg, str(path))
    expected, got = torch_pred(photo)["instances"], onnx_pred(photo)["instances"]
    assert len(got["boxes"]) == len(expected["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=1e-3, atol=1e-2)
    assert torch.equal(got["labels"], expected["labels"])
    assert onnx_pred.draw(photo, onnx_pred(photo)).shape == photo.shape


def test_infer_tool_runs_an_onnx_file(tmp_path):
    """tools/infer.py --weights model.onnx writes the same SR image as the model."""
    from densenets.config import MODELS, build, load_config
    from densenets.data import read_image
    from densenets.data.io import write_image
    from densenets.tools.infer import main

    config = "configs/demo/edsr_baseline_x2_photos.yaml"
    torch.manual_seed(0)
    model = build(load_config(config).model, MODELS).eval()
    export_onnx(wrap_model(model), example_image(24, 32), tmp_path / "sr.onnx")
    lr = np.asarray(example_image(20, 28, seed=5).permute(1, 2, 0)).copy()
    write_image(tmp_path / "in.png", lr)
    assert (
        main(
            [
                "--config",
                config,
                "--weights",
                str(tmp_path / "sr.onnx"),
                "--input",
                str(tmp_path / "in.png"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    with torch.no_grad():
        expected = model([{"lr": torch.from_numpy(lr).permute(2, 0, 1).contiguous()}])[0]["sr"]
    got = torch.from_numpy(read_image(tmp_path / "out" / "sr" / "in.png")).permute(2, 0, 1)
    assert (got.int() - expected.int()).abs().max() <= 1
    # Without the config, the file's output names tell the task, and the task EDSR's input key.
    from densenets.export.runtime import ExportedModel

    assert ExportedModel(tmp_path / "sr.onnx").input_key == "lr"
