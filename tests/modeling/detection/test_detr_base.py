"""The DETR family's one base: hierarchy, the options every member shares, config building."""

import inspect

import pytest
import torch
from test_detr import tiny_config, two_boxes_item

from densenets.config import MODELS, ConfigError, ConfigNode, build
from densenets.config.tree import check_tree
from densenets.modeling.detection import (
    DABDETR,
    DETR,
    DINO,
    DeformableDETR,
    DeformableTransformer,
    DETRBase,
    DINOTransformer,
    MultiScaleDETR,
    SingleScaleDETR,
)
from densenets.modeling.meta_arch import MetaArch

MEMBERS = [DETR, DABDETR, DeformableDETR, DINO]
SHARED = ("aux_loss", "pixel_mean", "pixel_std", "input_format")


def _tiny_dino(**changes) -> ConfigNode:
    cfg = {
        "type": "DINO", "num_classes": 3, "num_queries": 8,
        "backbone": {"type": "ResNet", "depth": 18, "out_features": ["res3", "res4"], "norm": "FrozenBN"},
        "neck": {"type": "ChannelMapper", "in_features": ["res3", "res4"], "out_channels": 32, "num_extra_levels": 0},
        "transformer": {"d_model": 32, "nhead": 4, "num_encoder_layers": 1, "num_decoder_layers": 2, "dim_feedforward": 64},
        "criterion": {"matcher": {"class_cost_type": "focal"}, "class_loss_type": "focal"},
        **changes,
    }  # fmt: skip
    return ConfigNode(cfg, "model")


def test_one_base_on_meta_arch():
    assert issubclass(DETRBase, MetaArch)
    assert issubclass(DETR, SingleScaleDETR) and issubclass(DABDETR, SingleScaleDETR)
    assert issubclass(DeformableDETR, MultiScaleDETR) and issubclass(DINO, MultiScaleDETR)
    assert not issubclass(DABDETR, DETR) and not issubclass(DINO, DeformableDETR)
    assert not {"preprocess", "device"} & set(vars(DETRBase))  # MetaArch's
    for cls in (SingleScaleDETR, MultiScaleDETR, *MEMBERS):  # the family's, held once by DETRBase
        assert not {"forward", "from_config", "prepare_targets", "postprocess"} & set(vars(cls)), cls
    assert all(m.input_key == "image" for m in MEMBERS)
    assert issubclass(DINOTransformer, DeformableTransformer)
    # DINO's transformer runs its parent's constructor with DINO's own switches.
    t = DINOTransformer(32, 4, 1, 2, 64, num_levels=2)
    assert t.eps == 1e-3 and t.decoder.norm is not None and t.decoder.look_forward_twice
    assert t.position_encoding.temperature_x == 20 and t.decoder.eps == 1e-3
    d = DeformableTransformer(32, 4, 1, 2, 64, num_levels=2)
    assert d.eps == 1e-5 and d.decoder.norm is None and d.position_encoding.temperature_x == 10000


@pytest.mark.parametrize("member", MEMBERS, ids=lambda c: c.__name__)
def test_shared_options_are_in_every_signature_with_the_base_defaults(member):
    params = inspect.signature(member).parameters
    base = inspect.signature(DETRBase).parameters
    for name in SHARED:
        assert params[name].default == base[name].default
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("member", ["DETR", "DABDETR", "DINO"])
def test_shared_option_typos_and_types_are_config_errors(member):
    cfg = _tiny_dino() if member == "DINO" else tiny_config(member)
    cfg["pixel_men"] = [0, 0, 0]
    with pytest.raises(ConfigError, match=r"model\.pixel_men: unknown key, did you mean pixel_mean"):
        build(cfg, MODELS)
    cfg = _tiny_dino() if member == "DINO" else tiny_config(member)
    cfg["aux_loss"] = "yes"
    with pytest.raises(ConfigError, match=r"model\.aux_loss"):
        build(cfg, MODELS)


def test_config_tree_check_reaches_every_child_by_annotation():
    for key, sub in [
        ("transformer", "nheads"),
        ("denoising", "num_querys"),
        ("criterion", "no_objet_weight"),
    ]:
        cfg = _tiny_dino()
        cfg[key] = {**(cfg.get(key) or {}), sub: 1}
        with pytest.raises(ConfigError, match=rf"model\.{key}\.{sub}: unknown key"):
            check_tree(cfg, "model", MODELS.get("DINO"))


def test_denoising_absent_is_built_with_defaults_and_null_is_none():
    torch.manual_seed(0)
    assert build(_tiny_dino(), MODELS).denoising.num_queries == 100
    model = build(_tiny_dino(denoising=None), MODELS)
    assert model.denoising is None
    losses = model([two_boxes_item()])
    assert losses["loss_class_dn"] == 0 and "loss_class_interm" in losses


def test_neck_levels_must_match_the_transformer():
    model = build(_tiny_dino(), MODELS)
    other = DINOTransformer(32, 4, 1, 2, 64, num_levels=3)
    with pytest.raises(ValueError, match="transformer.num_levels: 3, but the neck has 2 outputs"):
        DINO(model.backbone, model.neck, other, model.criterion, None, num_classes=3)


@pytest.mark.parametrize("name", ["relu", "silu", "prelu", "gelu"])
def test_feed_forward_backward_copies_nothing(name):
    """No in-place activation on the Linear's 3-D output: autograd would copy and zero the
    whole hidden tensor (CopySlices) in the backward; and the DETR-family layers use the
    one-pass CPU dropout."""
    from torch.profiler import profile

    from densenets.modeling.detection.transformer import _FeedForward
    from densenets.ops import Dropout

    ff = _FeedForward(16, 64, 0.1, name)
    assert isinstance(ff.dropout, Dropout)
    x = torch.randn(2, 5, 16, requires_grad=True)
    with profile() as prof:
        ff(x).sum().backward()
    names = {e.name for e in prof.events()}
    assert not any("CopySlices" in n for n in names), sorted(n for n in names if "Copy" in n)
    ff.eval()  # without autograd ReLU runs in place: same values
    with torch.no_grad():
        torch.testing.assert_close(ff(x), ff.linear2(ff.activation(ff.linear1(x))))
