"""tools/infer.py fed the worst inputs we can make: it reports each bad entry on one line,
goes on, and never loses finished work."""

from __future__ import annotations

import importlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from densenets.config import MODELS, TRANSFORMS
from densenets.data.detection_transforms import DetectionTransform
from densenets.data.io import ImageTooLargeError, image_pixels

infer = importlib.import_module("densenets.tools.infer")


def _png_header_only(path: Path, h: int, w: int, bit_depth: int = 8) -> None:
    """A PNG whose header says H x W (RGB) and whose data is one compressed row: a
    decoder would allocate the whole image before finding the data short."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + w * 3 * bit_depth // 8)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * 4))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(data)


def _jpeg_with_size(path: Path, h: int, w: int) -> None:
    """A small real JPEG whose frame header (SOF0) claims H x W."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))


@MODELS.register()
class RobustTinyDetector(nn.Module):
    """One box per image; fails on 13 x 17 inputs; interrupts on a 5 x 5 one; records, per
    call, whether results.json on disk already holds the earlier images."""

    calls: list = []

    def __init__(self, output: str = ""):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.output = output

    def forward(self, batch):
        out = []
        for item in batch:
            h, w = item["orig_size"]
            results = Path(self.output) / "results.json"
            on_disk = {r["file_name"] for r in json.loads(results.read_text())} if results.exists() else set()
            self.calls.append((item["file_name"], on_disk))
            if (h, w) == (13, 17):
                raise RuntimeError("CUDA out of memory (simulated)\nsecond line of the message")
            if (h, w) == (5, 5):
                raise KeyboardInterrupt
            if (h, w) == (7, 7):
                time.sleep(120)  # until the test sends SIGTERM
            boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2]]) * self.scale
            out.append(
                {"instances": {"boxes": boxes, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}}
            )
        return out


@TRANSFORMS.register()
class PickyDetectionTransform(DetectionTransform):
    """DetectionTransform that fails on 9 x 11 images, as a broken transform would."""

    def __call__(self, item):
        if tuple(item["image"].shape[:2]) == (9, 11):  # H x W x 3 at this point
            raise ValueError("cannot resize a 9 x 11 image (simulated)")
        return super().__call__(item)


