"""From a config to a running trainer or evaluation, on one process or under torchrun.

`torchrun --nproc_per_node N tools/train.py ...` sets `RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`; `init_distributed` reads them (env://)
and picks NCCL on GPUs, gloo on CPU. Without them everything runs in one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from densenets.checkpoint import (
    Checkpointer,
    CheckpointError,
    load_checkpoint,
    load_model_weights,
    load_pretrained_weights,
    unwrap_model,
)
from densenets.config import DATASETS, EVALUATORS, MODELS, ConfigError, ConfigNode, build, dump_config
from densenets.data.loader import build_test_loader, build_train_loader, seed_everything
from densenets.utils import comm
from densenets.utils.logging import setup_logger

from .config_check import run_differences
from .device import config_device, init_distributed
from .ema import ModelEMA
from .hooks import CheckpointHook, EvalHook, LoggingHook
from .inference import inference_on_dataset
from .lr_schedules import epoch_to_iter
from .optim import WarmupLR, build_optimizer
from .run_dir import RunLock, prepare_run_dir
from .schema import parse_section
from .trainer import Trainer

__all__ = [
    "build_trainer",
    "train",
    "evaluate",
    "get_class_names",
    "TrainingInterrupted",
]

logger = logging.getLogger(__name__)


def get_class_names(cfg: ConfigNode, dataset: Any = None) -> list[str] | None:
    """`data.class_names`, else the dataset's `class_names`, else None."""
    names = (cfg.get("data") or {}).get("class_names")
    return list(names) if names else (list(getattr(dataset, "class_names", None) or []) or None)


def _config_text(cfg: ConfigNode) -> str:
    return yaml.safe_dump(cfg.to_dict() if isinstance(cfg, ConfigNode) else dict(cfg), sort_keys=False)


def _eval_fn(cfg: ConfigNode, data_cfg, output_dir: Path, module_fn):
    """A closure evaluating `module_fn()` on the val set, or None without val/evaluation."""
    if data_cfg.val is None or not cfg.get("evaluation"):
        return None
    val_set = build(data_cfg.val, DATASETS)
    evaluator = build(cfg.evaluation, EVALUATORS, dataset=val_set, output_dir=str(output_dir / "eval"))
    loader = build_test_loader(val_set, data_cfg.val_batch_size, data_cfg.num_workers)
    return lambda: inference_on_dataset(module_fn(), loader, evaluator)


