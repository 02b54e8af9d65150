"""EncoderDecoder: parity with torchvision's FCN / DeepLabV3, sliding-window and
test-time-augmented inference, training steps of every segmentation config."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densenets.checkpoint.convert import convert
from densenets.config import MODELS, build, load_config
from densenets.layers import ShapeSpec
from densenets.modeling.segmentation import EncoderDecoder, FCNHead
from densenets.modeling.segmentation.encoder_decoder import window_starts

CONFIGS = Path(__file__).parents[3] / "configs" / "segmentation"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics, so that the parity test checks the norms too."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


@pytest.mark.parametrize("name", ["fcn", "deeplabv3"])
def test_torchvision_checkpoints_convert_to_identical_logits(name):
    from torchvision.models import segmentation as tvseg

    torch.manual_seed(0)
    tv = getattr(tvseg, f"{name}_resnet50")(weights=None, weights_backbone=None, aux_loss=True).eval()
    _randomise_batchnorm(tv)
    cfg = load_config(CONFIGS / f"torchvision_{name}_resnet50.yaml")
    ours = build(cfg.model, MODELS).eval()
    ours.load_state_dict(convert(f"torchvision-{name}", {"model": tv.state_dict()}), strict=True)

    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    x = ((image.float() / 255 - IMAGENET_MEAN) / IMAGENET_STD)[None]
    with torch.no_grad():
        ref = tv(x)
        logits = ours.encode_decode(x)
        aux = ours.auxiliary_head(ours.backbone(x))
        aux = F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
        probs = ours([{"image": image, "orig_size": (64, 96)}])[0]["sem_seg"]
    scale = ref["out"].abs().max()
    torch.testing.assert_close(logits, ref["out"], rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(aux, ref["aux"], rtol=1e-4, atol=1e-5 * ref["aux"].abs().max())
    # our pixel normalisation of the uint8 image gives the same prediction
    assert (probs.argmax(0) == ref["out"][0].argmax(0)).float().mean() > 0.999


class _Pointwise(nn.Module):
    """A stride-1 backbone of 1x1 convs: each output pixel sees only its input pixel, so
    any window layout must reproduce whole-image logits exactly."""

    size_divisibility = 0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def output_shape(self):
        return {"res5": ShapeSpec(8, 1)}

    def forward(self, x):
        return {"res5": torch.tanh(self.conv(x))}


def _pointwise_model(**inference):
    torch.manual_seed(0)
    head = FCNHead({"res5": ShapeSpec(8, 1)}, 4, channels=8, num_convs=0, concat_input=False, dropout=0.0)
    return EncoderDecoder(_Pointwise(), head, inference=inference).eval()


def test_window_starts_cover_the_axis():
    assert window_starts(100, 100, 30) == [0]
    assert window_starts(80, 100, 30) == [0]
    assert window_starts(100, 40, 30) == [0, 30, 60]
    assert window_starts(1024, 512, 341) == [0, 341, 512]
    assert window_starts(2048, 1024, 683) == [0, 683, 1024]


def test_sliding_window_equals_whole_image_when_one_window_covers_it():
    model = build(load_config(CONFIGS / "torchvision_fcn_resnet50.yaml").model, MODELS).eval()
    x = torch.randn(1, 3, 40, 56)
    model.inference_cfg.crop_size, model.inference_cfg.stride = (40, 64), (20, 20)
    with torch.no_grad():
        whole = model.encode_decode(x)
        slide = model.slide_logits(x)
    assert torch.equal(whole, slide)


def test_overlapping_windows_are_averaged_exactly():
    model = _pointwise_model(mode="slide", crop_size=[16, 24], stride=[10, 14], window_batch=3)
    x = torch.randn(2, 3, 37, 61)
    with torch.no_grad():
        torch.testing.assert_close(model.slide_logits(x), model.encode_decode(x))
        images = [{"image": torch.randint(0, 256, (3, 37, 61), dtype=torch.uint8)} for _ in range(2)]
        slide = model(images)
        model.inference_cfg.mode = "whole"
        whole = model(images)
    for a, b in zip(slide, whole):
        torch.testing.assert_close(a["sem_seg"], b["sem_seg"])


def test_flip_tta_of_a_flip_invariant_input():
    model = build(load_config(CONFIGS / "torchvision_deeplabv3_resnet50.yaml").model, MODELS).eval()
    half = torch.randint(0, 256, (3, 48, 32), dtype=torch.uint8)
    image = torch.cat([half, half.flip(-1)], dim=-1)  # mirror-symmetric, 48 x 64
    batch = [{"image": image, "orig_size": (48, 64)}]
    with torch.no_grad():
        plain = model(batch)[0]["sem_seg"]
        model.inference_cfg.flip = True
        tta = model(batch)[0]["sem_seg"]
    # flip TTA averages p(x) with flip(p(flip(x))) = flip(p(x)): a symmetric map ...
    torch.testing.assert_close(tta, tta.flip(-1))
    # ... equal to the average of the plain prediction and its mirror image
    torch.testing.assert_close(tta, (plain + plain.flip(-1)) / 2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain, plain.flip(-1), atol=1e-3)  # the model itself is not symmetric


def test_multi_scale_flip_tta_averages_probabilities_and_resizes_to_orig_size():
    model = _pointwise_model(scales=[0.5, 1.0, 1.5], flip=True)
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    with torch.no_grad():
        out = model([{"image": image, "orig_size": (60, 80)}])[0]["sem_seg"]
        x = model.preprocess([{"image": image}]).tensor
        expected = 0
        for s in (0.5, 1.0, 1.5):
            xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else x
            for flip in (False, True):
                logits = model.encode_decode(xs.flip(-1)).flip(-1) if flip else model.encode_decode(xs)
                expected = expected + F.interpolate(logits, size=(30, 40), mode="bilinear").softmax(1) / 6
        expected = F.interpolate(expected, size=(60, 80), mode="bilinear")[0]
    assert out.shape == (4, 60, 80)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(0), torch.ones(60, 80))
    # a pointwise model is flip-equivariant: flip TTA alone changes nothing
    model.inference_cfg.scales = (1.0,)
    with torch.no_grad():
        flip_only = model([{"image": image}])[0]["sem_seg"]
        model.inference_cfg.flip = False
        torch.testing.assert_close(flip_only, model([{"image": image}])[0]["sem_seg"])


def test_bgr_input_format_flips_channels():
    model = _pointwise_model()
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    rgb = model.preprocess([{"image": image}]).tensor
    model.input_format = "BGR"
    bgr = model.preprocess([{"image": image}]).tensor
    torch.testing.assert_close(bgr[0, 0], (image[2].float() - 123.675) / 58.395)
    assert not torch.equal(rgb, bgr)


# One fast config per head type; the rest (ResNet-101, evaluation variants) run as `slow`.
FAST = {"fcn_r50_d8_cityscapes_512x1024_80k.yaml", "deeplabv3_r50_d8_cityscapes_512x1024_80k.yaml",
        "deeplabv3plus_r50_d8_cityscapes_512x1024_80k.yaml"}  # fmt: skip
SEG_CONFIGS = [
    pytest.param(p.name, marks=() if p.name in FAST else pytest.mark.slow)
    for p in sorted(CONFIGS.glob("*cityscapes*.yaml"))
]


@pytest.mark.parametrize("config", SEG_CONFIGS)
def test_config_trains_a_step_and_predicts(config):
    overrides = ["model.backbone.weights=null", "model.backbone.norm=BN"]
    for head in ("decode_head", "auxiliary_head"):
        overrides.append(f"model.{head}.norm=BN")
    cfg = load_config(CONFIGS / config, overrides)
    torch.manual_seed(0)
    model = build(cfg.model, MODELS)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    labels = [torch.randint(0, 19, (64, 64)), torch.full((64, 64), 255)]  # second image: no labels
    labels[0][:10] = 255
    batch = [{"image": i, "sem_seg": s} for i, s in zip(images, labels)]
    model.train()
    losses = model(batch)
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("decode_head.")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        preds = model([{"image": images[0][:, :50, :60], "orig_size": (100, 120)}])
    p = preds[0]["sem_seg"]
    assert p.shape == (19, 100, 120) and p.dtype == torch.float32
    torch.testing.assert_close(p.sum(0), torch.ones(100, 120))


def test_unlabelled_batch_gives_zero_finite_losses():
    model = _pointwise_model().train()
    batch = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "sem_seg": torch.full((8, 8), 255)}]
    losses = model(batch)
    assert losses["loss_sem_seg"].item() == 0.0
    losses["loss_sem_seg"].backward()


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="inference.mode: expected whole or slide"):
        _pointwise_model(mode="sliding")
    with pytest.raises(Exception, match="inference.crop: unknown key, did you mean crop_size"):
        _pointwise_model(crop=[4, 4])
    model = _pointwise_model().train()
    bad = [{"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "sem_seg": torch.zeros(8, 9, dtype=torch.long),
            "file_name": "x.png"}]  # fmt: skip
    with pytest.raises(ValueError, match=r"x.png: sem_seg is \(8, 9\), image is \(8, 8\)"):
        model(bad)


def _r18_d8_fcn() -> EncoderDecoder:
    from densenets.modeling.backbones import ResNet

    torch.manual_seed(0)
    backbone = ResNet(18, out_features=["res5"], output_stride=8, contract_dilation=True, norm="BN")
    head = FCNHead(backbone.output_shape(), 5, channels=32, num_convs=1, concat_input=True)
    model = EncoderDecoder(backbone, head).eval().double()
    _randomise_batchnorm(model)
    return model


def test_inference_does_not_pad_sizes_that_are_not_multiples_of_8():
    """mmsegmentation and torchvision run the image as it is and resize the logits to it;
    padding to 8 changes the logits near the border (and classes) of a 250 x 500 image."""
    model = _r18_d8_fcn()
    assert model.size_divisibility == 8
    images = [
        torch.randint(0, 256, (3, 250, 500), dtype=torch.uint8),
        torch.randint(0, 256, (3, 61, 93), dtype=torch.uint8),
    ]
    with torch.no_grad():
        expected = []
        for image in images:
            x = ((image.double() - model.pixel_mean) / model.pixel_std)[None]
            logits = model.decode_head(model.backbone(x))  # the reference: no padding ...
            expected.append(
                F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
            )
            torch.testing.assert_close(model.encode_decode(x), expected[-1], rtol=0, atol=0)
            padded = F.pad(x, (0, -x.shape[-1] % 8, 0, -x.shape[-2] % 8))  # ... padding changes it
            old = F.interpolate(
                model.decode_head(model.backbone(padded)), size=padded.shape[-2:], mode="bilinear"
            )
            assert not torch.allclose(old[..., : x.shape[-2], : x.shape[-1]], expected[-1], atol=1e-3)
        # a batch of two sizes: each image gets the result it gets alone
        preds = model([{"image": image} for image in images])
    for pred, ref in zip(preds, expected):
        torch.testing.assert_close(pred["sem_seg"], ref[0].float().softmax(0))
