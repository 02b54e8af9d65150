#!/usr/bin/env python
"""Time a model: `tools/benchmark.py --config FILE [--size H W] [--batch N] [key=value ...]`.

Inference (eval mode, no grad) and training steps (forward, backward, optimiser step,
with the config's `train.amp` and optimiser) on synthetic inputs of `infer.input_size`
(or `--size`): median latency over `--repeats` after `--warmup` runs, throughput in
images/s, peak memory (GPU: allocated by torch; CPU: the process's peak RSS) and the
compute of one image's inference (`torch.utils.flop_counter`; operators without a FLOP
formula, such as NMS or RoIAlign, count as zero), in two units: GFLOPs = 2 x
multiply-adds, and GMACs = multiply-adds, the number detectron2 and mmdet (fvcore,
mmcv) print as "FLOPs". Prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from densenets.config import MODELS, ConfigError, build, load_config
from densenets.engine.launch import get_class_names, resolve_device
from densenets.engine.optim import build_optimizer
from densenets.engine.schema import parse_section

DEFAULT_SIZE = (512, 512)


def _inputs(n: int, size: tuple[int, int], key: str, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [
        {key: torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "orig_size": (h, w),
         "image_id": i, "file_name": f"synthetic_{i}.png"}
        for i in range(n)
    ]


def _add_targets(batch: list[dict], prediction: dict, num_classes: int) -> None:
    """Synthetic training targets shaped like the model's own predictions."""
    g = torch.Generator().manual_seed(1)
    for item in batch:
        h, w = item["orig_size"]
        if "instances" in prediction:
            xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
            wh = (torch.rand(8, 2, generator=g) * 0.25 + 0.05) * torch.tensor([w, h])
            item["instances"] = {"boxes": torch.cat([xy, xy + wh], 1),
                                 "labels": torch.randint(0, num_classes, (8,), generator=g)}
        elif "sem_seg" in prediction:
            item["sem_seg"] = torch.randint(0, prediction["sem_seg"].shape[0], (h, w), generator=g)
        elif "sr" in prediction:
            item["hr"] = torch.randint(0, 256, tuple(prediction["sr"].shape), generator=g, dtype=torch.uint8)
        else:
            raise ValueError(f"cannot make training targets for predictions with keys {sorted(prediction)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """(median seconds per call, peak memory in MiB during the timed calls)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times), peak


def benchmark(cfg, size: tuple[int, int], batch: int, warmup: int, repeats: int, device: str, train: bool) -> list[dict]:
    dev = resolve_device(device)
    infer = parse_section("infer", cfg.get("infer"))
    tcfg = parse_section("train", {**(cfg.get("train") or {}), "max_iter": 1, "epochs": None})
    model = build(cfg.model, MODELS).to(dev)
    rows = []

    model.eval()
    inputs = _inputs(batch, size, infer.input_key)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            prediction = model(inputs[:1])[0]
        flops = counter.get_total_flops()
        sec, peak = _time(lambda: model(inputs), dev, warmup, repeats)
    rows.append({"mode": "inference", "batch": batch, "latency_ms": sec * 1e3, "images_per_s": batch / sec,
                 "peak_mem_mib": peak, "flops_per_image": int(flops), "macs_per_image": int(flops) // 2})
    if not train:
        return rows

    model.train()
    _add_targets(inputs, prediction, len(get_class_names(cfg) or [None]))
    optimizer = build_optimizer(model, tcfg.optimizer)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(tcfg.amp or "")
    scaler = torch.amp.GradScaler(dev.type) if tcfg.amp == "float16" else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = sum(model(inputs).values())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    sec, peak = _time(step, dev, warmup, repeats)
    rows.append({"mode": f"train step{' (' + tcfg.amp + ')' if tcfg.amp else ''}", "batch": batch,
                 "latency_ms": sec * 1e3, "images_per_s": batch / sec, "peak_mem_mib": peak, "flops_per_image": None,
                 "macs_per_image": None})
    return rows


def format_table(rows: list[dict], title: str) -> str:
    head = (
        "| mode | batch | latency (ms, median) | images/s | peak memory (MiB) | GFLOPs/image (2 x MACs) "
        "| GMACs/image |"
    )
    lines = [title, "", head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        gf, gm = (f"{r[k] / 1e9:.2f}" if r.get(k) is not None else "—" for k in ("flops_per_image", "macs_per_image"))
        lines.append(f"| {r['mode']} | {r['batch']} | {r['latency_ms']:.1f} | {r['images_per_s']:.2f} | "
                     f"{r['peak_mem_mib']:.0f} | {gf} | {gm} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: infer.input_size)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        infer = parse_section("infer", cfg.get("infer"))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = tuple(args.size or infer.input_size or DEFAULT_SIZE)
    rows = benchmark(cfg, size, args.batch, args.warmup, args.repeats, args.device, not args.no_train)
    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(format_table(rows, f"{cfg.model.type} at {size[0]}x{size[1]} on {name}, torch {torch.__version__}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": cfg.model.type, "size": list(size), "device": name, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
