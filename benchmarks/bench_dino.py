"""Deformable DETR-R50 and DINO-4scale-R50: inference (one 800x1067 image) and a training step (2 images).

The peer is Hugging Face transformers' ``DeformableDetrForObjectDetection`` (ResNet-50
without timm, multi-scale res3-res5 + one extra level, its CPU path: the `grid_sample`
deformable attention), timed in the same run when transformers is installed
(``pip install -e .[bench]``). It is configured like each of ours: for Deformable DETR
the paper's single-stage model (300 queries, FFN 1024, dropout 0.1 wherever the official
code has it: after attention, inside the FFN and on the decoder's self-attention
weights; transformers' defaults leave out the latter two); for DINO, which
transformers lacks, its closest relative: two-stage with box refinement, 900 queries,
FFN 2048, no dropout (DINO adds denoising queries and a query-position MLP on top).
Random weights; 8 boxes per image; a training step is forward, backward and an AdamW
update; the median of `--repeat` runs after one warm-up run (benchmarks/_peer.py).
`--size` at least about 208x208: the DINO peer keeps 900 proposals of the level pixels
(at 128x160 transformers' top-k fails with "selected index k out of range"). `--no-write`
prints the table only and leaves benchmarks/RESULTS.md as it is.

    python benchmarks/bench_dino.py [--repeat 3] [--size 800 1067] [--device cpu] [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import PeerBenchmark, resnet50_config, run, train_res3_to_res5  # noqa: E402

CONFIGS = {
    "Deformable-DETR-R50": "deformable_detr_r50_50e_coco.yaml",
    "DINO-4scale-R50": "dino_4scale_r50_12e_coco.yaml",
}
PEER = {  # transformers DeformableDetrConfig options per model
    "Deformable-DETR-R50": dict(
        num_queries=300, encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.1, activation_dropout=0.1,
        attention_dropout=0.1,
    ),
    "DINO-4scale-R50": dict(
        num_queries=900, two_stage=True, with_box_refine=True, two_stage_num_proposals=900,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, dropout=0.0,
    ),
}  # fmt: skip


def build_peer(hf: Any, name: str) -> nn.Module:
    """transformers' Deformable DETR configured like our `name` (res3-res5 trainable)."""
    config = hf.DeformableDetrConfig(
        use_timm_backbone=False, backbone_config=resnet50_config(hf, ["stage2", "stage3", "stage4"]),
        use_pretrained_backbone=False, num_labels=80, auxiliary_loss=True, **PEER[name],
    )  # fmt: skip
    model = hf.DeformableDetrForObjectDetection(config)
    train_res3_to_res5(model)
    return model


BENCH = PeerBenchmark(
    section="dino",
    script="bench_dino.py",
    heading="Deformable DETR / DINO ({size}, {device})",
    configs=CONFIGS,
    build_peer=build_peer,
    peer_class="DeformableDetrForObjectDetection",
    peer_note=", configured like each model (see the script's docstring); random weights.",
    images=2,
    measures=("inference (1 image)", "train step (2 images)"),
)


def main(argv: list[str] | None = None) -> int:
    return run(BENCH, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
