"""CPU latency of exported models: ONNX Runtime vs PyTorch eager vs `torch.compile`, in one
run, on the export wrappers (uint8 image in, postprocessed outputs out; random weights,
which do not change the work except for the number of detections).

    python benchmarks/bench_export.py                  # the three models, 3 timed runs each
    python benchmarks/bench_export.py --models EDSR-baseline-x2 --repeats 5
    python benchmarks/bench_export.py --no-compile     # skip torch.compile (slow to compile)

Models: Faster R-CNN R50-FPN at 800 x 1067, DeepLabV3 R50-D8 at 1024 x 2048, EDSR-baseline
x2 at 512 x 512. Median of `--repeats` calls after one warm-up; ratios are time / eager.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, write_section  # noqa: E402

import densenets  # noqa: E402
from densenets.config import MODELS, build, load_config  # noqa: E402
from densenets.export import example_image, export_onnx, wrap_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS_TO_TIME = {
    "FasterRCNN-R50-FPN": ("configs/detection/faster_rcnn_r50_fpn_1x_coco.yaml", (800, 1067)),
    "DeepLabV3-R50-D8": ("configs/segmentation/deeplabv3_r50_d8_cityscapes_512x1024_80k.yaml", (1024, 2048)),
    "EDSR-baseline-x2": ("configs/super_resolution/edsr_baseline_x2_div2k.yaml", (512, 512)),
}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_model(name: str, repeats: int, compile_: bool) -> dict[str, float]:
    import onnxruntime as ort

    config, size = MODELS_TO_TIME[name]
    overrides = [] if "EDSR" in name else ["model.backbone.weights=null"]
    cfg = load_config(ROOT / config, overrides)
    torch.manual_seed(0)
    wrapper = wrap_model(build(cfg.model, MODELS).eval())
    image = example_image(*size)
    out = {}
    with torch.no_grad():
        out["eager"] = median_time(lambda: wrapper(image), repeats)
        if compile_:
            compiled = torch.compile(wrapper)
            out["compile"] = median_time(lambda: compiled(image), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(wrapper, image, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"image": image.numpy()}
        out["onnxruntime"] = median_time(lambda: session.run(None, feed), repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS_TO_TIME), choices=list(MODELS_TO_TIME))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    densenets.register_all()
    rows = []
    for name in args.models:
        t = time_model(name, args.repeats, not args.no_compile)
        size = "x".join(map(str, MODELS_TO_TIME[name][1]))
        compile_col = f"{t['compile']:.2f} s ({t['compile'] / t['eager']:.2f})" if "compile" in t else "—"
        rows.append(
            f"| {name} | {size} | {t['eager']:.2f} s | {compile_col} | "
            f"{t['onnxruntime']:.2f} s ({t['onnxruntime'] / t['eager']:.2f}) |"
        )
        print(rows[-1], flush=True)
    command = "python benchmarks/bench_export.py " + " ".join(sys.argv[1:])
    body = "\n".join(
        [
            "### Export: ONNX Runtime vs PyTorch (CPU latency per image)",
            "",
            f"Machine: {machine()}. Command: `{command.strip()}`. Median of {args.repeats} calls after "
            "a warm-up, on the export wrappers (pre/postprocessing included); ratio = time / eager, "
            "below 1.0 is faster. The machine is shared with other jobs: few repeats, noisy.",
            "",
            "| model | input | eager | torch.compile (ratio) | onnxruntime (ratio) |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        write_section("export", body)


if __name__ == "__main__":
    main()
