"""Deformable DETR and DINO export: `ms_deform_attn` as GridSample in stock ONNX Runtime,
ONNX parity on two image sizes of one dynamic file, `torch.export` round trips that keep
`densenets.ms_deform_attn`, and `tools/export.py --check` (random weights, ResNet-18)."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch
from test_export_models import _export_and_compare, build_model
from torch import nn

from densenets.export import (
    example_image,
    export_program,
    load_program,
    onnx_export_mode,
    run_program,
    wrap_model,
)
from densenets.export.check import compare, max_detections
from densenets.export.deformable import DeformableDETRExport, level_shapes
from densenets.ops import ms_deform_attn
from densenets.ops.reference import ms_deform_attn_reference

DEFORMABLE_SMALL = (
    "model.backbone.depth=18",
    "model.neck.out_channels=64",
    "model.neck.num_groups=8",
    "model.transformer.nhead=4",
    "model.transformer.d_model=64",
    "model.transformer.dim_feedforward=128",
    "model.transformer.num_encoder_layers=1",
    "model.transformer.num_decoder_layers=2",
    "model.num_queries=20",
    "model.num_select=10",
)
DEFORMABLE = "configs/detection/deformable_detr_r50_50e_coco.yaml"
TWO_STAGE = "configs/detection/deformable_detr_r50_50e_coco_two_stage.yaml"  # with box refinement
DINO = "configs/detection/dino_4scale_r50_12e_coco.yaml"


class _Attention(nn.Module):
    """Two levels -> `ms_deform_attn` with sizes from shapes.

    x (Tensor[1, M*C, H, W]), y (Tensor[1, M*C, H', W']): the levels;
    locations (Tensor[1, Q, M, 2, P, 2]); weights (Tensor[1, Q, M, 2, P]).
    """

    heads = 2

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        levels = [x, y]
        value = torch.cat([lv.flatten(2).transpose(1, 2) for lv in levels], 1)  # (1, S, M*C)
        value = value.reshape(1, value.shape[1], self.heads, -1)
        shapes = level_shapes(levels)
        areas = shapes.prod(1)
        starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
        return ms_deform_attn(value, shapes, starts, locations, weights)


def _attention_inputs(h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 6, h, w, generator=g)
    y = torch.randn(1, 6, (h + 1) // 2, (w + 1) // 2, generator=g)
    locations = torch.rand(1, 5, 2, 2, 3, 2, generator=g) * 1.4 - 0.2  # some outside [0, 1]
    weights = torch.rand(1, 5, 2, 2, 3, generator=g)
    return x, y, locations, weights


def _reference_attention(x, y, locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    levels = [x, y]
    value = torch.cat([lv.flatten(2).transpose(1, 2) for lv in levels], 1).reshape(1, -1, 2, 3)
    shapes = torch.tensor([lv.shape[-2:] for lv in levels])
    starts = torch.tensor([0, shapes[0].prod().item()])
    return ms_deform_attn_reference(value, shapes, starts, locations, weights)


def test_ms_deform_attn_onnx_is_grid_sample_and_matches_the_reference(tmp_path):
    """One dynamic file, two sizes; only standard ONNX ops (GridSample, no custom domain)."""
    path = tmp_path / "attn.onnx"
    names = ["x", "y", "locations", "weights"]

    with onnx_export_mode(), torch.no_grad():
        torch.onnx.export(
            _Attention(),
            _attention_inputs(9, 11, 0),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=names,
            output_names=["out"],
            dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h2", 3: "w2"}},
        )
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert sum(n.op_type == "GridSample" for n in graph.node) == 2  # one per level
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (h, w) in enumerate(((9, 11), (14, 7))):
        inputs = _attention_inputs(h, w, seed + 1)
        (out,) = session.run(None, {k: v.numpy() for k, v in zip(names, inputs)})
        torch.testing.assert_close(torch.from_numpy(out), _reference_attention(*inputs), rtol=1e-5, atol=1e-5)


def test_ms_deform_attn_stays_a_custom_op_in_torch_export():
    """The op and its fake kernel: a dynamic program keeps `densenets.ms_deform_attn` and
    gives the op's values on another size."""
    dims = [
        {2: torch.export.Dim(f"h{i}", min=2, max=64), 3: torch.export.Dim(f"w{i}", min=2, max=64)}
        for i in (1, 2)
    ]
    program = torch.export.export(
        _Attention(), _attention_inputs(9, 11, 0), dynamic_shapes=(*dims, None, None)
    )
    assert any("densenets.ms_deform_attn" in str(n.target) for n in program.graph.nodes)
    inputs = _attention_inputs(14, 7, 1)
    torch.testing.assert_close(program.module()(*inputs), _reference_attention(*inputs), rtol=1e-5, atol=1e-5)


