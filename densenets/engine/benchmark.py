"""Latency, throughput, peak memory and compute of a model built from a config, on
synthetic inputs (what `tools/benchmark.py` prints).

Inference runs in eval mode without gradients; a training step is forward, backward and
the config's optimiser step (with `train.amp`). Compute is one image's inference counted
by `torch.utils.flop_counter` (operators without a FLOP formula, such as NMS or
RoIAlign, count as zero): ``flops_per_image`` = 2 x ``macs_per_image``.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from densenets.config import MODELS, build
from densenets.modeling.meta_arch import input_key_of

from .device import resolve_device
from .launch import get_class_names
from .optim import build_optimizer
from .schema import parse_section

__all__ = ["benchmark"]


def _inputs(n: int, size: tuple[int, int], key: str, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [
        {
            key: torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
            "orig_size": (h, w),
            "image_id": i,
            "file_name": f"synthetic_{i}.png",
        }
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
            item["instances"] = {
                "boxes": torch.cat([xy, xy + wh], 1),
                "labels": torch.randint(0, num_classes, (8,), generator=g),
            }
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


def benchmark(
    cfg, size: tuple[int, int], batch: int, warmup: int, repeats: int, device: str, train: bool
) -> list[dict]:
    dev = resolve_device(device)
    tcfg = parse_section("train", {**(cfg.get("train") or {}), "max_iter": 1, "epochs": None})
    model = build(cfg.model, MODELS).to(dev)
    rows = []

    model.eval()
    inputs = _inputs(batch, size, input_key_of(model))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            prediction = model(inputs[:1])[0]
        flops = counter.get_total_flops()
        sec, peak = _time(lambda: model(inputs), dev, warmup, repeats)
    rows.append(
        {
            "mode": "inference",
            "batch": batch,
            "latency_ms": sec * 1e3,
            "images_per_s": batch / sec,
            "peak_mem_mib": peak,
            "flops_per_image": int(flops),
            "macs_per_image": int(flops) // 2,
        }
    )
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
    rows.append(
        {
            "mode": f"train step{' (' + tcfg.amp + ')' if tcfg.amp else ''}",
            "batch": batch,
            "latency_ms": sec * 1e3,
            "images_per_s": batch / sec,
            "peak_mem_mib": peak,
            "flops_per_image": None,
            "macs_per_image": None,
        }
    )
    return rows
