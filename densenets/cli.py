"""The `densenets` command: `densenets COMMAND [ARGS]` runs `densenets.tools.<module>.main(ARGS)`,
with the same arguments as `tools/<module>.py` in a checkout (`densenets COMMAND --help`).

Also `python -m densenets COMMAND [ARGS]`, and under torchrun:
`torchrun --nproc-per-node 8 -m densenets train --config FILE`.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["COMMANDS", "main"]


class Command(NamedTuple):
    module: str  # densenets.tools.<module>
    summary: str


# One line per command; the tool's module is imported only when its command runs.
COMMANDS: dict[str, Command] = {
    "train": Command("train", "train a model from a config (one process or under torchrun)"),
    "eval": Command("eval", "evaluate weights on a config's validation set"),
    "infer": Command("infer", "run a model on an image, a folder or a glob; write pictures and results"),
    "export": Command("export", "export a model with pre/postprocessing to ONNX or torch.export"),
    "benchmark": Command("benchmark", "time a model: latency, throughput, peak memory, FLOPs"),
    "convert": Command("convert_checkpoint", "convert a foreign checkpoint (torchvision, detectron2, ...)"),
    "print-config": Command("print_config", "print a config merged with its _base_ files and overrides"),
    "plot-metrics": Command("plot_metrics", "draw a run's loss, LR and metric curves"),
    "demo": Command("demo", "train, evaluate and infer on generated data on a CPU, in minutes"),
}


def usage(prog: str) -> str:
    """The command list printed by `densenets --help`."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: {prog} COMMAND [ARGS ...]",
        "",
        "commands (`" + prog + " COMMAND --help` lists a command's arguments):",
        *(f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()),
        "",
        "Configs: `--config configs/<task>/<name>.yaml` is read from the current folder when it",
        "exists there, else from the configs installed with densenets.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str = "densenets") -> int:
    """Run `densenets COMMAND ARGS`.

    Args:
        argv: the arguments after the program name (default: sys.argv[1:]).
        prog: the program name shown in usage lines.

    Returns:
        The command's exit code; 2 for an unknown or missing command.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"densenets {version('densenets')}")
        except PackageNotFoundError:
            print("densenets (not installed: running from a source tree)")
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        guess = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {guess[0]}?" if guess else f"; one of {', '.join(COMMANDS)}"
        print(f"{prog}: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    tool = importlib.import_module(f"densenets.tools.{COMMANDS[name].module}")
    saved = sys.argv
    sys.argv = [f"{prog} {name}", *args]  # argparse's usage line reads `densenets train ...`
    try:
        return tool.main(args)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
