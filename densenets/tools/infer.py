#!/usr/bin/env python
"""Run a model on images or a video:
`tools/infer.py --config FILE --weights W --input PATH --output DIR [key=value ...]`.

PATH is an image, a folder (searched recursively; DIR mirrors its tree), a quoted glob
(`"photos/**/*.jpg"`) or a video (any format OpenCV reads). DIR receives, per image:

    vis/<path>.jpg        the visualisation (boxes / colour overlay with legend / SR output, .png)
    results.json          detection: COCO results (the dataset's image and category ids when
                          the config or checkpoint knows them), updated after every image
    labels/<path>.png     segmentation: the predicted class index per pixel
    sr/<path>.png         super-resolution: the output image

and per video: vis/<name>.mp4 (annotated, same fps and size), <name>.jsonl (one line of
results per frame) and, with --frame-labels, labels/<name>/<frame>.png.

Every entry that fails (not an image, a broken link, a FIFO, an image larger than
infer.max_pixels, a decode, transform, model or writing error) is reported on one line
and skipped; results of finished images are on disk at every moment. The exit code is 0
when some image succeeded, 1 when none did, 2 for a bad config, checkpoint or input
path, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from densenets.config import ConfigError, load_config
from densenets.data.io import ImageReadError
from densenets.data.video import is_video
from densenets.engine.checkpoint import CheckpointError
from densenets.engine.infer_writer import Report, ResultWriter, first_line, one_line, predict_each
from densenets.engine.predictor import Predictor, resolve_weights


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--weights",
        help="checkpoint (EMA weights when it has them); 'none' runs the initial weights on purpose",
    )
    parser.add_argument("--input", required=True, help="an image, a folder, a quoted glob or a video")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--ground-truth", help="super-resolution: folder of HR images at the inputs' relative paths"
    )
    parser.add_argument(
        "--frame-labels", action="store_true", help="video segmentation: a label PNG per frame"
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    return parser.parse_args(argv)


def run_images(args: argparse.Namespace, predictor: Predictor, output: Path, report: Report) -> None:
    from torch.utils.data import DataLoader

    from densenets.data.image_folder import ImageFolder
    from densenets.data.loader import list_collate

    icfg = predictor.infer
    folder = ImageFolder(
        args.input, predictor.transforms, keep_original=True, input_key=icfg.input_key,
        max_pixels=icfg.max_pixels, exclude=[output],
    )  # fmt: skip
    for s in folder.skipped:
        report.skip(s.path, s.reason)
    writer = ResultWriter(
        output, [folder.rel_path(i) for i in range(len(folder))], predictor, args.ground_truth
    )
    workers = int((predictor.cfg.get("data") or {}).get("num_workers", 2))
    loader = DataLoader(folder, batch_size=icfg.batch_size, num_workers=workers, collate_fn=list_collate)
    try:
        with tqdm(total=len(folder), desc="infer", unit="img", dynamic_ncols=True) as bar:
            for batch in loader:
                for it in batch:
                    if "error" in it:
                        report.fail(it["error"])
                for item, pred in predict_each(predictor, [it for it in batch if "error" not in it], report):
                    try:
                        writer.write(item, pred)
                        report.done += 1
                    except Exception as e:  # noqa: BLE001 - a full disk, a name the disk refuses, a drawing bug
                        report.fail(f"{item['file_name']}: writing the outputs failed ({first_line(e)})")
                bar.update(len(batch))
    finally:
        writer.close()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        predictor = Predictor(cfg, resolve_weights(args.weights, cfg), args.device)
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
    except (ConfigError, CheckpointError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    report, interrupted = Report(), False
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        if is_video(args.input):
            from densenets.engine.infer_video import run_video

            run_video(args.input, predictor, output, report, frame_labels=args.frame_labels)
        else:
            run_images(args, predictor, output, report)
    except (FileNotFoundError, ImageReadError) as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: the results of the finished images are written", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - e.g. a loader worker killed: keep what is done, say why
        print(f"error: the run stopped: {one_line(first_line(e))}", file=sys.stderr)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    unit = "frame(s)" if is_video(args.input) else "image(s)"
    print(
        f"{report.done} {unit} written to {output}; {report.failed} failed; "
        f"{report.skipped} other entries skipped"
    )
    return 130 if interrupted else (0 if report.done else 1)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
