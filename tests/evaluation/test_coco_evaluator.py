"""COCOEvaluator gives exactly raw pycocotools' numbers, with either engine."""

import contextlib
import io
import json
import logging
import re

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


def _evaluate(tmp_path, gt, preds, engine):
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(gt))
    evaluator = COCOEvaluator(dataset=COCODetection(tmp_path, ann_file), engine=engine)
    results = []
    for image_id, dets in preds.items():
        xywh = torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4)
        xyxy = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1)
        inst = {
            "boxes": xyxy,
            "scores": torch.tensor([d[1] for d in dets]),
            "labels": torch.tensor([d[2] for d in dets], dtype=torch.int64),
        }
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
        for box, (_, score, label) in zip(xyxy.tolist(), dets):
            x1, y1, x2, y2 = box
            results.append(
                {
                    "image_id": image_id,
                    "category_id": gt["categories"][label]["id"],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return evaluator.evaluate(), _raw_pycocotools(ann_file, results)


@pytest.mark.parametrize("engine", ["pycocotools", "faster_coco_eval"])
def test_logs_the_12_line_summary_and_per_category_table(tmp_path, engine, caplog):
    gt, preds = _synthetic(np.random.default_rng(0))
    with caplog.at_level(logging.INFO, logger="densenets.evaluation.coco"):
        metrics, raw = _evaluate(tmp_path, gt, preds, engine)
    text = caplog.text
    # The 12 lines pycocotools' summarize() prints, with the same numbers, in either engine.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        raw.summarize()
    for line in out.getvalue().splitlines():
        assert line in text, line
    assert metrics["bbox/AR100"] == pytest.approx(raw.stats[8] * 100, abs=1e-9)
    # Per-category AP table: every category with its AP, three pairs per row.
    assert "| category " in text and text.count("| class") == len(CATEGORY_IDS)
    for cat in CATEGORY_IDS:
        assert re.search(rf"\| class{cat}\s+\| {metrics[f'bbox/AP-class{cat}']:.3f}", text)


def test_minus_one_metrics_are_left_out_and_shown_as_a_dash(tmp_path, caplog):
    """Only small boxes, and a category without ground truth: COCO says -1 for APm, APl,
    ARm, ARl and that category's AP; none of them may become -100."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2)]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 12, 12], "area": 144, "iscrowd": 0}
        for i in (1, 2)
    ]
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "none"}],
    }
    preds = {1: [([10, 10, 12, 12], 0.9, 0)], 2: [([11, 11, 12, 12], 0.8, 0), ([50, 50, 40, 40], 0.5, 1)]}
    with caplog.at_level(logging.INFO, logger="densenets.evaluation.coco"):
        metrics, raw = _evaluate(tmp_path, gt, preds, "auto")
    assert raw.stats[4] == -1 and raw.stats[5] == -1  # what COCO reports
    assert "bbox/APm" not in metrics and "bbox/APl" not in metrics and "bbox/AP-none" not in metrics
    assert all(v >= 0 for v in metrics.values()), metrics
    assert metrics["bbox/APs"] == pytest.approx(raw.stats[3] * 100)
    assert "-1.000" not in caplog.text and "-100" not in caplog.text
    assert "area= large | maxDets=100 ] = –" in caplog.text
    assert re.search(r"\| none\s+\| –", caplog.text)


def test_labels_from_category_ids_as_torchvision_models_predict(tmp_path):
    """torchvision's COCO detectors predict label j for category id j + 1 (gaps kept): the
    dataset option maps those labels, and the AP equals pycocotools' on the same results."""
    gt, preds = _synthetic(np.random.default_rng(3))
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(gt))
    dataset = COCODetection(tmp_path, ann_file, labels_from_category_ids=True)
    assert dataset.label_to_category_id == list(range(1, 12))
    assert dataset.class_names[6] == "class7" and dataset.class_names[0] == "N/A"
    evaluator = COCOEvaluator(dataset=dataset, engine="pycocotools")
    results = []
    for image_id, dets in preds.items():
        boxes = torch.tensor([[x, y, x + w, y + h] for (x, y, w, h), _, _ in dets]).reshape(-1, 4)
        labels = torch.tensor([CATEGORY_IDS[label] - 1 for _, _, label in dets], dtype=torch.int64)
        scores = torch.tensor([s for _, s, _ in dets])
        evaluator.process(
            [{"image_id": image_id}], [{"instances": {"boxes": boxes, "scores": scores, "labels": labels}}]
        )
        results += [
            {"image_id": image_id, "category_id": CATEGORY_IDS[label], "bbox": box, "score": s}
            for box, s, label in dets
        ]
    expected = _raw_pycocotools(ann_file, results).stats[0] * 100
    assert evaluator.evaluate()["bbox/AP"] == pytest.approx(expected, abs=1e-9)
    # Training targets follow the same mapping.
    _, labels = dataset._annotations(gt["annotations"][0]["image_id"])
    first = [
        a for a in gt["annotations"] if a["image_id"] == gt["annotations"][0]["image_id"] and not a["iscrowd"]
    ]
    assert labels.tolist()[: len(first)] == [a["category_id"] - 1 for a in first][: len(labels)]


def test_torchvision_config_predicts_category_ids():
    from densenets.config import load_config

    cfg = load_config("configs/detection/faster_rcnn_r50_fpn_torchvision.yaml", validate=False)
    assert cfg.model.roi_heads.num_classes == 90
    assert cfg.data.val.labels_from_category_ids and cfg.data.train.labels_from_category_ids
