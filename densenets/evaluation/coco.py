"""COCOEvaluator: COCO box AP of detection predictions (pycocotools or faster-coco-eval)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densenets.config import EVALUATORS
from densenets.utils import comm

from .base import DatasetEvaluator

__all__ = ["COCOEvaluator", "coco_box_ap"]

logger = logging.getLogger(__name__)
_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _fast_engine_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def coco_box_ap(
    gt: dict, results: list[dict], image_ids: list[int] | None = None, engine: str = "auto"
) -> tuple[dict[str, float], np.ndarray, str]:
    """Run COCO box evaluation.

    Args:
        gt: the ground-truth COCO dict (``images``, ``annotations``, ``categories``).
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        image_ids: evaluate only these images (default: all images of `gt`).
        engine: "pycocotools", "faster_coco_eval", or "auto" (the fast one when installed).

    Returns:
        The six summary metrics in percent, ``precision`` (T x R x K x A x M, COCOeval's
        layout), and the printed summary.
    """
    if engine == "auto":
        engine = "faster_coco_eval" if _fast_engine_available() else "pycocotools"
    if engine == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    elif engine == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise ValueError(
            f"COCOEvaluator: engine must be auto, pycocotools or faster_coco_eval, got {engine!r}"
        )
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        coco_gt = COCO()
        coco_gt.dataset = json.loads(json.dumps(gt))  # engines add fields to what they are given
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(evaluator.stats[i] * 100) for i, name in enumerate(_METRICS)}
    return metrics, np.asarray(evaluator.eval["precision"]), text.getvalue()


@EVALUATORS.register()
class COCOEvaluator(DatasetEvaluator):
    """COCO bbox AP, AP50, AP75, APs/m/l and per-category AP (in percent).

    Predictions of all processes are gathered, written as COCO results JSON
    (``{output_dir}/coco_instances_results.json``) and scored against the dataset's
    annotation file. faster-coco-eval gives the same numbers as pycocotools, faster.

    Args:
        dataset: the evaluated dataset (`COCODetection`: ``coco``, ``label_to_category_id``,
            ``class_names``).
        output_dir: where to write the results JSON (None: not written).
        engine: "auto", "pycocotools" or "faster_coco_eval".
        per_category: also report ``bbox/AP-<class>``.
    """

    def __init__(
        self,
        dataset: Any,
        output_dir: str | os.PathLike | None = None,
        engine: str = "auto",
        per_category: bool = True,
    ):
        for attr in ("coco", "label_to_category_id"):
            if not hasattr(dataset, attr):
                raise ValueError(
                    f"COCOEvaluator: dataset {type(dataset).__name__} has no {attr!r} (use COCODetection)"
                )
        self.dataset = dataset
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.engine = engine
        self.per_category = per_category
        self.reset()

    def reset(self) -> None:
        self._results: list[dict] = []
        self._image_ids: list[int] = []

    def process(self, batch: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> None:
        to_cat = self.dataset.label_to_category_id
        for item, pred in zip(batch, predictions):
            image_id = item["image_id"]
            self._image_ids.append(image_id)
            inst = pred["instances"]
            boxes = inst["boxes"].detach().to("cpu", torch.float64, copy=True)
            boxes[:, 2:] -= boxes[:, :2]  # xyxy -> xywh
            for box, score, label in zip(boxes.tolist(), inst["scores"].tolist(), inst["labels"].tolist()):
                self._results.append(
                    {"image_id": image_id, "category_id": to_cat[label], "bbox": box, "score": score}
                )

    def evaluate(self) -> dict[str, float]:
        results = list(itertools.chain(*comm.all_gather_object(self._results)))
        image_ids = sorted(set(itertools.chain(*comm.all_gather_object(self._image_ids))))
        if not comm.is_main_process():
            return {}
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.output_dir / "coco_instances_results.json.tmp"
            tmp.write_text(json.dumps(results))
            os.replace(tmp, self.output_dir / "coco_instances_results.json")
        if not results:
            logger.warning("COCOEvaluator: no predictions; every AP is 0")
            return {f"bbox/{m}": 0.0 for m in _METRICS}
        metrics, precision, summary = coco_box_ap(self.dataset.coco.dataset, results, image_ids, self.engine)
        logger.info("COCO box evaluation on %d images:\n%s", len(image_ids), summary)
        out = {f"bbox/{k}": v for k, v in metrics.items()}
        if self.per_category:
            for k, name in enumerate(self.dataset.class_names):
                p = precision[:, :, k, 0, -1]  # area "all", maxDets 100
                p = p[p > -1]
                out[f"bbox/AP-{name}"] = float(p.mean() * 100) if p.size else float("nan")
        return out
