"""benchmark.py says what its FLOPs are: 2 x multiply-adds, next to the MACs that
detectron2 and mmdet users read as "FLOPs"."""

import json

from testkit import tiny  # registers the tiny model, dataset and evaluator

from densenets.tools import benchmark


def test_flops_are_labelled_and_macs_reported(tmp_path, capsys):
    cfg = str(tiny.write_config(tmp_path / "exp.yaml"))
    out = tmp_path / "bench.json"
    args = [
        "--config",
        cfg,
        "--size",
        "16",
        "24",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--no-train",
        "--json",
        str(out),
    ]
    assert benchmark.main(args) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("| mode"))
    assert "GFLOPs/image (2 x MACs)" in header and "GMACs/image" in header
    macs = 16 * 24 * (3 * 8 + 8 * 2)  # two 1x1 convs, 3->8 and 8->2 channels, on 16x24 pixels
    row = json.loads(out.read_text())["rows"][0]
    assert row["macs_per_image"] == macs and row["flops_per_image"] == 2 * macs


def test_table_columns():
    row = {"mode": "inference", "batch": 1, "latency_ms": 10.0, "images_per_s": 100.0, "peak_mem_mib": 5.0,
           "flops_per_image": 8_400_000_000, "macs_per_image": 4_200_000_000}  # fmt: skip
    lines = benchmark.format_table([row], "title").splitlines()
    cells = [c.strip() for c in lines[-1].strip("|").split("|")]
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert dict(zip(header, cells))["GFLOPs/image (2 x MACs)"] == "8.40"
    assert dict(zip(header, cells))["GMACs/image"] == "4.20"
