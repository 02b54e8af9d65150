"""tools/train.py, eval.py, plot_metrics.py and benchmark.py on the tiny registered task."""

from __future__ import annotations

import importlib
import json
import shutil

import torch
from testkit import tiny  # registers the tiny model, dataset and evaluator


def _load_tool(name: str):
    return importlib.import_module(f"densenets.tools.{name}")


train_tool, eval_tool = _load_tool("train"), _load_tool("eval")
plot_tool, bench_tool = _load_tool("plot_metrics"), _load_tool("benchmark")


def test_train_resume_eval_plot(tmp_path, capsys):
    cfg = str(tiny.write_config(tmp_path / "exp.yaml", max_iter=6, checkpoint_period=3, keep_checkpoints=0))
    run = tmp_path / "run"
    assert (
        train_tool.main(["--config", cfg, "--output", str(run), "--device", "cpu", "train.optimizer.lr=0.2"])
        == 0
    )
    assert "done: 6 iterations" in capsys.readouterr().out
    assert (run / "config.yaml").read_text().count("lr: 0.2") == 1  # overrides reach the saved config

    # Resume a copy of the run from its iteration-3 checkpoint: same final weights.
    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copy(run / "model_0000003.pth", cut / "last.pth")
    assert train_tool.main(["--config", cfg, "--output", str(cut), "--resume", "train.optimizer.lr=0.2"]) == 0
    a, b = tiny.final_weights(run), tiny.final_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Resuming a finished run trains nothing.
    assert train_tool.main(["--config", cfg, "--output", str(run), "--resume", "train.optimizer.lr=0.2"]) == 0
    assert "done: 6 iterations" in capsys.readouterr().out

    assert (
        eval_tool.main(
            ["--config", cfg, "--weights", str(run / "last.pth"), "--output", str(tmp_path / "ev")]
        )
        == 0
    )
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert metrics["seg/images"] == 8 and f"{metrics['seg/acc']:.4f}" in out

    assert plot_tool.main([str(run)]) == 0
    assert (run / "metrics.png").stat().st_size > 1000


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    cfg = str(tiny.write_config(tmp_path / "exp.yaml"))
    assert train_tool.main(["--config", cfg, "--output", str(tmp_path / "r"), "train.max_iters=3"]) == 2
    assert "train.max_iters: unknown key, did you mean max_iter?" in capsys.readouterr().err
    assert train_tool.main(["--config", cfg, "--output", str(tmp_path / "r2"), "--resume"]) == 2
    assert "--resume: no last.pth" in capsys.readouterr().err
    assert eval_tool.main(["--config", cfg, "--weights", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth: checkpoint not found" in capsys.readouterr().err
    torch.save(
        {"model": {"conv1.weight": torch.zeros(8, 3, 1, 1), "extra.w": torch.zeros(1)}}, tmp_path / "bad.pth"
    )
    assert (
        eval_tool.main(
            ["--config", cfg, "--weights", str(tmp_path / "bad.pth"), "--output", str(tmp_path / "e")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "missing: conv2.weight" in err and "unexpected: extra.w" in err


def test_benchmark_prints_a_table(tmp_path, capsys):
    cfg = str(tiny.write_config(tmp_path / "exp.yaml"))
    out = tmp_path / "bench.json"
    args = [
        "--config",
        cfg,
        "--size",
        "16",
        "24",
        "--batch",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "3",
        "--json",
        str(out),
    ]
    assert bench_tool.main(args) == 0
    text = capsys.readouterr().out
    assert "| inference | 2 |" in text and "| train step | 2 |" in text
    rows = json.loads(out.read_text())["rows"]
    # Two 1x1 convs (3->8, 8->2) on 16x24 pixels: 2 FLOPs per multiply-add.
    assert rows[0]["flops_per_image"] == 2 * 16 * 24 * (3 * 8 + 8 * 2)
    assert all(r["images_per_s"] > 0 and r["latency_ms"] > 0 for r in rows)
