"""tools/infer.py on a short video this test writes itself, with one corrupt frame."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from testkit import infer_models  # noqa: F401  (registers InferTinyDetector, InferTinySegmenter)

infer = importlib.import_module("densenets.tools.infer")

H, W, FPS, FRAMES, CORRUPT = 48, 64, 12.0, 10, 4


def _frames() -> list[np.ndarray]:
    out = []
    for i in range(FRAMES):
        f = np.zeros((H, W, 3), np.uint8)
        f[:] = (120, 40, 20)  # BGR: bluish, class 0 of InferTinySegmenter
        cv2.rectangle(f, (4 + 4 * i, 10), (24 + 4 * i, 30), (0, 0, 230), -1)  # BGR: a red square moving right
        out.append(f)
    return out


def _write(path: Path, fourcc: str) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
    assert writer.isOpened()
    for f in _frames():
        writer.write(f)
    writer.release()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    _write(root / "clip.avi", "MJPG")
    data = bytearray((root / "clip.avi").read_bytes())
    # Motion-JPEG AVI: each frame is a "00dc" chunk holding one JPEG; wipe one frame's JPEG.
    starts = [
        i + 8 for i in range(len(data)) if data[i : i + 4] == b"00dc" and data[i + 8 : i + 10] == b"\xff\xd8"
    ]
    assert len(starts) == FRAMES
    data[starts[CORRUPT] : starts[CORRUPT] + 300] = bytes(300)
    (root / "clip.avi").write_bytes(bytes(data))
    _write(root / "clean.mp4", "mp4v")
    return root


def _config(path: Path, model: str) -> Path:
    cfg = {"model": {"type": model}, "data": {"num_workers": 0, "class_names": ["cat", "dog"]}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _read(path: Path) -> tuple[float, tuple[int, int], int]:
    cap = cv2.VideoCapture(str(path))
    fps, size = (
        cap.get(cv2.CAP_PROP_FPS),
        (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))),
    )
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return fps, size, n


def test_detection_video_with_a_corrupt_frame(clips, tmp_path, capsys):
    cfg = _config(tmp_path / "det.yaml", "InferTinyDetector")
    out = tmp_path / "out"
    args = [
        "--config",
        str(cfg),
        "--weights",
        "none",
        "--input",
        str(clips / "clip.avi"),
        "--output",
        str(out),
    ]
    assert infer.main(args) == 0
    captured = capsys.readouterr()
    bad = [x for x in captured.err.splitlines() if x.startswith("skipped")]
    assert len(bad) == 1 and f"frame {CORRUPT}: cannot be decoded" in bad[0]
    assert (
        "frame/s" in captured.err or "frame]" in captured.err or "s/frame" in captured.err
    )  # the progress bar
    assert f"{FRAMES - 1} frame(s) written" in captured.out
    fps, size, n = _read(out / "vis" / "clip.mp4")
    assert fps == pytest.approx(FPS) and size == (W, H) and n == FRAMES - 1
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [i for i in range(FRAMES) if i != CORRUPT]
    first = records[0]
    assert first["time"] == 0.0 and records[-1]["time"] == pytest.approx((FRAMES - 1) / FPS)
    det = max(first["detections"], key=lambda d: d["score"])
    assert (
        det["bbox"] == [W / 4, H / 4, W / 2, H / 2]
        and det["category_name"] == "dog"
        and det["category_id"] == 1
    )
    assert not (out / "labels").exists()


def test_segmentation_video_labels_on_request(clips, tmp_path, capsys):
    cfg = _config(tmp_path / "seg.yaml", "InferTinySegmenter")
    out = tmp_path / "out"
    args = [
        "--config",
        str(cfg),
        "--weights",
        "none",
        "--input",
        str(clips / "clean.mp4"),
        "--output",
        str(out),
    ]
    assert infer.main(args) == 0
    assert not (out / "labels").exists()
    fps, size, n = _read(out / "vis" / "clean.mp4")
    assert fps == pytest.approx(FPS) and size == (W, H) and n == FRAMES  # no legend panel in a video
    assert infer.main([*args, "--frame-labels"]) == 0
    labels = sorted((out / "labels" / "clean").glob("*.png"))
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(FRAMES)]
    lab = cv2.imread(str(labels[3]), cv2.IMREAD_UNCHANGED)
    assert lab.shape == (H, W) and lab[20, 4 + 4 * 3 + 8] == 1 and lab[40, 60] == 0  # red square = class 1
    record = json.loads((out / "clean.jsonl").read_text().splitlines()[3])
    assert set(record["classes"]) == {"cat", "dog"} and sum(record["classes"].values()) == pytest.approx(1.0)
