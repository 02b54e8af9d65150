"""`make demo` end to end with tiny settings: data, training, evaluation, inference, summary."""

import importlib
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _demo():
    return importlib.import_module("densenets.tools.demo")


TINY = ["train.max_iter=2", "train.batch_size=2", "train.log_period=1", "data.num_workers=0"]


def test_demo_detection_tiny(tmp_path, monkeypatch, capsys):
    demo = _demo()
    monkeypatch.chdir(tmp_path)
    rc = demo.main(
        ["--task", "detection", "--num-train", "4", "--num-val", "3", "--image-size", "128", *TINY]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    run = tmp_path / "runs" / "demo" / "detection"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in records) and any("bbox/AP50" in r for r in records)
    assert (run / "metrics.png").is_file() and (run / "last.pth").is_file()
    results = json.loads((run / "infer" / "results.json").read_text())
    assert isinstance(results, list)
    assert len(list((run / "infer" / "vis").glob("*.jpg"))) == 3
    assert "bbox/AP50" in out and str(Path("runs/demo/detection/infer/results.json")) in out
    # The COCO table: the 12-line summary and the per-category AP table, in the summary too.
    summary = (run / "demo_summary.txt").read_text()
    for text in (out, summary):
        assert " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = " in text
        assert " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = " in text
        assert "| category " in text and "| circle " in text
    assert "python tools/train.py --config configs/demo/faster_rcnn_r18_fpn_shapes.yaml" in out
    assert (run / "demo_summary.txt").read_text().startswith("=== demo finished")


@pytest.mark.parametrize(
    ("task", "data_args", "extra", "outputs"),
    [
        (
            "segmentation",
            ["--num-train", "2", "--num-val", "2", "--image-size", "64,128"],
            ["data.train.transforms.crop_size=[64,128]"],
            ("labels", "vis"),
        ),
        ("super_resolution", ["--num-train", "2"], ["data.train.repeat=1"], ("sr", "vis")),
    ],
)
def test_demo_other_tasks_tiny(tmp_path, monkeypatch, capsys, task, data_args, extra, outputs):
    demo = _demo()
    monkeypatch.chdir(tmp_path)
    rc = demo.main(["--task", task, *data_args, *TINY, *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    run = tmp_path / "runs" / "demo" / task
    for name in outputs:
        assert any((run / "infer" / name).rglob("*.png")) or any((run / "infer" / name).rglob("*.jpg")), name
    metric = demo.demo_tasks()[task].metrics[0]
    assert metric in out
    if task == "super_resolution":
        assert "(bicubic:" in out


def test_dataset_kept_when_unchanged_and_regenerated_otherwise(tmp_path):
    demo = _demo()
    task = demo.demo_tasks()["detection"]
    root = tmp_path / "shapes"
    kwargs = {"num_train": 2, "num_val": 1, "image_size": 64}
    assert demo.prepare_dataset(task, kwargs, root) is True
    first = (root / "train2017" / "000000000001.png").read_bytes()
    assert demo.prepare_dataset(task, kwargs, root) is False
    assert demo.prepare_dataset(task, {**kwargs, "num_train": 3}, root) is True
    assert (root / "train2017" / "000000000003.png").is_file()
    assert (root / "train2017" / "000000000001.png").read_bytes() == first
    foreign = tmp_path / "mine"
    foreign.mkdir()
    with pytest.raises(FileExistsError, match="mine: exists but was not made by the generator"):
        demo.prepare_dataset(task, kwargs, foreign)


def test_demo_refuses_to_replace_a_foreign_output(tmp_path, capsys):
    demo = _demo()
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc = demo.main(
        [
            "--task",
            "detection",
            "--output",
            str(out),
            "--data-root",
            str(tmp_path / "data"),
            "--num-train",
            "1",
            "--num-val",
            "1",
            "--image-size",
            "64",
        ]
    )
    assert rc == 2
    assert "precious: exists and is not a demo run" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
