"""EDSR meta-architecture: shapes per scale, contract, official checkpoint layout,
tiled inference and self-ensemble."""

import math

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torch import nn

from densenets.checkpoint.convert import CONVERTERS
from densenets.checkpoint.convert.edsr import convert_edsr, edsr_to_official
from densenets.config import MODELS, build
from densenets.modeling.super_resolution import self_ensemble, tile_bounds, tiled_forward


def _edsr(scale=2, blocks=2, channels=8, res_scale=1.0, **kw):
    cfg = {"type": "EDSR", "body": {"type": "EDSRBody", "num_blocks": blocks, "channels": channels,
                                    "res_scale": res_scale},
           "upsampler": {"type": "PixelShuffleUpsampler", "scale": scale}, **kw}
    return build(cfg, MODELS)


def _item(h, w, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"lr": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
            "hr": torch.randint(0, 256, (3, scale * h, scale * w), dtype=torch.uint8, generator=g)}


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_shapes_train_and_eval(scale):
    torch.manual_seed(0)
    model = _edsr(scale)
    losses = model([_item(12, 10, scale, 0), _item(12, 10, scale, 1)])
    assert set(losses) == {"loss_l1"} and torch.isfinite(losses["loss_l1"])
    losses["loss_l1"].backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    preds = model([_item(9, 13, scale), _item(5, 6, scale)])  # eval: sizes may differ
    assert [p["sr"].shape for p in preds] == [(3, 9 * scale, 13 * scale), (3, 5 * scale, 6 * scale)]
    assert all(p["sr"].dtype == torch.uint8 for p in preds)


def test_pixel_shuffle_steps_and_bad_scale():
    assert len(_edsr(4).upsampler.convs) == 2  # x4 = two x2 steps
    assert _edsr(3).upsampler.convs[0].out_channels == 9 * 8
    with pytest.raises(ValueError, match="scale"):
        _edsr(5)


def test_batch_of_mixed_sizes_is_an_error_in_training():
    model = _edsr(2)
    with pytest.raises(ValueError, match="differ in size"):
        model([_item(8, 8, 2), _item(8, 9, 2)])


# A compact re-statement of the official EDSR-PyTorch module layout (names as in its
# checkpoints), to check that published weights load and compute the same function.
class _OfficialResBlock(nn.Module):
    def __init__(self, c, res_scale):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class _OfficialEDSR(nn.Module):
    def __init__(self, blocks, c, scale, res_scale):
        super().__init__()
        mean = torch.tensor([0.4488, 0.4371, 0.4040]) * 255
        self.sub_mean, self.add_mean = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
        for conv, sign in ((self.sub_mean, -1), (self.add_mean, 1)):
            conv.weight.data = torch.eye(3).view(3, 3, 1, 1)
            conv.bias.data = sign * mean
        self.head = nn.Sequential(nn.Conv2d(3, c, 3, padding=1))
        self.body = nn.Sequential(*[_OfficialResBlock(c, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(c, c, 3, padding=1))
        steps = [2] * int(math.log2(scale)) if scale != 3 else [3]
        up = []
        for r in steps:
            up += [nn.Conv2d(c, r * r * c, 3, padding=1), nn.PixelShuffle(r)]
        self.tail = nn.Sequential(nn.Sequential(*up), nn.Conv2d(c, 3, 3, padding=1))

    def forward(self, x):
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(self.body(x) + x))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_official_checkpoint_loads_and_matches(scale):
    torch.manual_seed(scale)
    official = _OfficialEDSR(blocks=3, c=8, scale=scale, res_scale=0.1).eval()
    ours = _edsr(scale, blocks=3, channels=8, res_scale=0.1).eval()
    ours.load_state_dict(CONVERTERS["edsr"](official.state_dict()), strict=True)
    x = torch.rand(1, 3, 10, 12) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours.network(x), official(x), rtol=0, atol=1e-3)
        # float64 on a real photo: the same function to rounding, once both hold the mean
        # rounded the same way (float32 0.4488 * 255 there, float32 of 0.4488 * 255 here:
        # 1e-7 relative apart).
        photo = torch.from_numpy(skimage.data.astronaut()[200:240, 180:228].copy()).permute(2, 0, 1)
        x = photo[None].double()
        want = official.double()(x)
        ours.double().pixel_mean.copy_(-official.sub_mean.bias.view_as(ours.pixel_mean))
        torch.testing.assert_close(ours.double().network(x), want, rtol=0, atol=1e-10 * want.abs().max().item())
    ours.float()
    official.float()
    # Round trip: ours -> official layout -> ours, tensor for tensor.
    back = edsr_to_official(ours.state_dict())
    assert set(back) == set(official.state_dict())
    for k, v in official.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=1e-4)  # mean: float64 vs float32 product
    again = convert_edsr(back)
    assert again.keys() == ours.state_dict().keys()
    assert all(torch.equal(again[k], v) for k, v in ours.state_dict().items())


