#!/usr/bin/env python
"""Train a model: `tools/train.py --config FILE [--output DIR] [--resume | --overwrite |
--finetune W] [key=value ...]`.

The same command runs on one process or under torchrun, e.g. two GPUs:
`torchrun --nproc_per_node 2 tools/train.py --config FILE`; `train.batch_size` is the
total over all processes.

Run directories: a folder that holds a run is continued with `--resume` (exactly as it
was: a config that changes the optimiser, schedule, model or data augmentation is
refused, listing the differences) or started over with `--overwrite`; `--finetune W`
starts a new schedule from the weights of W. Ctrl-C / SIGTERM stop after the current
step and write `last.pth`; `--resume` continues from there.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("--output", help="run directory (default: runs/<config name>)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUTPUT exactly from OUTPUT/last.pth (or, if that is corrupt, "
        "from the newest intact OUTPUT/model_*.pth)",
    )
    start.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an OUTPUT that holds a run (deletes its checkpoints, metrics and logs)",
    )
    parser.add_argument(
        "--finetune",
        metavar="WEIGHTS",
        help="start a new schedule from the model weights of WEIGHTS (same as train.weights=WEIGHTS)",
    )
    parser.add_argument("--device", help="overrides train.device: auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch.distributed as dist  # after parsing: --help stays fast

    from densenets import register_all
    from densenets.checkpoint import CheckpointError, NonFiniteError
    from densenets.config import ConfigError, load_config
    from densenets.engine.config_check import check_config
    from densenets.engine.launch import TrainingInterrupted, train
    from densenets.engine.run_dir import RunDirLockedError
    from densenets.utils import comm

    output = args.output or str(Path("runs") / Path(args.config).stem)
    try:
        if args.finetune and args.resume:
            raise ConfigError("--finetune starts a new run and --resume continues one: choose one")
        overrides = list(args.overrides) + ([f"train.weights={args.finetune}"] if args.finetune else [])
        register_all()
        cfg = load_config(args.config, overrides)
        check_config(cfg)
        trainer = train(cfg, output, device=args.device, resume=args.resume, overwrite=args.overwrite)
        main_process = comm.is_main_process()
    except TrainingInterrupted as e:
        if comm.is_main_process():
            print(f"{e}; continue with --resume --output {output}", file=sys.stderr)
        return (
            128 + int(getattr(signal, e.signal_name, signal.SIGINT))
            if e.signal_name.startswith("SIG")
            else 130
        )
    except KeyboardInterrupt:
        print(
            "interrupted (second signal): not saved; --resume continues from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except (ConfigError, CheckpointError, FileNotFoundError, RunDirLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: no space left on device: {e.filename or output}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if main_process:
        print(f"done: {trainer.iter} iterations, run directory {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
