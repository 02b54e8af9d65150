"""Checkpointer rotation and atomicity, weight loading with mismatch lists, RNG state,
EMA arithmetic, and the config sections' checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from densenets.checkpoint import (
    Checkpointer,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    load_model_weights,
    set_rng_state,
    unwrap_model,
)
from densenets.config import ConfigError, load_config
from densenets.engine import parse_section
from densenets.engine.ema import ModelEMA


def test_periodic_checkpoints_keep_the_newest(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    for it in (10, 20, 30, 40):
        ck.save_periodic(it, {"iteration": it})
    assert [p.name for p in ck.periodic()] == ["model_0000030.pth", "model_0000040.pth"]
    assert ck.last() is None
    ck.save("last.pth", {"iteration": 40})
    assert load_checkpoint(ck.last())["iteration"] == 40
    keep_all = Checkpointer(tmp_path / "all", keep=0)
    for it in (1, 2, 3):
        keep_all.save_periodic(it, {})
    assert len(keep_all.periodic()) == 3


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    ck = Checkpointer(tmp_path)
    ck.save("last.pth", {"iteration": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save("last.pth", {"iteration": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pth")["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": get_rng_state()}, tmp_path / "r.pth")
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pth")["rng"])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


class _Net(nn.Module):
    def __init__(self, out=2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, out)


def test_mismatches_list_missing_unexpected_and_shapes(tmp_path):
    state = _Net(out=5).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["conv.bias"]
    torch.save({"model": state}, tmp_path / "w.pth")
    net = _Net()
    with pytest.raises(CheckpointError) as err:
        load_model_weights(net, tmp_path / "w.pth")
    msg = str(err.value)
    assert msg.splitlines()[0] == f"{tmp_path / 'w.pth'}: checkpoint does not match the model"
    assert "missing: conv.bias" in msg and "unexpected: extra.weight" in msg
    assert "shape mismatch: fc.weight: checkpoint (5, 4) vs model (2, 4)" in msg
    missing, unexpected = load_model_weights(net, tmp_path / "w.pth", strict=False)
    assert missing == ["conv.bias", "fc.bias", "fc.weight"] and unexpected == [
        "extra.weight",
        "fc.bias",
        "fc.weight",
    ]
    assert torch.equal(net.conv.weight, state["conv.weight"])  # what fits is loaded


def test_weights_load_through_wrappers_and_from_ema(tmp_path):
    src, dst = _Net(), _Net()
    ema = ModelEMA(src, decay=0.5)
    with torch.no_grad():
        ema.module.fc.weight.fill_(7.0)
    torch.save({"model": src.state_dict(), "ema": ema.state_dict()}, tmp_path / "c.pth")
    compiled = torch.compile(dst)
    assert unwrap_model(compiled) is dst
    load_model_weights(compiled, tmp_path / "c.pth", use_ema=True)
    assert (dst.fc.weight == 7.0).all()
    load_model_weights(dst, tmp_path / "c.pth")
    assert torch.equal(dst.fc.weight, src.fc.weight)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pth: cannot read as a weights-only checkpoint"):
        load_checkpoint(tmp_path / "junk.pth")


def test_ema_arithmetic():
    net = _Net()
    ema = ModelEMA(net, decay=0.9, warmup=0)
    w0 = net.fc.weight.detach().clone()
    with torch.no_grad():
        net.fc.weight.add_(1.0)
        net.bn.num_batches_tracked += 5
    ema.update(net)
    torch.testing.assert_close(ema.module.fc.weight, w0 + 0.1)
    assert ema.module.bn.num_batches_tracked == 5  # integers are copied
    warm = ModelEMA(net, decay=0.9, warmup=2)
    warm.update(net)
    assert warm.current_decay() == pytest.approx(0.9 * (1 - np.exp(-0.5)))
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_sections_reject_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "train": {"max_iter": 10, "optimizer": {"type": "SGD", "lr": 0.1}},
                "data": {"num_workers": 0},
                "infer": {"batch_size": 2},
            }
        )
    )
    cases = {
        "train.optimizer.momentun=0.5": "train.optimizer.momentun: unknown key",
        "data.num_worker=1": "data.num_worker: unknown key, did you mean num_workers?",
        "infer.visualiser={}": "infer.visualiser: unknown key, did you mean visualizer?",
        "train.scheduler.warmup_iter=3": "train.scheduler.warmup_iter: unknown key, did you mean warmup_iters?",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("?", r"\?")):
            load_config(path, [override])
    cfg = load_config(path, ["train.ema={decay: 0.99}", "train.clip_grad={type: value, max: 2}"])
    t = parse_section("train", cfg.train)
    assert t.ema.decay == 0.99 and t.clip_grad.type == "value" and t.optimizer.lr == 0.1
    bad = {
        "+train.optimizer.momentun=0.5": "train.optimizer.momentun: unknown key, did you mean momentum?",
        "train.optimizer.type=Adam": "train.optimizer.type: 'Adam' is not one of SGD, AdamW",
        "train.scheduler.type=StepLR": "train.scheduler.type: 'StepLR' is not one of",
        "+train.epochs=3": "train: set exactly one of max_iter and epochs",
        "train.batch_size=0": "train.batch_size: expected a positive number, got 0",
        "+train.clip_grad={type: l2}": "train.clip_grad.type: 'l2' is not one of norm, value",
        "+train.ema={decay: 1.5}": r"train.ema.decay: must be in \(0, 1\)",
        "+train.scheduler={steps: [5, 2]}": r"train.scheduler.steps: must be increasing",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            parse_section("train", load_config(path, [override]).train)
