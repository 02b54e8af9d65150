"""COCOEvaluator gives exactly raw pycocotools' numbers, with either engine."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from densenets.data import COCODetection
from densenets.evaluation import COCOEvaluator

CATEGORY_IDS = [3, 7, 11]


def _synthetic(rng: np.random.Generator):
    """Ground truth of 12 images and predictions: jittered true boxes, misses, false positives."""
    images, anns, preds = [], [], {}
    for image_id in range(1, 13):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": h, "width": w})
        preds[image_id] = []
        for _ in range(int(rng.integers(0, 6))):
            bw, bh = rng.uniform(8, 150), rng.uniform(8, 150)  # small, medium and large boxes
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = int(rng.choice(CATEGORY_IDS))
            crowd = int(rng.random() < 0.05)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": crowd})  # fmt: skip
            if rng.random() < 0.8:  # detected, roughly
                jitter = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                box = [x + jitter[0], y + jitter[1], bw + jitter[2], bh + jitter[3]]
                label = CATEGORY_IDS.index(cat) if rng.random() < 0.9 else int(rng.integers(0, 3))
                preds[image_id].append((box, float(rng.random()), label))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            box = [rng.uniform(0, w / 2), rng.uniform(0, h / 2), rng.uniform(5, w / 2), rng.uniform(5, h / 2)]
            preds[image_id].append((box, float(rng.random() * 0.5), int(rng.integers(0, 3))))
    cats = [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": anns, "categories": cats}, preds


def _raw_pycocotools(ann_file, results):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("engine", ["pycocotools", "faster_coco_eval"])
def test_matches_raw_pycocotools(tmp_path, engine):
    gt, preds = _synthetic(np.random.default_rng(0))
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(gt))
    dataset = COCODetection(tmp_path, ann_file)
    evaluator = COCOEvaluator(dataset=dataset, output_dir=tmp_path / "eval", engine=engine)
    results = []
    for image_id, dets in preds.items():  # one "batch" per image, as the engine feeds it
        xywh = torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1)
        scores = torch.tensor([d[1] for d in dets])
        labels = torch.tensor([d[2] for d in dets], dtype=torch.int64)
        evaluator.process(
            [{"image_id": image_id}], [{"instances": {"boxes": xyxy, "scores": scores, "labels": labels}}]
        )
        for box, score, label in zip(xyxy.tolist(), scores.tolist(), labels.tolist()):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    metrics = evaluator.evaluate()

    raw = _raw_pycocotools(ann_file, results)
    for i, name in enumerate(["AP", "AP50", "AP75", "APs", "APm", "APl"]):
        assert metrics[f"bbox/{name}"] == pytest.approx(raw.stats[i] * 100, abs=1e-9), name
    assert 20 < metrics["bbox/AP"] < 95  # a non-trivial case
    for k, cat in enumerate(CATEGORY_IDS):
        p = raw.eval["precision"][:, :, k, 0, -1]
        assert metrics[f"bbox/AP-class{cat}"] == pytest.approx(p[p > -1].mean() * 100, abs=1e-9)
    written = json.loads((tmp_path / "eval" / "coco_instances_results.json").read_text())
    assert len(written) == len(results) and written[0]["category_id"] in CATEGORY_IDS


def test_no_predictions_and_reset(tmp_path):
    gt, _ = _synthetic(np.random.default_rng(1))
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(gt))
    evaluator = COCOEvaluator(dataset=COCODetection(tmp_path, ann_file), engine="pycocotools")
    empty = {
        "instances": {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
    }
    evaluator.process([{"image_id": 1}], [empty])
    assert evaluator.evaluate()["bbox/AP"] == 0.0
    evaluator.reset()
    assert evaluator._results == [] and evaluator._image_ids == []


def test_rejects_datasets_without_coco_ground_truth():
    with pytest.raises(ValueError, match="has no 'coco'"):
        COCOEvaluator(dataset=[1, 2, 3])
