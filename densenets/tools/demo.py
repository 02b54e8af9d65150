#!/usr/bin/env python
"""The whole job on bundled synthetic data, on a CPU, in minutes (`make demo`).

    python tools/demo.py --task detection|segmentation|super_resolution [--output DIR] [key=value ...]

1. generates the task's dataset under `datasets/synthetic/` (skipped when it is already
   there, made by the same generator with the same settings);
2. trains `configs/demo/<config>.yaml` with `tools/train.py` (progress bar, periodic
   evaluation: the COCO AP table / mIoU / PSNR-SSIM, and their curves in metrics.png);
3. runs `tools/infer.py` over the held-out images;
4. prints where the visualisations, predictions, metrics and loss curves are, and the
   commands that redo each step.

Paths are relative to the working directory (the repository root under `make`);
`key=value` overrides go to training and inference, as with every tool.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from densenets.config.paths import bundled_config

SYNTHETIC_ROOT = Path("datasets/synthetic")
_RUN_MARK = ".demo-run"


@dataclass(frozen=True)
class DemoTask:
    """One demo: its config, its dataset and what to show at the end."""

    config: str  # relative to the repository
    dataset: str  # folder under datasets/synthetic (the config's data roots point there)
    generator: Callable[..., dict]  # a densenets.data.synthetic generator: generator(root, **kwargs)
    generator_kwargs: dict[str, Any]
    infer_input: str  # held-out images, relative to the dataset folder
    metrics: tuple[str, ...]  # headline metrics, in print order
    cli_name: str  # datasets/make_synthetic.py's name for the dataset
    outputs: dict[str, str] = field(default_factory=dict)  # name -> path under infer/


TASK_NAMES = ("detection", "segmentation", "super_resolution")


@functools.cache
def demo_tasks() -> dict[str, DemoTask]:
    """The demos by name (built on first use: the generators import numpy and OpenCV,
    which `--help` must not)."""
    from densenets.data.synthetic import make_shapes, make_shapes_city, make_sr_set

    return {
        "detection": DemoTask(
            config="configs/demo/faster_rcnn_r18_fpn_shapes.yaml",
            dataset="shapes",
            generator=make_shapes,
            generator_kwargs={"num_train": 400, "num_val": 50, "image_size": 256},
            infer_input="val2017",
            metrics=("bbox/AP50", "bbox/AP", "bbox/AP75"),
            cli_name="shapes",
            outputs={"predictions (COCO results JSON)": "results.json", "visualisations (boxes)": "vis"},
        ),
        "segmentation": DemoTask(
            config="configs/demo/fcn_r18_d8_shapes_city.yaml",
            dataset="shapes_city",
            generator=make_shapes_city,
            generator_kwargs={"num_train": 100, "num_val": 20, "image_size": [192, 384]},
            infer_input="leftImg8bit/val",
            metrics=("sem_seg/mIoU", "sem_seg/pAcc"),
            cli_name="shapes-city",
            outputs={"predictions (class-index PNGs)": "labels", "visualisations (colour overlays)": "vis"},
        ),
        "super_resolution": DemoTask(
            config="configs/demo/edsr_baseline_x2_photos.yaml",
            dataset="sr",
            generator=make_sr_set,
            generator_kwargs={"num_train": 32, "hr_size": 192, "scales": [2]},
            infer_input="DIV2K_valid_LR_bicubic/X2",
            metrics=("sr/PSNR", "sr/SSIM"),
            cli_name="sr",
            outputs={"super-resolved images": "sr", "visualisations (bicubic | EDSR)": "vis"},
        ),
    }


def _load_tool(name: str) -> Callable[[list[str]], int]:
    """`main` of densenets.tools.<name>."""
    return importlib.import_module(f"densenets.tools.{name}").main


def prepare_dataset(task: DemoTask, kwargs: dict[str, Any], root: Path) -> bool:
    """Generate the dataset into `root` unless the generator already wrote an identical
    one there (its `generated.json` records the generator, arguments and code version).

    Returns:
        True when it was (re)generated, False when the existing one was kept.

    Raises:
        FileExistsError: `root` exists but was not written by the generator.
    """
    from densenets.data.synthetic import STAMP_FILE, describe

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    stamp_file = root / STAMP_FILE
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == describe(task.generator, **kwargs):
        return False
    if root.exists():
        if not stamp_file.is_file():
            raise FileExistsError(
                f"{root}: exists but was not made by the generator; move it away or pass --data-root"
            )
        shutil.rmtree(root)
    task.generator(root, **kwargs)
    return True


def _last_metrics(metrics_file: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """The last record of `metrics.jsonl` that holds the evaluation metrics."""
    found: dict[str, float] = {}
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            record = json.loads(line)
            if keys[0] in record:
                found = {k: v for k, v in record.items() if "/" in k}
    return found


def bicubic_baseline(config: str, overrides: list[str]) -> dict[str, float]:
    """PSNR/SSIM of MATLAB-bicubic upscaling on the config's validation set, measured
    exactly as the evaluator measures the model."""
    from densenets.config import DATASETS, build, load_config
    from densenets.data.imresize import imresize
    from densenets.evaluation.sr import SRMetrics

    cfg = load_config(config, overrides)
    dataset = build(cfg.data.val, DATASETS)
    metrics = SRMetrics(**{k: v for k, v in cfg.evaluation.items() if k != "type"})
    psnrs, ssims = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        lr, hr = item["lr"], item["hr"]
        scale = hr.shape[-2] // lr.shape[-2]
        up = imresize(lr.permute(1, 2, 0).numpy(), scale)
        m = metrics.measure(_chw(up), hr, scale)
        psnrs.append(m["PSNR"])
        ssims.append(m["SSIM"])
    return {"sr/PSNR": sum(psnrs) / len(psnrs), "sr/SSIM": sum(ssims) / len(ssims)}


def _chw(image):
    import torch

    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def _prepare_output(output: Path) -> None:
    if output.exists():
        if not (output / _RUN_MARK).is_file():
            raise FileExistsError(f"{output}: exists and is not a demo run; choose another --output")
        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / _RUN_MARK).write_text("made by tools/demo.py; deleted when the demo runs again\n")


def _weights(output: Path) -> Path:
    best = output / "best.pth"
    return best if best.is_file() else output / "last.pth"


def _report(
    task: DemoTask,
    output: Path,
    metrics: dict[str, float],
    baseline: dict[str, float] | None,
    commands: list[str],
    minutes: float,
) -> str:
    infer = output / "infer"
    lines = [f"\n=== demo finished in {minutes:.1f} min ===", "metrics on the held-out images:"]
    for key in task.metrics:
        if key in metrics:
            extra = f"   (bicubic: {baseline[key]:.4f})" if baseline and key in baseline else ""
            lines.append(f"  {key:<14} {metrics[key]:.4f}{extra}")
    coco_table = output / "eval" / "coco_summary.txt"  # written by COCOEvaluator
    if coco_table.is_file():
        lines += ["COCO box evaluation of the final model:", coco_table.read_text().rstrip()]
    rows = [
        ("metrics (JSON lines)", output / "metrics.jsonl"),
        ("loss and metric curves", output / "metrics.png"),
        ("weights", _weights(output)),
    ]
    if (output / "metrics_per_class.png").is_file():
        rows.insert(2, ("per-class metric curves", output / "metrics_per_class.png"))
    if (output / "eval").exists():  # evaluators that write files (COCO results, per-image SR metrics)
        rows.insert(2, ("evaluation outputs", output / "eval"))
    rows += [(name, infer / rel) for name, rel in task.outputs.items()]
    lines.append("files:")
    lines += [f"  {name:<34} {path}{'' if path.exists() else '  (missing)'}" for name, path in rows]
    lines.append("each step by hand:")
    lines += [f"  {c}" for c in commands]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--task", choices=sorted(TASK_NAMES), default="detection", help="which demo (default: detection)"
    )
    parser.add_argument("--output", help="run directory (default: runs/demo/<task>; replaced on each run)")
    parser.add_argument(
        "--data-root",
        default=str(SYNTHETIC_ROOT),
        help="where the synthetic datasets go (default: datasets/synthetic)",
    )
    parser.add_argument("--num-train", type=int, help="training images (default: the demo's)")
    parser.add_argument("--num-val", type=int, help="held-out images (detection, segmentation)")
    parser.add_argument("--image-size", type=_size, help="S or H,W (detection, segmentation)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value for training and inference")
    return parser.parse_args(argv)


def _size(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _generator_kwargs(task_name: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(demo_tasks()[task_name].generator_kwargs)
    if args.num_train is not None:
        kwargs["num_train"] = args.num_train
    if task_name == "super_resolution" and (args.num_val is not None or args.image_size is not None):
        raise ValueError("--num-val and --image-size apply to detection and segmentation only")
    if args.num_val is not None:
        kwargs["num_val"] = args.num_val
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size[0] if len(args.image_size) == 1 else list(args.image_size[:2])
    return kwargs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from densenets import register_all

    register_all()
    task = demo_tasks()[args.task]
    config = str(bundled_config(task.config))  # the checkout's configs/, or the installed package's
    output = Path(args.output or Path("runs") / "demo" / args.task)
    data_root = Path(args.data_root) / task.dataset
    overrides = list(args.overrides)
    if Path(args.data_root) != SYNTHETIC_ROOT:
        overrides += _data_root_overrides(args.task, data_root)
    start = time.perf_counter()
    try:
        kwargs = _generator_kwargs(args.task, args)
        print(f"[1/3] dataset {data_root}", flush=True)
        made = prepare_dataset(task, kwargs, data_root)
        print(f"      {'generated' if made else 'already there, kept'} ({time.perf_counter() - start:.0f} s)")
        _prepare_output(output)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    train_args = ["--config", config, "--output", str(output), *overrides]
    print(f"[2/3] training {task.config} -> {output}", flush=True)
    rc = _load_tool("train")(train_args)
    if rc != 0:
        print(f"error: training failed (exit code {rc})", file=sys.stderr)
        return rc
    metrics = _last_metrics(output / "metrics.jsonl", task.metrics)
    baseline = bicubic_baseline(config, overrides) if args.task == "super_resolution" else None

    weights = _weights(output)
    infer_args = [
        "--config",
        config,
        "--weights",
        str(weights),
        "--input",
        str(data_root / task.infer_input),
        "--output",
        str(output / "infer"),
        *overrides,
    ]
    print(f"[3/3] inference on {data_root / task.infer_input}", flush=True)
    rc = _load_tool("infer")(infer_args)
    if rc != 0:
        print(f"error: inference failed (exit code {rc})", file=sys.stderr)
        return rc

    cli_kwargs = " ".join(_cli_flags(kwargs))
    commands = [
        f"python datasets/make_synthetic.py {task.cli_name} --root {data_root} {cli_kwargs}",
        f"python tools/train.py --config {task.config} --output {output} {' '.join(overrides)}".rstrip(),
        f"python tools/eval.py --config {task.config} --weights {weights} {' '.join(overrides)}".rstrip(),
        "python tools/infer.py " + " ".join(infer_args[:1] + [task.config] + infer_args[2:]),
    ]
    summary = _report(task, output, metrics, baseline, commands, (time.perf_counter() - start) / 60)
    (output / "demo_summary.txt").write_text(summary.lstrip() + "\n")
    print(summary)
    headline = metrics.get(task.metrics[0])
    return 0 if headline is not None and math.isfinite(headline) else 1


def _cli_flags(kwargs: dict[str, Any]) -> list[str]:
    flags = []
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        flags.append(f"--{key.replace('_', '-')} {value}")
    return flags


def _data_root_overrides(task_name: str, data_root: Path) -> list[str]:
    """Point the demo config at a dataset outside datasets/synthetic."""
    if task_name == "detection":
        return [
            f"data.train.root={data_root / 'train2017'}",
            f"data.train.ann_file={data_root / 'annotations' / 'instances_train2017.json'}",
            f"data.val.root={data_root / 'val2017'}",
            f"data.val.ann_file={data_root / 'annotations' / 'instances_val2017.json'}",
        ]
    return [f"data.train.root={data_root}", f"data.val.root={data_root}"]


if __name__ == "__main__":
    sys.exit(main())
