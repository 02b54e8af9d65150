"""`instantiate` / `construct`: untyped sub-dicts into known classes, defaults from signatures."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from densenets.config import (
    HEADS,
    ConfigError,
    ConfigNode,
    build,
    config_value,
    did_you_mean,
    instantiate,
    join_path,
    to_plain,
)
from densenets.layers import ShapeSpec
from densenets.modeling.detection import BoxCoder, Matcher


@dataclass(frozen=True)
class _Inner:
    size: int = 1
    flag: bool = False

    def check(self, path: str) -> None:
        if self.size > 10:
            raise ConfigError(f"{path}.size: at most 10, got {self.size}")


class _Outer:
    def __init__(self, width: int, inner: _Inner = _Inner(3, flag=True), note: str = "") -> None:  # noqa: B008
        self.width, self.inner, self.note = width, inner, note


def test_instantiate_checks_keys_and_types_with_the_key_path():
    assert instantiate(_Outer, {"width": 2}, "a.b").inner == _Inner(3, True)
    with pytest.raises(ConfigError, match=r"^a\.b\.widht: unknown key, did you mean width\?$"):
        instantiate(_Outer, {"width": 2, "widht": 3}, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b\.width: expected an integer, got 'x'$"):
        instantiate(_Outer, {"width": "x"}, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b: missing required argument 'width'$"):
        instantiate(_Outer, None, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b\.type: unknown key"):
        instantiate(_Outer, {"type": "_Outer", "width": 1}, "a.b")
    with pytest.raises(ConfigError, match=r"^a\.b: expected a mapping, got 3$"):
        instantiate(_Outer, 3, "a.b")
    # None: the class's defaults plus what the caller computed; extra wins over the config.
    assert instantiate(_Outer, None, "a.b", width=5).width == 5
    assert instantiate(_Outer, {"width": 1}, "a.b", width=5).width == 5
    # A ConfigNode's own key path wins over the one given.
    with pytest.raises(ConfigError, match=r"^model\.x\.nte: unknown key, did you mean note\?$"):
        instantiate(_Outer, ConfigNode({"width": 1, "nte": ""}, "model.x"), "ignored")


def test_a_dataclass_sub_dict_lists_only_what_it_changes_from_the_signature_default():
    outer = instantiate(_Outer, {"width": 1, "inner": {"size": 7}}, "m")
    assert outer.inner == _Inner(7, flag=True)  # flag kept from _Outer's default, not _Inner's
    with pytest.raises(ConfigError, match=r"^m\.inner\.sise: unknown key, did you mean size\?$"):
        instantiate(_Outer, {"width": 1, "inner": {"sise": 7}}, "m")
    with pytest.raises(ConfigError, match=r"^m\.inner\.size: at most 10, got 11$"):  # its check(path)
        instantiate(_Outer, {"width": 1, "inner": {"size": 11}}, "m")


def test_helpers():
    assert join_path("", "a") == "a" and join_path("a.b", 0) == "a.b.0"
    assert did_you_mean("deph", {"depth", "width"}) == ", did you mean depth?"
    assert did_you_mean("zzz", {"depth"}) == ""
    assert to_plain(ConfigNode({"a": [{"b": (1, 2)}]})) == {"a": [{"b": [1, 2]}]}
    assert type(to_plain(ConfigNode({"a": {}}))["a"]) is dict
    assert config_value({}, _Outer, "note") == "" and config_value({"note": "x"}, _Outer, "note") == "x"


def _rpn(**cfg):
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 7)}
    torch.manual_seed(0)
    return build(ConfigNode({"type": "RPN", **cfg}, "model.rpn"), HEADS, input_shape=shapes)


def test_rpn_defaults_are_the_ones_from_config_used_to_restate():
    rpn = _rpn()
    assert rpn.in_features == ["p2", "p3", "p4", "p5", "p6"]
    assert rpn.matcher == Matcher((0.3, 0.7), allow_low_quality_matches=True)
    assert (rpn.sampler.batch_size_per_image, rpn.sampler.positive_fraction) == (256, 0.5)
    assert rpn.box_coder == BoxCoder((1.0, 1.0, 1.0, 1.0))
    sizes = [getattr(rpn.anchor_generator, f"cell_anchors_{i}")[1, 2] * 2 for i in range(5)]
    assert [float(s) for s in sizes] == [32.0, 64.0, 128.0, 256.0, 512.0]  # the 1:1 anchor's width
    assert rpn.anchor_generator.strides == [4, 8, 16, 32, 64]
    # A partial sub-dict changes only what it names.
    assert _rpn(matcher={"thresholds": [0.4, 0.6]}).matcher == Matcher((0.4, 0.6), True)
    with pytest.raises(ConfigError, match=r"^model\.rpn\.matcher: Matcher: thresholds must be"):
        _rpn(matcher={"thresholds": [0.7, 0.3]})


def test_roi_heads_defaults_are_the_ones_from_config_used_to_restate():
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 7)}
    cfg = ConfigNode({"type": "StandardRoIHeads", "num_classes": 3}, "model.roi_heads")
    heads = build(cfg, HEADS, input_shape=shapes)
    assert heads.in_features == ["p2", "p3", "p4", "p5"] and heads.proposal_append_gt
    assert heads.matcher == Matcher((0.5,)) and heads.box_predictor.box_coder == BoxCoder((10, 10, 5, 5))
    assert (heads.sampler.batch_size_per_image, heads.sampler.positive_fraction) == (512, 0.25)
    assert heads.pooler.scales == [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    cfg.box_predictor = {"box_coder": {"scale_clamp": 2.0}}
    coder = build(cfg, HEADS, input_shape=shapes).box_predictor.box_coder
    assert coder == BoxCoder((10, 10, 5, 5), scale_clamp=2.0)
