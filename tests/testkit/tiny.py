"""A tiny registered model, dataset and evaluator for the engine and tool tests.

The task: per-pixel two-class segmentation where a pixel is class 1 when its red value
exceeds its blue value, so a 1×1 convolution can learn it exactly. No batch-norm, so
one process with batch B and two processes with batch B/2 compute the same gradient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import Dataset

from densenets.config import DATASETS, EVALUATORS, MODELS
from densenets.evaluation import DatasetEvaluator
from densenets.utils import comm


@DATASETS.register()
class TinyColors(Dataset):
    """`size` random images of 12×16 or 16×12 pixels; label = red > blue.

    With `augment`, each item is flipped at random and gets random noise from numpy's
    global generator (the loader seeds it per stream position).
    """

    class_names = ["blue", "red"]

    def __init__(self, size: int = 32, seed: int = 0, augment: bool = False):
        self.size, self.seed, self.augment = size, seed, augment
        self.shapes = [(12, 16) if i % 3 else (16, 12) for i in range(size)]
        self.aspect_ratios = [w / h for h, w in self.shapes]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict:
        h, w = self.shapes[i]
        img = np.random.default_rng([self.seed, i]).integers(0, 256, (h, w, 3), dtype=np.uint8)
        if self.augment:
            if np.random.rand() < 0.5:
                img = img[:, ::-1]
            img = np.clip(img.astype(np.int16) + np.random.randint(-3, 4, img.shape), 0, 255).astype(np.uint8)
        label = (img[..., 0] > img[..., 2]).astype(np.int64)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            "sem_seg": torch.from_numpy(label),
            "image_id": i,
            "file_name": f"tiny_{i}.png",
            "orig_size": (h, w),
        }


@MODELS.register()
class TinySegmenter(nn.Module):
    """1×1 conv -> ReLU -> 1×1 conv per-pixel classifier; cross-entropy loss.

    Args:
        nan_after: in training, the loss becomes NaN from this forward call on (tests).
        dropout: dropout probability on the hidden features (exercises RNG state).
    """

    def __init__(
        self, num_classes: int = 2, hidden: int = 8, nan_after: int | None = None, dropout: float = 0.0
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, num_classes, 1)
        self.norm = nn.GroupNorm(1, hidden)
        self.dropout = nn.Dropout(dropout)
        self.nan_after, self.calls = nan_after, 0

    def _logits(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.conv1.weight.device).float()[None] / 127.5 - 1.0
        return self.conv2(self.dropout(F.relu(self.norm(self.conv1(x)))))[0]

    def forward(self, batch: list[dict]):
        if not self.training:
            return [{"sem_seg": self._logits(item["image"]).softmax(0)} for item in batch]
        self.calls += 1
        losses = [
            F.cross_entropy(self._logits(it["image"])[None], it["sem_seg"][None].to(self.conv1.weight.device))
            for it in batch
        ]
        loss = torch.stack(losses).mean()
        if self.nan_after is not None and self.calls >= self.nan_after:
            loss = loss * float("nan")
        return {"loss_ce": loss, "loss_zero": 0.0 * loss}


@EVALUATORS.register()
class TinyAccuracy(DatasetEvaluator):
    """Pixel accuracy, gathered over processes: `seg/acc` in percent."""

    def __init__(self, dataset=None, output_dir=None):
        self.reset()

    def reset(self) -> None:
        self.correct, self.total, self.seen = 0, 0, []

    def process(self, batch, predictions) -> None:
        for item, pred in zip(batch, predictions):
            label = pred["sem_seg"].argmax(0).cpu()
            self.correct += int((label == item["sem_seg"]).sum())
            self.total += item["sem_seg"].numel()
            self.seen.append(item["image_id"])

    def evaluate(self) -> dict:
        parts = comm.all_gather_object((self.correct, self.total, self.seen))
        correct, total = sum(p[0] for p in parts), sum(p[1] for p in parts)
        seen = sorted(i for p in parts for i in p[2])
        return {"seg/acc": 100.0 * correct / total, "seg/images": float(len(seen))}


def write_config(path: Path, **train) -> Path:
    """An experiment file for the tiny task; `train` entries override the defaults."""
    cfg = {
        "model": {"type": "TinySegmenter"},
        "data": {
            "train": {"type": "TinyColors", "size": 32},
            "val": {"type": "TinyColors", "size": 8, "seed": 1},
            "num_workers": 0,
        },
        "train": {
            "batch_size": 4,
            "max_iter": 6,
            "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
            "scheduler": {"type": "MultiStepLR", "steps": [4], "warmup_iters": 2},
            "log_period": 2,
            "plot": False,
            "checkpoint_period": 3,
            "device": "cpu",
            **train,
        },
        "evaluation": {"type": "TinyAccuracy"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "last.pth", weights_only=True)["model"]


def initial_weights(seed: int = 42) -> dict[str, torch.Tensor]:
    """The weights a run with `train.seed=seed` starts from."""
    from densenets.data.loader import seed_everything

    seed_everything(seed)
    return TinySegmenter().state_dict()


def ddp_worker(rank: int, world_size: int, port: int, cfg_path: str, output_dir: str) -> None:
    """One process of a torchrun-like launch (env:// rendezvous) running training."""
    import os

    import torch.distributed as dist

    from densenets.config import load_config
    from densenets.engine.launch import train

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        train(load_config(cfg_path), output_dir)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
