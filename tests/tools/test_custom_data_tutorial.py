"""docs/custom_data.md, step by step, on synthetic COCO-format data: the files the page
shows are written as shown, its commands run as shown (plus overrides that shrink the
model and the schedule to seconds on a CPU), offline."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from densenets.data.synthetic import make_shapes

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "custom_data.md"
# Tiny settings appended to the page's commands: R18 from a random "ImageNet" file in
# the cache, 128 px images, 4 iterations, evaluation every 2.
TINY_TRAIN = [
    "model.backbone.depth=18",
    "model.backbone.weights=torchvision://resnet18",
    "data.train.transforms.min_size=128",
    "data.train.transforms.max_size=160",
    "data.val.transforms.min_size=128",
    "data.val.transforms.max_size=160",
    "data.num_workers=0",
    "train.batch_size=2",
    "train.max_iter=4",
    "train.eval_period=2",
    "train.checkpoint_period=0",
    "train.device=cpu",
]
TINY_TEST = [o for o in TINY_TRAIN if o.startswith(("model.backbone.depth", "data.val", "data.num"))]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _files(text: str) -> dict[str, str]:
    """Code blocks whose first line is a comment naming the file they hold."""
    files = {}
    for lang in ("yaml", "python"):
        for block in _blocks(text, lang):
            first = block.splitlines()[0]
            if first.startswith("# my_project/"):
                files[first[2:].strip()] = block
    return files


def _commands(text: str) -> list[list[str]]:
    return [
        shlex.split(line)
        for block in _blocks(text, "bash")
        for line in block.splitlines()
        if line.startswith("python tools/")
    ]


def _coco_layout(project: Path) -> None:
    """The page's layout (train/, val/, annotations/{train,val}.json) from synthetic shapes."""
    raw = project / "raw"
    make_shapes(raw, num_train=6, num_val=3, image_size=128, seed=0)
    data = project / "data"
    (data / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.move(raw / f"{split}2017", data / split)
        shutil.move(
            raw / "annotations" / f"instances_{split}2017.json", data / "annotations" / f"{split}.json"
        )
    shutil.rmtree(raw)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A checkout-like working directory (configs/ linked) without network access, whose
    download cache holds a (random) torchvision ResNet-18 file."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    cache = tmp_path / "cache"
    cache.mkdir()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.save(torchvision.models.resnet18().state_dict(), cache / url.rsplit("/", 1)[-1])
    monkeypatch.setenv("DENSENETS_CACHE", str(cache))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("my_project")]:
        del sys.modules[name]
    from densenets.config import DATASETS

    DATASETS._entries.pop("FilteredCOCODetection", None)


@pytest.mark.slow
def test_custom_data_tutorial_step_by_step(workdir, capsys):
    text = DOC.read_text()
    files = _files(text)
    assert set(files) == {
        "my_project/faster_rcnn_r50_fpn_my_data.yaml",
        "my_project/faster_rcnn_r50_fpn_my_data_filtered.yaml",
        "my_project/my_datasets.py",
    }
    # 1. the data, as laid out on the page; 2. the files, as shown.
    _coco_layout(workdir / "my_project")
    for name, content in files.items():
        (workdir / name).write_text(content)
    commands = _commands(text)
    assert [c[1] for c in commands] == [
        "tools/print_config.py", "tools/train.py", "tools/eval.py", "tools/infer.py", "tools/train.py",
    ]  # fmt: skip
    for argv in commands:
        tool = importlib.import_module(f"densenets.tools.{Path(argv[1]).stem}")
        extra = {"train.py": TINY_TRAIN, "print_config.py": []}.get(Path(argv[1]).name, TINY_TEST)
        assert tool.main(argv[2:] + extra) == 0, argv
        out = capsys.readouterr().out
        if argv[1] == "tools/print_config.py":
            assert "num_classes: 3" in out
        if argv[1] == "tools/eval.py":
            assert "bbox/AP" in out
    run = workdir / "runs" / "my_data"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "bbox/AP" in r] == [2, 4]  # periodic evaluation
    assert (run / "metrics.png").is_file() and (run / "best.pth").is_file()
    assert (run / "eval" / "metrics.json").is_file() and (run / "eval" / "coco_summary.txt").is_file()
    assert len(list((run / "infer" / "vis").glob("*.jpg"))) == 3
    assert (run / "infer" / "results.json").is_file()
    # 6. the user's own dataset class was used, from the user's own module.
    saved = (workdir / "runs" / "my_data_filtered" / "config.yaml").read_text()
    assert "FilteredCOCODetection" in saved and "my_project.my_datasets" in saved
    from densenets.config import DATASETS

    assert DATASETS.get("FilteredCOCODetection").__module__ == "my_project.my_datasets"
