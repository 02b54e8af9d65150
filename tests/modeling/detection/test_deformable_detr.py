"""Deformable DETR: neck, masks, reference points, refinement, two-stage, batching, overfit."""

import pytest
import torch
from test_detr import (
    PatchBackbone,
    assert_batching_does_not_change_predictions,
    assert_found_both_boxes,
    overfit,
    two_boxes_item,
)

from densenets.config import MODELS, build
from densenets.layers import ImageList, ShapeSpec
from densenets.modeling.detection import DeformableDETR, DeformableTransformer, HungarianMatcher, SetCriterion
from densenets.modeling.detection.box_refinement import inverse_sigmoid, refine_boxes
from densenets.modeling.detection.deformable_detr import level_masks
from densenets.modeling.detection.deformable_transformer import DeformableEncoder, flatten_levels
from densenets.modeling.detection.query_selection import encoder_proposals
from densenets.modeling.necks import ChannelMapper


def _patch_model(**kwargs) -> DeformableDETR:
    """Single-scale on a backbone whose features see only their own cell (no padding leaks)."""
    backbone = PatchBackbone(channels=16, stride=16)
    neck = ChannelMapper(backbone.output_shape(), ["res5"], out_channels=32, num_extra_levels=0, num_groups=8)
    transformer = DeformableTransformer(32, 4, 2, 3, 64, dropout=0.0, num_levels=1)
    crit = SetCriterion(3, HungarianMatcher(2, 5, 2, "focal"), class_weight=2.0, class_loss_type="focal")
    return DeformableDETR(backbone, neck, transformer, crit, 3, num_queries=7, num_select=20, **kwargs)