def _config(path: Path, output: Path, **infer_keys) -> Path:
    cfg = {
        "model": {"type": "RobustTinyDetector", "output": str(output)},
        "data": {
            "num_workers": 0,
            "class_names": ["thing"],
            "val": {
                "type": "ImageFolder",
                "path": ".",
                "transforms": {"type": "PickyDetectionTransform", "min_size": 64, "max_size": 64},
            },
        },
        "infer": {"batch_size": 2, **infer_keys},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(cfg: Path, inp: Path, out: Path, *extra: str) -> int:
    return infer.main(
        ["--config", str(cfg), "--weights", "none", "--input", str(inp), "--output", str(out), *extra]
    )


def _image(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def worst(tmp_path_factory):
    """A folder of the worst files we can make, and one infer.py run over it."""
    root = tmp_path_factory.mktemp("worst")
    inp, out = root / "in", root / "in" / "out"  # the output folder lies inside the input
    _image(inp / "good.png", 24, 32)
    _image(inp / "thin.png", 1, 3000)  # the resize once rounded its height to 0
    _image(inp / "picky.png", 9, 11)  # the transform fails on it
    _image(inp / "oom.png", 13, 17)  # the model fails on it
    _png_header_only(inp / "bomb8.png", 20000, 20000)
    _png_header_only(inp / "bomb16.png", 20000, 20000, bit_depth=16)
    _jpeg_with_size(inp / "bomb.jpg", 30000, 30000)
    (inp / "empty.png").write_bytes(b"")  # Pillow's header parsers raise struct.error on it
    (inp / "dangling.png").symlink_to(inp / "nowhere.png")
    (inp / "loop.png").symlink_to(inp / "loop.png")
    (inp / "sub").mkdir()
    (inp / "sub" / "up").symlink_to(inp, target_is_directory=True)  # a directory loop
    os.mkfifo(inp / "pipe.png")
    _image(inp / "writefail.png", 20, 20)
    (out / "vis" / "writefail.jpg").mkdir(parents=True)  # writing its visualisation fails
    cfg = _config(root / "cfg.yaml", out)
    RobustTinyDetector.calls.clear()
    rc = _run(cfg, inp, out)
    return inp, out, cfg, rc


def test_every_bad_entry_is_one_line_and_the_run_goes_on(worst, capfd):
    inp, out, cfg, rc = worst
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    # writefail's detections are never written; the 1 x 3000 strip is processed.
    assert {r["file_name"] for r in results} == {"good.png", "thin.png"}
    assert (out / "vis" / "good.jpg").is_file()


def test_messages(worst, capsys):
    inp, out, cfg, _ = worst
    RobustTinyDetector.calls.clear()
    assert _run(cfg, inp, out) == 0  # a second run: the output folder, inside the input, is not read
    err = capsys.readouterr()
    lines = err.err.splitlines()

    def line(name: str) -> str:
        hits = [x for x in lines if name in x and x.startswith("skipped")]
        assert len(hits) == 1, (name, lines)
        return hits[0]

    assert "transform failed" in line("picky.png") and "9 x 11" in line("picky.png")
    assert not any("thin.png" in x for x in lines)
    assert "model failed" in line("oom.png") and "out of memory" in line("oom.png")
    for name, size in (
        ("bomb8.png", "20000x20000"),
        ("bomb16.png", "20000x20000"),
        ("bomb.jpg", "30000x30000"),
    ):
        assert size in line(name) and "pixel limit" in line(name) and "infer.max_pixels" in line(name)
    assert "not a readable image" in line("empty.png")
    assert "broken symbolic link" in line("dangling.png")
    assert "symbolic link loop" in line("loop.png")
    assert "symbolic link loop" in line(f"sub{os.sep}up")
    assert "FIFO" in line("pipe.png")
    assert not any(x.startswith(f"skipped {out}") for x in lines)  # its own outputs are no inputs
    summary = err.out.strip().splitlines()[-1]
    assert summary.startswith("2 image(s) written") and "7 failed" in summary, summary
    assert "4 other entries skipped" in summary, summary
    # The bombs were never handed to the model.
    assert {Path(f).name for f, _ in RobustTinyDetector.calls} == {"good.png", "thin.png", "oom.png", "writefail.png"}


def test_pixel_limit_is_read_from_the_header_and_configurable(tmp_path):
    _png_header_only(tmp_path / "big16.png", 20000, 20000, bit_depth=16)
    assert image_pixels(tmp_path / "big16.png") == (20000, 20000)
    _image(tmp_path / "in" / "a.png", 40, 40)
    _image(tmp_path / "in" / "b.png", 24, 32)
    cfg = _config(tmp_path / "cfg.yaml", tmp_path / "out", max_pixels=1000)
    assert _run(cfg, tmp_path / "in", tmp_path / "out") == 0
    assert {r["file_name"] for r in json.loads((tmp_path / "out/results.json").read_text())} == {"b.png"}
    from densenets.data.image_folder import ImageFolder

    item = ImageFolder(str(tmp_path / "in"), max_pixels=1000)[0]
    assert "1600 pixels" in item["error"] and "limit of 1000" in item["error"]
    with pytest.raises(ImageTooLargeError, match="big16.png: 20000x20000"):
        from densenets.data.io import read_image

        read_image(tmp_path / "big16.png", max_pixels=178956970)


def test_adversarial_names_get_unique_outputs(tmp_path, capsys):
    inp = tmp_path / "in"
    names = ["a.jpg", "a.png", "a_png.jpg", "A.JPG", "a_png_2.png", "x.png", "x.jpg/y.png", "new\nline.png"]
    if sys.platform.startswith("linux"):
        names.append(os.fsdecode(b"\xff\xfe.png"))
    for k, name in enumerate(names):
        _image(inp / name, 8 + k, 10)
    cfg = _config(tmp_path / "cfg.yaml", tmp_path / "out")
    assert _run(cfg, inp, tmp_path / "out") == 0
    err = capsys.readouterr()
    vis = [p for p in (tmp_path / "out/vis").rglob("*") if p.is_file()]
    assert len(vis) == len(names), sorted(map(str, vis))
    assert len({str(p).lower() for p in vis}) == len(names)  # unique on case-insensitive disks too
    assert f"{len(names)} image(s) written" in err.out
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert len({r["file_name"] for r in results}) == len(names)


def test_results_are_written_incrementally_and_on_interrupt(tmp_path, capsys):
    inp = tmp_path / "in"
    for k in range(4):
        _image(inp / f"{k}.png", 20 + k, 20)
    _image(inp / "9_interrupt.png", 5, 5)
    _image(inp / "z_never.png", 30, 30)
    cfg = _config(tmp_path / "cfg.yaml", tmp_path / "out", batch_size=1)
    RobustTinyDetector.calls.clear()
    assert _run(cfg, inp, tmp_path / "out") == 130
    # Each image saw the earlier images' results already on disk.
    seen = {Path(f).name: on_disk for f, on_disk in RobustTinyDetector.calls}
    assert seen["3.png"] == {"0.png", "1.png", "2.png"}
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert {r["file_name"] for r in results} == {"0.png", "1.png", "2.png", "3.png"}
    err = capsys.readouterr()
    assert "interrupted" in err.err and "4 image(s) written" in err.out


@pytest.mark.slow  # a subprocess that imports torch: ~50 s on a busy 2-core machine
def test_sigterm_keeps_the_finished_results(tmp_path):
    inp = tmp_path / "in"
    for k in range(2):
        _image(inp / f"{k}.png", 20 + k, 20)
    _image(inp / "8_slow.png", 7, 7)
    out = tmp_path / "out"
    cfg = _config(tmp_path / "cfg.yaml", out, batch_size=1)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_infer_robust as t; "
        "sys.exit(t.infer.main(sys.argv[2:]))"
    )
    args = [str(Path(__file__).parent), "--config", str(cfg), "--weights", "none", "--input", str(inp)]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--output", str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / "vis" / "1.jpg").exists():
            time.sleep(0.2)
        time.sleep(0.5)  # now in the slow image
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert {r["file_name"] for r in json.loads((out / "results.json").read_text())} == {"0.png", "1.png"}
    assert "2 image(s) written" in stdout
