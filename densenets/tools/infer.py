#!/usr/bin/env python
"""Run a model on images:
`tools/infer.py --config FILE --weights W --input PATH --output DIR [key=value ...]`.

PATH is an image, a folder (searched recursively; DIR mirrors its tree) or a quoted
glob (`"photos/**/*.jpg"`). DIR receives, per image:

    vis/<path>.jpg        the visualisation (boxes / colour overlay with legend / SR output, .png)
    results.json          detection: COCO-results-style list with file names and class names
    labels/<path>.png     segmentation: the predicted class index per pixel
    sr/<path>.png         super-resolution: the output image

Unreadable and non-image files are reported on one line each and skipped; the exit
code is non-zero only when no image succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any


class ResultWriter:
    """Writes visualisations and machine-readable results under `output`."""

    def __init__(self, output: Path, rel_paths: list[str], visualizer_fn) -> None:
        self.output, self.visualizer_fn, self.visualizer = output, visualizer_fn, None
        self.detections: list[dict[str, Any]] = []
        self.wrote_detections = False
        # Output names drop the extension; where two inputs would collide
        # (a.jpg, a.png) the extension is kept in the name (a_jpg, a_png).
        stems = Counter(str(PurePosixPath(r).with_suffix("")) for r in rel_paths)
        self.stems = {}
        for r in rel_paths:
            stem = str(PurePosixPath(r).with_suffix(""))
            self.stems[r] = stem if stems[stem] == 1 else f"{stem}_{PurePosixPath(r).suffix.lstrip('.').lower()}"

    def write(self, item: dict[str, Any], prediction: dict[str, Any]) -> None:
        import numpy as np

        from densenets.data import write_image

        if self.visualizer is None:
            self.visualizer = self.visualizer_fn(prediction)
        stem = self.stems[item["rel_path"]]
        image = item["original"]
        vis_ext = ".png" if "sr" in prediction else ".jpg"
        write_image(self.output / "vis" / f"{stem}{vis_ext}", self.visualizer.draw(image, prediction))
        if "instances" in prediction:
            self._add_detections(item["rel_path"], prediction["instances"])
        if "sem_seg" in prediction:
            labels = prediction["sem_seg"].argmax(0).numpy()
            dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
            write_image(self.output / "labels" / f"{stem}.png", labels.astype(dtype))
        if "sr" in prediction:
            write_image(self.output / "sr" / f"{stem}.png", prediction["sr"].numpy().transpose(1, 2, 0))

    def _add_detections(self, rel_path: str, inst: dict[str, Any]) -> None:
        self.wrote_detections = True
        names = getattr(self.visualizer, "class_names", None) or []
        for box, score, label in zip(inst["boxes"].tolist(), inst["scores"].tolist(), inst["labels"].tolist()):
            x0, y0, x1, y1 = box
            self.detections.append({
                "file_name": rel_path,
                "image_id": rel_path,
                "category_id": int(label),
                "category_name": names[label] if 0 <= label < len(names) else str(label),
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(float(score), 5),
            })

    def close(self) -> None:
        if self.wrote_detections:
            (self.output / "results.json").write_text(json.dumps(self.detections))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument("--weights", help="checkpoint (EMA weights when it has them)")
    parser.add_argument("--input", required=True, help="an image, a folder or a quoted glob")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when available")
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from torch.utils.data import DataLoader  # after parsing: --help stays fast
    from tqdm import tqdm

    from densenets.config import ConfigError, load_config
    from densenets.data.image_folder import ImageFolder
    from densenets.data.loader import list_collate
    from densenets.engine.checkpoint import CheckpointError
    from densenets.engine.predictor import Predictor, build_visualizer

    try:
        cfg = load_config(args.config, args.overrides)
        predictor = Predictor(cfg, args.weights, args.device)
        folder = ImageFolder(args.input, predictor.transforms, keep_original=True, input_key=predictor.infer.input_key)
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in folder.skipped:
        print(f"skipped {f}: not an image file", file=sys.stderr)
    output = Path(args.output)
    writer = ResultWriter(output, [folder.rel_path(i) for i in range(len(folder))], lambda p: build_visualizer(cfg, p))
    workers = int((cfg.get("data") or {}).get("num_workers", 2))
    loader = DataLoader(folder, batch_size=predictor.infer.batch_size, num_workers=workers, collate_fn=list_collate)
    done = failed = 0
    with tqdm(total=len(folder), desc="infer", unit="img") as bar:
        for batch in loader:
            good = [it for it in batch if "error" not in it]
            for it in batch:
                if "error" in it:
                    tqdm.write(f"skipped {it['error']}", file=sys.stderr)
            failed += len(batch) - len(good)
            inputs = [{k: v for k, v in it.items() if k != "original"} for it in good]
            for item, pred in zip(good, predictor.predict(inputs)):
                writer.write(item, pred)
                done += 1
            bar.update(len(batch))
    writer.close()
    print(
        f"{done} image(s) written to {output}; {failed} unreadable, {len(folder.skipped)} non-image file(s) skipped"
    )
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
