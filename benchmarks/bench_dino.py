"""Deformable DETR-R50 and DINO-4scale-R50: inference (one 800x1067 image) and a training step (2 images).

The peer is Hugging Face transformers' ``DeformableDetrForObjectDetection`` (ResNet-50
without timm, multi-scale res3-res5 + one extra level, its CPU path: the `grid_sample`
deformable attention), timed in the same run when transformers is installed
(``pip install -e .[bench]``). It is configured like each of ours: for Deformable DETR
the paper's single-stage model (300 queries, FFN 1024, dropout 0.1); for DINO, which
transformers lacks, its closest relative: two-stage with box refinement, 900 queries,
FFN 2048, no dropout (DINO adds denoising queries and a query-position MLP on top).
Random weights; 8 boxes per image; a training step is forward, backward and an AdamW
update; the median of `--repeat` runs after one warm-up run.

    python benchmarks/bench_dino.py [--repeat 3] [--size 800 1067] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine, write_section  # noqa: E402

import densenets  # noqa: E402
from densenets.config import MODELS, build, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "Deformable-DETR-R50": "deformable_detr_r50_50e_coco.yaml",
    "DINO-4scale-R50": "dino_4scale_r50_12e_coco.yaml",
}
PEER = {  # transformers DeformableDetrConfig options per model
    "Deformable-DETR-R50": dict(num_queries=300, encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.1),
    "DINO-4scale-R50": dict(
        num_queries=900, two_stage=True, with_box_refine=True, two_stage_num_proposals=900,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, dropout=0.0,
    ),
}  # fmt: skip


def _timed(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _item(h: int, w: int, gen: torch.Generator) -> dict:
    xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3]) + 16
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return {"image": image, "instances": {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.arange(8) % 80},
            "orig_size": (h, w)}  # fmt: skip


def _ours(name: str, batch: list[dict], repeat: int, device: torch.device) -> tuple[float, float]:
    cfg = load_config(ROOT / "configs" / "detection" / CONFIGS[name], ["model.backbone.weights=null"])
    model = build(cfg.model, MODELS).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    print(
        f"{name} densenets: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M trainable"
    )

    def infer():
        model.eval()
        with torch.inference_mode():
            model(batch[:1])

    def train_step():
        model.train()
        loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(infer, repeat, device), _timed(train_step, repeat, device)


def _peer(name: str, batch: list[dict], repeat: int, device: torch.device) -> tuple[float, float] | None:
    try:
        import transformers as hf
    except ImportError:
        return None
    backbone = hf.ResNetConfig(
        out_features=["stage2", "stage3", "stage4"], depth=[3, 4, 6, 3], layer_type="bottleneck"
    )
    config = hf.DeformableDetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, num_labels=80,
        auxiliary_loss=True, **PEER[name],
    )  # fmt: skip
    model = hf.DeformableDetrForObjectDetection(config)
    for key, p in model.named_parameters():  # train res3..res5 as the recipes (and densenets) do
        if ".backbone." in key and any(f".stages.{i}." in key for i in (1, 2, 3)):
            p.requires_grad_(True)
    model.to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(3, 1, 1)
    pixels = torch.stack([(item["image"].to(device).float() / 255 - mean) / std for item in batch])
    mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long, device=device)
    labels = []
    for item in batch:
        (h, w), b = item["orig_size"], item["instances"]["boxes"]
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                              (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)  # fmt: skip
        labels.append({"class_labels": item["instances"]["labels"].to(device), "boxes": cxcywh.to(device)})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    print(
        f"{name} transformers: {sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M trainable"
    )

    def infer():
        model.eval()
        with torch.inference_mode():
            model(pixel_values=pixels[:1], pixel_mask=mask[:1])

    def train_step():
        model.train()
        loss = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(infer, repeat, device), _timed(train_step, repeat, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1067], metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    densenets.register_all()
    device = torch.device(args.device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batch = [_item(*args.size, gen), _item(*args.size, gen)]
    try:
        import transformers

        peer_name = f"transformers {transformers.__version__} DeformableDetrForObjectDetection"
    except ImportError:
        peer_name = "transformers (not installed)"
    rows = []
    for name in CONFIGS:
        ours, peer = _ours(name, batch, args.repeat, device), _peer(name, batch, args.repeat, device)
        for i, what in enumerate(("inference (1 image)", "train step (2 images)")):
            p, ratio = (f"{peer[i]:.2f}", f"{ours[i] / peer[i]:.2f}") if peer else ("-", "-")
            rows.append(f"| {name} | {what} | {ours[i]:.2f} | {p} | {ratio} |")
            print(rows[-1], flush=True)
    body = "\n".join([
        f"## Deformable DETR / DINO ({args.size[0]}x{args.size[1]}, {args.device})",
        "",
        f"`python benchmarks/bench_dino.py --repeat {args.repeat}`; {machine()}.",
        f"Peer: {peer_name}, configured like each model (see the script's docstring); random "
        f"weights. Median seconds of {args.repeat} runs; a train step is forward + backward + AdamW.",
        "",
        "| model | measure | densenets (s) | peer (s) | ratio |",
        "|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
    write_section("dino", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
