"""Export densenets models to ONNX and `torch.export` (docs/export.md).

wrapper = wrap_model(model)                      # uint8 image in, prediction out
export_onnx(wrapper, example_image(800, 1067), "model.onnx")
export_program(wrapper, example_image(800, 1067), "model.pt2")
"""

from .exporter import DEFAULT_OPSET, example_image, export_onnx, export_program, load_program, run_program
from .ops import deform_conv2d_grid_sample, onnx_export_mode, register_onnx_symbolics
from .wrappers import OUTPUT_NAMES, wrap_model

__all__ = [
    "DEFAULT_OPSET",
    "OUTPUT_NAMES",
    "deform_conv2d_grid_sample",
    "example_image",
    "export_onnx",
    "export_program",
    "load_program",
    "onnx_export_mode",
    "register_onnx_symbolics",
    "run_program",
    "wrap_model",
]
