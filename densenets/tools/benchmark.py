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
import json
import sys

DEFAULT_SIZE = (512, 512)


def format_table(rows: list[dict], title: str) -> str:
    head = (
        "| mode | batch | latency (ms, median) | images/s | peak memory (MiB) | GFLOPs/image (2 x MACs) "
        "| GMACs/image |"
    )
    lines = [title, "", head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        gf, gm = (
            f"{r[k] / 1e9:.2f}" if r.get(k) is not None else "—"
            for k in ("flops_per_image", "macs_per_image")
        )
        lines.append(
            f"| {r['mode']} | {r['batch']} | {r['latency_ms']:.1f} | {r['images_per_s']:.2f} | "
            f"{r['peak_mem_mib']:.0f} | {gf} | {gm} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: infer.input_size)"
    )
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed runs; the median is reported (default: 10)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N or mps"
    )
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    args = parser.parse_args(argv)
    import torch  # after parsing: --help stays fast

    from densenets import register_all
    from densenets.config import ConfigError, load_config
    from densenets.engine.benchmark import benchmark
    from densenets.engine.device import resolve_device
    from densenets.engine.schema import parse_section

    try:
        register_all()
        cfg = load_config(args.config, args.overrides)
        infer = parse_section("infer", cfg.get("infer"))
        dev = resolve_device(args.device)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = tuple(args.size or infer.input_size or DEFAULT_SIZE)
    rows = benchmark(cfg, size, args.batch, args.warmup, args.repeats, args.device, not args.no_train)
    name = (
        torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(format_table(rows, f"{cfg.model.type} at {size[0]}x{size[1]} on {name}, torch {torch.__version__}"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"model": cfg.model.type, "size": list(size), "device": name, "rows": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
