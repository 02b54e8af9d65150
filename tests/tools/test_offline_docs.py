"""The README's converted-torchvision evaluation and docs/segmentation.md's Python snippet
run offline as written: their configs name `torchvision://` backbone weights, which a
full checkpoint (or plain inference) never needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densenets.tools import convert_checkpoint
from densenets.tools import eval as eval_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    monkeypatch.delenv("DENSENETS_CACHE", raising=False)


def _readme_line(prefix: str) -> list[str]:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(prefix):
            return line.split("#")[0].split()
    raise AssertionError(f"README has no line starting with {prefix!r}")


def _write_coco_val(root: Path) -> None:
    """Two images in datasets/coco/val2017 with torchvision's 90 category ids."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in (1, 2):
        cv2.imwrite(
            str(root / "val2017" / f"{i:012d}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        )
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": 48, "width": 64})
        anns.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 20, 16], "area": 320, "iscrowd": 0}
        )
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, 91)]
    payload = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(payload))


def test_readme_torchvision_faster_rcnn_eval_runs_offline(offline, tmp_path, monkeypatch, capsys):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    monkeypatch.chdir(tmp_path)
    _write_coco_val(tmp_path / "datasets" / "coco")
    torch.manual_seed(0)
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(tv.state_dict(), "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    convert_args = _readme_line("python tools/convert_checkpoint.py --from torchvision-faster-rcnn")[2:]
    assert convert_checkpoint.main(convert_args) == 0
    eval_args = _readme_line(
        "python tools/eval.py --config configs/detection/faster_rcnn_r50_fpn_torchvision.yaml"
    )
    eval_args = [str(ROOT / a) if a.startswith("configs/") else a for a in eval_args[2:]]
    assert eval_args[-2:] == ["--weights", "tv.pth"]
    assert eval_tool.main(eval_args) == 0
    captured = capsys.readouterr()
    assert "bbox/AP50" in captured.out and "bbox/AR100" in captured.out
    # The COCO table is printed (through the log), whichever COCO engine is installed.
    assert " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = " in captured.err
    assert "| category " in captured.err and "| class1 " in captured.err


def test_segmentation_docs_python_snippet_runs_offline(offline, monkeypatch):
    text = (ROOT / "docs" / "segmentation.md").read_text()
    snippet = re.search(r"From Python:\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(ROOT)
    torch.manual_seed(0)
    scope = {"image_uint8_chw": torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)}
    with torch.no_grad():
        exec(compile(snippet, "docs/segmentation.md", "exec"), scope)  # noqa: S102
    assert scope["probs"].shape == (19, 64, 96)
    assert scope["labels"].shape == (64, 96)
