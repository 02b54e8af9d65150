"""tools/eval.py, tools/infer.py and tools/benchmark.py with the Deformable DETR and DINO configs.

The published configs, shrunk by command-line overrides (ResNet-18 without weights, one
encoder and one decoder layer, 20 queries, 64 px test images) and pointed at a few
synthetic shapes images in COCO layout.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from densenets.data.synthetic import make_shapes

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ["deformable_detr_r50_50e_coco_two_stage.yaml", "dino_4scale_r50_12e_coco.yaml"]


def _tool(name: str):
    return importlib.import_module(f"densenets.tools.{name}")


def _overrides(paths: dict) -> list[str]:
    return [
        "model.backbone.depth=18", "model.backbone.weights=null", "model.num_classes=3", "model.num_queries=20", "model.num_select=10",
        "model.transformer.num_encoder_layers=1", "model.transformer.num_decoder_layers=1",
        "model.transformer.dim_feedforward=64", f"data.val.root={paths['val_images']}",
        f"data.val.ann_file={paths['val_ann']}", "data.val.transforms.min_size=64", "data.val.transforms.max_size=96",
        "data.num_workers=0",
    ]  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS)
def test_eval_infer_and_benchmark_run(config, tmp_path, capsys):
    paths = make_shapes(tmp_path / "data", num_train=1, num_val=2, image_size=64, seed=0, max_objects=2)
    cfg = str(ROOT / "configs/detection" / config)
    overrides = _overrides(paths)
    assert (
        _tool("eval").main(
            ["--config", cfg, "--weights", "none", "--output", str(tmp_path / "eval"), "--device", "cpu", *overrides]
        )
        == 0
    )
    assert "bbox/AP50" in capsys.readouterr().out

    out = tmp_path / "infer"
    assert _tool("infer").main(["--config", cfg, "--weights", "none", "--input", str(paths["val_images"]),
                                "--output", str(out), "--device", "cpu", *overrides]) == 0  # fmt: skip
    assert len(list(out.rglob("*.png")) + list(out.rglob("*.jpg"))) >= 2
    predictions = [json.loads(p.read_text()) for p in out.rglob("*.json")]
    assert predictions, list(out.rglob("*"))

    bench = [
        "--config",
        cfg,
        "--size",
        "64",
        "80",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--device",
        "cpu",
        *overrides,
    ]
    assert _tool("benchmark").main(bench) == 0
    assert "| train step |" in capsys.readouterr().out
