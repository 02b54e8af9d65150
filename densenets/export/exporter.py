"""Write an export wrapper to an ONNX file or a `torch.export` program (`.pt2`).

ONNX goes through the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`):
with this torch it exports every model here in seconds, maps our ops through symbolic
functions (ops.py) and keeps data-dependent sizes (NMS, score thresholds) as ONNX
`NonZero`/`NonMaxSuppression` outputs. docs/export.md says why not the dynamo exporter.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .ops import MIN_OPSET, onnx_export_mode
from .wrappers import OUTPUT_NAMES

__all__ = ["DEFAULT_OPSET", "export_onnx", "export_program", "load_program", "example_image"]

DEFAULT_OPSET = 17
PROGRAM_MIN_SIZE = {
    "detection": 160,
    "segmentation": 32,
    "super_resolution": 8,
}  # torch.export's dynamic range


def example_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A uint8 Tensor[3, H, W] of smooth random colours to trace with."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, max(height // 16, 2), max(width // 16, 2)), generator=g) * 255
    return (
        torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0]
        .round()
        .to(torch.uint8)
    )


def export_onnx(
    wrapper: nn.Module,
    image: torch.Tensor,
    output: str | os.PathLike,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
) -> None:
    """Export `wrapper` (from `wrap_model`) traced on `image` (uint8 Tensor[3, H, W]).

    Args:
        dynamic: image height and width are symbolic (else fixed to the example's).
        opset: ONNX opset, at least 16 (GridSample, RoiAlign's half_pixel mode).
    """
    if opset < MIN_OPSET:
        raise ValueError(
            f"--opset: {opset} is too old; RoiAlign's half_pixel mode and GridSample need {MIN_OPSET}+"
        )
    names = list(OUTPUT_NAMES[wrapper.task])
    axes = None
    if dynamic:
        axes = {"image": {1: "height", 2: "width"}}
        if wrapper.task == "detection":
            axes.update({n: {0: "detections"} for n in names})
        elif wrapper.task == "segmentation":
            axes["sem_seg"] = {0: "height", 1: "width"}
        else:
            axes["sr"] = {1: "sr_height", 2: "sr_width"}
    with onnx_export_mode(), torch.no_grad(), warnings.catch_warnings():
        # Trace warnings name Python ints computed from sizes; those that matter are
        # caught by the two-size parity tests instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper.eval(),
            (image,),
            str(output),
            dynamo=False,
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def export_program(
    wrapper: nn.Module, image: torch.Tensor, output: str | os.PathLike, dynamic: bool = True
) -> torch.export.ExportedProgram:
    """`torch.export` the wrapper and save the program (`torch.export.save`, a .pt2 file).

    Our ops stay `densenets::roi_align` / `densenets::deform_conv2d` custom ops; a
    runtime loading the file needs `import densenets` to have their kernels.
    """
    shapes = None
    if dynamic:
        # A detector's coarsest level (stride 64) must keep 2+ cells at every size, or the
        # program specialises on broadcasting a 1-cell map: detectors take 160 px and up.
        low = PROGRAM_MIN_SIZE[wrapper.task]
        shapes = (
            {
                1: torch.export.Dim("height", min=low, max=8192),
                2: torch.export.Dim("width", min=low, max=8192),
            },
        )
    with torch.no_grad():
        program = torch.export.export(wrapper.eval(), (image,), dynamic_shapes=shapes, strict=False)
    torch.export.save(program, str(output))
    return program


def load_program(path: str | os.PathLike) -> torch.export.ExportedProgram:
    """Load a `.pt2` written by `export_program` (imports our ops first)."""
    import densenets.ops  # noqa: F401 - registers the densenets:: custom ops

    return torch.export.load(str(path))


def run_program(program: torch.export.ExportedProgram, image: torch.Tensor) -> Sequence[torch.Tensor]:
    """The outputs of an exported program on one uint8 image, as a tuple."""
    out = program.module()(image)
    return out if isinstance(out, (tuple, list)) else (out,)
