"""Every YAML file under configs/ loads, passes the checks `tools/train.py` runs, and
builds: its model (every module, shapes flowing from the backbone) and its datasets'
transforms. Any error fails; a model type that is not registered is an error too.

The model is built on the `meta` device (every constructor runs, no memory is filled):
all 40 files take seconds. `test_config_builds_on_cpu` (slow) builds them with real,
randomly initialised weights; tests/modeling/test_all_models.py trains a step of one
config per model type. Backbone initialisation weights are never read: the launcher
applies them when training starts, not `build`.

The files also follow the config rules: an experiment file sets no key to the value
its `_base_` files already give, and every `_base_` file is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from densenets.config import MODELS, TRANSFORMS, build, load_config
from densenets.engine.config_check import check_config

ROOT = Path(__file__).parents[2] / "configs"
EXPERIMENTS = sorted(p for p in ROOT.rglob("*.yaml") if "_base_" not in p.parts)
BASES = sorted((ROOT / "_base_").rglob("*.yaml"))
IDS = [str(p.relative_to(ROOT)) for p in EXPERIMENTS]


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Building a model never downloads: any attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted while building a config's model")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def _transform_nodes(cfg: Mapping) -> list[tuple[str, Mapping]]:
    """(key path, component dict) of every `data.<split>.transforms` entry."""
    out = []
    for split, node in (cfg.get("data") or {}).items():
        spec = node.get("transforms") if isinstance(node, Mapping) else None
        if spec is None:
            continue
        specs = [spec] if isinstance(spec, Mapping) else list(spec)
        out += [(f"data.{split}.transforms", s) for s in specs]
    return out


def _check_model(cfg: Mapping, model: torch.nn.Module, device: str) -> None:
    assert type(model) is MODELS[cfg["model"]["type"]]
    tensors = [*model.parameters(), *model.buffers()]
    assert sum(p.numel() for p in model.parameters()) > 0
    wrong = {t.device.type for t in tensors} - {device}
    assert not wrong, f"tensors created on {wrong} while building under torch.device({device!r})"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_config_loads_checks_and_builds(path):
    cfg = load_config(path)
    assert cfg.get("model", {}).get("type") in MODELS, f"{path}: model.type is not a registered model"
    check_config(cfg)  # what tools/train.py and tools/print_config.py run
    with torch.device("meta"):
        model = build(cfg.model, MODELS)
    _check_model(cfg, model, "meta")
    for key, node in _transform_nodes(cfg):
        assert callable(build(node, TRANSFORMS)), key
    if "upsampler" in cfg.model:  # super-resolution: the LR folders hold the model's factor
        scales = {f"data.{k}.scale": cfg.data[k].get("scale") for k in ("train", "val") if k in cfg.data}
        assert set(scales.values()) == {model.scale}, (model.scale, scales)


@pytest.mark.slow  # about 2 minutes on 2 cores
@pytest.mark.parametrize("path", EXPERIMENTS, ids=IDS)
def test_config_builds_on_cpu(path):
    cfg = load_config(path)
    torch.manual_seed(0)
    model = build(cfg.model, MODELS)
    _check_model(cfg, model, "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _merge(base: dict, new: Mapping) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and not value.get("_delete_") and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _restated(own: Mapping, base: Mapping, path: str = "") -> list[str]:
    """Key paths of `own` whose value equals `base`'s (a `_delete_` dict replaces: skipped)."""
    out = []
    for key, value in own.items():
        full = f"{path}.{key}" if path else str(key)
        if key == "_base_" or key not in base:
            continue
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            if not value.get("_delete_"):
                out += _restated(value, base[key], full)
        elif value == base[key]:
            out.append(f"{full} = {value!r}")
    return out


def _bases(path: Path) -> list[Path]:
    bases = yaml.safe_load(path.read_text()).get("_base_", [])
    return [(path.parent / b).resolve() for b in ([bases] if isinstance(bases, str) else bases)]


@pytest.mark.parametrize("path", [*EXPERIMENTS, *BASES], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_key_restates_its_base(path):
    inherited: dict[str, Any] = {}
    for base in _bases(path):
        inherited = _merge(inherited, load_config(base, validate=False).to_dict())
    own = yaml.safe_load(path.read_text())
    assert not _restated(own, inherited), f"{path.name} sets what its bases already set"


def test_restated_keys_are_found():
    base = {"model": {"num_classes": 80, "backbone": {"depth": 50}}, "train": {"batch_size": 16}}
    own = {
        "model": {"num_classes": 80, "backbone": {"depth": 101}},
        "train": {"_delete_": True, "batch_size": 16},
    }
    assert _restated(own, base) == ["model.num_classes = 80"]


def test_every_base_is_used():
    used = {b for p in [*EXPERIMENTS, *BASES] for b in _bases(p)}
    assert len(EXPERIMENTS) >= 40
    assert not [str(b.relative_to(ROOT)) for b in BASES if b.resolve() not in used]
