#!/usr/bin/env python
"""Write Cityscapes train-id label files once, so that training reads them directly.

For every `gtFine/<split>/<city>/*_gtFine_labelIds.png` this writes
`*_gtFine_labelTrainIds.png` next to it: the 19 evaluated classes as 0..18, everything
else 255 (the cityscapesScripts label table). The `Cityscapes` dataset uses these files
when they exist for every image of a split, and maps label ids on the fly otherwise.

    python datasets/prepare_cityscapes.py datasets/cityscapes
    python datasets/prepare_cityscapes.py datasets/cityscapes --splits train val --workers 8
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from densenets.data.cityscapes import label_id_to_train_id
from densenets.data.io import read_label, write_image

SUFFIX_IN = "_gtFine_labelIds.png"
SUFFIX_OUT = "_gtFine_labelTrainIds.png"


def convert_file(path: Path, overwrite: bool = False) -> bool:
    """Write the train-id file of one label-id file; False when it existed already."""
    out = path.with_name(path.name[: -len(SUFFIX_IN)] + SUFFIX_OUT)
    if out.exists() and not overwrite:
        return False
    write_image(out, label_id_to_train_id(read_label(path)))
    return True


def prepare(root: str | Path, splits: list[str], workers: int = 4, overwrite: bool = False) -> int:
    """Convert every label-id file of `splits` under `root/gtFine`; returns files written."""
    root = Path(root)
    files = []
    for split in splits:
        split_dir = root / "gtFine" / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir}: not a folder (expected <root>/gtFine/{split}/<city>/)")
        files += sorted(split_dir.glob(f"*/*{SUFFIX_IN}"))
    if not files:
        raise FileNotFoundError(f"{root / 'gtFine'}: no *{SUFFIX_IN} files in {', '.join(splits)}")
    if workers <= 1:
        return sum(convert_file(f, overwrite) for f in files)
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(convert_file, files, [overwrite] * len(files), chunksize=16))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the Cityscapes folder holding leftImg8bit/ and gtFine/")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="default: train val")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing train-id files")
    args = parser.parse_args(argv)
    try:
        written = prepare(args.root, args.splits, args.workers, args.overwrite)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written} *{SUFFIX_OUT} files under {Path(args.root) / 'gtFine'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
