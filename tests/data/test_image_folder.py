"""ImageFolder: a file, a folder tree or a glob; extensions; errors as items."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from densenets.config import DATASETS, TRANSFORMS, build
from densenets.data import ImageFolder


@pytest.fixture
def tree(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    (tmp_path / "a/b").mkdir(parents=True)
    for rel in ("x.jpg", "a/y.PNG", "a/b/z.webp", "a/b/w.tiff", "a/v.bmp"):
        Image.fromarray(img).save(tmp_path / rel)
    (tmp_path / "a/broken.png").write_bytes(b"not a png")
    (tmp_path / "a/readme.md").write_text("hello")
    (tmp_path / ".hidden").write_text("")
    return tmp_path, img


def test_folder_is_searched_recursively(tree):
    root, img = tree
    ds = DATASETS["ImageFolder"](str(root))
    rels = [ds.rel_path(i) for i in range(len(ds))]
    assert rels == ["a/b/w.tiff", "a/b/z.webp", "a/broken.png", "a/v.bmp", "a/y.PNG", "x.jpg"]
    assert [(s.path.name, s.reason) for s in ds.skipped] == [("readme.md", "not an image file")]
    item = ds[rels.index("a/v.bmp")]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 10, 14)
    assert torch.equal(item["image"], torch.from_numpy(img).permute(2, 0, 1))
    assert item["orig_size"] == (10, 14) and item["image_id"] == "a/v.bmp"
    bad = ds[rels.index("a/broken.png")]
    assert (
        set(bad) == {"file_name", "rel_path", "error"} and "broken.png: not a readable image" in bad["error"]
    )


def test_single_file_and_glob(tree):
    root, _ = tree
    one = ImageFolder(str(root / "a/y.PNG"))
    assert len(one) == 1 and one.rel_path(0) == "y.PNG"
    globbed = ImageFolder(str(root / "a" / "**" / "*.*"))
    assert [globbed.rel_path(i) for i in range(len(globbed))] == [
        "b/w.tiff",
        "b/z.webp",
        "broken.png",
        "v.bmp",
        "y.PNG",
    ]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        ImageFolder(str(root / "*.gif"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        ImageFolder(str(root / "nope"))


def test_transforms_input_key_and_original(tree):
    root, img = tree

    def halve(item):
        item["image"] = item["image"][::2, ::2]
        return item

    ds = ImageFolder(str(root / "x.jpg"), transforms=[halve], keep_original=True, input_key="lr")
    item = ds[0]
    assert "image" not in item and item["lr"].shape == (3, 5, 7)
    assert item["orig_size"] == (10, 14) and item["original"].shape == (10, 14, 3)
    # Built from a config, the transform is a registered component.
    TRANSFORMS.register(_Halve)
    built = build(
        {"type": "ImageFolder", "path": str(root / "x.jpg"), "transforms": {"type": "_Halve"}}, DATASETS
    )
    assert built[0]["image"].shape == (3, 5, 7)


class _Halve:
    def __call__(self, item):
        item["image"] = item["image"][::2, ::2]
        return item


def test_a_file_whose_name_looks_like_a_glob(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "img[1].png")
    one = ImageFolder(str(tmp_path / "img[1].png"))
    assert len(one) == 1 and one.rel_path(0) == "img[1].png" and one[0]["orig_size"] == (4, 5)
