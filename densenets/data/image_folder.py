"""`ImageFolder`: the images under a path (file, folder tree or glob), for inference."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from densenets.config import DATASETS, TRANSFORMS, build

from .io import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = ["ImageFolder", "list_images"]


def _glob_root(pattern: str) -> Path:
    """The longest leading folder of `pattern` without wildcards."""
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


def list_images(path: str | os.PathLike) -> tuple[list[Path], list[Path], Path]:
    """Resolve an image path, a folder (searched recursively) or a glob.

    Returns:
        (image files sorted, other files found and skipped, the root that output
        paths are relative to).

    Raises:
        FileNotFoundError: nothing exists at `path` / the glob matches nothing.
    """
    text = str(path)
    p = Path(text)
    if p.is_file():
        return [p], [], p.parent
    if p.is_dir():
        files, root = [f for f in p.rglob("*") if f.is_file()], p
    elif glob.has_magic(text):
        files, root = [Path(f) for f in glob.glob(text, recursive=True) if os.path.isfile(f)], _glob_root(text)
        if not files:
            raise FileNotFoundError(f"{text}: the pattern matches no file")
    else:
        raise FileNotFoundError(f"{text}: no such file or folder")
    images = sorted(f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS)
    others = sorted(f for f in files if f.suffix.lower() not in IMAGE_EXTENSIONS and not f.name.startswith("."))
    return images, others, root


@DATASETS.register()
class ImageFolder(Dataset):
    """Every image under `path` as a model input item.

    Items: `image` uint8 [3, H, W] RGB (after `transforms`), `file_name`, `rel_path`
    (relative to the folder or glob root), `image_id` (= `rel_path`), `orig_size`
    (H, W) as read; with `keep_original`, `original` np.ndarray[H, W, 3] uint8 RGB. A
    file that cannot be decoded gives `{"file_name", "rel_path", "error": message}`
    instead, so a loader never stops on it.

    Args:
        path: an image, a folder (recursive) or a glob (`"photos/**/*.jpg"`);
            extensions jpg, jpeg, png, bmp, tif, tiff, webp (any case).
        transforms: a callable on the numpy item (`image` HWC uint8 RGB), a config dict
            of one (built from `TRANSFORMS`, as `data.val.transforms`), or a list of
            these, applied in order.
        keep_original: also return the decoded image before transforms.
        input_key: the tensor's key in the item (`image`, or `lr` for super-resolution).
    """

    def __init__(
        self,
        path: str,
        transforms: Callable | Mapping | Sequence[Callable | Mapping] | None = None,
        keep_original: bool = False,
        input_key: str = "image",
    ) -> None:
        self.files, self.skipped, self.root = list_images(path)
        if transforms is None:
            transforms = []
        elif callable(transforms) or isinstance(transforms, Mapping):
            transforms = [transforms]
        self.transforms = [build(t, TRANSFORMS) if isinstance(t, Mapping) else t for t in transforms]
        self.keep_original, self.input_key = keep_original, input_key

    def __len__(self) -> int:
        return len(self.files)

    def rel_path(self, i: int) -> str:
        f = self.files[i]
        try:
            return f.relative_to(self.root).as_posix()
        except ValueError:
            return f.name

    def __getitem__(self, i: int) -> dict[str, Any]:
        file_name, rel = str(self.files[i]), self.rel_path(i)
        try:
            image = read_image(file_name)
        except ImageReadError as e:
            return {"file_name": file_name, "rel_path": rel, "error": str(e)}
        item: dict[str, Any] = {"image": image, "file_name": file_name, "rel_path": rel, "image_id": rel}
        item["orig_size"] = tuple(image.shape[:2])
        for t in self.transforms:
            item = t(item)
        out = np.ascontiguousarray(item.pop("image").transpose(2, 0, 1))
        item[self.input_key] = torch.from_numpy(out)
        if self.keep_original:
            item["original"] = image
        return item
