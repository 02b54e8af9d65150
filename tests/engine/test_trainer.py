"""The training loop on a tiny registered model: learning, resume, NaN stop, AMP, DDP."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp
from testkit import tiny

from densenets.checkpoint import load_checkpoint
from densenets.config import load_config
from densenets.engine.launch import build_trainer, evaluate, train
from densenets.engine.trainer import HookBase, NonFiniteLossError


def _cfg(tmp_path, overrides=(), **train_keys):
    return load_config(tiny.write_config(tmp_path / "exp.yaml", **train_keys), overrides)


def _assert_same_weights(a: dict, b: dict, exact: bool = True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_tiny_model_learns_and_logs(tmp_path):
    cfg = _cfg(
        tmp_path,
        max_iter=60,
        eval_period=30,
        best_metric="seg/acc",
        scheduler={"type": "CosineLR", "warmup_iters": 5},
        optimizer={"type": "AdamW", "lr": 0.05, "weight_decay": 0.0},
        log_period=10,
        checkpoint_period=20,
        keep_checkpoints=2,
        plot=True,
    )
    run = tmp_path / "run"
    trainer = train(cfg, run)
    results = trainer.hooks[0].results
    assert results["seg/acc"] > 95.0  # the red > blue rule is learnt
    assert results["seg/images"] == 8  # every val image evaluated once
    # Artifacts: config, curves, events, checkpoints (2 newest periodic + last + best).
    assert load_config(run / "config.yaml") == cfg
    assert (run / "metrics.png").stat().st_size > 1000
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in run.glob("model_*.pth")) == ["model_0000040.pth", "model_0000060.pth"]
    best = load_checkpoint(run / "best.pth")
    assert best["best"]["metric"] == "seg/acc" and best["best"]["value"] == pytest.approx(trainer.best["value"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["iter"] for r in records if "loss" in r] == [10, 20, 30, 40, 50, 60]
    assert losses[-1] < 0.5 * losses[0]
    assert [r["iter"] for r in records if "seg/acc" in r] == [30, 60]
    assert "eta_seconds" in records[0] and "lr" in records[0]
    assert trainer.checkpointer.last() == run / "last.pth"  # passed to Trainer, not attached
    # Evaluation reads only the device from `train` (no train section: auto), same result.
    no_train = load_config(run / "config.yaml", ["train=null"])
    again = evaluate(no_train, run / "best.pth", tmp_path / "eval")
    assert again["seg/acc"] == pytest.approx(best["best"]["value"])


class _StopAfter(HookBase):
    def __init__(self, n):
        self.n = n

    def after_step(self):
        if self.trainer.iter == self.n:
            raise KeyboardInterrupt


def test_resume_gives_bit_identical_weights(tmp_path):
    # Random augmentation, dropout, momentum, EMA, loader workers and aspect-ratio
    # grouping all have state that a resumed run must reproduce.
    keys = dict(max_iter=8, checkpoint_period=4, ema={"decay": 0.9, "warmup": 2}, eval_period=0)
    over = ["data.train.augment=true", "data.num_workers=2", "model.dropout=0.2"]
    cfg = _cfg(tmp_path, over, **keys)
    full = train(cfg, tmp_path / "full")

    trainer = build_trainer(cfg, tmp_path / "cut")
    trainer.register_hooks([_StopAfter(6)])  # dies after the checkpoint at 4
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert load_checkpoint(tmp_path / "cut/last.pth")["iteration"] == 4
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed.iter == full.iter == 8
    a, b = tiny.final_weights(tmp_path / "full"), tiny.final_weights(tmp_path / "cut")
    _assert_same_weights(a, b)
    _assert_same_weights(full.ema.module.state_dict(), resumed.ema.module.state_dict())
    assert not torch.equal(a["conv1.weight"], load_checkpoint(tmp_path / "cut/model_0000004.pth")["model"]["conv1.weight"])


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, ["model.nan_after=5"], max_iter=10, checkpoint_period=2)
    with pytest.raises(NonFiniteLossError, match=r"iteration 5: loss term 'loss_ce' is nan"):
        train(cfg, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run/last.pth")
    assert last["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert not list((tmp_path / "run").glob(".*tmp*"))  # no half-written file left


def test_accumulation_equals_one_big_batch(tmp_path):
    # Without aspect-ratio grouping, micro-batches of 2 hold the same images as batches of 4.
    over = ["data.aspect_ratio_grouping=false"]
    a = train(_cfg(tmp_path, over, max_iter=4, accumulate=1, batch_size=4), tmp_path / "a")
    b = train(_cfg(tmp_path, over, max_iter=4, accumulate=2, batch_size=4), tmp_path / "b")
    assert a.iter == b.iter
    _assert_same_weights(tiny.final_weights(tmp_path / "a"), tiny.final_weights(tmp_path / "b"), exact=False)


def test_bfloat16_autocast_on_cpu(tmp_path):
    cfg = _cfg(tmp_path, amp="bfloat16", max_iter=12, optimizer={"type": "AdamW", "lr": 0.05})
    trainer = build_trainer(cfg, tmp_path / "run")
    seen = []
    trainer.unwrapped.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
    trainer.train()
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert trainer.scaler is None
    assert all(w.dtype == torch.float32 for w in tiny.final_weights(tmp_path / "run").values())
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert losses[-1] < losses[0]


def test_float16_uses_a_grad_scaler_that_is_checkpointed(tmp_path):
    trainer = train(_cfg(tmp_path, amp="float16", max_iter=3), tmp_path / "run")
    assert trainer.scaler is not None
    state = load_checkpoint(tmp_path / "run/last.pth")["scaler"]
    assert state["scale"] == trainer.scaler.get_scale()


def test_clip_grad_and_epochs(tmp_path):
    cfg = _cfg(tmp_path, ["train.max_iter=null"], epochs=0.5, clip_grad={"type": "norm", "max": 0.01})
    trainer = train(cfg, tmp_path / "run")
    assert trainer.max_iter == 4  # ceil(0.5 * 32 / 4)
    rec = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()][0]
    assert rec["grad_norm"] > 0.01  # clipped from this


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    cfg_path = tiny.write_config(tmp_path / "exp.yaml", max_iter=5, batch_size=4, checkpoint_period=0)
    # Grouping batches each process's own stream; without it the two processes' batches
    # together are exactly the one process's batch.
    text = cfg_path.read_text().replace("num_workers: 0", "num_workers: 0\n  aspect_ratio_grouping: false")
    cfg_path.write_text(text)
    train(load_config(cfg_path), tmp_path / "one")
    mp.spawn(tiny.ddp_worker, args=(2, _free_port(), str(cfg_path), str(tmp_path / "two")), nprocs=2, join=True)
    one, two = load_checkpoint(tmp_path / "one/last.pth"), load_checkpoint(tmp_path / "two/last.pth")
    assert two["iteration"] == 5 and len(two["rng"]) == 2
    _assert_same_weights(one["model"], two["model"], exact=False)
    assert not torch.equal(one["model"]["conv1.weight"], tiny.initial_weights()["conv1.weight"])
    # Evaluation gathered both shards: each of the 8 val images once.
    evals = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines() if "seg/acc" in x]
    assert evals[-1]["seg/images"] == 8


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(tmp_path):
    eager = train(_cfg(tmp_path, max_iter=3), tmp_path / "eager")
    compiled = train(_cfg(tmp_path, max_iter=3, compile=True), tmp_path / "compiled")
    assert type(compiled.model).__name__ == "OptimizedModule" and type(eager.model).__name__ == "TinySegmenter"
    _assert_same_weights(tiny.final_weights(tmp_path / "eager"), tiny.final_weights(tmp_path / "compiled"), exact=False)
