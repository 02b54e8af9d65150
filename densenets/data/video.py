"""Video reading and writing through OpenCV (FFmpeg): RGB frames in, RGB frames out."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from .io import ImageReadError

__all__ = ["VIDEO_EXTENSIONS", "VideoReader", "VideoWriter", "is_video"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")

# Consecutive undecodable frames after which the video is taken to be over.
_MAX_FAILURES = 25


def is_video(path: str | os.PathLike) -> bool:
    """A file (not a folder or glob) with a video extension (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS and os.path.isfile(path)


class VideoReader:
    """The frames of a video as np.ndarray[H, W, 3] uint8 RGB.

    Iterating yields `(index, frame)`; a frame that cannot be decoded yields
    `(index, None)` and reading goes on with the next one.

    Raises:
        ImageReadError: OpenCV cannot open the file as a video.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.capture = cv2.VideoCapture(self.path)
        if not self.capture.isOpened():
            raise ImageReadError(f"{path}: not a video OpenCV can read")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0
        self.frame_count = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.size = (
            int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )

    def __len__(self) -> int:
        """The frame count the container declares (0 when unknown)."""
        return self.frame_count

    def __iter__(self) -> Iterator[tuple[int, np.ndarray | None]]:
        index = failures = 0
        while True:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                failures = 0
                yield index, np.ascontiguousarray(frame[:, :, ::-1])
            else:
                failures += 1
                # Without a declared frame count a failed read ends the video; within the
                # count, FFmpeg has skipped the broken packet and the next read goes on.
                if not self.frame_count or index >= self.frame_count or failures >= _MAX_FAILURES:
                    return
                yield index, None
            index += 1

    def close(self) -> None:
        self.capture.release()


class VideoWriter:
    """Writes RGB frames to `path` (.mp4: MPEG-4 part 2; .avi: Motion JPEG), opened at
    the first frame with that frame's size."""

    _FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.writer: cv2.VideoWriter | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*self._FOURCC.get(self.path.suffix.lower(), "mp4v"))
            self.writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot write this video")
            self.size = (frame.shape[1], frame.shape[0])
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
