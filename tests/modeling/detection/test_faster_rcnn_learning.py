"""Learning test: the demo's ResNet-18-FPN Faster R-CNN
(`configs/demo/faster_rcnn_r18_fpn_shapes.yaml`), trained from scratch on CPU on the
synthetic "shapes" dataset (COCO layout, 400 training images), reaches a stated AP50 on
the 50 held-out images. It runs `python tools/demo.py --task detection` end to end
(data, training, COCO evaluation, inference) in a temporary folder.

Slow (about ten minutes on two cores): run with ``pytest -m slow``.
``python tests/modeling/detection/test_faster_rcnn_learning.py`` prints the AP50 and the
time taken. The fast overfit test in `make test` is in test_faster_rcnn.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Measured with this recipe: AP50 90.2 (AP 70.8) in 10.1 min on two cores (docs/demo.md).
# The test asks for less, so that thread-count and platform noise do not fail it.
TARGET_AP50 = 75.0


def train_and_evaluate(tmp: Path) -> tuple[float, float]:
    """Returns (held-out AP50 in percent, minutes)."""
    start = time.perf_counter()
    output = tmp / "run"
    command = [sys.executable, str(REPO / "tools" / "demo.py"), "--task", "detection", "--output", str(output),
               "--data-root", str(tmp / "data")]  # fmt: skip
    rc = subprocess.run(command, cwd=REPO).returncode
    assert rc == 0, f"tools/demo.py exited with {rc}"
    evaluations = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    ap50 = [r["bbox/AP50"] for r in evaluations if "bbox/AP50" in r][-1]
    return ap50, (time.perf_counter() - start) / 60


@pytest.mark.slow
def test_learns_shapes(tmp_path):
    ap50, minutes = train_and_evaluate(tmp_path)
    print(f"AP50 {ap50:.1f} on the held-out images, {minutes:.1f} min")
    assert ap50 >= TARGET_AP50


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ap, minutes = train_and_evaluate(Path(tmp))
    print(f"AP50 {ap:.1f} on the held-out images, {minutes:.1f} min")
    sys.exit(0 if ap >= TARGET_AP50 else 1)
