"""What a first-hour user relies on: eval.py / infer.py refuse to run without weights,
results.json is COCO results (pycocotools gives eval.py's AP), checkpoints carry their
class names, and the README's Predictor lines run."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from testkit import (
    infer_models,  # noqa: F401  (registers InferTinyUpscaler)
    tiny,
)
from torch import nn

from densenets.config import MODELS
from densenets.data.synthetic import make_shapes

ROOT = Path(__file__).resolve().parents[2]

infer = importlib.import_module("densenets.tools.infer")
eval_tool = importlib.import_module("densenets.tools.eval")
train_tool = importlib.import_module("densenets.tools.train")
convert_tool = importlib.import_module("densenets.tools.convert_checkpoint")


@MODELS.register()
class OracleDetector(nn.Module):
    """Ground-truth boxes of the image, jittered, with random scores and some wrong labels,
    looked up by file name: a detector with an AP far from 0 and 100."""

    def __init__(self, ann_file: str = "", num_classes: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        data = json.loads(Path(ann_file).read_text())
        cats = sorted(c["id"] for c in data["categories"])
        names = {im["id"]: Path(im["file_name"]).name for im in data["images"]}
        self.gt: dict[str, list] = {n: [] for n in names.values()}
        for a in data["annotations"]:
            self.gt[names[a["image_id"]]].append((a["bbox"], cats.index(a["category_id"])))

    def forward(self, batch):
        out = []
        for item in batch:
            name = Path(item["file_name"]).name
            rng = np.random.default_rng(sum(map(ord, name)))
            boxes, scores, labels = [], [], []
            for (x, y, w, h), label in self.gt[name]:
                jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
                boxes.append([x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]])
                scores.append(rng.uniform(0.05, 1.0))
                labels.append(label if rng.uniform() > 0.2 else (label + 1) % 3)
            out.append(
                {
                    "instances": {
                        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor(scores, dtype=torch.float32),
                        "labels": torch.tensor(labels, dtype=torch.int64),
                    }
                }
            )
        return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, num_train=1, num_val=12, image_size=96, seed=3)
    val = {
        "type": "COCODetection", "root": str(root / "val2017"),
        "ann_file": str(root / "annotations/instances_val2017.json"),
    }  # fmt: skip
    cfg = {
        "model": {"type": "OracleDetector", "ann_file": val["ann_file"]},
        "data": {"val": val, "num_workers": 0},
        "evaluation": {"type": "COCOEvaluator"},
        "infer": {"visualizer": {"type": "DetectionVisualizer"}},
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"model": {"w": torch.tensor(1.0)}}, root / "w.pth")
    return root


def test_eval_and_infer_refuse_to_run_without_weights(shapes, tmp_path, capsys):
    cfg = str(shapes / "cfg.yaml")
    assert eval_tool.main(["--config", cfg, "--output", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--weights" in err and "--weights none" in err
    assert (
        infer.main(["--config", cfg, "--input", str(shapes / "val2017"), "--output", str(tmp_path / "i")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--weights" in err and not (tmp_path / "i" / "results.json").exists()
    # On purpose, or named by the config: it runs.
    assert eval_tool.main(["--config", cfg, "--weights", "none", "--output", str(tmp_path / "e")]) == 0
    named = ["--config", cfg, f"infer.weights={shapes / 'w.pth'}"]
    assert infer.main([*named, "--input", str(shapes / "val2017"), "--output", str(tmp_path / "i")]) == 0
    bad = ["--config", cfg, f"infer.weights={tmp_path / 'missing.pth'}", "--output", str(tmp_path / "e")]
    assert eval_tool.main(bad) == 2 and "missing.pth: checkpoint not found" in capsys.readouterr().err


def test_results_json_is_coco_results_with_the_same_ap_as_eval(shapes, tmp_path, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cfg = str(shapes / "cfg.yaml")
    assert (
        eval_tool.main(["--config", cfg, "--weights", str(shapes / "w.pth"), "--output", str(tmp_path / "e")])
        == 0
    )
    metrics = json.loads((tmp_path / "e/metrics.json").read_text())
    assert 20 < metrics["bbox/AP"] < 90  # a meaningful comparison
    out = tmp_path / "i"
    args = [
        "--config",
        cfg,
        "--weights",
        str(shapes / "w.pth"),
        "--input",
        str(shapes / "val2017"),
        "--output",
        str(out),
    ]
    assert infer.main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["category_id"] for r in results} == {1, 3, 5}  # the dataset's ids, not the labels 0..2
    assert all(isinstance(r["image_id"], int) for r in results)
    assert {r["category_name"] for r in results} == {"circle", "square", "triangle"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shapes / "annotations/instances_val2017.json"))
        ev = COCOeval(gt, gt.loadRes(str(out / "results.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] * 100 == pytest.approx(metrics["bbox/AP"], abs=1e-6)
    assert ev.stats[1] * 100 == pytest.approx(metrics["bbox/AP50"], abs=1e-6)


def test_trainer_checkpoints_carry_class_names(tmp_path, capsys):
    cfg = str(tiny.write_config(tmp_path / "exp.yaml", max_iter=2, checkpoint_period=1))
    assert train_tool.main(["--config", cfg, "--output", str(tmp_path / "run"), "--device", "cpu"]) == 0
    for name in ("last.pth", "model_0000001.pth"):
        ckpt = torch.load(tmp_path / "run" / name, weights_only=True)
        assert ckpt["meta"]["class_names"] == ["blue", "red"], name


def test_converted_coco_checkpoints_carry_the_80_names(tmp_path, capsys):
    from densenets.checkpoint.convert import CONVERTERS
    from densenets.data.coco_names import COCO_CATEGORY_IDS, COCO_CLASS_NAMES

    assert len(COCO_CLASS_NAMES) == 80 and len(COCO_CATEGORY_IDS) == 80
    assert (
        COCO_CLASS_NAMES[0] == "person"
        and COCO_CLASS_NAMES[-1] == "toothbrush"
        and COCO_CATEGORY_IDS[-1] == 90
    )
    # A foreign checkpoint whose conversion we stub: only the metadata is checked here.
    torch.save({"x": torch.zeros(1)}, tmp_path / "in.pth")
    CONVERTERS["torchvision-faster-rcnn"], saved = (
        (lambda obj: {"x": obj["x"]}),
        CONVERTERS["torchvision-faster-rcnn"],
    )
    CONVERTERS["detr"], saved_detr = (lambda obj: {"x": obj["x"]}), CONVERTERS["detr"]
    try:
        assert (
            convert_tool.main(
                ["--from", "torchvision-faster-rcnn", str(tmp_path / "in.pth"), str(tmp_path / "tv.pth")]
            )
            == 0
        )
        assert (
            convert_tool.main(["--from", "detr", str(tmp_path / "in.pth"), str(tmp_path / "detr.pth")]) == 0
        )
    finally:
        CONVERTERS["torchvision-faster-rcnn"], CONVERTERS["detr"] = saved, saved_detr
    tv = torch.load(tmp_path / "tv.pth", weights_only=True)["meta"]
    assert (
        len(tv["class_names"]) == 90 and tv["class_names"][0] == "person" and tv["class_names"][11] == "N/A"
    )
    assert tv["category_ids"] == list(range(1, 91))
    detr = torch.load(tmp_path / "detr.pth", weights_only=True)["meta"]
    assert detr["class_names"][70] == "toaster" and detr["category_ids"][70] == 80


@MODELS.register()
class MetaTinyDetector(nn.Module):
    """Label 70 with score 0.99 over the whole image."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return [{"instances": {
            "boxes": torch.tensor([[1.0, 1.0, 30.0, 20.0]]), "scores": torch.tensor([0.99]), "labels": torch.tensor([70]),
        }} for _ in batch]  # fmt: skip


