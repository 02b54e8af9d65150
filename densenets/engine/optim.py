"""Optimiser with parameter groups, gradient clipping, and the LR schedule.

Parameter groups: parameters named `backbone.*` get `lr × backbone_lr_mult`, and those
whose name contains a key of `lr_mults` its value on top;
normalisation-layer parameters get `norm_weight_decay` and biases `bias_weight_decay`
when those are set. Parameters with the same (lr, weight decay) share one group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .lr_schedules import SCHEDULES, WARMUPS, epoch_to_iter
from .schema import ClipGradConfig, OptimizerConfig, SchedulerConfig

__all__ = ["build_optimizer", "param_groups", "clip_gradients", "WarmupLR"]

_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORMS) or type(module).__name__.endswith(
        ("Norm", "Norm1d", "Norm2d", "Norm3d")
    )


def param_groups(model: nn.Module, cfg: OptimizerConfig) -> list[dict]:
    """Split trainable parameters into groups by learning rate and weight decay.

    Returns:
        A list of `{"params": [...], "lr": float, "weight_decay": float}`; parameters
        shared between modules appear once.
    """
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        norm = _is_norm(module)
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            lr = cfg.lr * (cfg.backbone_lr_mult if full.startswith("backbone.") else 1.0)
            lr *= next((mult for key, mult in cfg.lr_mults.items() if key in full), 1.0)
            wd = cfg.weight_decay
            if norm and cfg.norm_weight_decay is not None:
                wd = cfg.norm_weight_decay
            elif p_name == "bias" and cfg.bias_weight_decay is not None:
                wd = cfg.bias_weight_decay
            groups.setdefault((lr, wd), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]


def _fusable(groups: list[dict]) -> bool:
    """Whether torch's fused optimiser kernels take these parameters."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> Optimizer:
    """SGD or AdamW over `param_groups(model, cfg)`, fused unless `cfg.fused` is False."""
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = _fusable(groups) if cfg.fused is None else cfg.fused
    kernel = {"fused": True} if fused else {}
    if cfg.type == "SGD":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kernel)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, **kernel)


def clip_gradients(params: list[nn.Parameter], cfg: ClipGradConfig | None) -> float | None:
    """Clip in place; returns the total gradient norm before clipping (type `norm`)."""
    if cfg is None:
        return None
    if cfg.type == "norm":
        return float(torch.nn.utils.clip_grad_norm_(params, cfg.max, norm_type=cfg.norm_type))
    torch.nn.utils.clip_grad_value_(params, cfg.max)
    return None


class WarmupLR(LRScheduler):
    """LR = base LR x warmup(iter) x schedule(iter); call `step()` after every optimiser step.

    Args:
        optimizer: its groups' current `lr` are the base LRs.
        cfg: `train.scheduler`; its `type` names a class of `lr_schedules.SCHEDULES`.
        max_iter: the run's length (CosineLR, PolyLR).
        iters_per_epoch: ``Fraction(len(train set), batch_size)``, which turns `steps` given
            in epochs (`by_epoch`) into iterations as `train.epochs` is (`epoch_to_iter`).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        cfg: SchedulerConfig,
        max_iter: int,
        iters_per_epoch: Fraction | float | None = None,
    ) -> None:
        self.schedule = _schedule(cfg, iters_per_epoch)
        self.max_iter = int(max_iter)
        self.warmup_iters, self.warmup_factor = int(cfg.warmup_iters), float(cfg.warmup_factor)
        self.warmup = WARMUPS[cfg.warmup_method]
        super().__init__(optimizer)

    def factor(self, it: int) -> float:
        """The LR multiplier at iteration `it` (optimiser steps done)."""
        f = self.schedule(it, self.max_iter)
        if it < self.warmup_iters:
            f *= self.warmup(it / self.warmup_iters, self.warmup_factor)
        return f

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    # From this run's config, not from a checkpoint.
    _CONFIG_KEYS = ("schedule", "max_iter", "warmup_iters", "warmup_factor", "warmup")

    def state_dict(self) -> dict:
        """The position (iteration, base LRs, last LRs); the schedule comes from the config."""
        return {k: v for k, v in super().state_dict().items() if k not in self._CONFIG_KEYS}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position (iteration, base LRs) but keep this run's schedule, so a
        run resumed with a longer `max_iter` or new `steps` follows its config."""
        keep = {k: getattr(self, k) for k in self._CONFIG_KEYS}
        super().load_state_dict({k: v for k, v in state_dict.items() if k in self.__dict__})
        self.__dict__.update(keep)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def _schedule(cfg: SchedulerConfig, iters_per_epoch: Fraction | float | None) -> Callable[[int, int], float]:
    """The `SCHEDULES[cfg.type]` object with its fields from `cfg` (steps in iterations)."""
    cls = SCHEDULES[cfg.type]
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)}
    if "steps" in kwargs:
        steps = [int(s) for s in cfg.steps]
        if cfg.by_epoch:
            if iters_per_epoch is None:
                raise ValueError("train.scheduler.by_epoch: the iterations per epoch are needed")
            steps = [epoch_to_iter(s, iters_per_epoch) for s in steps]
        kwargs["steps"] = tuple(steps)
    return cls(**kwargs)
