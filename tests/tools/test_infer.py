"""tools/infer.py on a folder of every image kind plus a corrupt file and a text file,
with tiny detection, segmentation and super-resolution models registered here."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from testkit.infer_models import InferTinyDetector

from densenets.data import read_image, read_label

ROOT = Path(__file__).resolve().parents[2]


def _load_tool(name: str):
    return importlib.import_module(f"densenets.tools.{name}")


infer = _load_tool("infer")


def _make_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Images of each kind; returns rel path -> (H, W) as read (EXIF applied)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    sizes = {}
    (root / "sub/deeper").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "a.jpg", quality=95)
    sizes["a.jpg"] = (24, 32)
    Image.fromarray(rgb).save(root / "a.png")  # same stem as a.jpg
    sizes["a.png"] = (24, 32)
    Image.fromarray(np.dstack([rgb, np.full((24, 32), 128, np.uint8)])).save(root / "sub/rgba.png")
    sizes["sub/rgba.png"] = (24, 32)
    Image.fromarray(rgb[..., 0]).save(root / "sub/deeper/gray.bmp")
    sizes["sub/deeper/gray.bmp"] = (24, 32)
    cv2.imwrite(str(root / "sub/deep16.tif"), (rgb.astype(np.uint16) * 257)[..., ::-1])
    sizes["sub/deep16.tif"] = (24, 32)
    Image.fromarray(rgb).save(root / "photo.webp", lossless=True)
    sizes["photo.webp"] = (24, 32)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(root / "sub/rotated.JPG", exif=exif.tobytes())
    sizes["sub/rotated.JPG"] = (32, 24)
    (root / "sub/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return sizes


def _config(path: Path, model: str, transforms=None, **infer_keys) -> Path:
    data = {"num_workers": 0, "class_names": ["cat", "dog"]}
    if transforms:
        data["val"] = {"type": "ImageFolder", "path": str(path.parent), "transforms": transforms}
    cfg = {"model": {"type": model}, "data": data, "infer": {"batch_size": 3, **infer_keys}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, _make_folder(root)


def test_detection_on_a_folder(folder, tmp_path, capsys):
    root, sizes = folder
    cfg = _config(
        tmp_path / "det.yaml",
        "InferTinyDetector",
        transforms={"type": "InferHalve"},
        visualizer={"type": "DetectionVisualizer", "score_threshold": 0.5},
    )
    weights = tmp_path / "w.pth"
    torch.save({"model": {"scale": torch.tensor(1.0)}}, weights)
    out = tmp_path / "out"
    assert (
        infer.main(
            ["--config", str(cfg), "--weights", str(weights), "--input", str(root), "--output", str(out)]
        )
        == 0
    )
    err = capsys.readouterr()
    lines = err.err.splitlines()
    assert sum("corrupt.jpg" in x and x.startswith("skipped") for x in lines) == 1
    assert sum("notes.txt" in x and x.startswith("skipped") for x in lines) == 1
    assert "7 image(s) written" in err.out and "1 failed; 1 other entries skipped" in err.out
    # The output mirrors the input tree; a.jpg / a.png keep apart.
    vis = sorted(p.relative_to(out / "vis").as_posix() for p in (out / "vis").rglob("*.jpg"))
    assert vis == sorted(
        [
            "a_jpg.jpg",
            "a_png.jpg",
            "photo.jpg",
            "sub/rgba.jpg",
            "sub/deep16.jpg",
            "sub/deeper/gray.jpg",
            "sub/rotated.jpg",
        ]
    )
    assert read_image(out / "vis/sub/rotated.jpg").shape[:2] == (32, 24)
    results = json.loads((out / "results.json").read_text())
    assert {r["file_name"] for r in results} == set(sizes)
    r = next(r for r in results if r["file_name"] == "sub/rotated.JPG" and abs(r["score"] - 0.9) < 1e-6)
    assert r["bbox"] == [6.0, 8.0, 12.0, 16.0] and r["category_name"] == "dog" and r["category_id"] == 1
    # The model saw the test-time transform's output; predictions are at the file's size.
    assert ((12, 16), (24, 32)) in InferTinyDetector.seen_sizes and (
        (16, 12),
        (32, 24),
    ) in InferTinyDetector.seen_sizes


def test_segmentation_writes_label_pngs_at_original_size(folder, tmp_path, capsys):
    root, sizes = folder
    cfg = _config(tmp_path / "seg.yaml", "InferTinySegmenter")  # visualiser chosen from the prediction
    out = tmp_path / "out"
    assert (
        infer.main(["--config", str(cfg), "--weights", "none", "--input", str(root), "--output", str(out)])
        == 0
    )
    for rel, hw in sizes.items():
        stem = Path(rel).with_suffix("").as_posix()
        stem = {"a": f"a_{Path(rel).suffix[1:]}"}.get(stem, stem)
        label = read_label(out / "labels" / f"{stem}.png")
        assert label.shape == hw, rel
        img = read_image(root / rel).astype(int)
        np.testing.assert_array_equal(label, (img[..., 0] > img[..., 2]).astype(np.uint8))
    vis = read_image(out / "vis/photo.jpg").astype(int)
    assert vis.shape[0] >= 24 and vis.shape[1] > 32  # overlay + legend panel at the right
    assert np.abs(vis[:24, :32] - read_image(root / "photo.webp")).mean() > 10  # coloured over
    assert (vis[:, 32:] < 200).any()  # legend swatches and names


def test_super_resolution_on_a_glob(folder, tmp_path, capsys):
    root, _ = folder
    cfg = _config(tmp_path / "sr.yaml", "InferTinyUpscaler", visualizer={"type": "SRVisualizer"})
    out = tmp_path / "out"
    assert (
        infer.main(
            [
                "--config",
                str(cfg),
                "--weights",
                "none",
                "--input",
                str(root / "sub" / "*.png"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    sr = read_image(out / "sr/rgba.png")
    np.testing.assert_array_equal(sr, read_image(root / "sub/rgba.png").repeat(2, 0).repeat(2, 1))
    assert [p.name for p in (out / "sr").rglob("*.png")] == ["rgba.png"]


def test_exit_code_is_nonzero_only_when_nothing_succeeds(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"nope")
    cfg = _config(tmp_path / "seg.yaml", "InferTinySegmenter")
    assert (
        infer.main(
            ["--config", str(cfg), "--weights", "none", "--input", str(bad), "--output", str(tmp_path / "o")]
        )
        == 1
    )
    assert "x.png: not a readable image" in capsys.readouterr().err
    assert (
        infer.main(
            [
                "--config",
                str(cfg),
                "--weights",
                "none",
                "--input",
                str(tmp_path / "missing"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no such file or folder" in capsys.readouterr().err


def test_super_resolution_with_ground_truth_shows_psnr(tmp_path, capsys):
    rng = np.random.default_rng(1)
    lr = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(lr).save(tmp_path / "in" / "x.png")
    Image.fromarray(lr.repeat(2, 0).repeat(2, 1)).save(tmp_path / "gt" / "x.png")  # = the tiny model's output
    cfg = _config(
        tmp_path / "sr.yaml",
        "InferTinyUpscaler",
        visualizer={"type": "SRVisualizer", "compare": True},
    )
    args = [
        "--config",
        str(cfg),
        "--weights",
        "none",
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
    ]
    assert infer.main(args) == 0
    plain = read_image(tmp_path / "out/vis/x.png")
    assert infer.main([*args, "--ground-truth", str(tmp_path / "gt")]) == 0
    with_gt = read_image(tmp_path / "out/vis/x.png")
    assert plain.shape == with_gt.shape == (24, 64, 3)
    assert (plain != with_gt).any()  # the captions now carry the PSNR ("model inf dB")


def test_a_config_with_the_removed_infer_input_key_is_a_one_line_error(folder, tmp_path, capsys):
    """The model declares its input key (EDSR: `lr`); `infer.input_key` is gone from the schema."""
    root, _ = folder
    cfg = _config(tmp_path / "sr.yaml", "InferTinyUpscaler", input_key="lr")
    args = ["--config", str(cfg), "--weights", "none", "--input", str(root / "a.png")]
    assert infer.main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "infer.input_key: no longer a config key" in err[0], err
    assert not (tmp_path / "out").exists()
