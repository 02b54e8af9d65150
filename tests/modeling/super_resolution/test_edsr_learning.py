"""EDSR learns: a tiny model overfits a few patches past bicubic (fast), and an
EDSR-baseline with fewer blocks trained on crops of `skimage.data` photos beats bicubic
on held-out photos (slow)."""

import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from skimage import data

from densenets.config import MODELS, build
from densenets.data.imresize import imresize
from densenets.data.sr import DIV2K
from densenets.data.synthetic import make_sr_set
from densenets.evaluation.sr import SRMetrics


@contextmanager
def _one_thread():
    """Tensors this small gain nothing from more threads, and lose on a busy machine;
    the measured runs below used one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _step(model, batch, opt):
    loss = model(batch)["loss_l1"]
    opt.zero_grad()
    loss.backward()
    opt.step()


def _edsr(blocks, channels, scale=2):
    cfg = {"type": "EDSR", "body": {"type": "EDSRBody", "num_blocks": blocks, "channels": channels},
           "upsampler": {"type": "PixelShuffleUpsampler", "scale": scale}}
    return build(cfg, MODELS)


def _chw(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _bicubic(item, scale):
    return _chw(imresize(item["lr"].permute(1, 2, 0).numpy(), scale))


def _psnr(model, items, scale):
    """(model PSNR, bicubic PSNR) on Y with the border shaved, averaged over items."""
    model.eval()
    ours, bic = SRMetrics(), SRMetrics()
    for item in items:
        ours.process([item], model([item]))
        bic.process([item], [{"sr": _bicubic(item, scale)}])
    model.train()
    return ours.evaluate()["sr/PSNR"], bic.evaluate()["sr/PSNR"]


def test_tiny_edsr_overfits_patches_past_bicubic():
    torch.manual_seed(0)
    photo = data.astronaut()
    items = []
    for y, x in [(40, 180), (200, 260), (300, 100), (120, 330)]:  # face, suit, flag, background
        hr = photo[y : y + 48, x : x + 48]
        items.append({"lr": _chw(imresize(hr, 0.5)), "hr": _chw(hr)})
    model = _edsr(blocks=2, channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with _one_thread():
        before, bicubic = _psnr(model, items, 2)
        for _ in range(300):
            _step(model, items, opt)
        after, _ = _psnr(model, items, 2)
    # Measured: bicubic 34.97 dB, the model 13.9 dB before and 36.2 dB after training.
    assert after > bicubic + 0.5, (before, after, bicubic)


@pytest.mark.slow
def test_edsr_baseline_beats_bicubic_on_held_out_photos(tmp_path):
    """EDSR-baseline (64 channels) with 4 of its 16 blocks, x2, batches of 8 random
    24 x 24 LR patches from 20 crops of 10 photos; held out: 3 other photos."""
    torch.manual_seed(0)
    np.random.seed(0)
    make_sr_set(tmp_path, num_train=20, hr_size=192, scales=(2,), valid_max_size=240)
    train = DIV2K(tmp_path, scale=2, repeat=100, cache=True,
                  transforms=[{"type": "SRRandomCrop", "patch_size": 24}, {"type": "SRRandomFlipRotate"}])
    held_out = [DIV2K(tmp_path, split="valid", scale=2)[i] for i in range(3)]  # chelsea, clock, coins
    model = _edsr(blocks=4, channels=64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with _one_thread():
        for _ in range(1000):
            _step(model, [train[int(i)] for i in rng.integers(0, len(train), 8)], opt)
        ours, bicubic = _psnr(model, held_out, 2)
    minutes = (time.perf_counter() - start) / 60
    print(f"EDSR-baseline(4 blocks) x2: {ours:.2f} dB vs bicubic {bicubic:.2f} dB "
          f"(+{ours - bicubic:.2f} dB) after {minutes:.1f} min")
    # Measured: bicubic 35.46 dB, the model 36.33 dB (+0.87 dB), 4.3 CPU-minutes.
    assert ours > bicubic + 0.3
