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
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Heavy imports (torch, OpenCV) wait until the arguments are parsed: `--help` stays fast.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML file")
    parser.add_argument(
        "--weights",
        help="checkpoint (EMA weights when it has them), or an exported .onnx/.pt2 file "
        "(tools/export.py); 'none' runs the initial weights on purpose",
    )
    parser.add_argument("--input", required=True, help="an image, a folder, a quoted glob or a video")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--ground-truth", help="super-resolution: folder of HR images at the inputs' relative paths"
    )
    parser.add_argument(
        "--frame-labels", action="store_true", help="video segmentation: a label PNG per frame"
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value (YAML values); +key=value adds a key")
    return parser.parse_args(argv)


def prepare_images(args: argparse.Namespace, predictor: Any, output: Path, report: Any) -> Callable[[], None]:
    """List the inputs (reporting what is skipped); returns the run over them."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from densenets.data.image_folder import ImageFolder
    from densenets.data.loader import list_collate
    from densenets.engine.infer_writer import ResultWriter, first_line, predict_each

    icfg = predictor.infer
    folder = ImageFolder(
        args.input, predictor.transforms, keep_original=True, input_key=predictor.input_key,
        max_pixels=icfg.max_pixels, exclude=[output],
    )  # fmt: skip
    for s in folder.skipped:
        report.skip(s.path, s.reason)
    workers = int((predictor.cfg.get("data") or {}).get("num_workers", 2))
    loader = DataLoader(folder, batch_size=icfg.batch_size, num_workers=workers, collate_fn=list_collate)

    def run() -> None:
        writer = ResultWriter(
            output, [folder.rel_path(i) for i in range(len(folder))], predictor, args.ground_truth
        )
        try:
            with tqdm(total=len(folder), desc="infer", unit="img", dynamic_ncols=True) as bar:
                for batch in loader:
                    for it in batch:
                        if "error" in it:
                            report.fail(it["error"])
                    for item, pred in predict_each(
                        predictor, [it for it in batch if "error" not in it], report
                    ):
                        try:
                            writer.write(item, pred)
                            report.done += 1
                        except Exception as e:  # noqa: BLE001 - a full disk, a name the disk refuses, a drawing bug
                            report.fail(f"{item['file_name']}: writing the outputs failed ({first_line(e)})")
                    bar.update(len(batch))
        finally:
            writer.close()

    return run


def prepare_video(args: argparse.Namespace, predictor: Any, output: Path, report: Any) -> Callable[[], None]:
    """Open the video; returns the run over its frames."""
    from densenets.data.video import VideoReader
    from densenets.engine.infer_video import run_video

    reader = VideoReader(args.input)
    return lambda: run_video(reader, predictor, output, report, frame_labels=args.frame_labels)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from densenets import register_all
    from densenets.checkpoint import CheckpointError
    from densenets.config import ConfigError, load_config
    from densenets.data.video import is_video
    from densenets.engine.infer_writer import Report, first_line, one_line
    from densenets.engine.predictor import Predictor, resolve_weights

    report, interrupted = Report(), False
    try:
        register_all()
        cfg = load_config(args.config, args.overrides)
        predictor = Predictor(cfg, resolve_weights(args.weights, cfg), args.device)
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        video = is_video(args.input)
        run = (prepare_video if video else prepare_images)(args, predictor, output, report)
    except (
        ConfigError,
        CheckpointError,
        RuntimeError,
        OSError,
    ) as e:  # OSError: FileNotFoundError, ImageReadError
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    old = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        run()
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: the outputs of every finished image are written", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - e.g. a loader worker killed: keep what is done, say why
        print(f"error: the run stopped: {one_line(first_line(e))}", file=sys.stderr)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    print(
        f"{report.done} {'frame(s)' if video else 'image(s)'} written to {output}; {report.failed} failed; "
        f"{report.skipped} other entries skipped"
    )
    return 130 if interrupted else (0 if report.done else 1)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
