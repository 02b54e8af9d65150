"""Backbone initialisation weights (`model.backbone.weights`) load only when training
starts from them: never when a model is built for eval/infer/benchmark, never when a
full checkpoint (`train.weights`, `--resume`) replaces them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from testkit import tiny  # noqa: F401  (registers TinyColors)

from densenets.checkpoint.weights import (
    WeightsUnavailableError,
    load_pretrained_weights,
    resolve_weights,
)
from densenets.config import MODELS, build, load_config
from densenets.engine.launch import build_trainer
from densenets.modeling.backbones import ResNet


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty download cache: any download attempt raises."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    monkeypatch.setattr("socket.create_connection", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("DENSENETS_CACHE", raising=False)


def test_constructor_keeps_the_spec_and_loads_nothing(offline):
    model = ResNet(depth=18, weights="torchvision://resnet18")
    assert model.weights == "torchvision://resnet18"
    with pytest.raises(WeightsUnavailableError):
        load_pretrained_weights(model)


def test_offline_error_is_one_line_naming_file_source_and_folder(offline, tmp_path):
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("torchvision://resnet18")
    message = str(info.value)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert "\n" not in message
    assert url in message  # where from
    assert str(tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]) in message  # where to put it
    assert "DENSENETS_CACHE" in message
    assert isinstance(info.value, FileNotFoundError)  # tools report it on one line


def test_densenets_cache_folder_is_used(offline, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DENSENETS_CACHE", str(cache))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    cache.mkdir()
    torch.save(tv.state_dict(), cache / url.rsplit("/", 1)[-1])
    model = ResNet(depth=18, out_features=["linear"], weights="torchvision://resnet18")
    assert load_pretrained_weights(model) == ["torchvision://resnet18"]
    torch.testing.assert_close(model.linear.weight, tv.fc.weight)
    with pytest.raises(WeightsUnavailableError, match=str(cache / "detectron2")):
        resolve_weights("detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    # A file torch hub already holds is used as well, without a download.
    monkeypatch.setenv("DENSENETS_CACHE", str(tmp_path / "empty"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (cache / url.rsplit("/", 1)[-1]).rename(tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    assert load_pretrained_weights(ResNet(depth=18, weights="torchvision://resnet18")) == [
        "torchvision://resnet18"
    ]


def _segmentation_config(path: Path, backbone_weights: str, **train) -> Path:
    cfg = {
        "model": {
            "type": "EncoderDecoder",
            "backbone": {
                "type": "ResNet",
                "depth": 18,
                "out_features": ["res4", "res5"],
                "norm": "BN",
                "output_stride": 8,
                "weights": backbone_weights,
            },
            "decode_head": {
                "type": "FCNHead",
                "in_feature": "res5",
                "num_classes": 2,
                "channels": 8,
                "norm": "BN",
            },
            "align_corners": False,
        },
        "data": {"train": {"type": "TinyColors", "size": 8}, "num_workers": 0},
        "train": {
            "batch_size": 2,
            "max_iter": 1,
            "device": "cpu",
            "plot": False,
            "checkpoint_period": 0,
            **train,
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_training_applies_backbone_weights_after_construction(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    cfg = load_config(_segmentation_config(tmp_path / "exp.yaml", str(tmp_path / "r18.pth")))
    built = build(cfg.model, MODELS)  # what eval/infer/benchmark/Predictor do: no loading
    assert not torch.equal(built.backbone.stem.conv1.weight, tv.conv1.weight)
    trainer = build_trainer(cfg, tmp_path / "run")
    model = trainer.model
    torch.testing.assert_close(model.backbone.stem.conv1.weight, tv.conv1.weight)
    torch.testing.assert_close(model.backbone.res5[1].norm2.running_var, tv.layer4[1].bn2.running_var)


def test_a_full_checkpoint_replaces_backbone_weights_without_downloading(offline, tmp_path):
    cfg_path = _segmentation_config(tmp_path / "exp.yaml", "torchvision://resnet18")
    model = build(load_config(cfg_path).model, MODELS)
    torch.save({"model": model.state_dict()}, tmp_path / "full.pth")
    cfg = load_config(
        _segmentation_config(
            tmp_path / "exp2.yaml", "torchvision://resnet18", weights=str(tmp_path / "full.pth")
        )
    )
    trainer = build_trainer(cfg, tmp_path / "run")  # offline, yet no error: nothing is downloaded
    torch.testing.assert_close(trainer.model.backbone.stem.conv1.weight, model.backbone.stem.conv1.weight)
    # Resuming: the checkpoint replaces everything, so the spec is not resolved either.
    build_trainer(load_config(cfg_path), tmp_path / "run2", pretrained=False)
    # Starting from the ImageNet weights offline: the one-line error.
    with pytest.raises(WeightsUnavailableError, match="resnet18"):
        build_trainer(load_config(cfg_path), tmp_path / "run3")