def test_channel_mapper_levels_strides_and_extra_level_on_raw_res5():
    shapes = {"res3": ShapeSpec(128, 8), "res4": ShapeSpec(256, 16), "res5": ShapeSpec(512, 32)}
    neck = ChannelMapper(shapes, out_channels=64, num_extra_levels=2)
    assert {k: (v.channels, v.stride) for k, v in neck.output_shape().items()} == {
        "p3": (64, 8), "p4": (64, 16), "p5": (64, 32), "p6": (64, 64), "p7": (64, 128)
    }  # fmt: skip
    feats = {k: torch.randn(1, s.channels, 64 // s.stride * 4, 64 // s.stride * 4) for k, s in shapes.items()}
    out = neck(feats)
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    # p6 reads the raw res5 (512 channels), p7 the 64-channel p6; no activation anywhere.
    assert neck.extra_convs[0].conv.in_channels == 512 and neck.extra_convs[1].conv.in_channels == 64
    torch.testing.assert_close(out["p6"], neck.extra_convs[0](feats["res5"]))
    assert (out["p3"] < 0).any()
    with pytest.raises(ValueError, match="in_features: 'res2'"):
        ChannelMapper(shapes, ["res2"])


def test_level_masks_are_the_nearest_resized_pixel_mask():
    images = ImageList(torch.zeros(2, 3, 40, 64), [(40, 64), (23, 30)])
    feats = [torch.zeros(2, 1, 5, 8), torch.zeros(2, 1, 3, 4)]
    masks = level_masks(images, feats)
    want = torch.nn.functional.interpolate(images.padding_mask()[None].float(), size=(5, 8))[0].bool()
    assert torch.equal(masks[0], want) and not masks[0][0].any() and masks[0][1, -1].all()
    assert masks[1].shape == (2, 3, 4)


def test_encoder_reference_points_are_pixel_centres_of_the_valid_area():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :, 2:] = True  # the right half is padding
    src = torch.zeros(1, 1, 4, 4)
    mem = flatten_levels([src], [mask], [src], None)
    ref = DeformableEncoder.reference_points(mem)  # (1, 16, 1, 2)
    torch.testing.assert_close(mem.valid_ratios, torch.tensor([[[0.5, 1.0]]]))
    # x of pixel column 0 is 0.5 / 2 valid columns, then rescaled by the ratio 0.5 -> 0.125 of the padded map.
    torch.testing.assert_close(ref[0, :4, 0, 0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    torch.testing.assert_close(ref[0, ::4, 0, 1], torch.tensor([0.125, 0.375, 0.625, 0.875]))


def test_encoder_proposals_mask_padding_and_borders():
    memory = torch.ones(1, 8, 2)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, [3, 7]] = True  # a 2x4 level whose last column is padding
    out, proposals = encoder_proposals(memory, mask, torch.tensor([[2, 4]]))
    assert torch.isinf(proposals[0, 3]).all() and (out[0, 3] == 0).all() and (out[0, 0] == 1).all()
    torch.testing.assert_close(proposals[0, 0].sigmoid(), torch.tensor([0.5 / 3, 0.25, 0.05, 0.05]))


def test_refine_boxes_points_move_only_the_centre():
    delta = torch.tensor([[0.0, 0.0, 1.0, -1.0]])
    torch.testing.assert_close(
        refine_boxes(delta, torch.tensor([[0.3, 0.6]]), 1e-5)[0, :2], torch.tensor([0.3, 0.6])
    )
    torch.testing.assert_close(
        refine_boxes(delta, torch.tensor([[0.3, 0.6]]), 1e-5)[0, 2:], delta[0, 2:].sigmoid()
    )
    box = torch.tensor([[0.3, 0.6, 0.2, 0.1]])
    torch.testing.assert_close(refine_boxes(torch.zeros(1, 4), box, 1e-5), box)
    assert inverse_sigmoid(torch.tensor([0.0]), 1e-5) == pytest.approx(-11.5129, abs=1e-3)  # log(1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"with_box_refine": True}])
def test_padding_mask_two_sizes_batched_equal_each_alone(kwargs):
    # The neck's GroupNorm pools over padding (as in the official code) and two-stage may
    # select padded pixels (their logits are those of a zero feature, as official); with
    # those two aside, masks, valid ratios and reference points make batching invisible.
    torch.manual_seed(0)
    model = _patch_model(**kwargs)
    model.neck.convs[0].norm = torch.nn.Identity()
    assert_batching_does_not_change_predictions(model)


def test_refinement_layer_boxes_are_the_next_references():
    torch.manual_seed(0)
    model = _patch_model(with_box_refine=True).eval()
    with torch.no_grad():
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0, 0.1)
    images = model.preprocess([two_boxes_item()])
    mem = model.transformer.encode(*model.features(images))
    d = model.transformer.d_model
    query_pos, tgt = model.query_embed.weight[None].split(d, -1)
    ref = model.reference_points(query_pos).sigmoid()
    hs, refs = model.transformer.decoder(tgt, ref, mem, query_pos, model.bbox_embed)
    _, boxes, _ = model.predict(images)
    assert refs[0].shape[-1] == 2 and refs[1].shape[-1] == 4  # points, then refined boxes
    torch.testing.assert_close(boxes[:-1], torch.stack(refs[1:]))  # no final norm: the same boxes
    assert len({id(h) for h in model.bbox_embed}) == 3  # one head per layer


def test_two_stage_ranks_by_column_zero_and_trains_the_proposals():
    torch.manual_seed(0)
    model = _patch_model(with_box_refine=True, two_stage=True)
    assert len(model.class_embed) == 4 and not hasattr(model, "query_embed")
    losses = model([two_boxes_item()])
    assert {"loss_class_enc", "loss_bbox_enc", "loss_giou_enc"} <= set(losses)
    sum(losses.values()).backward()
    assert model.class_embed[3].weight.grad.abs().sum() > 0 and model.enc_output.weight.grad.abs().sum() > 0


def test_overfits_one_image():
    torch.manual_seed(0)
    cfg = {
        "type": "DeformableDETR", "num_classes": 2, "num_queries": 10, "with_box_refine": True,
        "backbone": {"type": "ResNet", "depth": 18, "out_features": ["res3", "res4"], "norm": "FrozenBN"},
        "neck": {"type": "ChannelMapper", "in_features": ["res3", "res4"], "out_channels": 64, "num_extra_levels": 0},
        "transformer": {"d_model": 64, "nhead": 4, "num_encoder_layers": 1, "num_decoder_layers": 2,
                        "dim_feedforward": 128, "dropout": 0.0},
        "criterion": {"matcher": {"cost_class": 2.0, "class_cost_type": "focal"}, "class_loss_type": "focal",
                      "class_weight": 2.0},
    }  # fmt: skip
    model = build(cfg, MODELS)
    item = two_boxes_item()
    assert_found_both_boxes(overfit(model, item, iters=100), item, min_score=0.4)
