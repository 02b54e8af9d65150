"""SemSegEvaluator: metrics against hand-computed confusion matrices, ignore pixels,
absent classes, gathering over processes, and the files it writes."""

import math

import numpy as np
import pytest
import torch

from densenets.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, Cityscapes
from densenets.data.io import read_image, read_label
from densenets.data.synthetic import make_shapes_city
from densenets.evaluation import SemSegEvaluator
from densenets.evaluation.sem_seg import confusion_matrix
from densenets.utils import comm
from densenets.utils.visualization import color_palette


def _scores(label: np.ndarray, num_classes: int) -> torch.Tensor:
    """One-hot scores [K, H, W] whose argmax is `label`."""
    return torch.nn.functional.one_hot(torch.as_tensor(label), num_classes).permute(2, 0, 1).float()


def _run(pred, gt, names, **kw):
    ev = SemSegEvaluator(class_names=names, **kw)
    ev.process([{"sem_seg": torch.as_tensor(gt), "image_id": "a"}], [{"sem_seg": _scores(pred, len(names))}])
    return ev


def test_metrics_match_hand_computed_confusion_matrix():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 2]])
    # rows = ground truth, cols = prediction
    #   gt0: pred0 x2, pred1 x1 | gt1: pred1 x2, pred2 x1 | gt2: pred2 x1, pred0 x1
    expected = np.array([[2, 1, 0], [0, 2, 1], [1, 0, 1]])
    ev = _run(pred, gt, ["a", "b", "c"])
    np.testing.assert_array_equal(ev.conf.numpy(), expected)
    res = ev.evaluate()
    # IoU_c = tp / (row + col - tp): a 2/(3+3-2), b 2/(3+3-2), c 1/(2+2-1)
    iou = [2 / 4, 2 / 4, 1 / 3]
    acc = [2 / 3, 2 / 3, 1 / 2]
    assert res["sem_seg/IoU-a"] == pytest.approx(100 * iou[0])
    assert res["sem_seg/IoU-c"] == pytest.approx(100 * iou[2])
    assert res["sem_seg/mIoU"] == pytest.approx(100 * np.mean(iou))
    assert res["sem_seg/mAcc"] == pytest.approx(100 * np.mean(acc))
    assert res["sem_seg/pAcc"] == pytest.approx(100 * 5 / 8)


def test_ignored_pixels_do_not_count():
    gt = np.array([[0, 255, 1], [255, 1, 255]])
    pred = np.array([[0, 1, 1], [0, 0, 2]])
    ev = _run(pred, gt, ["a", "b", "c"])
    assert ev.conf.sum() == 3
    # labelled pixels: (0,0) a->a, (0,2) b->b, (1,1) b->a
    np.testing.assert_array_equal(ev.conf.numpy(), [[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    # c is predicted only on an ignored pixel, so it is absent: no IoU, not in the mean
    res = ev.evaluate()
    assert math.isnan(res["sem_seg/IoU-c"])
    assert res["sem_seg/IoU-a"] == pytest.approx(100 * 1 / 2)
    assert res["sem_seg/IoU-b"] == pytest.approx(100 * 1 / 2)
    assert res["sem_seg/mIoU"] == pytest.approx(50.0)


def test_absent_classes_are_left_out_of_the_mean_but_false_positives_count():
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 0, 1, 3]])  # class 3 predicted, never in gt; class 2 absent everywhere
    res = _run(pred, gt, ["a", "b", "c", "d"]).evaluate()
    assert math.isnan(res["sem_seg/IoU-c"]) and math.isnan(res["sem_seg/Acc-c"])
    assert res["sem_seg/IoU-d"] == 0.0 and math.isnan(res["sem_seg/Acc-d"])
    # mean over a (1), b (1/2), d (0); c left out
    assert res["sem_seg/mIoU"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert res["sem_seg/mAcc"] == pytest.approx(100 * (1 + 0.5) / 2)


def test_confusion_matrix_matches_numpy_histogram_on_random_labels():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (40, 50))
    gt[rng.random(gt.shape) < 0.2] = 255
    pred = rng.integers(0, 5, (40, 50))
    gt5 = np.where(gt == 5, 255, gt)  # keep labels inside [0, 5)
    valid = gt5 != 255
    expected, _, _ = np.histogram2d(gt5[valid], pred[valid], bins=5, range=[[0, 5], [0, 5]])
    got = confusion_matrix(torch.as_tensor(pred), torch.as_tensor(gt5), 5)
    np.testing.assert_array_equal(got.numpy(), expected.astype(np.int64))


def test_label_outside_classes_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7), 3)


