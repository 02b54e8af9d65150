"""The synthetic datasets: valid layouts, real ids, byte-identical from a seed."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densenets.data import read_image, read_label
from densenets.data.synthetic import (
    CITY_IGNORED_LABEL_IDS,
    CITY_LABEL_IDS,
    SR_TRAIN_PHOTOS,
    SR_VALID_PHOTOS,
    STAMP_FILE,
    describe,
    make_shapes,
    make_shapes_city,
    make_sr_set,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _quiet_coco(path: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes(root, num_train=40, num_val=6, image_size=(160, 192), seed=0)


def test_shapes_is_valid_coco(shapes):
    coco = _quiet_coco(shapes["train_ann"])
    assert sorted(coco.getCatIds()) == [1, 3, 5]  # not contiguous on purpose
    assert [c["name"] for c in coco.loadCats([1, 3, 5])] == shapes["class_names"]
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 40
    per_image = [len(coco.getAnnIds(imgIds=[im["id"]])) for im in images]
    assert 0 in per_image, "some images must have no objects"
    assert max(per_image) >= 3
    seen = set()
    for ann in coco.loadAnns(coco.getAnnIds()):
        im = coco.imgs[ann["image_id"]]
        assert (im["height"], im["width"]) == read_image(
            Path(shapes["train_images"]) / im["file_name"]
        ).shape[:2]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"] and w >= 1 and h >= 1
        assert ann["iscrowd"] == 0 and 0 < ann["area"] <= w * h
        # The polygons run through the centres of the visible boundary pixels, whose
        # tight box is the bbox; rasterised, they lose at most a pixel or two at tips.
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        assert 0 <= xs.min() - x <= 2 and 0 <= x + w - (xs.max() + 1) <= 2
        assert 0 <= ys.min() - y <= 2 and 0 <= y + h - (ys.max() + 1) <= 2
        assert 0.6 * ann["area"] <= mask.sum() <= 1.05 * ann["area"] + 4
        seen.add(ann["category_id"])
    assert seen == {1, 3, 5}
    # Some shapes overlap (occlusion is part of the data).
    assert any(_overlapping(coco, im["id"]) for im in images)


def _overlapping(coco: COCO, image_id: int) -> bool:
    boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]
    for i, (x, y, w, h) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            if min(x + w, x2 + w2) > max(x, x2) and min(y + h, y2 + h2) > max(y, y2):
                return True
    return False


def test_shapes_ground_truth_scores_ap_one(shapes):
    """The annotation file works with COCOeval: ground truth as detections gives AP 1."""
    gt = _quiet_coco(shapes["val_ann"])
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt.loadAnns(gt.getAnnIds())
    ]
    assert dets
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_shapes_boxes_lie_on_shapes(shapes):
    """A box's pixels differ from the background just outside it (the shape is really there)."""
    coco = _quiet_coco(shapes["val_ann"])
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = read_image(Path(shapes["val_images"]) / coco.imgs[ann["image_id"]]["file_name"]).astype(float)
        mask = coco.annToMask(ann).astype(bool)
        if mask.sum() < 50:
            continue
        inside = img[mask].mean(0)
        ring = np.zeros_like(mask)
        x, y, w, h = (int(v) for v in ann["bbox"])
        ring[max(y - 4, 0) : y + h + 4, max(x - 4, 0) : x + w + 4] = True
        ring[max(y, 0) : y + h, max(x, 0) : x + w] = False
        if ring.sum() < 20:
            continue
        assert np.linalg.norm(inside - img[ring].mean(0)) > 15


def test_shapes_deterministic(tmp_path):
    a = make_shapes(tmp_path / "a", num_train=5, num_val=2, image_size=96, seed=3)
    make_shapes(tmp_path / "b", num_train=5, num_val=2, image_size=96, seed=3)
    make_shapes(tmp_path / "c", num_train=5, num_val=2, image_size=96, seed=4)
    make_shapes(tmp_path / "d", num_train=3, num_val=1, image_size=96, seed=3)
    fa, fb, fc, fd = (_files(tmp_path / k) for k in "abcd")
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc
    # Image i depends on (seed, split, i) only, not on how many images were asked for.
    for name in fd:
        if name.endswith(".png"):
            assert fd[name] == fa[name]
    # generated.json records the generator and all its arguments, defaults included.
    stamp = json.loads(fa[STAMP_FILE])
    assert stamp == describe(make_shapes, num_train=5, num_val=2, image_size=96, seed=3)
    assert stamp["kwargs"]["max_objects"] == 6 and stamp["generator"] == "make_shapes"
    assert json.loads(fc[STAMP_FILE]) != stamp
    val = json.loads(fa["annotations/instances_val2017.json"])
    assert [im["id"] for im in val["images"]] == [100001, 100002]
    assert sorted(p.name for p in Path(a["val_images"]).iterdir()) == ["000000100001.png", "000000100002.png"]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    return make_shapes_city(root, num_train=8, num_val=3, image_size=(96, 192), seed=0)


