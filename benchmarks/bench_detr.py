"""DETR-R50 and DAB-DETR-R50 at 800x1067: inference latency and one training step, on CPU.

The peer is Hugging Face transformers' port of the same models (``DetrForObjectDetection``,
``DabDetrForObjectDetection`` with a ResNet-50 backbone, no timm), timed in the same
run on the same input when transformers is installed (``pip install transformers``);
otherwise only densenets is timed. Both sides use random weights (the cost does not
depend on them) and one image with 8 boxes; a training step is forward, backward and
an AdamW update. The median of `--repeat` runs after one warm-up run is reported.

    python benchmarks/bench_detr.py [--repeat 3] [--size 800 1067] [--device cpu]
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
CONFIGS = {"DETR-R50": "detr_r50_coco.yaml", "DAB-DETR-R50": "dab_detr_r50_coco.yaml"}


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
    boxes = torch.cat([xy, xy + wh], 1)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return {
        "image": image,
        "instances": {"boxes": boxes, "labels": torch.arange(8) % 80},
        "orig_size": (h, w),
    }


def _ours(name: str, item: dict, repeat: int, device: torch.device) -> tuple[float, float]:
    cfg = load_config(ROOT / "configs" / "detection" / CONFIGS[name], ["model.backbone.weights=null"])
    model = build(cfg.model, MODELS).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name} densenets: {trainable / 1e6:.2f}M trainable parameters", flush=True)

    def infer():
        model.eval()
        with torch.inference_mode():
            model([item])

    def train_step():
        model.train()
        loss = sum(model([item]).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _timed(infer, repeat, device), _timed(train_step, repeat, device)


def _peer(name: str, item: dict, repeat: int, device: torch.device) -> tuple[float, float] | None:
    try:
        import transformers as hf
    except ImportError:
        return None
    backbone = hf.ResNetConfig(out_features=["stage4"], depth=[3, 4, 6, 3], layer_type="bottleneck")
    common = dict(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        num_labels=80,
        auxiliary_loss=True,
    )
    if name == "DETR-R50":
        model = hf.DetrForObjectDetection(hf.DetrConfig(**common))
    else:
        model = hf.DabDetrForObjectDetection(hf.DabDetrConfig(**common, dropout=0.0))
    # transformers' non-timm backbone path freezes the whole ResNet (its name filter looks
    # for "stage.1" in "stages.1..."); train res3..res5 as the recipe (and densenets) do.
    for key, p in model.named_parameters():
        if ".backbone." in key and any(f".stages.{i}." in key for i in (1, 2, 3)):
            p.requires_grad_(True)
    model.to(device)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(3, 1, 1)
    pixels = ((item["image"].to(device).float() / 255 - mean) / std)[None]
    mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long, device=device)
    h, w = item["orig_size"]
    boxes = item["instances"]["boxes"]
    cxcywh = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                          (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], 1)  # fmt: skip
    labels = [{"class_labels": item["instances"]["labels"].to(device), "boxes": cxcywh.to(device)}]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name} transformers: {trainable / 1e6:.2f}M trainable parameters", flush=True)

    def infer():
        model.eval()
        with torch.inference_mode():
            model(pixel_values=pixels, pixel_mask=mask)

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
    item = _item(*args.size, torch.Generator().manual_seed(0))
    try:
        import transformers

        peer_name = f"transformers {transformers.__version__}"
    except ImportError:
        peer_name = "transformers (not installed)"
    rows = []
    for name in CONFIGS:
        ours = _ours(name, item, args.repeat, device)
        peer = _peer(name, item, args.repeat, device)
        for i, what in enumerate(("inference", "train step")):
            p = f"{peer[i]:.2f}" if peer else "-"
            ratio = f"{ours[i] / peer[i]:.2f}" if peer else "-"
            rows.append(f"| {name} | {what} | {ours[i]:.2f} | {p} | {ratio} |")
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"## DETR / DAB-DETR ({args.size[0]}x{args.size[1]}, batch 1, {args.device})",
            "",
            f"`python benchmarks/bench_detr.py --repeat {args.repeat}`; {machine()}.",
            f"Peer: {peer_name} (same architecture, random weights). Median seconds of "
            f"{args.repeat} runs; a train step is forward + backward + AdamW.",
            "",
            "| model | measure | densenets (s) | peer (s) | ratio |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section("detr", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
