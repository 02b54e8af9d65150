"""Training, evaluation and inference (checkpoints: `densenets.checkpoint`)."""

from .device import init_distributed, resolve_device
from .ema import ModelEMA
from .hooks import CheckpointHook, EvalHook, LoggingHook
from .inference import inference_on_dataset
from .launch import build_trainer, evaluate, train
from .optim import WarmupLR, build_optimizer, param_groups
from .predictor import Predictor
from .schema import (
    ClipGradConfig,
    DataConfig,
    EMAConfig,
    InferConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
    parse_section,
)
from .trainer import HookBase, NonFiniteLossError, Trainer

__all__ = [
    "Trainer",
    "HookBase",
    "NonFiniteLossError",
    "CheckpointHook",
    "EvalHook",
    "LoggingHook",
    "build_trainer",
    "train",
    "evaluate",
    "init_distributed",
    "resolve_device",
    "inference_on_dataset",
    "Predictor",
    "ModelEMA",
    "build_optimizer",
    "param_groups",
    "WarmupLR",
    "TrainConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "ClipGradConfig",
    "EMAConfig",
    "DataConfig",
    "InferConfig",
    "parse_section",
]