def test_matrices_are_summed_over_processes(monkeypatch):
    """Two ranks' matrices (one rank with a mistake) add up before the metrics."""
    ev = _run(np.array([[0, 1]]), np.array([[0, 1]]), ["a", "b"])
    other = (np.array([[0, 1], [0, 0]]), 1)  # rank 1: one gt-a pixel predicted b
    monkeypatch.setattr(comm, "all_gather_object", lambda obj: [obj, other])
    res = ev.evaluate()
    assert res["sem_seg/IoU-a"] == pytest.approx(100 * 1 / 2)
    assert res["sem_seg/IoU-b"] == pytest.approx(100 * 1 / 2)
    assert res["sem_seg/pAcc"] == pytest.approx(100 * 2 / 3)


def test_no_ground_truth_gives_no_metrics_and_reset_clears():
    ev = SemSegEvaluator(class_names=["a", "b"])
    ev.process([{"image_id": "x"}], [{"sem_seg": torch.zeros(2, 3, 3)}])
    assert ev.evaluate() == {}
    ev = _run(np.array([[1]]), np.array([[1]]), ["a", "b"])
    ev.reset()
    assert ev.conf.sum() == 0 and ev.evaluate() == {}


def test_writes_train_ids_label_ids_and_colours(tmp_path):
    """Label ids and colours come from the dataset (a Cityscapes one here)."""
    root = make_shapes_city(tmp_path / "city", num_train=1, num_val=1, image_size=(32, 64))["root"]
    dataset = Cityscapes(root, split="val")
    tmp_path = tmp_path / "out"
    train_ids = np.array([[0, 1, 2], [13, 18, 10]])
    ev = SemSegEvaluator(dataset=dataset, output_dir=tmp_path, outputs=["train_ids", "label_ids", "color"])
    assert ev.class_names == list(CITYSCAPES_CLASSES)
    item = {"image_id": "frankfurt_000000_000294"}
    ev.process([item], [{"sem_seg": _scores(train_ids, 19)}])
    name = "frankfurt_000000_000294.png"
    np.testing.assert_array_equal(read_label(tmp_path / "train_ids" / name), train_ids)
    # road 7, sidewalk 8, building 11, car 26, bicycle 33, sky 23 (cityscapesScripts labels.py)
    np.testing.assert_array_equal(read_label(tmp_path / "label_ids" / name), [[7, 8, 11], [26, 33, 23]])
    colour = read_image(tmp_path / "color" / name)
    assert tuple(colour[0, 0]) == CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert tuple(colour[1, 0]) == (0, 0, 142)


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="outputs: unknown kind 'colour'"):
        SemSegEvaluator(class_names=["a"], output_dir="x", outputs=["colour"])
    with pytest.raises(ValueError, match="needs an output_dir"):
        SemSegEvaluator(class_names=["a"], outputs=["color"])
    with pytest.raises(ValueError, match="class_names"):
        SemSegEvaluator()


def test_label_metadata_comes_from_the_dataset_not_a_default(tmp_path):
    """No Cityscapes default: without a dataset's mapping, label ids are refused; colours
    are the generic palette; the dataset's palette and ignore index are used when given."""
    with pytest.raises(ValueError, match="outputs: label_ids needs a label_mapper"):
        SemSegEvaluator(class_names=["a", "b"], output_dir=tmp_path, outputs=["label_ids"])
    ev = SemSegEvaluator(class_names=["a", "b"], output_dir=tmp_path / "generic", outputs=["color"])
    ev.process([{"image_id": "x"}], [{"sem_seg": _scores(np.array([[0, 1]]), 2)}])
    colour = read_image(tmp_path / "generic" / "color" / "x.png")
    np.testing.assert_array_equal(colour[0], color_palette(2))

    class Toy:
        class_names = ["a", "b"]
        palette = [(1, 2, 3), (4, 5, 6)]
        ignore_index = 7

        @staticmethod
        def train_id_to_label_id(train_ids):
            return train_ids + 10

    ev = SemSegEvaluator(dataset=Toy(), output_dir=tmp_path / "toy", outputs=["label_ids", "color"])
    assert ev.ignore_index == 7
    ev.process([{"image_id": "x", "sem_seg": torch.tensor([[0, 7]])}], [{"sem_seg": _scores(np.array([[0, 1]]), 2)}])
    np.testing.assert_array_equal(read_label(tmp_path / "toy" / "label_ids" / "x.png"), [[10, 11]])
    np.testing.assert_array_equal(read_image(tmp_path / "toy" / "color" / "x.png")[0], [(1, 2, 3), (4, 5, 6)])
    assert ev.conf.sum() == 1  # the pixel labelled 7 is ignored
