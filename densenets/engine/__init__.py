"""Training, checkpoints, evaluation and inference."""

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

__all__ = [
    "TrainConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "ClipGradConfig",
    "EMAConfig",
    "DataConfig",
    "InferConfig",
    "parse_section",
]
