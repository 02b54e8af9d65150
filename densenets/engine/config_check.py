"""Checks that run on a whole experiment config before anything runs.

`check_config` is what `tools/train.py` and `tools/print_config.py` both run after
`load_config` (which already checks the top-level sections and every key and value of
the whole tree, model sub-dicts included, against the constructors' signatures and
type hints): it parses the `train`, `data` and `infer` sections (ranges, choices) and
builds the model on the `meta` device, so that what only a constructor checks (a `depth`
of 51, anchors that differ per level) is a one-line `ConfigError` too, without
allocating weights or reading any file.

`run_differences` lists what a resumed run would change about the run in a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from densenets.config import MODELS, ConfigError, ConfigNode, build, join_path, to_plain

from .schema import parse_section

__all__ = ["check_config", "run_differences", "RUN_KEYS"]

# What defines a run's trajectory: `--resume` refuses a config that changes any of them.
RUN_KEYS = (
    "model",
    "data.train.transforms",
    "train.batch_size",
    "train.max_iter",
    "train.epochs",
    "train.optimizer",
    "train.scheduler",
    "train.clip_grad",
    "train.accumulate",
    "train.amp",
    "train.ema",
    "train.seed",
)


# Keys inside RUN_KEYS that do not change what a resumed run computes.
_NOT_RUN = {"weights", "fused"}


def _without_weights(node: Any) -> Any:
    """The model dict without `weights` keys: initialisation files are not needed to
    check the structure (and may be remote)."""
    if isinstance(node, Mapping):
        return {k: _without_weights(v) for k, v in node.items() if k != "weights"}
    if isinstance(node, list):
        return [_without_weights(v) for v in node]
    return node


def check_config(cfg: Mapping) -> None:
    """Raise ConfigError for a bad value anywhere in `cfg`, naming its key path.

    Args:
        cfg: a loaded config (`load_config`).
    """
    for section in ("train", "data", "infer"):
        if section == "train" and cfg.get("train") is not None:
            # Evaluation/inference configs may leave out the schedule.
            node = dict(cfg["train"])
            if node.get("max_iter") is None and node.get("epochs") is None:
                node["max_iter"] = 1
            parse_section("train", node)
        elif cfg.get(section) is not None:
            parse_section(section, cfg[section])
    model = cfg.get("model")
    if model is None:
        return
    if not isinstance(model, Mapping):
        raise ConfigError(f"model: expected a mapping with a type, got {model!r}")
    with torch.device("meta"):
        build(ConfigNode(_without_weights(model), "model"), MODELS)


def _flatten(node: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        for k, v in node.items():
            _flatten(v, join_path(path, k), out)
    else:
        out[path] = node
    return out


def _run_view(cfg: Mapping) -> dict[str, Any]:
    """The RUN_KEYS of `cfg` as flat `key.path -> value`, train defaults filled in."""
    train = parse_section("train", cfg.get("train"))
    view = {"train": dataclasses.asdict(train), "model": cfg.get("model"), "data": cfg.get("data") or {}}
    out: dict[str, Any] = {}
    for key in RUN_KEYS:
        node: Any = view
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        _flatten(to_plain(node), key, out)
    return out


def run_differences(saved: Mapping, current: Mapping) -> list[str]:
    """`key: saved -> current` for every RUN_KEYS entry the two configs set differently."""
    a, b = _run_view(saved), _run_view(current)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.rsplit(".", 1)[-1] in _NOT_RUN:
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            show = lambda v: "(not set)" if v is missing else repr(v)  # noqa: E731
            lines.append(f"{key}: {show(va)} -> {show(vb)}")
    return lines
