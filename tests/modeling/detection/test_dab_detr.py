"""DAB-DETR: anchor refinement, anchor gradients, attention, inference, overfit."""

import math

import pytest
import torch
from test_detr import (
    PatchBackbone,
    assert_batching_does_not_change_predictions,
    assert_found_both_boxes,
    overfit,
    tiny_config,
    two_boxes_item,
)

from densenets.config import MODELS, build
from densenets.layers import sine_box_embedding
from densenets.modeling.detection import DABDETR, DABTransformer, HungarianMatcher, SetCriterion
from densenets.modeling.detection.box_refinement import inverse_sigmoid
from densenets.modeling.detection.dab_transformer import DAB_DETR_EPS, DABDecoderLayer, _Attention


def _patch_dab(**kwargs) -> DABDETR:
    crit = SetCriterion(3, HungarianMatcher(2, 5, 2, "focal"), class_loss_type="focal")
    return DABDETR(PatchBackbone(), DABTransformer(32, 4, 2, 3, 64, dropout=0.1), crit, 3, 7, **kwargs)


def test_padding_mask_two_sizes_batched_equal_each_alone():
    torch.manual_seed(0)
    assert_batching_does_not_change_predictions(_patch_dab())


def test_per_layer_boxes_and_references_stay_in_unit_range():
    torch.manual_seed(0)
    model = _patch_dab()
    with torch.no_grad():  # push the box head hard so unclamped deltas would leave [0, 1]
        model.bbox_embed.layers[-1].bias.fill_(30.0)
        model.anchor_wh.fill_(8.0)
    images = model.preprocess([two_boxes_item()])
    src, mask = model.features(images)
    hs, refs = model.transformer(src, mask, model.anchors(), model.bbox_embed)
    logits, boxes = model.predict(images)
    assert hs.shape == (3, 1, 7, 32) and refs.shape == (3, 1, 7, 4) and boxes.shape == (3, 1, 7, 4)
    assert logits.shape == (3, 1, 7, 3)
    for t in (refs, boxes):
        assert torch.isfinite(t).all() and (t >= 0).all() and (t <= 1).all()
    torch.testing.assert_close(refs[0, 0], model.anchors())  # layer 0 starts from the anchors


def test_each_layer_refines_the_previous_reference():
    torch.manual_seed(0)
    model = _patch_dab().eval()
    with torch.no_grad():
        for p in model.bbox_embed.parameters():
            p.normal_(0, 0.1)
    # The decoder refines from the raw layer output and the heads read the normalised
    # one (as in the paper's code); without the final norm the two paths coincide.
    model.transformer.decoder.norm = torch.nn.Identity()
    images = model.preprocess([two_boxes_item()])
    src, mask = model.features(images)
    _, refs = model.transformer(src, mask, model.anchors(), model.bbox_embed)
    _, boxes = model.predict(images)
    # Layer l's prediction is layer l+1's reference (same box, detached for the next layer).
    torch.testing.assert_close(boxes[:-1], refs[1:])
    assert not torch.allclose(refs[1], refs[0])


def test_gradients_reach_the_anchors():
    torch.manual_seed(0)
    model = _patch_dab()
    model.train()
    sum(model([two_boxes_item()]).values()).backward()
    assert model.anchor_xy.grad is not None and model.anchor_xy.grad.abs().sum() > 0
    assert model.anchor_wh.grad is not None and model.anchor_wh.grad.abs().sum() > 0