def test_infer_and_predictor_use_the_names_of_the_checkpoint(tmp_path, capsys):
    from densenets.data.coco_names import coco_metadata
    from densenets.data.io import write_image
    from densenets.engine.predictor import Predictor

    (tmp_path / "cfg.yaml").write_text(
        yaml.safe_dump({"model": {"type": "MetaTinyDetector"}, "data": {"num_workers": 0}})
    )
    torch.save({"model": {"w": torch.tensor(1.0)}, "meta": coco_metadata()}, tmp_path / "w.pth")
    write_image(tmp_path / "in" / "a.png", np.zeros((24, 32, 3), np.uint8))
    args = ["--config", str(tmp_path / "cfg.yaml"), "--weights", str(tmp_path / "w.pth")]
    assert infer.main([*args, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
    (r,) = json.loads((tmp_path / "out/results.json").read_text())
    assert r["category_name"] == "toaster" and r["category_id"] == 80 and r["image_id"] == "a.png"
    predictor = Predictor(str(tmp_path / "cfg.yaml"), tmp_path / "w.pth", device="cpu")
    assert predictor.class_names[70] == "toaster"


def test_super_resolution_never_warns_about_class_names(tmp_path, caplog, capsys):
    from densenets.data.io import write_image

    cfg = {
        "model": {"type": "InferTinyUpscaler"},
        "data": {"num_workers": 0, "val": {"type": "NoSuchDataset"}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    write_image(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with caplog.at_level(logging.INFO):
        args = ["--config", str(tmp_path / "cfg.yaml"), "--weights", "none", "--input", str(tmp_path / "in")]
        assert infer.main([*args, "--output", str(tmp_path / "out")]) == 0
    assert not [r for r in caplog.records if "class names" in r.getMessage()]
    assert "class names" not in capsys.readouterr().err


def test_readme_predictor_lines_run(tmp_path, monkeypatch):
    """The README's Predictor block, run as written, in a folder with its files."""
    from densenets.config import build, load_config
    from densenets.data.io import read_image, write_image

    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "Predictor(" in b]
    assert blocks, "README: no Predictor block"
    code = blocks[0]
    assert len(code.strip().splitlines()) <= 6  # imports, register_all(), predictor, read, draw
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    config = re.search(r'Predictor\("([^"]+)"', code).group(1)
    weights = re.search(r'Predictor\("[^"]+", "([^"]+)"', code).group(1)
    image = re.search(r'read_image\("([^"]+)"\)', code).group(1)
    saved = re.search(r'write_image\("([^"]+)"', code).group(1)
    model = build(load_config(config).model, MODELS)
    Path(weights).parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": model.state_dict(), "meta": {"class_names": ["circle", "square", "triangle"]}}, weights
    )
    write_image(image, np.full((96, 128, 3), 200, np.uint8))
    exec(compile(code, "README.md", "exec"), {})
    assert read_image(saved).shape == (96, 128, 3)
