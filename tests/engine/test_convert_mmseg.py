"""`--from mmseg`: mmsegmentation's FCN / DeepLabV3 / DeepLabV3+ (ResNetV1c-D8, auxiliary
FCN head) built by mmsegmentation itself with random weights, saved as its training
saves them, converted with tools/convert_checkpoint.py and run in float64 on a real
photo whose sides are not multiples of 8, next to mmsegmentation's own inference."""

from pathlib import Path

import pytest
import torch
from testkit.mm_reference import build_mmseg, photo, require, save_like_training

from densenets.checkpoint.convert import convert
from densenets.config import MODELS, build, load_config
from densenets.tools.convert_checkpoint import main as convert_main

CONFIGS = Path(__file__).parents[2] / "configs" / "segmentation"
MEAN = torch.tensor([123.675, 116.28, 103.53], dtype=torch.float64).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float64).view(3, 1, 1)
CITYSCAPES = tuple(f"class{i}" for i in range(19))

CASES = {
    "deeplabv3": ("deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py", "mmseg_deeplabv3_r50_d8_cityscapes.yaml"),
    "fcn": ("fcn/fcn_r50-d8_4xb2-80k_cityscapes-512x1024.py", "mmseg_fcn_r50_d8_cityscapes.yaml"),
    "deeplabv3plus": (
        "deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py",
        "mmseg_deeplabv3plus_r50_d8_cityscapes.yaml",
    ),
}  # fmt: skip


def _ours(config: str, weights: Path) -> torch.nn.Module:
    norms = [f"model.{k}.norm=BN" for k in ("backbone", "decode_head", "auxiliary_head")]
    model = build(load_config(CONFIGS / config, norms).model, MODELS)
    state = torch.load(weights, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state, strict=True)
    return model.eval().double()


def _reference_logits(ref, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mmsegmentation's whole-image inference (`predict`) and its auxiliary head."""
    from mmseg.structures import SegDataSample

    h, w = x.shape[-2:]
    sample = SegDataSample(metainfo={"img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w)})
    with torch.no_grad():
        logits = ref.predict(x, [sample])[0].seg_logits.data
        aux = ref.auxiliary_head(ref.extract_feat(x))
    return logits, aux


@pytest.mark.parametrize(
    "name, size",
    [
        ("deeplabv3", (130, 250)),
        pytest.param("deeplabv3", (250, 500), marks=pytest.mark.slow),
        pytest.param("fcn", (130, 250), marks=pytest.mark.slow),
        pytest.param("deeplabv3plus", (130, 250), marks=pytest.mark.slow),
    ],
)
def test_mmseg_checkpoint_gives_mmseg_outputs(tmp_path, name, size):
    require("mmseg")
    mm_config, config = CASES[name]
    ref = build_mmseg(mm_config)
    save_like_training(ref, tmp_path / "mm.pth", "mmseg", CITYSCAPES)
    assert convert_main(["--from", "mmseg", str(tmp_path / "mm.pth"), str(tmp_path / "ours.pth")]) == 0
    ours = _ours(config, tmp_path / "ours.pth")
    ref = ref.double()

    rgb = torch.from_numpy(photo(*size)).permute(2, 0, 1).contiguous()  # uint8 [3, H, W]
    x = ((rgb.double() - MEAN) / STD)[None]
    # mmsegmentation's data preprocessor (BGR file -> RGB, ImageNet statistics) agrees
    pre = ref.data_preprocessor({"inputs": [rgb.flip(0)], "data_samples": None}, training=False)["inputs"]
    torch.testing.assert_close(pre.double(), x, rtol=0, atol=1e-5)

    logits, aux = _reference_logits(ref, x)
    with torch.no_grad():
        ours_logits = ours.encode_decode(x)[0]
        ours_aux = ours.auxiliary_head(ours.backbone(x))
        probs = ours([{"image": rgb}])[0]["sem_seg"]
    assert ours_logits.shape == logits.shape == (19, *size)
    torch.testing.assert_close(ours_logits, logits, rtol=1e-9, atol=1e-9 * logits.abs().max().item())
    torch.testing.assert_close(ours_aux, aux, rtol=1e-9, atol=1e-9 * aux.abs().max().item())
    # the uint8 path (our normalisation, float32 probabilities) predicts the same classes
    torch.testing.assert_close(probs.double(), logits.softmax(0), rtol=0, atol=1e-5)
    top2 = logits.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # float32 may break near-ties either way
    assert clear.float().mean() > 0.9
    assert torch.equal(probs.argmax(0)[clear], logits.argmax(0)[clear])


def test_backbone_only_checkpoint_converts_to_a_v1c_resnet():
    """mmcv's ImageNet ResNetV1c file (no `backbone.` prefix, `fc`) -> ResNet weights."""
    from densenets.modeling.backbones import ResNet

    ours = ResNet.from_name("resnet50v1c", out_features=["linear"])
    names = {
        "stem.conv1": "stem.0", "stem.norm1": "stem.1", "stem.conv2": "stem.3", "stem.norm2": "stem.4",
        "stem.conv3": "stem.6", "stem.norm3": "stem.7", "linear": "fc",
    }  # fmt: skip
    mm = {}
    for key, value in ours.state_dict().items():
        module, _, param = key.rpartition(".")
        if module in names:
            mm[f"{names[module]}.{param}"] = value
            continue
        stage, block, rest = module.split(".", 2) if module.startswith("res") else (None, None, module)
        layer = f"layer{int(stage[3]) - 1}.{block}"
        rest = (
            rest.replace("norm", "bn")
            .replace("shortcut.conv", "downsample.0")
            .replace("shortcut.bn", "downsample.1")
        )
        mm[f"{layer}.{rest}.{param}"] = value
    out = convert("mmseg", {"meta": {}, "state_dict": mm})
    assert out.keys() == ours.state_dict().keys()
    assert all(torch.equal(out[k], v) for k, v in ours.state_dict().items())


def test_unknown_keys_are_named():
    with pytest.raises(KeyError, match="decode_head.psp_modules.0.1.conv.weight"):
        convert("mmseg", {"state_dict": {"backbone.stem.0.weight": torch.zeros(1),
                                          "decode_head.psp_modules.0.1.conv.weight": torch.zeros(1)}})  # fmt: skip