def test_pattern_embeddings_decode_every_anchor_once_per_pattern():
    # P patterns -> P*Q queries, pattern-major (query p*Q + j: pattern p, anchor j), as the
    # official DAB-DETR. With both patterns zero every query is duplicated, and attention
    # over duplicated keys and values is attention over one copy: each half equals the
    # plain model (zero content queries), which only the pattern-major order gives.
    torch.manual_seed(0)
    plain = _patch_dab().eval()
    crit = SetCriterion(3, HungarianMatcher(2, 5, 2, "focal"), class_loss_type="focal")
    transformer = DABTransformer(32, 4, 2, 3, 64, dropout=0.1, num_patterns=2)
    model = DABDETR(PatchBackbone(), transformer, crit, 3, 7).eval()
    state = {**plain.state_dict(), "transformer.patterns.weight": torch.zeros(2, 32)}
    model.load_state_dict(state, strict=True)
    images = model.preprocess([two_boxes_item()])
    with torch.no_grad():
        logits, boxes = model.predict(images)
        want_logits, want_boxes = plain.predict(images)
        assert logits.shape[2] == boxes.shape[2] == 2 * 7
        for half in (slice(0, 7), slice(7, 14)):
            torch.testing.assert_close(logits[:, :, half], want_logits, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(boxes[:, :, half], want_boxes, atol=1e-5, rtol=1e-4)
        assert model.inference(logits[-1], boxes[-1])[0].shape == (1, 2 * 7 * 3)  # top-k over P*Q*K
        model.transformer.patterns.weight[1].normal_()  # a second pattern: other content
        logits = model.predict(images)[0]
        assert not torch.allclose(logits[:, :, :7], logits[:, :, 7:], atol=1e-3)
    with pytest.raises(ValueError, match="num_patterns"):
        DABTransformer(32, 4, 2, 3, 64, num_patterns=-1)


def test_fixed_anchor_xy_is_a_random_buffer_that_does_not_train():
    torch.manual_seed(0)
    model = _patch_dab(fixed_anchor_xy=True)
    names = dict(model.named_parameters())
    assert "anchor_xy" not in names and "anchor_wh" in names
    assert "anchor_xy" in model.state_dict()
    xy = model.anchors()[:, :2]
    assert (xy > 0).all() and (xy < 1).all() and xy.std() > 0.1  # uniform in (0, 1)
    before = model.anchor_xy.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    sum(model([two_boxes_item()]).values()).backward()
    opt.step()
    torch.testing.assert_close(model.anchor_xy, before)


def test_inverse_sigmoid_round_trip_and_clamping():
    x = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(inverse_sigmoid(x, DAB_DETR_EPS).sigmoid(), x)
    # The official DAB-DETR constant (util/misc.py: eps=1e-3): log(1e-3 / 1) at 0, its negation at 1.
    edge = inverse_sigmoid(torch.tensor([0.0, 1e-4, 1.0], dtype=torch.float64), DAB_DETR_EPS)
    want = [math.log(1e-3), math.log(1e-3 / (1 - 1e-4)), -math.log(1e-3)]
    torch.testing.assert_close(edge, torch.tensor(want, dtype=torch.float64))
    # Deformable DETR / DINO pass their own 1e-5.
    assert inverse_sigmoid(torch.tensor([0.0]), 1e-5).item() == pytest.approx(math.log(1e-5))


def test_projection_free_attention_against_manual_softmax():
    torch.manual_seed(0)
    attn = _Attention(d_value=8, nhead=2, dropout=0.0)
    q, k, v = torch.randn(1, 3, 12), torch.randn(1, 5, 12), torch.randn(1, 5, 8)
    pad = torch.tensor([[False, False, False, True, True]])
    out = attn(q, k, v, pad)
    heads = []
    for h in range(2):
        qh, kh, vh = q[..., h * 6 : (h + 1) * 6], k[..., h * 6 : (h + 1) * 6], v[..., h * 4 : (h + 1) * 4]
        scores = qh @ kh.transpose(1, 2) / math.sqrt(6)  # scaled by the q/k head width
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
        heads.append(scores.softmax(-1) @ vh)
    expected = attn.out_proj(torch.cat(heads, -1))
    torch.testing.assert_close(out, expected)


def test_cross_attention_concatenates_content_and_position_per_head():
    layer = DABDecoderLayer(8, 2, 16, 0.0, "relu", is_first=True)
    a = torch.arange(8.0).view(1, 1, 8)
    b = 100 + torch.arange(8.0).view(1, 1, 8)
    assert layer._heads_cat(a, b).flatten().tolist() == [
        0,
        1,
        2,
        3,
        100,
        101,
        102,
        103,
        4,
        5,
        6,
        7,
        104,
        105,
        106,
        107,
    ]


def test_only_the_first_decoder_layer_projects_the_query_position_into_cross_attention():
    transformer = DABTransformer(32, 4, 1, 3, 64)
    has = [layer.ca_qpos_proj is not None for layer in transformer.decoder.layers]
    assert has == [True, False, False]


def test_width_height_modulation_changes_the_positional_query():
    torch.manual_seed(0)
    on, off = DABTransformer(32, 4, 1, 2, 64), DABTransformer(32, 4, 1, 2, 64, modulate_hw_attn=False)
    off.load_state_dict(on.state_dict(), strict=False)
    src, mask = torch.randn(1, 32, 3, 4), torch.zeros(1, 3, 4, dtype=torch.bool)
    anchors = torch.tensor([[0.5, 0.5, 0.1, 0.8], [0.3, 0.6, 0.5, 0.5]])
    head = torch.nn.Linear(32, 4)
    hs_on, _ = on(src, mask, anchors, head)
    hs_off, _ = off(src, mask, anchors, head)
    assert not torch.allclose(hs_on, hs_off)


def test_sine_box_embedding_order_and_values():
    box = torch.tensor([[0.25, 0.5, 0.1, 0.2]])  # x, y, w, h
    emb = sine_box_embedding(box, num_pos_feats=4, temperature=10000)
    assert emb.shape == (1, 16)
    # Channels 0..3 encode y, 4..7 x; channel pairs (2i, 2i+1) share the frequency T^(2i/F).
    y, x = 0.5 * 2 * math.pi, 0.25 * 2 * math.pi
    expected_y = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100)]
    expected_x = [math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    torch.testing.assert_close(emb[0, :8], torch.tensor(expected_y + expected_x))


def test_inference_takes_top_scores_over_queries_and_classes():
    model = _patch_dab(num_select=3)
    logits = torch.full((1, 4, 3), -10.0)
    logits[0, 2, 1], logits[0, 0, 2], logits[0, 2, 0] = 3.0, 2.0, 1.0
    boxes = torch.rand(1, 4, 4)
    scores, labels, picked = model.inference(logits, boxes)
    torch.testing.assert_close(scores[0], torch.tensor([3.0, 2.0, 1.0]).sigmoid())
    assert labels[0].tolist() == [1, 2, 0]
    torch.testing.assert_close(picked[0], boxes[0, [2, 0, 2]])


def test_overfits_one_image():
    torch.manual_seed(0)
    model = build(tiny_config("DABDETR", num_classes=2, num_queries=8, transformer={"d_model": 64, "nhead": 4,
                  "num_encoder_layers": 1, "num_decoder_layers": 2, "dim_feedforward": 128},
                  backbone={"type": "ResNet", "depth": 18, "out_features": ["res3"], "norm": "FrozenBN"}), MODELS)  # fmt: skip
    item = two_boxes_item()
    assert_found_both_boxes(overfit(model, item, iters=100), item, min_score=0.4)


@pytest.mark.parametrize("bad", [{"activation": "swish"}])
def test_bad_transformer_options_are_clear_errors(bad):
    with pytest.raises(ValueError, match="activation"):
        DABTransformer(32, 4, 1, 1, 64, **bad)
