"""The visualisers that tools/infer.py draws with: they rely only on the prediction contracts."""

from __future__ import annotations

import numpy as np
import torch

from densenets.config import VISUALIZERS, build
from densenets.utils.visualization import DetectionVisualizer, SemSegVisualizer, SRVisualizer, color_palette

IMAGE = np.full((60, 80, 3), 40, np.uint8)


def test_palette_colours_are_distinct():
    pal = color_palette(30)
    assert pal.shape == (30, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal}) == 30


def test_detection_draws_boxes_above_threshold_with_class_colours():
    vis = build({"type": "DetectionVisualizer", "score_threshold": 0.5, "line_width": 1}, VISUALIZERS, class_names=["a", "b"])
    pred = {"instances": {
        "boxes": torch.tensor([[10.0, 20.0, 50.0, 55.0], [60.0, 5.0, 75.0, 15.0]]),
        "scores": torch.tensor([0.9, 0.2]),
        "labels": torch.tensor([1, 0]),
    }}
    out = vis.draw(IMAGE, pred)
    assert out.shape == IMAGE.shape and (IMAGE == 40).all()  # input untouched
    color = vis.colors[1]
    assert (out[40, 10] == color).all() and (out[55, 30] == color).all()  # left and bottom edges
    assert (out[35, 30] == 40).all()  # inside the box: untouched
    assert (out[6:15, 61:75] == 40).all()  # the 0.2 box is below the threshold
    assert (out[:20, 10:50] != 40).any()  # the "b 0.90" label above the box
    assert vis.name(1) == "b" and vis.name(7) == "7"


def test_semseg_overlay_and_legend():
    scores = torch.zeros(3, 60, 80)
    scores[2, :, :50] = 1.0  # class 2 on the left, class 0 elsewhere
    vis = SemSegVisualizer(class_names=["road", "car", "sky"], palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], alpha=0.5)
    out = vis.draw(IMAGE, {"sem_seg": scores})
    assert out.shape[0] == 60 and out.shape[1] > 80
    np.testing.assert_array_equal(out[10, 10], [20, 20, 148])  # 0.5 * 40 + 0.5 * (0, 0, 255)
    np.testing.assert_array_equal(out[10, 70], [148, 20, 20])
    panel = out[:, 80:]
    has = {tuple(c) for c in panel.reshape(-1, 3)}
    assert (0, 0, 255) in has and (255, 0, 0) in has and (0, 255, 0) not in has  # classes present only
    plain = SemSegVisualizer(legend=False).draw(IMAGE, {"sem_seg": scores.argmax(0)})
    assert plain.shape == IMAGE.shape


def test_sr_output_and_comparison():
    sr = torch.randint(0, 256, (3, 120, 160), dtype=torch.uint8)
    np.testing.assert_array_equal(SRVisualizer().draw(IMAGE, {"sr": sr}), sr.permute(1, 2, 0).numpy())
    side = SRVisualizer(compare=True).draw(IMAGE, {"sr": sr})
    assert side.shape == (120, 320, 3) and (side[:, :160] == 40).all()


def test_registered_under_their_class_names():
    assert VISUALIZERS["DetectionVisualizer"] is DetectionVisualizer
    assert VISUALIZERS["SemSegVisualizer"] is SemSegVisualizer and VISUALIZERS["SRVisualizer"] is SRVisualizer
