"""SRMetrics: Y conversion, shaving, PSNR and SSIM equal to scikit-image on real photos."""

import json

import numpy as np
import pytest
import torch
from skimage import color, data, metrics

from densenets.config import EVALUATORS, build
from densenets.data.imresize import imresize
from densenets.evaluation.sr import SRMetrics
from densenets.utils.image_metrics import psnr, rgb_to_y, ssim


def _chw(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _photo_pair(name, scale):
    """A real photo (cropped to a multiple of the scale) and its bicubic down-up copy."""
    hr = getattr(data, name)()
    hr = hr[: hr.shape[0] // 2 // 12 * 12, : hr.shape[1] // 2 // 12 * 12]
    sr = imresize(imresize(hr, 1 / scale), scale)
    return hr, sr


def test_y_channel_matches_skimage():
    img = data.astronaut()
    ours = rgb_to_y(_chw(img)).numpy()
    np.testing.assert_allclose(ours, color.rgb2ycbcr(img)[..., 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name, scale", [("astronaut", 2), ("chelsea", 3), ("coffee", 4)])
def test_psnr_ssim_equal_skimage_on_shaved_y(name, scale):
    hr, sr = _photo_pair(name, scale)
    ev = SRMetrics()
    got = ev.measure(_chw(sr), _chw(hr), scale)
    b = scale
    y_hr = color.rgb2ycbcr(hr)[b:-b, b:-b, 0]
    y_sr = color.rgb2ycbcr(sr)[b:-b, b:-b, 0]
    ref_psnr = metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    ref_ssim = metrics.structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    assert got["PSNR"] == pytest.approx(ref_psnr, abs=1e-9)
    assert got["SSIM"] == pytest.approx(ref_ssim, abs=1e-9)
    assert 20 < got["PSNR"] < 45 and 0.5 < got["SSIM"] < 1  # a plausible bicubic result


def test_rgb_mode_and_custom_border_match_skimage():
    hr, sr = _photo_pair("astronaut", 2)
    got = SRMetrics(y_channel=False, crop_border=6).measure(_chw(sr), _chw(hr), 2)
    h, s = hr[6:-6, 6:-6].astype(np.float64), sr[6:-6, 6:-6].astype(np.float64)
    assert got["PSNR"] == pytest.approx(metrics.peak_signal_noise_ratio(h, s, data_range=255), abs=1e-9)
    ref = metrics.structural_similarity(h, s, data_range=255, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, channel_axis=2)
    assert got["SSIM"] == pytest.approx(ref, abs=1e-9)


def test_shave_matters_and_identical_images():
    hr, sr = _photo_pair("astronaut", 4)
    a = SRMetrics(crop_border=0).measure(_chw(sr), _chw(hr), 4)["PSNR"]
    b = SRMetrics().measure(_chw(sr), _chw(hr), 4)["PSNR"]
    assert a != pytest.approx(b, abs=1e-3)
    y = rgb_to_y(_chw(hr))
    assert psnr(y, y) == float("inf") and ssim(y, y) == pytest.approx(1.0, abs=1e-12)


def test_evaluator_process_evaluate_averages_and_writes(tmp_path):
    ev = build({"type": "SRMetrics"}, EVALUATORS, dataset=None, output_dir=str(tmp_path))
    per_image = []
    for name, scale in [("astronaut", 2), ("chelsea", 2)]:
        hr, sr = _photo_pair(name, scale)
        item = {"lr": _chw(imresize(hr, 1 / scale)), "hr": _chw(hr), "image_id": name}
        ev.process([item], [{"sr": _chw(sr)}])
        per_image.append(SRMetrics().measure(_chw(sr), _chw(hr), scale))
    out = ev.evaluate()
    assert out["sr/PSNR"] == pytest.approx(np.mean([r["PSNR"] for r in per_image]))
    assert out["sr/SSIM"] == pytest.approx(np.mean([r["SSIM"] for r in per_image]))
    saved = json.loads((tmp_path / "sr_metrics.json").read_text())
    assert [r["image_id"] for r in saved] == ["astronaut", "chelsea"]
    ev.reset()
    with pytest.raises(RuntimeError, match="no predictions"):
        ev.evaluate()
    with pytest.raises(ValueError, match="differ in size"):
        ev.measure(torch.zeros(3, 20, 20, dtype=torch.uint8), torch.zeros(3, 22, 20, dtype=torch.uint8), 2)
