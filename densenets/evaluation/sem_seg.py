"""Semantic segmentation metrics from a confusion matrix: mIoU, per-class IoU and
accuracy, pixel accuracy; optional prediction files (train ids, the dataset's label ids,
e.g. for the Cityscapes test server, colour visualisations).

With K classes the confusion matrix M is K x K, M[g, p] = pixels of ground-truth class g
predicted as p (pixels labelled `ignore_index` are left out). Per class c:
IoU = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c]), accuracy = M[c, c] / sum_p M[c, p].
A class absent from both the ground truth and the predictions has no IoU (NaN) and is
left out of the means.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densenets.config import EVALUATORS
from densenets.data.io import write_image
from densenets.utils import comm
from densenets.utils.visualization import color_palette, colorize

from .base import DatasetEvaluator

__all__ = ["SemSegEvaluator", "confusion_matrix", "sem_seg_metrics"]

logger = logging.getLogger(__name__)

OUTPUTS = ("train_ids", "label_ids", "color")


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """int64 Tensor[K, K] with M[g, p] = number of pixels of class g predicted as p.

    Args:
        pred (Tensor[H, W]): predicted class indices in [0, K).
        gt (Tensor[H, W]): ground truth in [0, K) or `ignore_index`.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
    valid = gt != ignore_index
    gt_v = gt[valid].long()
    if gt_v.numel() and (gt_v.min() < 0 or gt_v.max() >= num_classes):
        raise ValueError(f"ground truth holds label {int(gt_v.max())}, outside [0, {num_classes}) and not ignore")
    index = gt_v * num_classes + pred[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def sem_seg_metrics(conf: np.ndarray) -> dict[str, np.ndarray | float]:
    """IoU and accuracy per class (NaN where undefined), their means over the defined
    classes, and pixel accuracy, all as fractions in [0, 1]."""
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_total = conf.sum(axis=1)
    union = gt_total + conf.sum(axis=0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_total > 0, tp / gt_total, np.nan)
    total = conf.sum()
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    return {
        "IoU": iou,
        "Acc": acc,
        "mIoU": mean(iou),
        "mAcc": mean(acc),
        "pAcc": float(tp.sum() / total) if total > 0 else float("nan"),
    }


@EVALUATORS.register()
class SemSegEvaluator(DatasetEvaluator):
    """Accumulates a confusion matrix over the dataset (summed over processes).

    `evaluate()` returns percentages keyed `sem_seg/mIoU`, `sem_seg/mAcc`, `sem_seg/pAcc`,
    `sem_seg/IoU-<class>`, `sem_seg/Acc-<class>` and logs a per-class table.

    The dataset describes its labels; the evaluator assumes no dataset of its own. It reads
    `class_names`, `ignore_index`, `palette` (RGB per class) and
    `train_id_to_label_id(np.ndarray[H, W]) -> np.ndarray[H, W]` (class indices -> the
    dataset's label ids, e.g. `Cityscapes`) from it; the arguments override them.

    Args:
        dataset: the evaluated dataset, the source of the label metadata above.
        output_dir: where prediction files go (`<output_dir>/<kind>/<image_id>.png`).
        class_names: overrides the dataset's.
        ignore_index: ground-truth label left out of the metrics (default: the
            dataset's `ignore_index`, else 255).
        outputs: which files to write: `train_ids` (uint8 class indices), `label_ids`
            (the dataset's label ids, e.g. the Cityscapes test server's format; needs a
            `label_mapper`), `color` (palette image).
        label_mapper: class indices -> label ids for `label_ids` (default: the dataset's
            `train_id_to_label_id`).
        palette: RGB per class for `color` (default: the dataset's, else
            `densenets.utils.visualization.color_palette`).
    """

    def __init__(
        self,
        dataset: Any = None,
        output_dir: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        outputs: Sequence[str] = (),
        label_mapper: Callable[[np.ndarray], np.ndarray] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ) -> None:
        names = class_names if class_names is not None else getattr(dataset, "class_names", None)
        if not names:
            raise ValueError("SemSegEvaluator: no class_names (give them, or a dataset that has them)")
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown:
            raise ValueError(f"outputs: unknown kind {unknown[0]!r} (one of {', '.join(OUTPUTS)})")
        if outputs and output_dir is None:
            raise ValueError(f"outputs: {list(outputs)} needs an output_dir")
        self.class_names = list(names)
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index if ignore_index is not None else getattr(dataset, "ignore_index", 255)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.outputs = tuple(outputs)
        self.label_mapper = label_mapper or getattr(dataset, "train_id_to_label_id", None)
        if "label_ids" in self.outputs and self.label_mapper is None:
            raise ValueError(
                "outputs: label_ids needs a label_mapper (or a dataset with train_id_to_label_id)"
            )
        palette = palette if palette is not None else getattr(dataset, "palette", None)
        self.palette = palette if palette is not None else color_palette(self.num_classes)
        self.reset()

    def reset(self) -> None:
        self.conf = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)
        self.num_labelled = 0

    def process(self, batch: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
        """Add each prediction's argmax to the confusion matrix and write its files.

        `predictions[i]["sem_seg"]` is Tensor[K, H, W] of scores at the original size;
        `batch[i]["sem_seg"]` (int64 Tensor[H, W], optional) is the ground truth.
        """
        for item, pred in zip(batch, predictions):
            scores = pred["sem_seg"]
            if scores.shape[0] != self.num_classes:
                raise ValueError(f"{item.get('file_name')}: {scores.shape[0]} scores for {self.num_classes} classes")
            label = scores.argmax(dim=0)
            if "sem_seg" in item:
                gt = item["sem_seg"].to(label.device)
                self.conf += confusion_matrix(label, gt, self.num_classes, self.ignore_index).cpu()
                self.num_labelled += 1
            if self.outputs:
                self._write(item, label.to(torch.uint8).cpu().numpy())

    def _write(self, item: dict[str, Any], label: np.ndarray) -> None:
        name = f"{item['image_id'] if 'image_id' in item else Path(item['file_name']).stem}.png"
        for kind in self.outputs:
            if kind == "train_ids":
                out = label
            elif kind == "label_ids":
                out = self.label_mapper(label)
            else:
                out = colorize(label, self.palette)
            write_image(self.output_dir / kind / name, out)

    def evaluate(self) -> dict[str, float]:
        """Metrics in percent on every process (the matrix is summed over processes);
        an empty dict when no image had ground truth."""
        gathered = comm.all_gather_object((self.conf.numpy(), self.num_labelled))
        conf = sum(c for c, _ in gathered)
        if sum(n for _, n in gathered) == 0:
            return {}
        m = sem_seg_metrics(conf)
        results = {f"sem_seg/{k}": 100.0 * m[k] for k in ("mIoU", "mAcc", "pAcc")}
        for name, iou, acc in zip(self.class_names, m["IoU"], m["Acc"]):
            results[f"sem_seg/IoU-{name}"] = 100.0 * float(iou)
            results[f"sem_seg/Acc-{name}"] = 100.0 * float(acc)
        if comm.is_main_process():
            logger.info("semantic segmentation:\n%s", self.table(m))
        return results

    def table(self, metrics: dict[str, Any]) -> str:
        """A plain-text table: one row per class (IoU, Acc) and the means."""
        width = max(len(n) for n in [*self.class_names, "mean"])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}", "-" * (width + 16)]
        for name, iou, acc in zip(self.class_names, metrics["IoU"], metrics["Acc"]):
            lines.append(f"{name:<{width}}  {100 * iou:6.2f}  {100 * acc:6.2f}")
        lines.append("-" * (width + 16))
        lines.append(f"{'mean':<{width}}  {100 * metrics['mIoU']:6.2f}  {100 * metrics['mAcc']:6.2f}")
        lines.append(f"pixel accuracy {100 * metrics['pAcc']:.2f}")
        return "\n".join(lines)
