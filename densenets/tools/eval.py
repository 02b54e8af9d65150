#!/usr/bin/env python
"""Evaluate weights: `tools/eval.py --config FILE --weights W [--output DIR] [key=value ...]`.

Runs under torchrun too; every process evaluates its share and the results are gathered.
Without --weights the config's `infer.weights` is evaluated; with neither, the tool
refuses (`--weights none` evaluates the initial weights on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--weights",
        help="checkpoint to evaluate (EMA weights when it has them); 'none': the initial weights on purpose",
    )
    parser.add_argument("--output", help="where results go (default: runs/<config name>/eval)")
    parser.add_argument("--device", help="overrides train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    args = parser.parse_args(argv)
    import torch.distributed as dist  # after parsing: --help stays fast

    from densenets import register_all
    from densenets.checkpoint import CheckpointError
    from densenets.config import ConfigError, load_config
    from densenets.engine.launch import evaluate
    from densenets.engine.predictor import resolve_weights
    from densenets.utils import comm

    try:
        register_all()
        cfg = load_config(args.config, args.overrides)
        output = Path(args.output or Path("runs") / Path(args.config).stem / "eval")
        results = evaluate(cfg, resolve_weights(args.weights, cfg), output, device=args.device)
        main_process = comm.is_main_process()
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "metrics.json").write_text(json.dumps(results, indent=2))
        width = max((len(k) for k in results), default=0)
        for key, value in results.items():
            print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
