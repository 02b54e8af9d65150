"""The run directory (`--output`): one trainer at a time, no silent mixing of two runs.

* `RunLock`: `OUTPUT/.lock` holds an exclusive POSIX record lock (`fcntl.lockf`) for as
  long as a trainer runs, with the holder's pid, host and start time written inside. The
  kernel drops the lock when the process ends in any way (SIGKILL included), so there is
  no stale lock to delete by hand; a second trainer refuses, naming the first.
* `prepare_run_dir`: a folder that already holds a run (checkpoints, metrics, logs,
  `config.yaml`) is refused unless the run is resumed (`--resume`) or started over
  (`--overwrite`, which deletes exactly those files; nothing else in the folder is
  touched). Temporary files of interrupted checkpoint writes are deleted.
"""

from __future__ import annotations

import datetime
import os
import shutil
import socket
from pathlib import Path

from densenets.checkpoint import remove_temporary_files
from densenets.config import ConfigError

__all__ = ["RunLock", "RunDirLockedError", "prepare_run_dir", "run_files"]

LOCK_NAME = ".lock"
# What a training run writes into its folder (files, and folders ending in "/").
_RUN_FILES = ("config.yaml", "last.pth", "best.pth", "metrics.jsonl", "metrics.png", "log.txt")
_RUN_GLOBS = ("model_*.pth", "log.rank*.txt", "metrics_*.png")
_RUN_DIRS = ("tb", "eval")


class RunDirLockedError(RuntimeError):
    """Another process is training into the same run directory."""


def run_files(folder: Path) -> list[Path]:
    """The files and folders of a previous training run inside `folder`."""
    found = [folder / n for n in (*_RUN_FILES, *_RUN_DIRS) if (folder / n).exists()]
    for pattern in _RUN_GLOBS:
        found += sorted(folder.glob(pattern))
    return found


class RunLock:
    """An exclusive lock on `folder/.lock`, held until `release()` or process exit."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunDirLockedError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # Windows: no POSIX locks; the check is skipped
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self.path.read_text().strip() or "an unknown process"
            raise RunDirLockedError(
                f"{self.path.parent}: another training process is writing into this run directory ({holder}); "
                "wait for it to finish or choose another --output"
            ) from None
        when = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {when}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays (harmless)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def prepare_run_dir(folder: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Check (and with `overwrite`, clear) the run directory before training starts.

    Raises:
        ConfigError: the folder holds a previous run and neither `resume` nor
            `overwrite` is set, or both are.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the run, or start it over)")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder}: exists and is not a folder")
    remove_temporary_files(folder)
    previous = run_files(folder) if folder.is_dir() else []
    if not previous or resume:
        return
    if not overwrite:
        shown = ", ".join(p.name for p in previous[:5]) + (", ..." if len(previous) > 5 else "")
        raise ConfigError(
            f"--output {folder}: already holds a training run ({shown}); continue it with --resume, "
            "start it over with --overwrite (deletes that run's checkpoints, metrics and logs), "
            "or choose another --output"
        )
    for p in previous:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
