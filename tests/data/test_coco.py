"""COCODetection and DetectionTransform on a tiny COCO file written by the test."""

import json

import numpy as np
import pytest
import torch

from densenets.config import DATASETS, build
from densenets.data import COCODetection, DetectionTransform, write_image
from densenets.data.detection_transforms import shortest_edge_size


@pytest.fixture()
def coco_root(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    infos = [(1, "a.jpg", 100, 200), (2, "b.png", 80, 60), (3, "c.png", 50, 50), (4, "d.png", 40, 40)]
    for _, name, h, w in infos:
        write_image(images / name, rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 20, 30, 40], "iscrowd": 0, "area": 1200},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 90,
            "bbox": [180, 90, 50, 50],
            "iscrowd": 0,
            "area": 2500,
        },  # clipped
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 100, 100],
            "iscrowd": 1,
            "area": 10000,
        },  # crowd
        {
            "id": 4,
            "image_id": 2,
            "category_id": 1,
            "bbox": [5, 5, 0, 10],
            "iscrowd": 0,
            "area": 0,
        },  # degenerate
        {"id": 5, "image_id": 3, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12},
        {
            "id": 6,
            "image_id": 4,
            "category_id": 5,
            "bbox": [0, 0, 40, 40],
            "iscrowd": 1,
            "area": 1600,
        },  # crowd only
    ]
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]
    data = {
        "images": [{"id": i, "file_name": n, "height": h, "width": w} for i, n, h, w in infos],
        "annotations": anns,
        "categories": cats,
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return images, ann_file


def test_items_labels_crowd_and_clipping(coco_root):
    ds = COCODetection(*coco_root)
    assert len(ds) == 4 and ds.class_names == ["person", "airplane", "toothbrush"]
    assert ds.label_to_category_id == [1, 5, 90] and ds.category_id_to_label[90] == 2
    assert ds.aspect_ratios == [2.0, 0.75, 1.0, 1.0]
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 100, 200)
    assert item["orig_size"] == (100, 200) and item["image_id"] == 1 and item["file_name"].endswith("a.jpg")
    inst = item["instances"]
    # crowd left out; the second box clipped to the 200 x 100 image
    assert inst["boxes"].tolist() == [[10.0, 20.0, 40.0, 60.0], [180.0, 90.0, 200.0, 100.0]]
    assert inst["boxes"].dtype == torch.float32 and inst["labels"].tolist() == [1, 2]
    assert len(ds[1]["instances"]["boxes"]) == 0  # the zero-width box is dropped


def test_filter_empty_drops_images_without_usable_boxes(coco_root):
    ds = build(
        {
            "type": "COCODetection",
            "root": str(coco_root[0]),
            "ann_file": str(coco_root[1]),
            "filter_empty": True,
        },
        DATASETS,
    )
    assert ds.ids == [1, 3]  # image 2: only a degenerate box; image 4: only a crowd box
    assert len(ds.aspect_ratios) == 2


def test_transform_resizes_and_flips_boxes(coco_root):
    transforms = {"type": "DetectionTransform", "min_size": 200, "max_size": 300, "flip_prob": 1.0}
    ds = COCODetection(*coco_root, transforms=transforms)
    item = ds[0]
    # 100 x 200 -> short side 200 would make the long side 400 > 300: scale 1.5 instead
    assert item["image"].shape == (3, 150, 300) and item["orig_size"] == (100, 200)
    expected = torch.tensor([[10.0, 20.0, 40.0, 60.0], [180.0, 90.0, 200.0, 100.0]]) * 1.5
    expected = torch.stack((300 - expected[:, 2], expected[:, 1], 300 - expected[:, 0], expected[:, 3]), 1)
    torch.testing.assert_close(item["instances"]["boxes"], expected)
    assert item["instances"]["labels"].tolist() == [1, 2]


def test_transform_multiscale_choice_and_image_pixels():
    t = DetectionTransform(min_size=[32, 48], max_size=1000, seed=0)
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255
    sizes = set()
    for _ in range(20):
        item = t(
            {
                "image": image.copy(),
                "instances": {"boxes": np.array([[0, 0, 20, 20.0]]), "labels": np.array([0])},
            }
        )
        sizes.add(item["image"].shape[:2])
        s = item["image"].shape[0] / 20
        np.testing.assert_allclose(item["instances"]["boxes"], [[0, 0, 20 * s, 20 * s]], rtol=1e-5)
    assert sizes == {(32, 64), (48, 96)}
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(400, 1000, 800, 1333) == (533, 1333)


def test_errors_name_the_file(coco_root, tmp_path):
    images, ann_file = coco_root
    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCODetection(images, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        COCODetection(images, bad)
    data = json.loads(ann_file.read_text())
    data["images"][0]["height"] = 99
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"a\.jpg: image is 200x100 but .*wrong\.json says 200x99"):
        COCODetection(images, wrong)[0]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["annotations"][0].pop("bbox"), "annotation id 1: no 'bbox'"),
        (lambda d: d["annotations"][1].pop("category_id"), "annotation id 2: no 'category_id'"),
        (lambda d: d["images"][2].pop("width"), "image id 3: no 'width'"),
        (
            lambda d: d["annotations"][4].update(category_id=7),
            "annotation id 5: category_id 7 is not in 'categories'",
        ),
        (
            lambda d: d["annotations"][4].update(image_id=99),
            "annotation id 5: image_id 99 is not in 'images'",
        ),
        (
            lambda d: d["annotations"][0].update(bbox=[1, 2, 3]),
            r"annotation id 1: 'bbox' must be \[x, y, width, height\]",
        ),
        (
            lambda d: d["images"][3].update(id=2),
            r"image id 2: duplicate image id \(images\[1\] and images\[3\]\)",
        ),
        (lambda d: d["images"][0].update(height="100"), "image id 1: 'height' must be a positive integer"),
    ],
)
def test_bad_annotations_name_the_file_the_id_and_the_problem(coco_root, change, message):
    images, ann_file = coco_root
    data = json.loads(ann_file.read_text())
    change(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{ann_file}: {message}") as info:
        COCODetection(images, ann_file)
    assert "\n" not in str(info.value)
