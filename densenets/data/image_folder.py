"""`ImageFolder`: the images under a path (file, folder tree or glob), for inference."""

from __future__ import annotations

import errno
import glob
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from densenets.config import DATASETS, TRANSFORMS, build

from .io import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, ImageReadError, read_image

__all__ = ["ImageFolder", "Skipped", "list_images"]


def _glob_root(pattern: str) -> Path:
    """The longest leading folder of `pattern` without wildcards."""
    parts = Path(pattern).parts
    root: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        root.append(part)
    return Path(*root) if root else Path(".")


class Skipped(NamedTuple):
    """An entry that is not an image to read, and why."""

    path: Path
    reason: str


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _stat(p: Path, skipped: list[Skipped]) -> os.stat_result | None:
    """`os.stat` following links; None (and the reason in `skipped`) when it fails."""
    try:
        return os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            reason = "symbolic link loop"
        elif p.is_symlink() and e.errno == errno.ENOENT:
            reason = f"broken symbolic link (to {os.readlink(p)})"
        else:
            reason = f"cannot read ({e.strerror or e})"
        skipped.append(Skipped(p, reason))
        return None


class _Walker:
    """Depth-first, sorted, following folder links; reports loops, broken links, FIFOs."""

    def __init__(self, exclude: Sequence[str | os.PathLike]) -> None:
        self.files: list[Path] = []
        self.skipped: list[Skipped] = []
        self.excluded = set()
        for e in exclude:
            try:
                st = os.stat(e)
                self.excluded.add((st.st_dev, st.st_ino))
            except OSError:
                pass

    def entry(self, p: Path, ancestors: frozenset = frozenset()) -> None:
        st = _stat(p, self.skipped)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in self.excluded:
                return
            if key in ancestors:
                self.skipped.append(Skipped(p, "symbolic link loop (a folder that contains itself)"))
                return
            self.folder(p, ancestors | {key})
        elif stat.S_ISREG(st.st_mode):
            self.files.append(p)
        else:
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
            self.skipped.append(Skipped(p, f"not a regular file ({kind})"))

    def folder(self, p: Path, ancestors: frozenset) -> None:
        try:
            names = sorted(os.listdir(p))
        except OSError as e:
            self.skipped.append(Skipped(p, f"cannot list folder ({e.strerror or e})"))
            return
        for name in names:
            self.entry(p / name, ancestors)


def list_images(
    path: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()
) -> tuple[list[Path], list[Skipped], Path]:
    """Resolve an image path, a folder (searched recursively, folder links followed) or a glob.

    Args:
        path: an image, a folder or a glob.
        exclude: folders not to enter (e.g. the output folder inside the input).

    Returns:
        (image files sorted, `Skipped` entries: non-image files, broken links, link
        loops, FIFOs and other special files, unreadable folders; the root that output
        paths are relative to).

    Raises:
        FileNotFoundError: nothing exists at `path` / the glob matches nothing.
    """
    text = str(path)
    p = Path(text)
    walker = _Walker(exclude)
    if os.path.isdir(p):
        root = p
        walker.folder(p, frozenset({(os.stat(p).st_dev, os.stat(p).st_ino)}))
    elif os.path.lexists(p):  # an existing name, even one with glob characters ("img[1].png")
        root = p.parent
        walker.entry(p)
        if walker.skipped:
            raise FileNotFoundError(f"{text}: {walker.skipped[0].reason}")
    elif glob.has_magic(text):
        root = _glob_root(text)
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise FileNotFoundError(f"{text}: the pattern matches no file")
        excluded = [Path(e).resolve() for e in exclude]
        for m in matches:
            if not os.path.isdir(m) and not any(Path(m).resolve().is_relative_to(e) for e in excluded):
                walker.entry(Path(m))
    else:
        raise FileNotFoundError(f"{text}: no such file or folder")
    images = sorted(f for f in walker.files if f.suffix.lower() in IMAGE_EXTENSIONS)
    others = [
        Skipped(f, "not an image file")
        for f in walker.files
        if f.suffix.lower() not in IMAGE_EXTENSIONS and not f.name.startswith(".")
    ]
    return images, sorted(walker.skipped + others), root


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@DATASETS.register()
class ImageFolder(Dataset):
    """Every image under `path` as a model input item.

    Items: `image` uint8 [3, H, W] RGB (after `transforms`), `file_name`, `rel_path`
    (relative to the folder or glob root), `image_id` (= `rel_path`), `orig_size`
    (H, W) as read; with `keep_original`, `original` np.ndarray[H, W, 3] uint8 RGB. A
    file that cannot be decoded, is too large or that a transform fails on gives
    `{"file_name", "rel_path", "error": message}` instead, so a loader never stops on it.

    Args:
        path: an image, a folder (recursive) or a glob (`"photos/**/*.jpg"`);
            extensions jpg, jpeg, png, bmp, tif, tiff, webp (any case).
        transforms: a callable on the numpy item (`image` HWC uint8 RGB), a config dict
            of one (built from `TRANSFORMS`, as `data.val.transforms`), or a list of
            these, applied in order.
        keep_original: also return the decoded image before transforms.
        input_key: the tensor's key in the item (`image`, or `lr` for super-resolution).
        max_pixels: an image whose header declares more pixels is refused without being
            decoded (None: no limit of ours).
        exclude: folders not to enter (an output folder inside `path`).
    """

    def __init__(
        self,
        path: str,
        transforms: Callable | Mapping | Sequence[Callable | Mapping] | None = None,
        keep_original: bool = False,
        input_key: str = "image",
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        exclude: Sequence[str | os.PathLike] = (),
    ) -> None:
        self.files, self.skipped, self.root = list_images(path, exclude)
        self.max_pixels = max_pixels
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
            image = read_image(file_name, self.max_pixels)
        except ImageReadError as e:
            return {"file_name": file_name, "rel_path": rel, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a decoder failing in an unforeseen way: skip the file
            return {
                "file_name": file_name,
                "rel_path": rel,
                "error": f"{file_name}: cannot decode ({_first_line(e)})",
            }
        item: dict[str, Any] = {"image": image, "file_name": file_name, "rel_path": rel, "image_id": rel}
        item["orig_size"] = tuple(image.shape[:2])
        try:
            for t in self.transforms:
                item = t(item)
            out = np.ascontiguousarray(item.pop("image").transpose(2, 0, 1))
        except Exception as e:  # noqa: BLE001 - any transform may fail on an odd image
            return {
                "file_name": file_name,
                "rel_path": rel,
                "error": f"{file_name}: transform failed ({_first_line(e)})",
            }
        item[self.input_key] = torch.from_numpy(out)
        if self.keep_original:
            item["original"] = image
        return item