def test_converter_strips_wrappers_and_rejects_unknown():
    sd = edsr_to_official(_edsr(2).state_dict())
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    assert convert_edsr({"state_dict": wrapped}).keys() == _edsr(2).state_dict().keys()
    with pytest.raises(ValueError, match="unexpected key 'tail.0.1.weight'"):
        convert_edsr({**sd, "tail.0.1.weight": torch.zeros(1)})
    sd["sub_mean.bias"] = -sd["sub_mean.bias"] / 255  # a 0..1 range checkpoint
    with pytest.raises(ValueError, match="pixel_mean"):
        convert_edsr(sd)


def test_tile_bounds_cover_exactly():
    for length, tile in [(10, 3), (7, 7), (100, 32), (1, 5)]:
        bounds = tile_bounds(length, tile)
        assert bounds[0][0] == 0 and bounds[-1][1] == length
        assert all(a1 == b0 for (_, a1), (b0, _) in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) <= tile


def test_tiled_inference_equals_whole_image():
    # Receptive field in LR pixels: head 1 + 2 blocks x 2 + body conv 1 + upsampler
    # conv 1 + output conv at HR (1 HR px, < 1 LR px) = 8 LR pixels.
    torch.manual_seed(0)
    model = _edsr(2, blocks=2, channels=8).eval()
    x = torch.rand(1, 3, 45, 53) * 255
    with torch.no_grad():
        whole = model.network(x)
        tiled = tiled_forward(model.network, x, 2, tile_size=16, overlap=8)
        # float32 on CPU: oneDNN picks convolution kernels by input size, so tiles and
        # the whole image round differently (by a few float32 ulps).
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max() / 255 <= 1e-5
        # float64: equal to rounding everywhere, seams included (oneDNN's float64 kernels
        # also depend on the input size, so not always bit-identical).
        model.double()
        whole = model.network(x.double())
        tiled = tiled_forward(model.network, x.double(), 2, tile_size=16, overlap=8)
        torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-10)
        too_little = tiled_forward(model.network, x.double(), 2, tile_size=16, overlap=2)
    assert (too_little - whole).abs().max() > 1e-3  # the overlap does matter


def test_eval_tiled_and_ensemble_options():
    torch.manual_seed(0)
    model = _edsr(3, tile_size=8, tile_overlap=8).eval()
    plain = _edsr(3).eval()
    plain.load_state_dict(model.state_dict())
    item = _item(20, 17, 3)
    assert (model([item])[0]["sr"].int() - plain([item])[0]["sr"].int()).abs().max() <= 1
    ens = _edsr(3, self_ensemble=True).eval()
    ens.load_state_dict(model.state_dict())
    x = item["lr"][None].float()
    with torch.no_grad():
        torch.testing.assert_close(ens.inference(x), self_ensemble(plain.network, x))


def _d4(x, k, flip):
    x = x.rot90(k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def test_self_ensemble_of_equivariant_model_is_plain_output():
    # Nearest x2 upsampling and a kernel symmetric under all 8 flips/rotations commute
    # with the dihedral group, so the ensemble must return the plain output.
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 5.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64)[None, None].repeat(3, 1, 1, 1)

    def fn(x):
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), k, padding=1, groups=3)

    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(self_ensemble(fn, x), fn(x), rtol=1e-12, atol=1e-12)


def test_self_ensemble_makes_any_model_equivariant():
    torch.manual_seed(0)
    model = _edsr(2).eval().double()
    x = torch.rand(1, 3, 6, 8, dtype=torch.float64) * 255
    with torch.no_grad():
        base = self_ensemble(model.network, x)
        assert not torch.allclose(base, model.network(x), atol=1e-3)
        for k in range(4):
            for flip in (False, True):
                torch.testing.assert_close(self_ensemble(model.network, _d4(x, k, flip)), _d4(base, k, flip))
