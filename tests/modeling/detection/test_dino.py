"""DINO: contrastive denoising queries, look-forward-twice, mixed query selection, configs, overfit."""

from pathlib import Path

import torch
from test_detr import assert_found_both_boxes, overfit, two_boxes_item
from torchvision.ops import box_convert

from densenets.config import MODELS, build, load_config
from densenets.modeling.detection import ContrastiveDenoising

CONFIGS = Path(__file__).parents[3] / "configs/detection"


def _targets():
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.2], [0.3, 0.7, 0.2, 0.2], [0.6, 0.3, 0.1, 0.3]])
    return [
        {"labels": torch.tensor([0, 1, 2]), "boxes": boxes},
        {"labels": torch.tensor([1]), "boxes": boxes[:1]},
    ]


def _tiny_dino(**changes):
    cfg = {
        "type": "DINO", "num_classes": 3, "num_queries": 8, "num_select": 20,
        "backbone": {"type": "ResNet", "depth": 18, "out_features": ["res3", "res4"], "norm": "FrozenBN"},
        "neck": {"type": "ChannelMapper", "in_features": ["res3", "res4"], "out_channels": 64, "num_extra_levels": 1},
        "transformer": {"d_model": 64, "nhead": 4, "num_encoder_layers": 1, "num_decoder_layers": 2, "dim_feedforward": 128},
        "denoising": {"num_queries": 100},
        "criterion": {"matcher": {"cost_class": 2.0, "class_cost_type": "focal"}, "class_loss_type": "focal"},
        **changes,
    }  # fmt: skip
    return build(cfg, MODELS)


def test_denoising_groups_layout_and_attention_mask():
    torch.manual_seed(0)
    cdn = ContrastiveDenoising(3, 16, num_queries=100, label_noise_ratio=0.0, box_noise_scale=0.0)
    dn = cdn(_targets(), num_matching=5, eps=1e-3)
    assert dn.num_groups == 200 // (2 * 3) == 33 and dn.group_size == 3 and dn.num_queries == 198
    assert dn.content.shape == (2, 198, 16) and dn.boxes.shape == (2, 198, 4)
    # Without noise, positives and negatives of group g sit at 6g + j and 6g + 3 + j.
    torch.testing.assert_close(dn.boxes[0, 6 * 4 + 2].sigmoid(), _targets()[0]["boxes"][2])
    torch.testing.assert_close(dn.content[0, 6 * 4 + 3 + 1], cdn.label_enc.weight[1])
    assert (dn.content[1, 1:3] == 0).all() and (dn.boxes[1, 1:3] == 0).all()  # padding of the 1-object image
    q, t = dn.positive_indices(_targets())[1]
    assert q.tolist() == [6 * g for g in range(33)] and t.tolist() == [0] * 33
    m = dn.attn_mask  # True = blocked
    assert m.shape == (203, 203)
    assert m[198:, :198].all() and not m[198:, 198:].any() and not m[:198, 198:].any()
    assert not m[0:6, 0:6].any() and m[0:6, 6:].narrow(1, 0, 192).all() and m[6:12, 0:6].all()


def test_denoising_noise_magnitudes():
    torch.manual_seed(0)
    targets = [
        {
            "labels": torch.zeros(50, dtype=torch.int64),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]).repeat(50, 1),
        }
    ]
    cdn = ContrastiveDenoising(3, 8, num_queries=100, label_noise_ratio=1.0, box_noise_scale=1.0)
    dn = cdn(targets, num_matching=1, eps=1e-3)  # 2 groups of 50
    # Corners move by up to one half-size (positives) or one to two (negatives); a
    # negative box may turn inside out, whose negative width the inverse sigmoid clamps
    # (as in the official code), so the magnitudes are checked before it.
    negative = torch.arange(200) // 50 % 2 == 1
    noised = cdn._noise_boxes(targets[0]["boxes"].repeat(4, 1), negative)
    shift = (box_convert(noised, "cxcywh", "xyxy") - torch.tensor([0.4, 0.4, 0.6, 0.6])).abs() / 0.1
    assert shift[~negative].max() <= 1 + 1e-4 and shift[negative].min() >= 1 - 1e-4
    assert shift[negative].max() <= 2 + 1e-4 and shift[~negative].mean() < 0.6 < shift[negative].mean()
    flipped = (dn.content[0, :100] != cdn.label_enc.weight[0]).any(-1).float().mean()
    assert 0.3 < flipped < 0.7  # ratio 1.0 flips half: the official p < ratio * 0.5, and 1/3 stay 0


def test_look_forward_twice_keeps_the_refined_boxes_attached():
    torch.manual_seed(0)
    model = _tiny_dino().eval()
    with torch.no_grad():
        model.bbox_embed[0].layers[-1].weight.normal_(0, 0.1)
    images = model.preprocess([two_boxes_item()])
    mem = model.transformer.encode(*model.features(images))
    tgt, box_logits, _ = model.select_queries(mem)
    hs, refs = model.transformer.decoder(tgt, box_logits.sigmoid(), mem, None, model.bbox_embed)
    assert not refs[0].requires_grad and refs[1].requires_grad  # layer 1's box trains layer 0
    assert model.transformer.decoder.norm is not None and model.transformer.decoder.ref_point_head is not None
    assert len({id(h) for h in model.class_embed}) == 1  # one head shared by the decoder layers


def test_training_losses_denoising_interm_and_empty_images():
    torch.manual_seed(0)
    model = _tiny_dino()
    item = two_boxes_item()
    losses = model([item])
    for suffix in ("", "_0", "_interm", "_dn", "_dn_0"):
        assert {f"loss_class{suffix}", f"loss_bbox{suffix}", f"loss_giou{suffix}"} <= set(losses)
    sum(losses.values()).backward()
    assert model.denoising.label_enc.weight.grad.abs().sum() > 0
    empty = {
        "image": item["image"],
        "instances": {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    }
    losses = model([empty])
    assert losses["loss_class_dn"] == 0 and torch.isfinite(sum(losses.values()))


def test_five_scale_config_has_five_levels_from_res2():
    cfg = load_config(CONFIGS / "dino_5scale_r50_12e_coco.yaml", ["model.backbone.weights=null"])
    model = build(cfg.model, MODELS)
    assert [s.stride for s in model.neck.output_shape().values()] == [4, 8, 16, 32, 64]
    assert model.transformer.num_levels == 5 and model.num_queries == 900 and model.num_select == 300
    assert model.transformer.eps == 1e-3 and model.transformer.position_encoding.temperature_x == 20


def test_overfits_one_image():
    torch.manual_seed(0)
    model = _tiny_dino(num_classes=2)
    item = two_boxes_item()
    assert_found_both_boxes(overfit(model, item, iters=100), item, min_score=0.4)
