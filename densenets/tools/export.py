#!/usr/bin/env python
"""Export a model, pre- and postprocessing included, to ONNX or `torch.export`:
`tools/export.py --config FILE --weights W --format onnx|torch-export --output F
[--input-size H W] [--dynamic] [--opset N] [--check] [key=value ...]`.

The file takes one uint8 image `image` [3, H, W] RGB (the image the model sees: after
the config's test transform) and returns `boxes`, `scores`, `labels` (detection, in the
image's pixels), `sem_seg` (segmentation: int64 [H, W] classes) or `sr` (uint8 image).
`--check` runs the file on a real photo (scikit-image's astronaut) and compares it with
the PyTorch model; it exits with 1 and one line when they differ. docs/export.md has
the details (what is dynamic, known limits, running the file).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--weights",
        help="checkpoint; 'none' exports the initial weights (seeded: the same every run) on purpose",
    )
    parser.add_argument("--format", required=True, choices=("onnx", "torch-export"), help="output format")
    parser.add_argument("--output", required=True, help="output file (.onnx, or .pt2 for torch-export)")
    parser.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="example image size to trace with "
        "(default: the photo --check uses, after the config's test transform)",
    )
    parser.add_argument("--dynamic", action="store_true", help="symbolic image height and width")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, at least 16)")
    parser.add_argument(
        "--check", action="store_true", help="compare the file with the model on a real photo"
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from densenets import register_all
    from densenets.checkpoint import CheckpointError
    from densenets.config import ConfigError, load_config
    from densenets.engine.predictor import Predictor, resolve_weights
    from densenets.export import DEFAULT_OPSET, example_image, export_onnx, export_program, wrap_model
    from densenets.export.check import CheckError, compare, max_detections, photo
    from densenets.export.runtime import ExportedModel

    try:
        register_all()
        cfg = load_config(args.config, args.overrides)
        weights = resolve_weights(args.weights, cfg)
        if weights is None:
            torch.manual_seed(0)  # --weights none: the same initial weights, the same check, every run
        predictor = Predictor(cfg, weights, "cpu")
        wrapper = wrap_model(predictor.model)
    except (ConfigError, CheckpointError, OSError, TypeError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    key = predictor.input_key
    item = predictor.prepare(photo())
    image = item[key] if args.input_size is None else example_image(*args.input_size)
    start = time.perf_counter()
    try:
        if args.format == "onnx":
            export_onnx(wrapper, image, args.output, args.dynamic, args.opset or DEFAULT_OPSET)
        else:
            export_program(wrapper, image, args.output, args.dynamic)
    except Exception as e:  # noqa: BLE001 - one line naming the model and the step
        print(
            f"error: exporting {type(predictor.model).__name__} to {args.format} failed: {e}", file=sys.stderr
        )
        return 1
    print(
        f"wrote {args.output} ({args.format}, {'dynamic' if args.dynamic else 'static'} "
        f"{'H x W' if args.dynamic else 'x'.join(map(str, image.shape[-2:]))}) in {time.perf_counter() - start:.1f} s"
    )
    if not args.check:
        return 0
    if not args.dynamic and tuple(image.shape) != tuple(item[key].shape):
        print(
            f"check: the file is static at {tuple(image.shape[-2:])}; the photo is {tuple(item[key].shape[-2:])} "
            "after the test transform: export with --dynamic or that --input-size",
            file=sys.stderr,
        )
        return 1
    compare_outputs = partial(compare, max_detections=max_detections(predictor.model))
    return _check(
        predictor, ExportedModel(args.output, key), item, wrapper.task, compare_outputs, CheckError, torch
    )


def _check(predictor, exported, item, task, compare, CheckError, torch) -> int:  # noqa: N803
    """The model (its single-pass test mode) and the file on the same prepared photo;
    `compare(task, reference, outputs)` raises `CheckError`."""
    model = predictor.model
    item = {**item, "orig_size": tuple(item[predictor.input_key].shape[-2:])}
    saved = _single_pass(model)
    try:
        with torch.no_grad():
            reference = model([item])[0]
    finally:
        _restore(model, saved)
    try:
        summary = compare(task, reference, exported.run(item[predictor.input_key]))
    except CheckError as e:
        print(f"check FAILED: {exported.path}: {e}", file=sys.stderr)
        return 1
    print(f"check passed: {summary}")
    return 0


def _single_pass(model):
    """Turn off what the file does not export (sliding windows, multi-scale/flip, SR tiles)."""
    saved = {}
    if hasattr(model, "inference_cfg"):
        from densenets.modeling.segmentation.encoder_decoder import SegInference

        saved["inference_cfg"] = model.inference_cfg
        model.inference_cfg = SegInference()
    for name, off in (("tile_size", None), ("self_ensemble", False)):
        if hasattr(model, name):
            saved[name] = getattr(model, name)
            setattr(model, name, off)
    return saved


def _restore(model, saved) -> None:
    for name, value in saved.items():
        setattr(model, name, value)


if __name__ == "__main__":
    sys.exit(main())
