"""`weights:` for backbones: local files in every layout, named sources, checked loading."""

import json
import logging
from pathlib import Path

import pytest
import torch
import torchvision

from densenets.checkpoint.convert import convert
from densenets.checkpoint.weights import WeightsUnavailableError, detect_format, resolve_weights
from densenets.modeling.backbones import ResNet

TIMM_SHAPES = Path(__file__).with_name("timm_resnet18d_shapes.json")


@pytest.fixture(scope="module")
def tv18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def pretrained(**kwargs) -> ResNet:
    """A ResNet with its `weights` spec loaded, as the training launcher does."""
    model = ResNet(**kwargs)
    model.load_pretrained()
    return model


def features(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_torchvision_file_is_detected_converted_and_loaded(tmp_path, tv18, caplog):
    path = tmp_path / "resnet18.pth"
    torch.save(tv18.state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="densenets.checkpoint.weights"):
        model = pretrained(depth=18, out_features=["res5"], weights=str(path))
    # The classifier is not part of a res5 backbone: reported, not loaded.
    assert "2 checkpoint keys unused: linear.weight, linear.bias" in caplog.text
    torch.testing.assert_close(model.stem.conv1.weight, tv18.conv1.weight)
    torch.testing.assert_close(model.res5[1].norm2.running_var, tv18.layer4[1].bn2.running_var)


def test_missing_keys_are_reported(tmp_path, tv18, caplog):
    sd = {k: v for k, v in tv18.state_dict().items() if not k.startswith("layer4.1.")}
    torch.save(sd, tmp_path / "partial.pth")
    with caplog.at_level(logging.WARNING):
        pretrained(depth=18, out_features=["res5"], weights=str(tmp_path / "partial.pth"))
    assert "keys missing from the checkpoint" in caplog.text and "res5.1.conv1.weight" in caplog.text


def test_shape_mismatch_is_an_error_naming_the_key(tmp_path, tv18):
    torch.save(tv18.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(
        ValueError, match=r"shape mismatch for linear\.weight: checkpoint \(1000, 512\), model \(10, 512\)"
    ):
        pretrained(depth=18, out_features=["linear"], num_classes=10, weights=str(tmp_path / "r18.pth"))
    with pytest.raises(ValueError, match=r"shape mismatch for res2\.0\.conv1\.weight"):
        pretrained(depth=50, weights=str(tmp_path / "r18.pth"))


def test_our_own_checkpoint_with_prefix_and_wrapper(tmp_path):
    torch.manual_seed(0)
    src = ResNet(depth=18, out_features=["res4"])
    torch.save(
        {"model": {f"backbone.{k}": v for k, v in src.state_dict().items()}, "iter": 3}, tmp_path / "m.pth"
    )
    dst = pretrained(depth=18, out_features=["res4"], weights=str(tmp_path / "m.pth"))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(features(src, x)["res4"], features(dst, x)["res4"])


def test_timm_layout_from_recorded_key_shapes():
    """timm resnet18d's exact state-dict keys and shapes (recorded from timm) map onto ours."""
    record = json.loads(TIMM_SHAPES.read_text())["shapes"]
    sd = {k: torch.randn(shape) if shape else torch.tensor(0) for k, shape in record.items()}
    assert detect_format(sd) == "timm-resnet"
    ours = convert("timm-resnet", sd)
    model = ResNet(depth=18, deep_stem=True, avg_down=True, out_features=["linear"])
    result = model.load_state_dict(ours, strict=False)
    assert not result.unexpected_keys and not result.missing_keys
    torch.testing.assert_close(model.stem.norm3.running_mean, sd["bn1.running_mean"])
    torch.testing.assert_close(model.res3[0].shortcut.conv.weight, sd["layer2.0.downsample.1.weight"])


def test_timm_parity_when_timm_is_installed():
    timm = pytest.importorskip("timm", reason="timm is optional; the recorded-layout test covers the key map")
    torch.manual_seed(0)
    ref = timm.create_model("resnet18d", pretrained=False).eval()
    model = ResNet(depth=18, deep_stem=True, avg_down=True, out_features=["linear"])
    model.load_state_dict(convert("timm-resnet", ref.state_dict()))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(features(model, x)["linear"], ref(x), rtol=1e-4, atol=1e-4)


def test_torchvision_scheme_loads_from_the_hub_cache(tmp_path, tv18, monkeypatch):
    """torchvision://resnet18 resolves to torchvision's URL and file name; a cached file
    is used without any download."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("DENSENETS_CACHE", raising=False)
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(tv18.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    model = pretrained(depth=18, out_features=["linear"], weights="torchvision://resnet18")
    torch.testing.assert_close(model.linear.weight, tv18.fc.weight)
    with pytest.raises(ValueError, match="no entry 'IMAGENET1K_V9'"):
        resolve_weights("torchvision://resnet18.IMAGENET1K_V9")
    with pytest.raises(ValueError, match="unknown torchvision model 'resnet7'"):
        resolve_weights("torchvision://resnet7")


def test_download_failure_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    def offline(url, dst, progress=True):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.delenv("DENSENETS_CACHE", raising=False)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    message = str(info.value)
    assert "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl" in message
    assert (
        str(tmp_path / "checkpoints" / "detectron2" / "ImageNetPretrained" / "MSRA" / "R-50.pkl") in message
    )


def test_bad_weights_values():
    with pytest.raises(FileNotFoundError, match="weights: no such file nowhere.pth"):
        pretrained(depth=18, weights="nowhere.pth")
    with pytest.raises(ValueError, match="unknown source"):
        pretrained(depth=18, weights="s3://bucket/r50.pth")


class _NotWeights:
    """A class a weights_only load must refuse."""


def test_an_unsafe_weights_file_is_a_one_line_config_error(tmp_path):
    from densenets.checkpoint.weights import read_checkpoint
    from densenets.config import ConfigError

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _NotWeights()}, path)
    with pytest.raises(ConfigError, match=r"evil\.pth: refused, not a plain weights file") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)
