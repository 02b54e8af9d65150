"""Cityscapes dataset (official layout, label ids -> train ids), the train-id
preparation script, and the segmentation transforms."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from densenets.data import Cityscapes, SemSegTestTransform, SemSegTrainTransform
from densenets.data.cityscapes import label_id_to_train_id, train_id_to_label_id
from densenets.data.io import read_label
from densenets.data.segmentation_transforms import cat_max_ratio_crop
from densenets.data.synthetic import make_shapes_city

ROOT = Path(__file__).parents[2]
spec = importlib.util.spec_from_file_location("prepare_cityscapes", ROOT / "datasets" / "prepare_cityscapes.py")
prepare_cityscapes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_cityscapes)

# cityscapesScripts labels.py: label id -> train id of every id (255 = not evaluated)
OFFICIAL = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2,
    12: 3, 13: 4, 14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    make_shapes_city(root, num_train=3, num_val=2, image_size=(64, 128), seed=1)
    return root


def test_label_table_matches_the_official_one():
    ids = np.arange(34, dtype=np.uint8)
    np.testing.assert_array_equal(label_id_to_train_id(ids), [OFFICIAL[i] for i in range(34)])
    train = np.arange(19)
    back = train_id_to_label_id(train)
    np.testing.assert_array_equal(label_id_to_train_id(back), train)


def test_items_follow_the_data_contract(city_root):
    ds = Cityscapes(city_root, split="train")
    assert len(ds) == 3 and ds.class_names[13] == "car" and len(ds.class_names) == 19
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 128)
    assert item["sem_seg"].dtype == torch.int64 and item["sem_seg"].shape == (64, 128)
    assert item["orig_size"] == (64, 128)
    assert item["image_id"] == Path(item["file_name"]).name[: -len("_leftImg8bit.png")]
    label_ids = read_label(ds.labels[0])
    expected = np.vectorize(OFFICIAL.get)(label_ids)
    np.testing.assert_array_equal(item["sem_seg"].numpy(), expected)
    assert 255 in expected or set(np.unique(expected)) <= set(range(19))


def test_prepared_train_id_files_are_used_and_equal(city_root, tmp_path):
    import shutil

    root = tmp_path / "prepared"
    shutil.copytree(city_root, root)
    on_the_fly = [Cityscapes(root, split="val")[i]["sem_seg"] for i in range(2)]
    assert prepare_cityscapes.main([str(root), "--workers", "1"]) == 0
    assert len(list((root / "gtFine").rglob("*_gtFine_labelTrainIds.png"))) == 5
    ds = Cityscapes(root, split="val")
    assert ds.prepared and ds.labels[0].name.endswith("_gtFine_labelTrainIds.png")
    for i in range(2):
        assert torch.equal(ds[i]["sem_seg"], on_the_fly[i])
    assert prepare_cityscapes.prepare(root, ["val"], workers=1) == 0  # existing files are kept


def test_missing_files_are_named(city_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit/test: not a folder"):
        Cityscapes(city_root, split="test")
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(city_root, root)
    victim = sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        Cityscapes(root, split="val")
    assert "sem_seg" not in Cityscapes(root, split="val", with_labels=False)[0]
    assert prepare_cityscapes.main([str(root), "--splits", "nosuch"]) == 1


def _coded_item(h=60, w=100, seed=0):
    """An item whose image's red channel equals the label (to check alignment)."""
    rng = np.random.default_rng(seed)
    label = np.repeat(np.repeat(rng.integers(0, 19, (h // 10, w // 10)), 10, 0), 10, 1).astype(np.uint8)
    image = np.stack([label, np.zeros_like(label), np.full_like(label, 7)], axis=-1)
    return {"image": image, "sem_seg": label.copy(), "orig_size": (h, w)}


def test_crop_and_flip_keep_image_and_label_aligned():
    t = SemSegTrainTransform(crop_size=(32, 48), ratio_range=(1.0, 1.0), flip_prob=1.0, photometric=False)
    item = _coded_item()
    t.set_random_seed(3)
    out = t(dict(item))
    assert out["image"].shape == (32, 48, 3) and out["sem_seg"].shape == (32, 48)
    np.testing.assert_array_equal(out["image"][..., 0], out["sem_seg"])
    # the output is a flipped window of the input
    src = item["sem_seg"]
    hits = [(y, x) for y in range(60 - 32 + 1) for x in range(100 - 48 + 1)
            if np.array_equal(src[y : y + 32, x : x + 48][:, ::-1], out["sem_seg"])]  # fmt: skip
    assert hits


def test_rescale_pads_with_ignore_and_keeps_alignment():
    t = SemSegTrainTransform(crop_size=(128, 128), ratio_range=(0.5, 0.5), cat_max_ratio=1.0, photometric=False,
                             flip_prob=0.0)  # fmt: skip
    out = t(_coded_item(60, 100))
    label, image = out["sem_seg"], out["image"]
    assert label.shape == (128, 128)
    assert (label[30:] == 255).all() and (label[:, 50:] == 255).all()  # 60x100 * 0.5 at the top left
    assert (image[30:] == 0).all()
    inner = label[:30, :50]
    assert set(np.unique(inner)) <= set(range(19))
    assert (image[:30, :50, 0] == inner).mean() > 0.8  # bilinear image vs nearest label at edges


def test_random_rescale_range_and_reproducibility():
    t = SemSegTrainTransform(crop_size=(512, 512), ratio_range=(0.5, 2.0), photometric=True)
    sizes = []
    for seed in range(12):
        t.set_random_seed(seed)
        out = t(_coded_item(100, 100, seed))
        valid = (out["sem_seg"] != 255).sum(axis=1)
        sizes.append(valid.max())
    assert 50 <= min(sizes) and max(sizes) <= 200 and max(sizes) - min(sizes) > 40
    t.set_random_seed(5)
    a = t(_coded_item())
    t.set_random_seed(5)
    b = t(_coded_item())
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["sem_seg"], b["sem_seg"])


def test_photometric_distortion_changes_only_the_image():
    t = SemSegTrainTransform(crop_size=(60, 100), ratio_range=(1, 1), flip_prob=0.0, photometric=True)
    changed = 0
    for seed in range(32):
        t.set_random_seed(seed)
        item = _coded_item()
        out = t(dict(item, image=np.full((60, 100, 3), 120, np.uint8)))
        np.testing.assert_array_equal(out["sem_seg"], item["sem_seg"])
        changed += int(np.abs(out["image"].astype(int) - 120).max() > 0)
    # On a uniform grey image only the brightness shift (probability 0.5, drawn
    # independently of the other distortions) changes pixels: about 16 of 32.
    assert 8 <= changed <= 24


def test_cat_max_ratio_crop_avoids_one_class_crops():
    label = np.zeros((100, 100), np.uint8)
    label[:, 60:] = 1  # class 1 only in the right 40%
    rng = np.random.default_rng(0)
    capped = [cat_max_ratio_crop(label, (50, 50), 0.75, rng) for _ in range(20)]
    free = [cat_max_ratio_crop(label, (50, 50), 1.0, rng) for _ in range(20)]
    frac = lambda yx: (label[yx[0] : yx[0] + 50, yx[1] : yx[1] + 50] == 0).mean()  # noqa: E731
    assert all(frac(c) < 0.75 for c in capped)
    assert sum(frac(c) >= 0.75 for c in free) >= 5  # without the cap many crops are mostly class 0
    # impossible constraint: falls back to the last try instead of looping
    y, x = cat_max_ratio_crop(np.zeros((10, 10), np.uint8), (5, 5), 0.75, rng)
    assert 0 <= y <= 5 and 0 <= x <= 5


def test_transforms_from_config_and_test_resize(city_root):
    ds = Cityscapes(city_root, split="train", transforms={"type": "SemSegTrainTransform", "crop_size": [32, 64]})
    item = ds[1]
    assert item["image"].shape == (3, 32, 64) and item["sem_seg"].shape == (32, 64)
    ds = Cityscapes(city_root, split="val", transforms={"type": "SemSegTestTransform", "scale": [32, 128]})
    item = ds[0]
    assert item["image"].shape == (3, 32, 64)
    assert item["sem_seg"].shape == (64, 128) and item["orig_size"] == (64, 128)
    assert SemSegTestTransform()(dict(_coded_item()))["image"].shape == (60, 100, 3)
