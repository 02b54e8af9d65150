"""Exact resume for every task (issue: detection augmentation was unseeded).

For Faster R-CNN, DETR, FCN and EDSR with their random training augmentation on and two
data-loader workers: the same seed twice gives bit-identical weights, and a run killed
with SIGKILL at a random iteration, or in the middle of a checkpoint write, then
resumed with `--resume`, ends with weights bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from testkit import tasks

from densenets.config import load_config
from densenets.engine.launch import train

ROOT = Path(__file__).resolve().parents[2]

# Runs tools/train.py in a child process that SIGKILLs itself before optimiser step
# KILL_AT (KILL_IN_WRITE=n: halfway through the n-th file written at iteration KILL_AT:
# 1 the periodic checkpoint, 2 last.pth).
_KILLER = """
import os, signal, sys, torch
from densenets.engine import trainer as T
K, in_write = int(os.environ["KILL_AT"]), int(os.environ.get("KILL_IN_WRITE", "0"))
if in_write:
    save, seen = torch.save, []
    def partial_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("iteration") == K:
            seen.append(1)
        if len(seen) == in_write:
            f.write(b"PK\\x03\\x04 half a checkpoint"); f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(obj, f, *a, **k)
    torch.save = partial_save
else:
    step = T.Trainer.run_step
    def run_step(self):
        if self.iter == K:
            os.kill(os.getpid(), signal.SIGKILL)
        step(self)
    T.Trainer.run_step = run_step
from densenets.tools.train import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tasks.make_data(tmp_path_factory.mktemp("data"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "last.pth", weights_only=True)
    return {
        **{f"model.{k}": v for k, v in state["model"].items()},
        **_flat(state["optimizer"]["state"], "opt"),
    }


def _flat(obj, prefix):
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}.{k}"))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}.{k}"] = v
    return out


def _differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _killed_run(cfg_path: Path, out: Path, kill_at: int, in_write: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": str(kill_at), "KILL_IN_WRITE": str(in_write)}
    args = [sys.executable, "-c", _KILLER, "--config", str(cfg_path), "--output", str(out)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four short trainings per task; all 6 tests: 37 min on 2 cores shared at load ~25
@pytest.mark.parametrize("task", tasks.TASKS)
def test_same_seed_same_weights_and_sigkill_resume_is_exact(task, data, tmp_path):
    cfg_path = tasks.write_task_config(task, data, tmp_path / f"{task}.yaml")
    cfg = load_config(cfg_path)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    reference = _weights(tmp_path / "a")
    assert not _differing(reference, _weights(tmp_path / "b")), "same seed, different weights"

    kill_at = random.randint(2, 5)  # optimiser steps done when the process dies (after the first checkpoint)
    proc = _killed_run(cfg_path, tmp_path / "cut", kill_at, in_write=0)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    train(cfg, tmp_path / "cut", resume=True)
    diff = _differing(reference, _weights(tmp_path / "cut"))
    assert not diff, f"killed before step {kill_at + 1}: {len(diff)} entries differ, e.g. {diff[:3]}"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_sigkill_during_a_checkpoint_write_resumes_exactly(task, data, tmp_path):
    cfg_path = tasks.write_task_config(task, data, tmp_path / f"{task}.yaml")
    cfg = load_config(cfg_path)
    train(cfg, tmp_path / "a")
    which = random.choice([1, 2])  # at iteration 4: model_0000004.pth, then last.pth
    proc = _killed_run(cfg_path, tmp_path / "cut", 4, in_write=which)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = [p.name for p in (tmp_path / "cut").glob(".*.tmp*")]
    assert left, "the killed write left its temporary file"
    trainer = train(cfg, tmp_path / "cut", resume=True)
    assert trainer.iter == 6
    assert not list((tmp_path / "cut").glob(".*.tmp*")), "temporary files are cleaned at the next start"
    diff = _differing(_weights(tmp_path / "a"), _weights(tmp_path / "cut"))
    assert not diff, (
        f"killed while writing file {which} at iteration 4: {len(diff)} entries differ, e.g. {diff[:3]}"
    )