def build_trainer(
    cfg: ConfigNode, output_dir: str | os.PathLike, device: str | None = None, pretrained: bool = True
) -> Trainer:
    """Everything `train` needs, built from the config (on every process).

    `pretrained`: load the backbone initialisation weights the model config names (e.g.
    ``torchvision://resnet50``); skipped when resuming or when `train.weights` is given,
    since those checkpoints replace them.
    """
    tcfg, dcfg = parse_section("train", cfg.get("train")), parse_section("data", cfg.get("data"))
    dev = init_distributed(device or tcfg.device)
    output_dir = Path(output_dir)
    if comm.is_main_process():
        dump_config(cfg, output_dir / "config.yaml")
    setup_logger(output_dir, comm.get_rank())
    seed_everything(tcfg.seed + comm.get_rank())
    if dcfg.train is None:
        raise ConfigError("data.train: a training dataset is needed")
    train_set = build(dcfg.train, DATASETS)
    iters_per_epoch = Fraction(len(train_set), tcfg.batch_size)
    max_iter = tcfg.max_iter or epoch_to_iter(tcfg.epochs, iters_per_epoch)

    model = build(cfg.model, MODELS)
    if pretrained and not tcfg.weights:
        load_pretrained_weights(model)
    model = model.to(dev)
    if tcfg.weights:
        missing, unexpected = load_model_weights(model, tcfg.weights, strict=False)
        if missing or unexpected:
            logger.warning("%s: missing keys %s; unexpected keys %s", tcfg.weights, missing, unexpected)
    optimizer = build_optimizer(model, tcfg.optimizer)
    scheduler = WarmupLR(optimizer, tcfg.scheduler, max_iter, iters_per_epoch)
    ema = ModelEMA(model, tcfg.ema.decay, tcfg.ema.warmup) if tcfg.ema else None
    wrapped: nn.Module = model
    if comm.get_world_size() > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=tcfg.find_unused_parameters
        )
    if tcfg.compile:
        wrapped = torch.compile(wrapped)

    def loader_fn(start_iter: int):
        return build_train_loader(
            train_set,
            tcfg.batch_size,
            accumulate=tcfg.accumulate,
            seed=tcfg.seed,
            start_iter=start_iter,
            num_workers=dcfg.num_workers,
            aspect_ratio_grouping=dcfg.aspect_ratio_grouping,
        )

    checkpointer = Checkpointer(output_dir, keep=tcfg.keep_checkpoints)
    extra = {"config": _config_text(cfg)}
    # Class names and dataset category ids travel with every checkpoint (infer.py, Predictor).
    ids = getattr(train_set, "label_to_category_id", None)
    extra["meta"] = {
        "class_names": get_class_names(cfg, train_set),
        "category_ids": list(ids) if ids else None,
    }
    hooks = []
    eval_fn = _eval_fn(
        cfg, dcfg, output_dir, lambda: ema.module if ema is not None else unwrap_model(wrapped)
    )
    if eval_fn is not None:
        hooks.append(EvalHook(eval_fn, tcfg.eval_period, tcfg.best_metric, checkpointer, extra))
    elif tcfg.best_metric:
        raise ConfigError("train.best_metric: needs data.val and an evaluation section")
    hooks += [
        CheckpointHook(checkpointer, tcfg.checkpoint_period, extra),
        LoggingHook(output_dir, tcfg.log_period, plot=tcfg.plot),
    ]
    trainer = Trainer(
        wrapped,
        optimizer,
        scheduler,
        loader_fn,
        max_iter,
        accumulate=tcfg.accumulate,
        amp=tcfg.amp,
        clip_grad=tcfg.clip_grad,
        ema=ema,
        hooks=hooks,
        checkpointer=checkpointer,
    )
    logger.info(
        "training %s for %d iterations on %d process(es), %s, batch %d",
        type(model).__name__,
        max_iter,
        comm.get_world_size(),
        dev,
        tcfg.batch_size,
    )
    return trainer


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped training after a step; `last.pth` holds that step."""

    def __init__(self, signal_name: str, iteration: int, path: Path | None) -> None:
        self.signal_name, self.iteration, self.path = signal_name, iteration, path
        saved = f"saved {path}" if path is not None else "nothing saved (no checkpointer)"
        super().__init__(f"interrupted by {signal_name} at iteration {iteration}: {saved}")


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to stop after the current step; a second one acts
    as usual (KeyboardInterrupt / termination). Only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        trainer.request_stop(signal.Signals(signum).name)
        signal.signal(signum, previous[signum])

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _resume_state(cfg: ConfigNode, output_dir: Path, resume: bool | str) -> tuple[dict, Path]:
    """The state to resume from: `output_dir/last.pth` (or the given file), checked.

    A corrupt `last.pth` falls back to the newest intact periodic checkpoint, with a
    warning naming both; a config that changes the run (`config_check.RUN_KEYS`) is
    refused with the list of differences.
    """
    checkpointer = Checkpointer(output_dir)
    path = checkpointer.last() if resume is True else Path(resume)
    if path is None:
        raise FileNotFoundError(f"--resume: no last.pth in {output_dir}")
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        found = checkpointer.newest_intact(exclude=path) if resume is True else None
        if found is None:
            where = (
                ""
                if resume is not True
                else f"; no intact periodic checkpoint (model_*.pth) in {output_dir} either"
            )
            raise CheckpointError(f"{e}{where}") from None
        logger.warning(
            "%s; resuming from the newest intact checkpoint %s (iteration %d) instead",
            e,
            found[0],
            found[1].get("iteration", -1),
        )
        path, state = found
    if isinstance(state.get("config"), str):
        saved = yaml.safe_load(state["config"]) or {}
        diffs = run_differences(saved, cfg)
        if diffs:
            raise ConfigError(
                f"--resume: the config differs from the run saved in {path}:\n  "
                + "\n  ".join(diffs)
                + f"\n--resume continues a run exactly as it was. To train with these settings from its weights, "
                f"start a new run: --finetune {path} --output NEW_DIR"
            )
    return state, path


def train(
    cfg: ConfigNode,
    output_dir: str | os.PathLike,
    device: str | None = None,
    resume: bool | str = False,
    overwrite: bool = False,
) -> Trainer:
    """Train as the config says, in `output_dir`, which one trainer holds at a time.

    Args:
        resume: True continues from `output_dir/last.pth` (or the newest intact periodic
            checkpoint when that is corrupt), a path from that file; the config must
            not change the run (optimiser, schedule, model, ...).
        overwrite: start over in a folder that holds a previous run (its checkpoints,
            metrics and logs are deleted); without it such a folder is refused.

    Returns:
        The trainer after training (its `hooks` hold the last evaluation results).

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; `last.pth` holds the last finished step.
    """
    output_dir = Path(output_dir)
    tcfg = parse_section("train", cfg.get("train"))
    init_distributed(device or tcfg.device)
    lock = RunLock(output_dir)
    error = None
    if comm.is_main_process():
        try:
            lock.acquire()
            prepare_run_dir(output_dir, bool(resume), overwrite)
        except Exception as e:  # noqa: BLE001 - every process raises it below
            lock.release()
            error = e
    if comm.is_dist():
        error = comm.broadcast_object(error)
    if error is not None:
        raise error
    try:
        state, path = _resume_state(cfg, output_dir, resume) if resume else (None, None)
        trainer = build_trainer(cfg, output_dir, device, pretrained=not resume)
        if state is not None:
            trainer.load_state_dict(state, path=str(path))
            logger.info("resumed from %s at iteration %d", path, trainer.iter)
        with _stop_on_signals(trainer):
            trainer.train()
        if trainer.stopped_by is not None:
            last = trainer.checkpointer.last() if trainer.checkpointer is not None else None
            raise TrainingInterrupted(trainer.stopped_by, trainer.iter, last)
    finally:
        lock.release()
    return trainer


def evaluate(
    cfg: ConfigNode,
    weights: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    device: str | None = None,
) -> dict[str, float]:
    """Evaluate `weights` (EMA weights when the checkpoint holds them) on `data.val`."""
    dcfg = parse_section("data", cfg.get("data"))
    dev = init_distributed(device or config_device(cfg))
    output_dir = Path(output_dir)
    setup_logger(output_dir, comm.get_rank())
    model = build(cfg.model, MODELS).to(dev)
    if weights:
        load_model_weights(model, weights, strict=True, use_ema=True)
    eval_fn = _eval_fn(cfg, dcfg, output_dir, lambda: model)
    if eval_fn is None:
        raise ConfigError("evaluation: needs data.val and an evaluation section")
    return eval_fn()
