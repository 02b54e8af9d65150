#!/usr/bin/env python
"""Train a model: `tools/train.py --config FILE [--output DIR] [--resume] [key=value ...]`.

The same command runs on one process or under torchrun, e.g. two GPUs:
`torchrun --nproc_per_node 2 tools/train.py --config FILE`; `train.batch_size` is the
total over all processes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("--output", help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", action="store_true", help="continue exactly from OUTPUT/last.pth")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides train.device")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch.distributed as dist  # after parsing: --help stays fast

    from densenets.config import ConfigError, load_config
    from densenets.engine.checkpoint import CheckpointError
    from densenets.engine.launch import train
    from densenets.engine.trainer import NonFiniteLossError
    from densenets.utils import comm

    try:
        cfg = load_config(args.config, args.overrides)
        output = args.output or str(Path("runs") / Path(args.config).stem)
        trainer = train(cfg, output, device=args.device, resume=args.resume)
        main_process = comm.is_main_process()
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, NonFiniteLossError) else 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_process:
        print(f"done: {trainer.iter} iterations, run directory {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
