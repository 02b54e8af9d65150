"""SR datasets in the DIV2K, benchmark and HR-only layouts; training transforms."""

import numpy as np
import pytest
import torch

from densenets.config import DATASETS, build
from densenets.data import read_image, write_image
from densenets.data.imresize import imresize
from densenets.data.sr import DIV2K, SRBenchmark, SRImageFolder
from densenets.data.sr_transforms import SRRandomCrop, SRRandomFlipRotate
from densenets.data.synthetic import make_sr_set


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr")
    make_sr_set(root, num_train=3, hr_size=96, scales=(2, 3, 4), valid_max_size=120)
    return root


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_div2k_layout_items(sr_root, scale):
    ds = DIV2K(sr_root, split="train", scale=scale)
    assert len(ds) == 3
    item = ds[0]
    assert item["lr"].dtype == torch.uint8 and item["hr"].dtype == torch.uint8
    assert item["lr"].shape == (3, 96 // scale, 96 // scale) and item["hr"].shape == (3, 96, 96)
    assert item["image_id"] == "0001" and item["file_name"].endswith("DIV2K_train_HR/0001.png")
    assert tuple(item["orig_size"]) == (96, 96)
    # The LR file is the MATLAB-bicubic downscale of the HR file.
    lr = imresize(item["hr"].permute(1, 2, 0).numpy(), 1 / scale)
    assert np.array_equal(item["lr"].permute(1, 2, 0).numpy(), lr)


def test_div2k_valid_range_repeat_and_on_the_fly(sr_root):
    ds = build({"type": "DIV2K", "root": str(sr_root), "split": "valid", "scale": 2, "index_range": [801, 802],
                "repeat": 4}, DATASETS)
    assert len(ds) == 8 and ds[5]["image_id"] == "0802"
    fly = DIV2K(sr_root, split="valid", scale=2, index_range=[801, 802], lr_on_the_fly=True)
    assert torch.equal(fly[0]["lr"], ds[0]["lr"]) and torch.equal(fly[0]["hr"], ds[0]["hr"])


def test_benchmark_layout_and_hr_only_folder(sr_root):
    bench = SRBenchmark(sr_root / "benchmark" / "Photos", scale=3)
    folder = SRImageFolder(sr_root / "benchmark" / "Photos" / "HR", scale=3)
    assert len(bench) == len(folder) == 3
    for a, b in zip(bench, folder):
        assert a["image_id"] == b["image_id"]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])


def test_hr_is_cropped_to_a_multiple_of_the_scale(tmp_path):
    img = (np.arange(31 * 22 * 3) % 251).astype(np.uint8).reshape(31, 22, 3)
    write_image(tmp_path / "odd.png", img)
    item = SRImageFolder(tmp_path, scale=4, cache=True)[0]
    assert item["hr"].shape == (3, 28, 20) and item["lr"].shape == (3, 7, 5)
    assert np.array_equal(item["hr"].permute(1, 2, 0).numpy(), img[:28, :20])


def test_clear_errors(sr_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="DIV2K_train_HR: image folder not found"):
        DIV2K(tmp_path)
    (tmp_path / "DIV2K_train_HR").mkdir()
    write_image(tmp_path / "DIV2K_train_HR" / "0001.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"X2/0001x2.png: LR image of .* not found"):
        DIV2K(tmp_path)
    with pytest.raises(ValueError, match="split"):
        DIV2K(sr_root, split="test")


def _pair(h, w, s, seed=0):
    lr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    hr = np.repeat(np.repeat(lr, s, axis=0), s, axis=1)  # nearest: every LR pixel is an s x s HR block
    return {"lr": lr, "hr": hr}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_crop_and_dihedral_keep_lr_hr_aligned(scale):
    crop, flip = SRRandomCrop(patch_size=12), SRRandomFlipRotate()
    np.random.seed(0)
    seen = set()
    for i in range(64):
        item = flip(crop(_pair(30, 25, scale, i)))
        lr, hr = item["lr"], item["hr"]
        assert lr.shape == (12, 12, 3) and hr.shape == (12 * scale, 12 * scale, 3)
        assert np.array_equal(hr, np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1))
        seen.add(hr.dtype)
    assert seen == {np.dtype(np.uint8)}  # values stay 0..255 uint8


def test_flip_rotate_draws_all_eight():
    base = np.arange(9, dtype=np.uint8).reshape(3, 3, 1).repeat(3, axis=2)
    np.random.seed(1)
    outcomes = {SRRandomFlipRotate()({"lr": base, "hr": base})["lr"][..., 0].tobytes() for _ in range(200)}
    assert len(outcomes) == 8


def test_transforms_through_the_dataset_are_seeded(sr_root):
    ds = DIV2K(sr_root, scale=2, repeat=10,
               transforms=[{"type": "SRRandomCrop", "patch_size": 16}, {"type": "SRRandomFlipRotate"}])
    assert len(ds) == 30
    np.random.seed(3)
    a = ds[7]
    np.random.seed(3)
    b = ds[7]
    assert a["lr"].shape == (3, 16, 16) and a["hr"].shape == (3, 32, 32)
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    with pytest.raises(ValueError, match="smaller than patch_size=64"):
        SRRandomCrop(64)({"lr": np.zeros((10, 10, 3), np.uint8), "hr": np.zeros((20, 20, 3), np.uint8)})


def test_read_back(sr_root):
    hr = read_image(sr_root / "DIV2K_train_HR" / "0001.png")
    assert hr.shape == (96, 96, 3)
