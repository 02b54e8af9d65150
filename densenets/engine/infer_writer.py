"""What `tools/infer.py` writes per image, incrementally, under unique names.

vis/<stem>.jpg         the visualisation (.png for super-resolution)
results.json           detection: COCO results, rewritten in place after every image
labels/<stem>.png      segmentation: class index per pixel
sr/<stem>.png          super-resolution: the output image
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

from densenets.data import read_image, write_image

__all__ = [
    "Report",
    "ResultWriter",
    "coco_detections",
    "first_line",
    "one_line",
    "predict_each",
    "unique_stems",
]

_OUTPUT_SUFFIXES = (".jpg", ".png")


def one_line(text: str) -> str:
    """`text` printable on one line: control characters and undecodable bytes escaped."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class Report:
    """Counts and one-line messages (above the progress bar)."""

    def __init__(self) -> None:
        self.done = self.failed = self.skipped = 0

    def fail(self, message: str) -> None:
        self.failed += 1
        tqdm.write(f"skipped {one_line(message)}", file=sys.stderr)

    def skip(self, path: Any, reason: str) -> None:
        self.skipped += 1
        tqdm.write(f"skipped {one_line(str(path))}: {one_line(reason)}", file=sys.stderr)


def first_line(e: BaseException) -> str:
    """`Type: first line of the message` of an exception."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def predict_each(
    predictor: Any, items: list[dict], report: Report, name_key: str = "file_name"
) -> list[tuple]:
    """(item, prediction) pairs; a failing batch is retried image by image and the
    images the model fails on are reported."""
    inputs = [{k: v for k, v in it.items() if k != "original"} for it in items]
    try:
        return list(zip(items, predictor.predict(inputs)))
    except Exception as e:  # noqa: BLE001 - out of memory, odd shapes: skip the image, go on
        if len(items) == 1:
            _free_cuda()
            report.fail(f"{items[0][name_key]}: model failed ({first_line(e)})")
            return []
    return [pair for it in items for pair in predict_each(predictor, [it], report, name_key)]


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def unique_stems(rel_paths: Sequence[str]) -> dict[str, str]:
    """An output stem (relative path without extension) per input, unique even on a
    case-insensitive disk and never equal to a folder an output lies in.

    A stem shared by several inputs (`a.jpg`, `a.png`, `A.JPG`) takes the extension
    (`a_jpg`, `a_png`), then a number where that is taken too (`a_png_2`).
    """

    def key(stem: str) -> str:
        return stem.casefold()

    stems = {r: str(PurePosixPath(r).with_suffix("")) for r in rel_paths}
    counts = Counter(key(s) for s in stems.values())
    # vis/x.jpg cannot be written where a folder vis/x.jpg/ holds other outputs.
    reserved = {
        key(str(parent.with_suffix("")))
        for r in rel_paths
        for parent in list(PurePosixPath(r).parents)[:-1]
        if parent.suffix.lower() in _OUTPUT_SUFFIXES
    }
    plain = {r: s for r, s in stems.items() if counts[key(s)] == 1 and key(s) not in reserved}
    taken = {key(s) for s in plain.values()} | reserved
    out = dict(plain)
    for r in sorted(set(rel_paths) - set(plain)):
        base = f"{stems[r]}_{PurePosixPath(r).suffix.lstrip('.').lower()}"
        candidate, n = base, 2
        while key(candidate) in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(key(candidate))
        out[r] = candidate
    return out


def coco_detections(
    instances: Mapping[str, Any],
    image_id: Any,
    class_names: Sequence[str] | None,
    category_ids: Sequence[int] | None,
) -> list[dict[str, Any]]:
    """COCO results (`image_id`, `category_id`, `bbox` xywh, `score`) plus `category_name`.

    Args:
        instances: `boxes` Tensor[N, 4] xyxy pixels, `scores` Tensor[N], `labels` Tensor[N]
            contiguous 0..K-1.
        image_id: the dataset's image id (or the file's relative path).
        class_names: names of the contiguous labels.
        category_ids: the dataset's category id of each contiguous label (else the label).
    """
    boxes = torch.as_tensor(instances["boxes"]).detach().to("cpu", torch.float64, copy=True)
    boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh, as the COCO evaluator does
    names, ids = list(class_names or []), list(category_ids or [])
    out = []
    for box, score, label in zip(boxes.tolist(), instances["scores"].tolist(), instances["labels"].tolist()):
        label = int(label)
        out.append(
            {
                "image_id": image_id,
                "category_id": ids[label] if 0 <= label < len(ids) else label,
                "bbox": box,
                "score": float(score),
                "category_name": names[label] if 0 <= label < len(names) else str(label),
            }
        )
    return out


class _JSONArrayFile:
    """A JSON list on disk that stays valid after every append (`[` ... `]` rewritten at
    the end), so a run killed at any point leaves the results of every finished image."""

    def __init__(self, path: Path) -> None:
        self.path, self.count = path, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: IO[str] = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.file.write("[]\n")
        self.file.flush()
        self.end = 1  # where the closing bracket starts

    def extend(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        text = ",\n".join(json.dumps(r) for r in records)
        self.file.seek(self.end)
        self.file.write(("\n" if self.count == 0 else ",\n") + text)
        self.end = self.file.tell()
        self.file.write("\n]\n")
        self.file.truncate()
        self.file.flush()
        self.count += len(records)

    def close(self) -> None:
        self.file.close()


class ResultWriter:
    """Writes each image's visualisation and machine-readable results under `output`.

    Args:
        output: the output folder.
        rel_paths: every input's path relative to the input root (for unique names).
        predictor: gives the visualiser and the class metadata (`Predictor`).
        ground_truth: a folder of ground-truth images at the inputs' relative paths
            (super-resolution: the visualisation then shows the PSNR).
    """

    def __init__(
        self,
        output: Path,
        rel_paths: Sequence[str],
        predictor: Any,
        ground_truth: str | os.PathLike | None = None,
    ) -> None:
        self.output, self.predictor = Path(output), predictor
        self.stems = unique_stems(rel_paths)
        self.ground_truth = Path(ground_truth) if ground_truth else None
        self.results: _JSONArrayFile | None = None

    def write(self, item: Mapping[str, Any], prediction: Mapping[str, Any]) -> None:
        """Every output of one image; detections are added to results.json last, so an
        image whose files failed is not in it."""
        stem, image = self.stems[item["rel_path"]], item["original"]
        kwargs = {}
        if "sr" in prediction and self.ground_truth is not None:
            gt = self.ground_truth / item["rel_path"]
            if gt.is_file():
                kwargs["hr"] = read_image(gt)
        vis_ext = ".png" if "sr" in prediction else ".jpg"
        write_image(
            self.output / "vis" / f"{stem}{vis_ext}", self.predictor.draw(image, prediction, **kwargs)
        )
        if "sem_seg" in prediction:
            write_image(self.output / "labels" / f"{stem}.png", label_image(prediction["sem_seg"]))
        if "sr" in prediction:
            write_image(self.output / "sr" / f"{stem}.png", prediction["sr"].numpy().transpose(1, 2, 0))
        if "instances" in prediction:
            if self.results is None:
                self.results = _JSONArrayFile(self.output / "results.json")
            meta = self.predictor.metadata
            image_id = meta.image_id(item["file_name"], item["rel_path"])
            records = coco_detections(prediction["instances"], image_id, meta.class_names, meta.category_ids)
            self.results.extend([{**r, "file_name": item["rel_path"]} for r in records])

    def close(self) -> None:
        if self.results is not None:
            self.results.close()


def label_image(sem_seg: torch.Tensor) -> np.ndarray:
    """Scores Tensor[C, H, W] -> the class index per pixel, uint8 (uint16 past 255 classes)."""
    labels = sem_seg.argmax(0).numpy() if sem_seg.ndim == 3 else np.asarray(sem_seg)
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)
