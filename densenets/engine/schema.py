"""The `train`, `data` and `infer` config sections: their keys, defaults and checks.

Each top-level section is a dataclass registered with `register_section`; its nested
sections (`train.optimizer`, ...) are the fields annotated with a dataclass. So
`load_config` rejects a misspelt key with its full path, and `parse_section` turns the
config dict into the dataclass (`densenets.config.instantiate`) and runs each one's
`check(path)` (choices, ranges), raising `ConfigError` that names the key. Every key is
documented in `docs/engine.md`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from densenets.config import SECTION_SCHEMAS, ConfigError, instantiate, register_section

from .lr_schedules import SCHEDULES, WARMUPS

__all__ = [
    "TrainConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "ClipGradConfig",
    "EMAConfig",
    "DataConfig",
    "InferConfig",
    "parse_section",
    "check_device",
]

OPTIMIZERS = ("SGD", "AdamW")
AMP_DTYPES = (None, "float16", "bfloat16")
CLIP_TYPES = ("norm", "value")


@dataclass
class OptimizerConfig:
    """`train.optimizer`: the optimiser and its parameter groups."""

    type: str = "SGD"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    backbone_lr_mult: float = 1.0
    # Extra LR multipliers by name: a parameter whose dotted name contains a key gets
    # lr x value (times backbone_lr_mult in the backbone), e.g. Deformable DETR's
    # {sampling_offsets: 0.1, reference_points: 0.1}.
    lr_mults: dict[str, float] = field(default_factory=dict)
    norm_weight_decay: float | None = None
    bias_weight_decay: float | None = None
    # One kernel per step for all parameters (torch's `fused=True`): about 3x faster than
    # the per-tensor loop on CPU. None: fused where torch supports it (floating-point
    # parameters on CPU or CUDA), else the per-tensor loop.
    fused: bool | None = None

    def check(self, path: str) -> None:
        _choice(self.type, OPTIMIZERS, f"{path}.type")
        _positive(self.lr, f"{path}.lr", strict=False)
        _positive(self.weight_decay, f"{path}.weight_decay", strict=False)
        _positive(self.eps, f"{path}.eps")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"{path}.momentum: must be in [0, 1), got {self.momentum!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"{path}.betas: expected two numbers, got {list(self.betas)}")


@dataclass
class SchedulerConfig:
    """`train.scheduler`: an LR factor per iteration, after an optional warmup.

    `type` names a class of `lr_schedules.SCHEDULES`, which takes the keys it needs.
    `steps` (MultiStepLR) count iterations, or epochs with `by_epoch: true` (converted
    as `train.epochs` is, with the training set's length)."""

    type: str = "MultiStepLR"
    steps: list[int] = field(default_factory=list)
    by_epoch: bool = False
    gamma: float = 0.1
    power: float = 0.9
    min_factor: float = 0.0
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    warmup_method: str = "linear"

    def check(self, path: str) -> None:
        _choice(self.type, tuple(SCHEDULES), f"{path}.type")
        _choice(self.warmup_method, tuple(WARMUPS), f"{path}.warmup_method")
        if list(self.steps) != sorted(self.steps):
            raise ConfigError(f"{path}.steps: must be increasing, got {list(self.steps)}")
        _positive(self.warmup_iters, f"{path}.warmup_iters", strict=False)
        _positive(self.gamma, f"{path}.gamma")


@dataclass
class ClipGradConfig:
    """`train.clip_grad`: clip gradients by total norm or by value before each step."""

    type: str = "norm"
    max: float = 1.0
    norm_type: float = 2.0

    def check(self, path: str) -> None:
        _choice(self.type, CLIP_TYPES, f"{path}.type")
        _positive(self.max, f"{path}.max")


@dataclass
class EMAConfig:
    """`train.ema`: exponential moving average of the weights (used for evaluation)."""

    decay: float = 0.9998
    warmup: int = 0

    def check(self, path: str) -> None:
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"{path}.decay: must be in (0, 1), got {self.decay}")


