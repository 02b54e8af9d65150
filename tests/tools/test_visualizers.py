"""The visualisers that tools/infer.py draws with: they rely only on the prediction contracts."""

from __future__ import annotations

import cv2
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
    vis = build(
        {"type": "DetectionVisualizer", "score_threshold": 0.5, "line_width": 1},
        VISUALIZERS,
        class_names=["a", "b"],
    )
    pred = {
        "instances": {
            "boxes": torch.tensor([[10.0, 20.0, 50.0, 55.0], [60.0, 5.0, 75.0, 15.0]]),
            "scores": torch.tensor([0.9, 0.2]),
            "labels": torch.tensor([1, 0]),
        }
    }
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
    vis = SemSegVisualizer(
        class_names=["road", "car", "sky"], palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]], alpha=0.5
    )
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
    assert side.shape == (120, 320, 3) and (side[40:, :160] == 40).all()  # below the caption: bicubic


def test_registered_under_their_class_names():
    assert VISUALIZERS["DetectionVisualizer"] is DetectionVisualizer
    assert VISUALIZERS["SemSegVisualizer"] is SemSegVisualizer and VISUALIZERS["SRVisualizer"] is SRVisualizer


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_overlapping_detection_labels_are_placed_apart():
    # Five boxes whose top-left corners coincide (or nearly), and one at the image's top edge.
    boxes = torch.tensor([[20.0, 30.0, 70.0, 80.0], [21, 31, 60, 90], [20, 30, 90, 60], [22, 29, 50, 50],
                          [19, 32, 80, 70], [0, 0, 40, 20]])  # fmt: skip
    n = len(boxes)
    pred = {
        "instances": {"boxes": boxes, "scores": torch.linspace(0.99, 0.6, n), "labels": torch.arange(n) % 3}
    }
    vis = DetectionVisualizer(class_names=["person", "bicycle", "traffic light"], font_scale=0.4)
    image = np.full((200, 240, 3), 40, np.uint8)
    rects = vis.label_boxes(image, pred)
    assert len(rects) == n
    for i in range(n):
        x0, y0, x1, y1 = rects[i]
        assert 0 <= x0 < x1 <= 240 and 0 <= y0 < y1 <= 200  # inside the image
        for j in range(i):
            assert not _overlaps(rects[i], rects[j]), (i, j, rects[i], rects[j])
    # A lone box keeps its label just above its top-left corner.
    lone = {"instances": {"boxes": boxes[:1], "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}}
    ((x0, y0, x1, y1),) = vis.label_boxes(image, lone)
    assert x0 == 20 and y1 == 30
    out = vis.draw(image, pred)
    for x0, y0, x1, y1 in rects:  # every label's box is filled with its colour and has text
        patch = out[y0:y1, x0:x1].reshape(-1, 3)
        assert len({tuple(c) for c in patch}) >= 2


def test_sr_comparison_labels_its_halves_and_shows_psnr():
    from skimage.metrics import peak_signal_noise_ratio

    from densenets.utils.image_metrics import rgb_to_y

    rng = np.random.default_rng(0)
    hr = cv2.GaussianBlur(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), (7, 7), 2)
    lr = cv2.resize(hr, (40, 32), interpolation=cv2.INTER_AREA)
    sr = np.clip(hr.astype(int) + rng.integers(-6, 7, hr.shape), 0, 255).astype(np.uint8)
    vis = SRVisualizer(compare=True)
    pred = {"sr": torch.from_numpy(sr).permute(2, 0, 1)}
    plain = np.concatenate([cv2.resize(lr, (80, 64), interpolation=cv2.INTER_CUBIC), sr], axis=1)
    labelled = vis.draw(lr, pred)
    assert labelled.shape == plain.shape
    assert (labelled[:16, :40] != plain[:16, :40]).any() and (
        labelled[:16, 80:120] != plain[:16, 80:120]
    ).any()
    np.testing.assert_array_equal(labelled[32:], plain[32:])  # only the captions' corner changes
    assert vis.captions(lr, pred) == ["bicubic", "model"]

    def y_psnr(a):  # the SR protocol: Y channel, border of `scale` pixels shaved
        ya = rgb_to_y(torch.from_numpy(a).permute(2, 0, 1)).numpy()[2:-2, 2:-2]
        yh = rgb_to_y(torch.from_numpy(hr).permute(2, 0, 1)).numpy()[2:-2, 2:-2]
        return peak_signal_noise_ratio(yh, ya, data_range=255)

    bicubic_db, model_db = y_psnr(plain[:, :80]), y_psnr(sr)
    assert vis.captions(lr, pred, hr=hr) == [f"bicubic {bicubic_db:.2f} dB", f"model {model_db:.2f} dB"]
    with_psnr = vis.draw(lr, pred, hr=hr)
    assert (with_psnr[:16] != labelled[:16]).any()
    # Without the comparison, the output alone, captioned only when the ground truth is known.
    np.testing.assert_array_equal(SRVisualizer().draw(lr, pred), sr)
    assert (SRVisualizer().draw(lr, pred, hr=hr)[:16, :60] != sr[:16, :60]).any()
