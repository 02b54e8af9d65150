"""Checkpoints: atomic saves, rotation, weight loading that lists mismatches, RNG state.

A training checkpoint is a dict that `torch.load(weights_only=True)` reads: tensors,
numbers, strings, lists and dicts only (numpy's RNG state is stored as a tensor).

    model, optimizer, scheduler, scaler, ema   state dicts (scaler/ema may be None)
    iteration                                   optimiser steps done
    rng                                         per-process python/numpy/torch(/cuda) states
    best                                        {"metric": str, "value": float} or None
    config                                      the merged config as YAML text
    checksum                                    "sha256:<hex>" of everything above

Integrity: `Checkpointer.save` refuses a state with a NaN/Inf tensor (model, EMA or
optimiser) and writes through a temporary file that is flushed to disk before it is
renamed over the old one; `load_checkpoint` recomputes the checksum, so a truncated or
bit-flipped file is an error naming it instead of silently different weights.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Checkpointer",
    "CheckpointError",
    "NonFiniteError",
    "state_digest",
    "check_finite",
    "save_atomic",
    "remove_temporary_files",
    "load_checkpoint",
    "load_model_weights",
    "unwrap_model",
    "get_rng_state",
    "set_rng_state",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; names the file."""


class NonFiniteError(FloatingPointError):
    """A NaN or Inf in the losses or in the training state; the message names the iteration."""


def _feed(h: Any, obj: Any) -> None:
    """Hash `obj` (tensors, containers, scalars) in a layout-independent way."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_digest(state: Mapping) -> str:
    """`sha256:<hex>` over every entry of `state` except `checksum`."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "checksum"})
    return "sha256:" + h.hexdigest()


def _tensors(obj: Any, prefix: str):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}")


def check_finite(state: Mapping, what: str = "the checkpoint") -> None:
    """Raise NonFiniteError if a floating-point tensor of the model, EMA or optimiser
    state holds NaN or Inf, naming the iteration, the counts and the first such tensor."""
    for part in ("model", "ema", "optimizer"):
        tensors = [(n, t) for n, t in _tensors(state.get(part), part) if t.is_floating_point()]
        bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
        if bad:
            it = state.get("iteration", "?")
            raise NonFiniteError(
                f"iteration {it}: {len(bad)} of {len(tensors)} {part} tensors are not finite (first: {bad[0]}); "
                f"training stopped without writing {what}, so the checkpoints on disk are unchanged "
                "(lower the learning rate, or enable train.clip_grad)"
            )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
            model = model._orig_mod
        else:
            return model


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file in the same folder, flushed to disk, then renamed
    over `path`: a crash or a full disk at any moment leaves the old file intact.

    Raises:
        CheckpointError: no space left on the device (the old file is unchanged).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else f"{path.name} was not written"
            raise CheckpointError(
                f"{path}: no space left on device while writing the checkpoint; {kept}"
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Delete `.NAME.tmpPID` files that interrupted writes left in `folder`."""
    found = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()] if Path(folder).is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with `weights_only=True` onto the CPU."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read as a weights-only checkpoint ({first})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict, got {type(obj).__name__}")
    if "checksum" in obj and state_digest(obj) != obj["checksum"]:
        raise CheckpointError(
            f"{path}: checksum mismatch, the file is corrupt (changed after it was written)"
        )
    return dict(obj)


def _model_state(obj: Mapping) -> Mapping:
    """The model's state dict inside a densenets checkpoint, or `obj` itself."""
    if "model" in obj and isinstance(obj["model"], Mapping):
        return obj["model"]
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return obj["state_dict"]
    return obj


def load_model_weights(
    model: nn.Module, source: str | os.PathLike | Mapping, strict: bool = True, use_ema: bool = False
) -> tuple[list[str], list[str]]:
    """Load weights into `model`, listing every missing and unexpected key.

    Args:
        model: the model (wrappers are looked through).
        source: a checkpoint path, a densenets checkpoint dict or a bare state dict.
        strict: raise CheckpointError on any mismatch (keys or shapes); else load what
            fits and return the mismatches.
        use_ema: take the EMA weights when the checkpoint has them.

    Returns:
        (missing keys, unexpected keys), shape mismatches counted as both.
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    obj = load_checkpoint(source) if not isinstance(source, Mapping) else source
    state = obj["ema"]["module"] if use_ema and isinstance(obj.get("ema"), Mapping) else _model_state(obj)
    model = unwrap_model(model)
    own = model.state_dict()
    shape_bad = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    fits = {k: v for k, v in state.items() if k not in shape_bad}
    result = model.load_state_dict(fits, strict=False)
    missing = sorted(set(result.missing_keys) | set(shape_bad))
    unexpected = sorted(set(result.unexpected_keys) | set(shape_bad))
    if strict and (missing or unexpected):
        lines = [f"{name}: checkpoint does not match the model"]
        lines += [
            f"  shape mismatch: {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in shape_bad
        ]
        lines += [f"  missing: {k}" for k in missing if k not in shape_bad]
        lines += [f"  unexpected: {k}" for k in unexpected if k not in shape_bad]
        raise CheckpointError("\n".join(lines))
    return missing, unexpected


def get_rng_state() -> dict:
    """This process's python, numpy, torch (and CUDA) RNG states, weights-only safe."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Writes checkpoints into a run directory: `last.pth`, `best.pth` and periodic
    `model_{iteration:07d}.pth` files of which the `keep` newest stay (0: all).
    """

    _PERIODIC = re.compile(r"model_(\d+)\.pth$")

    def __init__(self, output_dir: str | os.PathLike, keep: int = 3) -> None:
        self.output_dir, self.keep = Path(output_dir), keep

    def save(self, name: str, state: Mapping) -> Path:
        """Write `state` with its checksum; refuses a state with NaN/Inf (NonFiniteError)."""
        check_finite(state, name)
        path = self.output_dir / name
        state = {k: v for k, v in state.items() if k != "checksum"}
        state["checksum"] = state_digest(state)
        save_atomic(state, path)
        return path

    def save_periodic(self, iteration: int, state: Mapping) -> Path:
        path = self.save(f"model_{iteration:07d}.pth", state)
        if self.keep > 0:
            for old in self.periodic()[: -self.keep]:
                old.unlink(missing_ok=True)
        return path

    def periodic(self) -> list[Path]:
        """Periodic checkpoints, oldest first."""
        found = [
            (int(m.group(1)), p)
            for p in self.output_dir.glob("model_*.pth")
            if (m := self._PERIODIC.match(p.name))
        ]
        return [p for _, p in sorted(found)]

    def last(self) -> Path | None:
        path = self.output_dir / "last.pth"
        return path if path.exists() else None

    def newest_intact(self, exclude: Path | None = None) -> tuple[Path, dict] | None:
        """The newest periodic checkpoint that reads and passes its checksum, with its state."""
        for path in reversed(self.periodic()):
            if exclude is not None and path == exclude:
                continue
            try:
                return path, load_checkpoint(path)
            except CheckpointError:
                continue
        return None
