"""`load_config` checks every dict of the model tree before anything is built: registered
components by `type`, untyped sub-dicts by their parent constructor's annotation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from densenets.config import ConfigError, Registry, load_config
from densenets.config import registry as registry_mod
from densenets.tools import print_config

CONFIGS = Path(__file__).parents[2] / "configs"


def _with(tmp_path: Path, base: str, data: dict) -> Path:
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"_base_": str(CONFIGS / base), **data}))
    return path


@pytest.mark.parametrize(
    "base, model, message",
    [
        (
            "demo/faster_rcnn_r18_fpn_shapes.yaml",
            {"rpn": {"anchor_generator": {"sizs": [[8]]}}},
            "model.rpn.anchor_generator.sizs: unknown key, did you mean sizes?",
        ),
        (
            "demo/faster_rcnn_r18_fpn_shapes.yaml",
            {"rpn": {"matcher": {"treshold": [0.3, 0.7]}}},
            "model.rpn.matcher.treshold: unknown key, did you mean thresholds?",
        ),
        (
            "detection/faster_rcnn_r50_fpn_1x_coco.yaml",
            {"roi_heads": {"box_predictor": {"box_coder": {"weight": [1, 1, 1, 1]}}}},
            "model.roi_heads.box_predictor.box_coder.weight: unknown key, did you mean weights?",
        ),
        (
            "detection/detr_r50_coco.yaml",
            {"transformer": {"num_encoder_layer": 3}},
            "model.transformer.num_encoder_layer: unknown key, did you mean num_encoder_layers?",
        ),
        (
            "detection/detr_r50_coco.yaml",
            {"criterion": {"matcher": {"cost_clas": 1.0}}},
            "model.criterion.matcher.cost_clas: unknown key, did you mean cost_class?",
        ),
        (
            "detection/dino_4scale_r50_12e_coco.yaml",
            {"transformer": {"enc_n_point": 4}},
            "model.transformer.enc_n_point: unknown key, did you mean enc_n_points?",
        ),
        (
            "segmentation/fcn_r50_d8_cityscapes_512x1024_80k.yaml",
            {"decode_head": {"loss": {"loss_weigth": 1.0}}},
            "model.decode_head.loss.loss_weigth: unknown key, did you mean loss_weight?",
        ),
        (
            "segmentation/deeplabv3_r50_d8_cityscapes_512x1024_80k.yaml",
            {"decode_head": {"aspp": {"rate": [6, 12, 18]}}},
            "model.decode_head.aspp.rate: unknown key, did you mean rates?",
        ),
        (
            "segmentation/deeplabv3_r50_d8_cityscapes_512x1024_80k.yaml",
            {"inference": {"mod": "slide"}},
            "model.inference.mod: unknown key, did you mean mode?",
        ),
        (
            "demo/faster_rcnn_r18_fpn_shapes.yaml",
            {"rpn": {"matcher": {"allow_low_quality_matches": "maybe"}}},
            "model.rpn.matcher.allow_low_quality_matches: expected true or false, got 'maybe'",
        ),
    ],
)
def test_a_typo_anywhere_in_the_model_fails_at_load(base, model, message, tmp_path, capsys):
    path = _with(tmp_path, base, {"model": model})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == message
    assert print_config.main(["--config", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_overrides_into_sub_dicts_are_checked_too():
    demo = CONFIGS / "demo/faster_rcnn_r18_fpn_shapes.yaml"
    cfg = load_config(demo, ["model.rpn.matcher.thresholds=[0.4, 0.6]", "train.clip_grad.max=2.0"])
    assert cfg.model.rpn.matcher.thresholds == [0.4, 0.6] and cfg.train.clip_grad.max == 2.0
    with pytest.raises(ConfigError, match=r"^model\.rpn\.sampler\.batch_size: unknown key, did you mean"):
        load_config(demo, ["model.rpn.sampler.batch_size=3"])
    with pytest.raises(ConfigError, match=r"^train\.clip_grad\.maxx: unknown key, did you mean max\?"):
        load_config(demo, ["train.clip_grad.maxx=2"])


class _Part:
    def __init__(self, size: int = 1) -> None:
        self.size = size


class _Other:
    def __init__(self, width: int = 1) -> None:
        self.width = width


@pytest.fixture
def toy(monkeypatch):
    reg = Registry("toy")
    built = []

    @reg.register()
    class ToyModel:
        def __init__(
            self,
            part: _Part,
            either: _Part | _Other | None = None,
            anything: Any = None,
            unresolved: NotImportedAnywhere | None = None,  # noqa: F821
            free: Mapping | None = None,
        ) -> None:
            built.append(self)

    monkeypatch.setattr(registry_mod, "_ALL_REGISTRIES", (*registry_mod._ALL_REGISTRIES, reg))
    return built


def test_unknown_annotations_check_only_the_keys_above_them(toy, tmp_path):
    model = {
        "type": "ToyModel",
        "part": {"size": 2},
        "either": {"whatever": 1},  # two classes: not checked
        "anything": {"whatever": 1},
        "unresolved": {"whatever": 1},
        "free": {"whatever": {"deeper": 1}},
    }
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"model": model}))
    assert load_config(path).model.free.whatever.deeper == 1
    assert toy == []  # checking builds nothing
    path.write_text(yaml.safe_dump({"model": {**model, "part": {"sise": 2}}}))
    with pytest.raises(ConfigError, match=r"^model\.part\.sise: unknown key, did you mean size\?$"):
        load_config(path)
    path.write_text(yaml.safe_dump({"model": {**model, "parts": {}}}))
    with pytest.raises(ConfigError, match=r"^model\.parts: unknown key, did you mean part\?$"):
        load_config(path)
