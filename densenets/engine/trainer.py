"""The training loop. It knows no task: `model(batch)` returns a dict of scalar losses.

One iteration = one optimiser step = `accumulate` forward/backward passes:

    zero grads -> [forward (autocast) -> backward of loss / accumulate] × accumulate
    -> check losses are finite (all processes agree) -> unscale, clip -> step
    -> LR schedule -> EMA

Hooks (`engine/hooks.py`) do everything periodic: logging, checkpoints, evaluation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from densenets.checkpoint import (
    Checkpointer,
    CheckpointError,
    NonFiniteError,
    get_rng_state,
    load_checkpoint,
    load_model_weights,
    set_rng_state,
    unwrap_model,
)
from densenets.utils import comm

from .ema import ModelEMA
from .optim import WarmupLR, clip_gradients
from .schema import ClipGradConfig

__all__ = ["Trainer", "HookBase", "NonFiniteLossError"]

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class NonFiniteLossError(NonFiniteError):
    """A loss term became NaN or Inf; the message names the iteration and the term."""


class HookBase:
    """Called by the Trainer: `before_train`, `after_step` (after each optimiser step),
    `after_train` (only when training finished normally), `on_interrupt` (instead of
    `after_step` when a stop was requested: SIGINT/SIGTERM), `write` (each log record)
    and `close` (always, last)."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def on_interrupt(self) -> None:
        pass

    def write(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """Iteration-based trainer with accumulation, AMP, clipping, EMA and DDP.

    Args:
        model: the model, already on its device; possibly wrapped in DDP / torch.compile.
        optimizer: built over the model's parameters.
        scheduler: stepped after every optimiser step.
        loader_fn: `loader_fn(start_iter)` -> an endless iterable of micro-batches
            (lists of item dicts) continuing after `start_iter` optimiser steps.
        max_iter: optimiser steps in the whole run.
        accumulate: micro-batches per optimiser step.
        amp: None, "float16" (with a gradient scaler) or "bfloat16".
        clip_grad: gradient clipping, or None.
        ema: an EMA of the weights, or None.
        hooks: called in order.
        checkpointer: where the run's checkpoints go (the hooks save through it; after
            training, `checkpointer.last()` is the file to resume from), or None.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        scheduler: WarmupLR,
        loader_fn: Callable[[int], Iterable[list[dict]]],
        max_iter: int,
        accumulate: int = 1,
        amp: str | None = None,
        clip_grad: ClipGradConfig | None = None,
        ema: ModelEMA | None = None,
        hooks: Sequence[HookBase] = (),
        checkpointer: Checkpointer | None = None,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.checkpointer = checkpointer
        self.loader_fn, self.max_iter, self.accumulate = loader_fn, max_iter, accumulate
        self.clip_grad, self.ema = clip_grad, ema
        self.device = next(unwrap_model(model).parameters()).device
        self.amp_dtype = _AMP_DTYPES.get(amp) if amp else None
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == "float16" else None
        self.iter = 0
        self.stop_request: str | None = None  # set by `request_stop` (signal handlers)
        self.stopped_by: str | None = None
        self._stop_agreed = False
        self.best: dict | None = None
        self.latest: dict[str, float] = {}
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    @property
    def unwrapped(self) -> nn.Module:
        return unwrap_model(self.model)

    # ----------------------------------------------------------------- the loop
    def train(self) -> None:
        """Run from `self.iter` to `max_iter`; hooks' `close` runs even on errors."""
        try:
            for h in self.hooks:
                h.before_train()
            self.model.train()
            self._data = iter(self.loader_fn(self.iter))
            while self.iter < self.max_iter:
                self.run_step()
                self.iter += 1
                if self._stop_agreed or (comm.get_world_size() == 1 and self.stop_request):
                    self.stopped_by = self.stop_request or "a signal to another process"
                    for h in self.hooks:
                        h.on_interrupt()
                    return
                for h in self.hooks:
                    h.after_step()
            for h in self.hooks:
                h.after_train()
        finally:
            # End the loader's (persistent) workers now rather than at interpreter exit.
            shutdown = getattr(getattr(self, "_data", None), "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._data = None
            for h in self.hooks:
                h.close()

    def request_stop(self, reason: str) -> None:
        """Stop after the current step (all processes agree on the step); safe in signal handlers."""
        self.stop_request = reason

    def run_step(self) -> None:
        """One optimiser step over `accumulate` micro-batches."""
        start = time.perf_counter()
        data_time = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for k in range(self.accumulate):
            t0 = time.perf_counter()
            batch = next(self._data)
            data_time += time.perf_counter() - t0
            with self._sync_context(k == self.accumulate - 1), self._autocast():
                losses = self.model(batch)
                loss = self._total(losses)
            self._backward(loss / self.accumulate)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0) + value.detach().float() / self.accumulate
        values = self._reduce_and_check(totals)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradients(
            [p for g in self.optimizer.param_groups for p in g["params"]], self.clip_grad
        )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.unwrapped)
        self.latest = {"loss": sum(values.values()), **values, "lr": lr}
        if grad_norm is not None:
            self.latest["grad_norm"] = grad_norm
        self.latest.update(time=time.perf_counter() - start, data_time=data_time)

    def _total(self, losses: Any) -> torch.Tensor:
        if not isinstance(losses, Mapping) or not losses:
            raise TypeError(
                f"in training mode the model must return a non-empty dict of losses, got {type(losses).__name__}"
            )
        for name, value in losses.items():
            if not isinstance(value, torch.Tensor) or value.ndim != 0:
                raise TypeError(
                    f"loss {name!r} must be a scalar tensor, got {getattr(value, 'shape', type(value))}"
                )
        return sum(losses.values())

    def _sync_context(self, last: bool):
        ddp = self.model if isinstance(self.model, nn.parallel.DistributedDataParallel) else None
        if ddp is None and hasattr(self.model, "_orig_mod"):
            inner = self.model._orig_mod
            ddp = inner if isinstance(inner, nn.parallel.DistributedDataParallel) else None
        return ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _reduce_and_check(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average the loss terms over processes; stop on NaN/Inf before the step."""
        names = sorted(totals)
        # A stop request travels with the losses, so all processes stop after one step.
        flag = torch.tensor(float(self.stop_request is not None), device=totals[names[0]].device)
        stacked = comm.all_reduce_sum(torch.stack([totals[n] for n in names] + [flag]))
        self._stop_agreed = bool(stacked[-1] > 0)
        values = dict(zip(names, (stacked[:-1] / comm.get_world_size()).tolist()))
        for name in names:
            v = values[name]
            if v != v or v in (float("inf"), float("-inf")):
                raise NonFiniteLossError(
                    f"iteration {self.iter + 1}: loss term {name!r} is {v}; training stopped before the "
                    "optimiser step (the last saved checkpoint is unchanged)"
                )
        return values

    def log(self, record: Mapping[str, Any]) -> None:
        """Send a record (e.g. evaluation metrics) to every hook's `write`."""
        for h in self.hooks:
            h.write(record)

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Everything a resumed run needs; the RNG states of every process."""
        rng = comm.all_gather_object(get_rng_state())
        return {
            "model": self.unwrapped.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "iteration": self.iter,
            "rng": rng,
            "best": self.best,
        }

    def load_state_dict(self, state: Mapping, path: str = "checkpoint") -> None:
        """Restore a state from `state_dict`; a state that does not fit this trainer (another
        optimiser, EMA added or removed) is a CheckpointError naming `path`."""
        missing = [k for k in ("model", "optimizer", "scheduler", "iteration") if k not in state]
        if missing:
            raise CheckpointError(
                f"{path}: not a training checkpoint (no {', '.join(missing)}); "
                "to start from its weights use --finetune / train.weights"
            )
        if (self.ema is None) != (state.get("ema") is None):
            have = "has no EMA weights" if self.ema is not None else "has EMA weights"
            raise CheckpointError(
                f"{path}: the checkpoint {have} but train.ema is {'set' if self.ema else 'null'}"
            )
        load_model_weights(self.model, state, strict=True)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler") is not None:
                self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"{path}: its optimiser/scheduler/EMA state does not fit this run's train section ({type(e).__name__}: {e})"
            ) from None
        self.iter = int(state["iteration"])
        self.best = state.get("best")
        rng = state.get("rng") or []
        if len(rng) == comm.get_world_size():
            set_rng_state(rng[comm.get_rank()])

    def resume(self, path: str) -> None:
        """Continue from a training checkpoint written by this trainer."""
        self.load_state_dict(load_checkpoint(path), path=str(path))
