"""CPU latency of exported models: ONNX Runtime vs PyTorch eager vs `torch.compile`, in one
run, on the export wrappers (uint8 image in, postprocessed outputs out; random weights,
which do not change the work except for the number of detections).

    python benchmarks/bench_export.py                  # every model, 3 timed runs each
    python benchmarks/bench_export.py --models EDSR-baseline-x2 --repeats 5
    python benchmarks/bench_export.py --no-compile     # skip torch.compile (slow to compile)

Models: Faster R-CNN R50-FPN, Deformable DETR R50 and DINO-4scale R50 at 800 x 1067,
DeepLabV3 R50-D8 at 1024 x 2048, EDSR-baseline x2 at 512 x 512. Median of the timed calls
after one warm-up (the warm-up of torch.compile includes compiling); ratios are time /
eager. DeepLabV3 at 1024 x 2048 (about 2 TFLOP a call) is timed at most twice: one eager
call takes ~72 s on one thread of an idle AMD EPYC core (7-8 minutes on two cores loaded
~20), compiling it ~90 s; use --runtimes / --no-compile to split a run.
ONNX Runtime gets the same number of threads as PyTorch.
"""

from __future__ import annotations

import argparse
import gc
import os
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
MODELS_TO_TIME = {  # name: (config, input size, at most this many timed calls)
    "FasterRCNN-R50-FPN": ("configs/detection/faster_rcnn_r50_fpn_1x_coco.yaml", (800, 1067), None),
    "DeformableDETR-R50": ("configs/detection/deformable_detr_r50_50e_coco.yaml", (800, 1067), None),
    "DINO-4scale-R50": ("configs/detection/dino_4scale_r50_12e_coco.yaml", (800, 1067), None),
    "DeepLabV3-R50-D8": (
        "configs/segmentation/deeplabv3_r50_d8_cityscapes_512x1024_80k.yaml",
        (1024, 2048),
        2,
    ),
    "EDSR-baseline-x2": ("configs/super_resolution/edsr_baseline_x2_div2k.yaml", (512, 512), None),
}


def median_time(fn, repeats: int, label: str) -> float:
    """Median wall time of `repeats` calls of `fn` after one warm-up call."""
    start = time.perf_counter()
    fn()  # warm-up (and compilation)
    print(f"  {label}: warm-up {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(f"  {label}: {', '.join(f'{t:.2f}' for t in times)} s", file=sys.stderr, flush=True)
    return statistics.median(times)


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_model(
    name: str, repeats: int, compile_: bool, runtimes: tuple[str, ...] = ("eager", "onnxruntime")
) -> dict[str, float]:
    """Eager, compiled and ONNX Runtime latency (s) of one model, one runtime at a time."""
    config, size, _ = MODELS_TO_TIME[name]
    overrides = [] if "EDSR" in name else ["model.backbone.weights=null"]
    cfg = load_config(ROOT / config, overrides)
    torch.manual_seed(0)
    wrapper = wrap_model(build(cfg.model, MODELS).eval())
    image = example_image(*size)
    out = {}
    print(f"{name} {size[0]}x{size[1]}, {repeats} timed call(s)", file=sys.stderr, flush=True)
    with torch.no_grad():
        if "eager" in runtimes:
            out["eager"] = median_time(lambda: wrapper(image), repeats, "eager")
        if compile_:
            compiled = torch.compile(wrapper)
            out["compile"] = median_time(lambda: compiled(image), repeats, "torch.compile")
            del compiled
            torch._dynamo.reset()  # frees the compiled graphs before ONNX Runtime runs
            gc.collect()
    if "onnxruntime" not in runtimes:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(wrapper, image, path)
        session = onnx_session(path)
        feed = {"image": image.numpy()}
        out["onnxruntime"] = median_time(lambda: session.run(None, feed), repeats, "onnxruntime")
    return out


def row(name: str, t: dict[str, float]) -> str:
    size = "x".join(map(str, MODELS_TO_TIME[name][1]))
    compile_col = f"{t['compile']:.2f} s ({t['compile'] / t['eager']:.2f})" if "compile" in t else "—"
    return (
        f"| {name} | {size} | {t['repeats']} | {t['eager']:.2f} s | {compile_col} | "
        f"{t['onnxruntime']:.2f} s ({t['onnxruntime'] / t['eager']:.2f}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS_TO_TIME), choices=list(MODELS_TO_TIME))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--runtimes",
        nargs="+",
        default=["eager", "onnxruntime"],
        choices=["eager", "onnxruntime"],
        help="time only these (with --no-compile: e.g. ONNX Runtime alone; prints, no ratios)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args()
    densenets.register_all()
    load = [os.getloadavg()]
    rows = []
    for name in args.models:
        cap = MODELS_TO_TIME[name][2]
        repeats = min(args.repeats, cap) if cap else args.repeats
        t = time_model(name, repeats, not args.no_compile, tuple(args.runtimes))
        t["repeats"] = repeats
        if "eager" not in t or "onnxruntime" not in t:
            print(name, t, flush=True)
            continue
        rows.append(row(name, t))
        print(rows[-1], flush=True)
        load.append(os.getloadavg())
    command = "python benchmarks/bench_export.py " + " ".join(sys.argv[1:])
    loads = ", ".join(f"{a[0]:.1f}" for a in load)
    body = "\n".join(
        [
            "### Export: ONNX Runtime vs PyTorch (CPU latency per image)",
            "",
            f"Machine: {machine()}; shared with other jobs: 1-minute load average {loads} "
            f"(at the start and after each model). Command: `{command.strip()}`. Median of the timed "
            "calls after a warm-up, on the export wrappers (pre/postprocessing included, random "
            "weights); one thread count for all three runtimes; ratio = time / eager, below 1.0 is "
            "faster. Few calls on a loaded machine: the ratios are rough.",
            "",
            "| model | input | calls | eager | torch.compile (ratio) | onnxruntime (ratio) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        write_section("export", body)


if __name__ == "__main__":
    main()
