"""COCOEvaluator: COCO box AP of detection predictions (pycocotools or faster-coco-eval).

Besides the metrics, evaluation logs the standard 12-line COCO summary and a
per-category AP table (as detectron2 does), formatted here from the engine's numbers,
so the text is the same whichever engine ran. A metric COCO reports as -1 (no ground
truth of that size, or of that category) is shown as "–" and left out of the metrics.
"""

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

__all__ = ["COCOEvaluator", "coco_box_ap", "format_coco_summary", "format_per_category_table"]

logger = logging.getLogger(__name__)
_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The 12 entries of COCOeval.stats: (AP or AR, IoU range, area, max detections).
_SUMMARY_ROWS = (
    ("AP", "0.50:0.95", "all", 100),
    ("AP", "0.50", "all", 100),
    ("AP", "0.75", "all", 100),
    ("AP", "0.50:0.95", "small", 100),
    ("AP", "0.50:0.95", "medium", 100),
    ("AP", "0.50:0.95", "large", 100),
    ("AR", "0.50:0.95", "all", 1),
    ("AR", "0.50:0.95", "all", 10),
    ("AR", "0.50:0.95", "all", 100),
    ("AR", "0.50:0.95", "small", 100),
    ("AR", "0.50:0.95", "medium", 100),
    ("AR", "0.50:0.95", "large", 100),
)
_AR100 = 8  # index of AR@100 (all areas) in COCOeval.stats
_MISSING = "–"


def format_coco_summary(stats) -> str:
    """COCOeval's 12-line summary from its ``stats`` (fractions; -1 shown as "–")."""
    lines = []
    for value, (kind, iou, area, dets) in zip(stats, _SUMMARY_ROWS):
        title = "Average Precision  (AP)" if kind == "AP" else "Average Recall     (AR)"
        number = f"{value:0.3f}" if value >= 0 else _MISSING
        lines.append(f" {title} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {number}")
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join(":" + "-" * (w + 1) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def format_per_category_table(ap: dict[str, float | None], columns: int = 3) -> str:
    """A Markdown table of per-category AP (percent), `columns` category/AP pairs per row;
    None (no ground truth of that category) is shown as "–"."""
    cells = [(name, _MISSING if v is None else f"{v:.3f}") for name, v in ap.items()]
    columns = max(1, min(columns, len(cells)))
    rows = []
    for start in range(0, len(cells), columns):
        chunk = cells[start : start + columns]
        chunk += [("", "")] * (columns - len(chunk))
        rows.append([c for pair in chunk for c in pair])
    return _markdown_table(["category", "AP"] * columns, rows)


def _fast_engine_available() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def coco_box_ap(
    gt: dict, results: list[dict], image_ids: list[int] | None = None, engine: str = "auto"
) -> tuple[np.ndarray, np.ndarray, str]:
    """Run COCO box evaluation.

    Args:
        gt: the ground-truth COCO dict (``images``, ``annotations``, ``categories``).
        results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).
        image_ids: evaluate only these images (default: all images of `gt`).
        engine: "pycocotools", "faster_coco_eval", or "auto" (the fast one when installed).

    Returns:
        ``stats`` (the 12 summary numbers as fractions, -1 where COCO has nothing to
        measure), ``precision`` (T x R x K x A x M, COCOeval's layout), and the 12-line
        summary text.
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
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints, faster-coco-eval logs
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
    stats = np.asarray(evaluator.stats[: len(_SUMMARY_ROWS)], dtype=np.float64)
    return stats, np.asarray(evaluator.eval["precision"]), format_coco_summary(stats)


@EVALUATORS.register()
class COCOEvaluator(DatasetEvaluator):
    """COCO bbox AP, AP50, AP75, APs/m/l, AR@100 and per-category AP (in percent).

    Predictions of all processes are gathered, written as COCO results JSON
    (``{output_dir}/coco_instances_results.json``) and scored against the dataset's
    annotation file; the summary and per-category tables are logged and written to
    ``{output_dir}/coco_summary.txt``. faster-coco-eval gives the same numbers as pycocotools, faster.

    Args:
        dataset: the evaluated dataset (`COCODetection`: ``coco``, ``label_to_category_id``,
            ``class_names``).
        output_dir: where to write the results JSON (None: not written).
        engine: "auto", "pycocotools" or "faster_coco_eval".
        per_category: also report ``bbox/AP-<class>`` (categories with ground truth) and
            log the per-category table.
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
        stats, precision, summary = coco_box_ap(self.dataset.coco.dataset, results, image_ids, self.engine)
        # COCO reports -1 where it has nothing to measure (e.g. no large objects): left out.
        names = (*_METRICS, "AR100")
        out = {
            f"bbox/{n}": float(stats[i] * 100)
            for n, i in zip(names, (0, 1, 2, 3, 4, 5, _AR100))
            if stats[i] >= 0
        }
        text = [f"COCO box evaluation on {len(image_ids)} images:", summary]
        if self.per_category:
            # precision's category axis is COCO's sorted category ids (not the label space).
            cats = self.dataset.coco.cats
            per_class = _per_category_ap(precision, [cats[c]["name"] for c in sorted(cats)])
            out.update({f"bbox/AP-{n}": v for n, v in per_class.items() if v is not None})
            text += ["Per-category bbox AP:", format_per_category_table(per_class)]
        logger.info("\n".join(text))
        if self.output_dir is not None:
            (self.output_dir / "coco_summary.txt").write_text("\n".join(text[1:]) + "\n")
        return out


def _per_category_ap(precision: np.ndarray, class_names: list[str]) -> dict[str, float | None]:
    """AP in percent per category (area "all", 100 detections); None without ground truth."""
    ap = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        ap[name] = float(p.mean() * 100) if p.size else None
    return ap