def test_shapes_city_layout_and_label_ids(city):
    root = Path(city["root"])
    images = sorted(root.glob("leftImg8bit/*/*/*_leftImg8bit.png"))
    assert len(images) == 11
    drawn, allowed = set(), set(CITY_LABEL_IDS.values()) | set(CITY_IGNORED_LABEL_IDS.values())
    for path in images:
        rel = path.relative_to(root / "leftImg8bit")
        split, city_name, name = rel.parts
        assert split in ("train", "val")
        assert re.fullmatch(rf"{city_name}_\d{{6}}_\d{{6}}_leftImg8bit\.png", name)
        gt_dir = root / "gtFine" / split / city_name
        label = read_label(gt_dir / name.replace("_leftImg8bit", "_gtFine_labelIds"))
        inst = read_label(gt_dir / name.replace("_leftImg8bit", "_gtFine_instanceIds"))
        assert label.dtype == np.uint8 and inst.dtype == np.uint16
        assert label.shape == inst.shape == read_image(path).shape[:2] == (96, 192)
        ids = set(np.unique(label).tolist())
        assert ids <= allowed, ids - allowed
        drawn |= ids
        # Instance ids: label id for stuff, label id * 1000 + k for cars and people.
        inst = inst.astype(np.int64)
        np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), label)
    assert set(CITY_LABEL_IDS.values()) <= drawn
    assert drawn & set(CITY_IGNORED_LABEL_IDS.values()), "some pixels must map to ignore"


def test_shapes_city_deterministic(tmp_path):
    for k in "ab":
        make_shapes_city(tmp_path / k, num_train=2, num_val=1, image_size=(64, 128), seed=1)
    make_shapes_city(tmp_path / "c", num_train=2, num_val=1, image_size=(64, 128), seed=2)
    fa, fb, fc = (_files(tmp_path / k) for k in "abc")
    assert fa == fb and fa != fc and fa.keys() == fc.keys()


def test_sr_set_layout_and_bicubic_lr(tmp_path):
    from densenets.data.imresize import imresize

    out = make_sr_set(tmp_path / "sr", num_train=3, hr_size=48, scales=(2, 3, 4), seed=0, valid_max_size=120)
    root = Path(out["root"])
    hr = read_image(root / "DIV2K_train_HR" / "0002.png")
    assert hr.shape == (48, 48, 3)
    for s in (2, 3, 4):
        lr = read_image(root / "DIV2K_train_LR_bicubic" / f"X{s}" / f"0002x{s}.png")
        np.testing.assert_array_equal(lr, imresize(hr, 1 / s))
    valid = sorted(p.name for p in (root / "DIV2K_valid_HR").iterdir())
    assert valid == [f"{801 + i:04d}.png" for i in range(len(SR_VALID_PHOTOS))]
    assert not set(SR_VALID_PHOTOS) & set(SR_TRAIN_PHOTOS)
    for name in SR_VALID_PHOTOS:
        hr = read_image(root / "benchmark" / "Photos" / "HR" / f"{name}.png")
        assert hr.shape[0] % 12 == 0 and hr.shape[1] % 12 == 0 and max(hr.shape) <= 120
        lr = read_image(root / "benchmark" / "Photos" / "LR_bicubic" / "X4" / f"{name}x4.png")
        assert lr.shape == (hr.shape[0] // 4, hr.shape[1] // 4, 3)
    np.testing.assert_array_equal(
        read_image(root / "DIV2K_valid_HR" / "0801.png"),
        read_image(root / "benchmark" / "Photos" / "HR" / f"{SR_VALID_PHOTOS[0]}.png"),
    )


def test_sr_set_deterministic_and_checked(tmp_path):
    for k, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_sr_set(tmp_path / k, num_train=2, hr_size=24, scales=(2,), seed=seed, valid_max_size=48)
    fa, fb, fc = (_files(tmp_path / k) for k in "abc")
    assert fa == fb and fa != fc
    with pytest.raises(ValueError, match="hr_size=50"):
        make_sr_set(tmp_path / "d", hr_size=50, scales=(2, 3))