def test_deformable_detr_two_sizes(tmp_path):
    model = build_model(DEFORMABLE, *DEFORMABLE_SMALL)
    assert isinstance(wrap_model(model), DeformableDETRExport)
    outputs = _export_and_compare(model, tmp_path)
    assert all(len(o[0]) == 10 for o in outputs)  # num_select detections, no NMS


def test_deformable_detr_two_stage_box_refine_two_sizes(tmp_path):
    _export_and_compare(build_model(TWO_STAGE, *DEFORMABLE_SMALL), tmp_path)


def test_dino_two_sizes(tmp_path):
    model = build_model(DINO, *DEFORMABLE_SMALL)
    assert isinstance(wrap_model(model), DeformableDETRExport)
    _export_and_compare(model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [DEFORMABLE, DINO])
def test_torch_export_round_trip(tmp_path, config):
    """The .pt2 keeps densenets::ms_deform_attn, loads back, and gives the model's
    detections on two sizes (dynamic)."""
    model = build_model(config, *DEFORMABLE_SMALL)
    path = tmp_path / "model.pt2"
    program = export_program(wrap_model(model), example_image(192, 224), path)
    assert any("densenets.ms_deform_attn" in str(n.target) for n in program.graph.nodes)
    loaded = load_program(path)
    for i, size in enumerate(((192, 224), (200, 170))):
        image = example_image(*size, seed=i + 1)
        with torch.no_grad():
            compare(
                "detection", model([{"image": image}])[0], run_program(loaded, image), max_detections(model)
            )


@pytest.mark.slow
@pytest.mark.parametrize("config", [DEFORMABLE, DINO])
def test_export_tool_check(tmp_path, config, capsys):
    """tools/export.py --check on the photo (random weights, dynamic ONNX)."""
    from densenets.tools.export import main

    out = tmp_path / "model.onnx"
    argv = ["--config", config, "--weights", "none", "--format", "onnx", "--output", str(out), "--dynamic"]
    assert main([*argv, "--check", *DEFORMABLE_SMALL, "model.backbone.weights=null"]) == 0
    assert "check passed" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "queries"),
    [(DEFORMABLE, 150), (DINO, 200)],
)
def test_hundred_detections_from_thousands_of_candidates(tmp_path, config, queries):
    """num_select 100 of queries x 80 (query, class) candidates, on two sizes of one
    dynamic file; DINO's sizes keep S >= num_queries (256 and 251 level pixels)."""
    small = [o for o in DEFORMABLE_SMALL if not o.startswith(("model.num_queries", "model.num_select"))]
    model = build_model(config, *small, f"model.num_queries={queries}", "model.num_select=100")
    outputs = _export_and_compare(model, tmp_path, sizes=((96, 128), (112, 100)))
    assert all(len(o[0]) == 100 and len(o[1]) == 100 for o in outputs)
    assert all(o[2].dtype == torch.int64 and bool((o[0][:, 2:] >= o[0][:, :2]).all()) for o in outputs)
