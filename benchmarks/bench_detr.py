"""DETR-R50 and DAB-DETR-R50 at 800x1067: inference latency and one training step, on CPU.

The peer is Hugging Face transformers' port of the same models (``DetrForObjectDetection``,
``DabDetrForObjectDetection`` with a ResNet-50 backbone, no timm), timed in the same
run on the same input when transformers is installed (``pip install transformers``);
otherwise only densenets is timed. Both sides use random weights (the cost does not
depend on them) and one image with 8 boxes; a training step is forward, backward and
an AdamW update. The median of `--repeat` runs after one warm-up run is reported
(benchmarks/_peer.py). `--no-write` prints the table only and leaves
benchmarks/RESULTS.md as it is.

    python benchmarks/bench_detr.py [--repeat 3] [--size 800 1067] [--device cpu] [--no-write]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peer import PeerBenchmark, resnet50_config, run, train_res3_to_res5  # noqa: E402

CONFIGS = {"DETR-R50": "detr_r50_coco.yaml", "DAB-DETR-R50": "dab_detr_r50_coco.yaml"}


def build_peer(hf: Any, name: str) -> nn.Module:
    """transformers' DETR or DAB-DETR (res5 features, res3-res5 trainable)."""
    common = dict(
        use_timm_backbone=False,
        backbone_config=resnet50_config(hf, ["stage4"]),
        use_pretrained_backbone=False,
        num_labels=80,
        auxiliary_loss=True,
    )
    if name == "DETR-R50":
        model = hf.DetrForObjectDetection(hf.DetrConfig(**common))
    else:
        model = hf.DabDetrForObjectDetection(hf.DabDetrConfig(**common, dropout=0.0))
    train_res3_to_res5(model)
    return model


BENCH = PeerBenchmark(
    section="detr",
    script="bench_detr.py",
    heading="DETR / DAB-DETR ({size}, batch 1, {device})",
    configs=CONFIGS,
    build_peer=build_peer,
)


def main(argv: list[str] | None = None) -> int:
    return run(BENCH, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
