"""`tools/infer.py --input clip.mp4`: a model over every frame of a video.

Writes under the output folder:

    vis/<name>.mp4             the annotated video, at the input's frame rate and size
    <name>.jsonl               one line per frame: {"frame", "time", "detections": [...]}
                               (segmentation: "classes", the fraction of pixels per class)
    labels/<name>/<frame>.png  segmentation, with `frame_labels`: class index per pixel

A frame that cannot be decoded, transformed, predicted or written is reported on one
line and skipped; every finished frame's line is on disk at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from densenets.data import write_image
from densenets.data.video import VideoReader, VideoWriter

from .infer_writer import Report, coco_detections, first_line, label_image, predict_each

__all__ = ["run_video"]


def _frame_record(index: int, fps: float, prediction: dict, predictor: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"frame": index, "time": round(index / fps, 6)}
    meta = predictor.metadata
    if "instances" in prediction:
        dets = coco_detections(prediction["instances"], index, meta.class_names, meta.category_ids)
        record["detections"] = [{k: v for k, v in d.items() if k != "image_id"} for d in dets]
    if "sem_seg" in prediction:
        labels = label_image(prediction["sem_seg"])
        counts = np.bincount(labels.ravel())
        names = meta.class_names or []
        record["classes"] = {
            (names[c] if c < len(names) else str(c)): round(float(n) / labels.size, 6)
            for c, n in enumerate(counts)
            if n
        }
    return record


def run_video(
    reader: VideoReader | str | os.PathLike,
    predictor: Any,
    output: Path,
    report: Report,
    frame_labels: bool = False,
) -> None:
    """Predict, draw and record every frame of a video (a `VideoReader` or a path; see
    the module doc)."""
    reader = reader if isinstance(reader, VideoReader) else VideoReader(reader)
    path = reader.path
    name = Path(path).stem
    video = VideoWriter(output / "vis" / f"{name}.mp4", reader.fps)
    lines = open(output / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        with tqdm(total=len(reader) or None, desc="infer", unit="frame", dynamic_ncols=True) as bar:
            for index, frame in reader:
                bar.update(1)
                where = f"{path}: frame {index}"
                if frame is None:
                    report.fail(f"{where}: cannot be decoded")
                    continue
                try:
                    item = predictor.prepare(frame, image_id=index, file_name=where)
                except Exception as e:  # noqa: BLE001 - a transform failing on one frame
                    report.fail(f"{where}: transform failed ({first_line(e)})")
                    continue
                for _, pred in predict_each(predictor, [item], report):
                    try:
                        _write_frame(predictor, frame, pred, video)
                        if frame_labels and "sem_seg" in pred:
                            write_image(
                                output / "labels" / name / f"{index:06d}.png", label_image(pred["sem_seg"])
                            )
                        lines.write(json.dumps(_frame_record(index, reader.fps, pred, predictor)) + "\n")
                        lines.flush()
                        report.done += 1
                    except Exception as e:  # noqa: BLE001 - the disk, a drawing bug: skip the frame
                        report.fail(f"{where}: writing the outputs failed ({first_line(e)})")
    finally:
        video.close()
        lines.close()
        reader.close()


def _write_frame(predictor: Any, frame: np.ndarray, prediction: dict, video: VideoWriter) -> None:
    visualizer = predictor.visualizer(prediction)
    if getattr(visualizer, "legend", False):  # a legend panel would change the frame size
        visualizer.legend = False
    video.write(visualizer.draw(frame, prediction))