@register_section("train")
@dataclass
class TrainConfig:
    """`train`: the trainer. `batch_size` is the total per optimiser step over all
    processes and accumulation steps."""

    batch_size: int = 16
    max_iter: int | None = None
    epochs: float | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    clip_grad: ClipGradConfig | None = None
    accumulate: int = 1
    amp: str | None = None
    ema: EMAConfig | None = None
    compile: bool = False
    seed: int = 42
    log_period: int = 20
    plot: bool = True
    checkpoint_period: int = 5000
    keep_checkpoints: int = 3
    eval_period: int = 0
    best_metric: str | None = None
    device: str = "auto"
    weights: str | None = None
    find_unused_parameters: bool = False

    def check(self, path: str) -> None:
        _positive(self.batch_size, f"{path}.batch_size")
        _positive(self.accumulate, f"{path}.accumulate")
        if (self.max_iter is None) == (self.epochs is None):
            raise ConfigError(f"{path}: set exactly one of max_iter and epochs")
        if self.max_iter is not None:
            _positive(self.max_iter, f"{path}.max_iter")
        if self.epochs is not None:
            _positive(self.epochs, f"{path}.epochs")
        _choice(self.amp, AMP_DTYPES, f"{path}.amp")
        for key in ("log_period", "checkpoint_period", "keep_checkpoints", "eval_period"):
            _positive(getattr(self, key), f"{path}.{key}", strict=False)
        check_device(self.device, f"{path}.device")


@register_section("data")
@dataclass
class DataConfig:
    """`data`: datasets (components with `type`) and loader options."""

    train: dict | None = None
    val: dict | None = None
    class_names: list[str] | None = None
    num_workers: int = 2
    aspect_ratio_grouping: bool = True
    val_batch_size: int = 1

    def check(self, path: str) -> None:
        _positive(self.num_workers, f"{path}.num_workers", strict=False)
        _positive(self.val_batch_size, f"{path}.val_batch_size")


@register_section("infer")
@dataclass
class InferConfig:
    """`infer`: `tools/infer.py` and `tools/benchmark.py`."""

    visualizer: dict | None = None
    batch_size: int = 4
    input_size: list[int] | None = None
    weights: str | None = None  # what eval.py / infer.py load without --weights ("none": none on purpose)
    max_pixels: int | None = 178956970  # larger images are refused unread (Pillow's limit; null: none)
    # Removed: the model declares the item key it reads (`input_key`: EDSR "lr"). Kept
    # only so that an old config gets this message instead of "unknown key".
    input_key: Any = None

    def check(self, path: str) -> None:
        if self.input_key is not None:
            raise ConfigError(
                f"{path}.input_key: no longer a config key, the model declares its input "
                f"(EDSR reads 'lr', every other model 'image'); delete this line"
            )
        _positive(self.batch_size, f"{path}.batch_size")
        if self.max_pixels is not None:
            _positive(self.max_pixels, f"{path}.max_pixels")
        if self.input_size is not None and len(self.input_size) != 2:
            raise ConfigError(f"{path}.input_size: expected [H, W], got {self.input_size}")


def parse_section(name: str, node: Mapping | None) -> Any:
    """Turn config section `name` (`train`, `data`, `infer`) into its checked dataclass.

    Args:
        name: the section name.
        node: the section's dict (None or missing = all defaults).

    Raises:
        ConfigError: an unknown key or a bad value, naming its key path.
    """
    return instantiate(SECTION_SCHEMAS[name], node, name)


def check_device(device: Any, path: str) -> None:
    """`auto`, `cpu`, `cuda`, `cuda:N` or `mps` (whether it exists is checked at run time)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", device):
        raise ConfigError(f"{path}: expected auto, cpu, cuda, cuda:N or mps, got {device!r}")


def _choice(value: Any, choices: tuple, path: str) -> None:
    if value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(f"{path}: {value!r} is not one of {shown}")


def _positive(value: Any, path: str, strict: bool = True) -> None:
    bad = not isinstance(value, (int, float)) or isinstance(value, bool)
    if bad or value != value or value < 0 or (strict and value == 0):
        need = "a positive number" if strict else "a number >= 0"
        raise ConfigError(f"{path}: expected {need}, got {value!r}")
