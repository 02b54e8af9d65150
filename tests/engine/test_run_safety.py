"""Training stops and resumes the way users expect (tools/train.py on the tiny task):
NaN/Inf never reaches a checkpoint, SIGINT/SIGTERM save and resume exactly, --resume
refuses a changed run (--finetune starts a new one), corrupt checkpoints are detected
and skipped, temporary files are cleaned, one trainer per run directory, a full disk
is named, and a folder holding a run is not trained into by accident."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from testkit import tiny

from densenets.checkpoint import (
    Checkpointer,
    CheckpointError,
    NonFiniteError,
    check_finite,
    load_checkpoint,
)
from densenets.config import ConfigError
from densenets.engine.device import config_device, resolve_device
from densenets.tools import train as train_tool

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}

# tools/train.py in a child process that sends itself SIGNAL before optimiser step AT.
_SIGNALLER = """
import os, signal, sys
from testkit import tiny
from densenets.engine import trainer as T
at, sig = int(os.environ["AT"]), getattr(signal, os.environ["SIGNAL"])
step = T.Trainer.run_step
def run_step(self):
    if self.iter == at:
        os.kill(os.getpid(), sig)
    step(self)
T.Trainer.run_step = run_step
from densenets.tools.train import main
sys.exit(main(sys.argv[1:]))
"""


def _config(tmp_path, **train):
    return str(tiny.write_config(tmp_path / "exp.yaml", **train))


def _run(cfg, out, *extra):
    return train_tool.main(["--config", cfg, "--output", str(out), *extra])


def _same(a: Path, b: Path) -> bool:
    wa, wb = tiny.final_weights(a), tiny.final_weights(b)
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def test_non_finite_weights_are_never_saved(tmp_path, capsys):
    # From iteration 2 the LR is 1e39: the third step's loss is finite, its update is not.
    cfg = _config(
        tmp_path,
        max_iter=6,
        checkpoint_period=1,
        scheduler={"type": "MultiStepLR", "steps": [2], "gamma": 1.0e40},
    )
    assert _run(cfg, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "iteration 3:" in err and "model tensors are not finite" in err and "Traceback" not in err
    for path in (tmp_path / "run").glob("*.pth"):
        state = load_checkpoint(path)
        assert state["iteration"] <= 2
        check_finite(state)


def test_check_finite_covers_optimizer_and_ema_state():
    good = {
        "model": {"w": torch.ones(2)},
        "ema": {"module": {"w": torch.ones(2)}},
        "iteration": 7,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}},
    }
    check_finite(good)
    for part, bad in (
        ("optimizer", {"state": {0: {"exp_avg": torch.tensor([0.0, float("inf")])}}}),
        ("ema", {"module": {"w": torch.tensor([float("nan")])}}),
    ):
        with pytest.raises(NonFiniteError, match=rf"iteration 7: 1 of 1 {part} tensors are not finite"):
            check_finite({**good, part: bad})


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_saves_last_and_resume_loses_nothing(tmp_path, sig, code):
    cfg = _config(tmp_path, max_iter=8, checkpoint_period=0)
    overrides = ["data.num_workers=2", "data.train.augment=true", "model.dropout=0.2"]
    assert _run(cfg, tmp_path / "full", *overrides) == 0
    env = {**ENV, "AT": "3", "SIGNAL": sig}
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNALLER, "--config", cfg, "--output", str(tmp_path / "cut"), *overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    assert f"interrupted by {sig} at iteration 4: saved {tmp_path / 'cut' / 'last.pth'}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(tmp_path / "cut/last.pth")["iteration"] == 4  # the step in progress finished
    assert _run(cfg, tmp_path / "cut", "--resume", *overrides) == 0
    assert _same(tmp_path / "full", tmp_path / "cut")


def test_resume_refuses_a_changed_run_and_finetune_starts_a_new_one(tmp_path, capsys):
    cfg = _config(tmp_path, max_iter=4, optimizer={"type": "AdamW", "lr": 0.01, "weight_decay": 0.0})
    assert _run(cfg, tmp_path / "run") == 0
    capsys.readouterr()
    cases = {
        "train.optimizer.type=SGD": "train.optimizer.type: 'AdamW' -> 'SGD'",
        "train.optimizer.lr=0.1": "train.optimizer.lr: 0.01 -> 0.1",
        "train.optimizer.weight_decay=0.1": "train.optimizer.weight_decay: 0.0 -> 0.1",
        "train.ema={decay: 0.9}": "train.ema.decay: (not set) -> 0.9",
        "train.scheduler.steps=[2]": "train.scheduler.steps: [4] -> [2]",
    }
    for override, difference in cases.items():
        assert _run(cfg, tmp_path / "run", "--resume", override) == 2, override
        err = capsys.readouterr().err
        assert "the config differs from the run saved in" in err and difference in err, err
        assert "--finetune" in err and "Traceback" not in err
    # Logging and checkpoint periods may change.
    assert _run(cfg, tmp_path / "run", "--resume", "train.log_period=1") == 0
    # --finetune: the weights only, a new schedule (SGD with lr 0 keeps them unchanged).
    new = tmp_path / "new"
    args = [
        "--finetune",
        str(tmp_path / "run/last.pth"),
        "train.optimizer={type: SGD, lr: 0.0, momentum: 0.0}",
    ]
    assert _run(cfg, new, *args, "train.optimizer.weight_decay=0.0") == 0
    assert load_checkpoint(new / "last.pth")["iteration"] == 4
    assert _same(tmp_path / "run", new)


def test_resume_from_a_checkpoint_without_its_config_gives_no_traceback(tmp_path, capsys):
    cfg = _config(tmp_path, max_iter=4, optimizer={"type": "AdamW", "lr": 0.01})
    assert _run(cfg, tmp_path / "run") == 0
    state = load_checkpoint(tmp_path / "run/last.pth")
    state.pop("config"), state.pop("checksum")
    torch.save(state, tmp_path / "run/last.pth")  # as older versions wrote it
    capsys.readouterr()
    assert _run(cfg, tmp_path / "run", "--resume", "train.ema={decay: 0.9}") == 2
    assert "has no EMA weights but train.ema is set" in capsys.readouterr().err


def test_corrupt_last_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys, caplog):
    cfg = _config(tmp_path, max_iter=6, checkpoint_period=2, keep_checkpoints=0)
    assert _run(cfg, tmp_path / "full") == 0
    cut = tmp_path / "cut"
    cut.mkdir()
    for name in ("model_0000002.pth", "model_0000004.pth", "config.yaml"):
        (cut / name).write_bytes((tmp_path / "full" / name).read_bytes())
    data = (tmp_path / "full/model_0000004.pth").read_bytes()
    (cut / "last.pth").write_bytes(data[: len(data) // 2])  # truncated
    (cut / "model_0000004.pth").write_bytes(data[:-100])  # also broken
    assert _run(cfg, cut, "--resume") == 0
    assert "resuming from the newest intact checkpoint" in caplog.text and "model_0000002.pth" in caplog.text
    assert _same(tmp_path / "full", cut)
    # Nothing intact: the error names the file.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "last.pth").write_bytes(data[:1000])
    capsys.readouterr()
    assert _run(cfg, bad, "--resume") == 2
    err = capsys.readouterr().err
    assert f"{bad / 'last.pth'}: cannot read" in err and "no intact periodic checkpoint" in err


def test_a_flipped_byte_is_detected(tmp_path):
    ck = Checkpointer(tmp_path)
    weights = torch.arange(4096, dtype=torch.float32)
    ck.save("last.pth", {"model": {"w": weights}, "iteration": 3})
    assert torch.equal(load_checkpoint(tmp_path / "last.pth")["model"]["w"], weights)
    data = bytearray((tmp_path / "last.pth").read_bytes())
    at = bytes(data).find(weights[1000:1010].numpy().tobytes())
    data[at + 5] ^= 0x10  # torch.load alone reads this file without complaint
    (tmp_path / "last.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last\.pth: checksum mismatch, the file is corrupt"):
        load_checkpoint(tmp_path / "last.pth")


def test_unsafe_pickles_are_refused_in_one_line(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "evil.pth: cannot read as a weights-only checkpoint" in str(info.value)
    assert "\n" not in str(info.value)
    sources = [p for d in ("densenets", "tools") for p in (ROOT / d).rglob("*.py")]
    assert not [p for p in sources if "weights_only=False" in p.read_text()]


def test_temporary_files_of_interrupted_writes_are_cleaned(tmp_path):
    cfg = _config(tmp_path, max_iter=2)
    run = tmp_path / "run"
    assert _run(cfg, run) == 0
    (run / ".last.pth.tmp12345").write_bytes(b"half")
    (run / ".model_0000002.pth.tmp999").write_bytes(b"half")
    assert _run(cfg, run, "--resume") == 0
    assert not list(run.glob(".*.tmp*"))


def test_a_second_trainer_on_the_same_output_refuses(tmp_path, capsys):
    cfg = _config(tmp_path, max_iter=2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from densenets.engine.run_dir import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
            str(tmp_path / "run"),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _run(cfg, tmp_path / "run") == 2
        err = capsys.readouterr().err
        assert "another training process is writing into this run directory" in err
        assert f"pid {holder.pid} on" in err
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert _run(cfg, tmp_path / "run") == 0  # the lock went with the process


def test_a_full_disk_is_named_and_the_old_checkpoint_kept(tmp_path):
    ck = Checkpointer(tmp_path)
    ck.save("last.pth", {"model": {"w": torch.ones(3)}, "iteration": 1})
    (tmp_path / f".last.pth.tmp{os.getpid()}").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(
        CheckpointError, match=r"last\.pth: no space left on device .*previous last\.pth is intact"
    ):
        ck.save("last.pth", {"model": {"w": torch.zeros(3)}, "iteration": 2})
    assert load_checkpoint(tmp_path / "last.pth")["iteration"] == 1


def test_a_folder_holding_a_run_needs_resume_or_overwrite(tmp_path, capsys):
    cfg = _config(tmp_path, max_iter=2, log_period=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / ".demo-run").write_text("")
    assert _run(cfg, run) == 0  # files that are not a run's do not count
    capsys.readouterr()
    assert _run(cfg, run) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert _run(cfg, run, "--overwrite") == 0
    records = [r for r in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    assert len(records) == 2  # one run's records, not two appended
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(SystemExit):  # argparse refuses the pair
        _run(cfg, run, "--resume", "--overwrite")


def test_device_strings(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device 'cuda:2': this machine has 2 CUDA GPU\(s\)"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'mps': not available"):
        resolve_device("mps")


def test_config_device_is_train_device_checked():
    assert config_device({}) == config_device({"train": None}) == "auto"
    assert config_device({"train": {"device": "cpu", "max_iter": None}}) == "cpu"
    with pytest.raises(ConfigError, match="train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"):
        config_device({"train": {"device": "gpu"}})


def test_train_tool_device_flag_is_checked_in_one_line(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    cfg = _config(tmp_path, max_iter=1)
    assert _run(cfg, tmp_path / "run", "--device", "cuda:1") == 2
    assert "device 'cuda:1': no CUDA GPU is available" in capsys.readouterr().err
