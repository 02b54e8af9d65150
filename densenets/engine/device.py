"""Devices: a `device` name -> torch.device, and joining the process group torchrun describes.

`launch` (training, evaluation), `Predictor` and the benchmark all pick their device here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.distributed as dist

from densenets.config import ConfigError
from densenets.utils import comm

from .schema import check_device

__all__ = ["resolve_device", "init_distributed", "config_device"]


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` -> CUDA when available; `cuda` -> this process's GPU (LOCAL_RANK);
    `cuda:N` -> GPU N; `mps` -> Apple's GPU; `cpu`.

    Raises:
        ConfigError: a malformed name, or a device this machine does not have.
    """
    check_device(device, "device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r}: no CUDA GPU is available (torch.cuda.is_available() is False)"
            )
        if device == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        index, count = int(device.split(":")[1]), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(
                f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps': not available (torch.backends.mps.is_available() is False)")
    return torch.device(device)


def init_distributed(device: str = "auto") -> torch.device:
    """Join the process group torchrun describes (if any) and return this process's device."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not comm.is_dist():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, init_method="env://", device_id=dev if dev.type == "cuda" else None
        )
    return dev


def config_device(cfg: Mapping) -> str:
    """The config's `train.device` ("auto" without one), checked; the device a run's
    evaluation uses when no `--device` is given."""
    device = (cfg.get("train") or {}).get("device", "auto")
    check_device(device, "train.device")
    return device
