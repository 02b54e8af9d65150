"""Logging set-up: console on the main process (through tqdm, so progress bars stay
intact), a log file per process in the run directory."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

__all__ = ["setup_logger"]

_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


class _TqdmHandler(logging.StreamHandler):
    """Writes through `tqdm.write` so a running progress bar is redrawn below the line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logger(
    output_dir: str | os.PathLike | None = None, rank: int = 0, name: str = "densenets", level: int = logging.INFO
) -> logging.Logger:
    """Configure the `densenets` logger (idempotent).

    Args:
        output_dir: where `log.txt` (rank 0) or `log.rank{R}.txt` goes; None: no file.
        rank: this process's rank; only rank 0 logs to the console.
        name: the logger to configure.
        level: its level.

    Returns:
        The logger.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "_densenets", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FORMAT, datefmt="%m/%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if rank == 0:
        handlers.append(_TqdmHandler())
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        file_name = "log.txt" if rank == 0 else f"log.rank{rank}.txt"
        handlers.append(logging.FileHandler(Path(output_dir) / file_name))
    for h in handlers:
        h.setFormatter(fmt)
        h._densenets = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    return logger
