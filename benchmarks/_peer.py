"""Side-by-side timing of a densenets detector and its Hugging Face transformers peer.

What `bench_detr.py` and `bench_dino.py` share: the synthetic batch (uint8 images with 8
boxes each), its conversion to the peer's `pixel_values` / `pixel_mask` / `labels`, the
timed inference (one image) and training step (forward, backward, AdamW) of both sides,
and the table written to benchmarks/RESULTS.md. A script names its models, the config of
each and how to build the peer (`PeerBenchmark`), then calls `run`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _results import machine, write_section
from torch import nn

import densenets
from densenets.config import MODELS, build, load_config

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PeerBenchmark:
    """One script's benchmark.

    Attributes:
        section: its RESULTS.md section (`<!-- bench:section -->`).
        script: the file name under benchmarks/, for the command line in the table.
        heading: the section's title, with `{size}` (HxW) and `{device}` fields.
        configs: model name -> config file under configs/detection.
        build_peer: (transformers module, model name) -> the peer model, random weights.
        peer_class: the peer's class named after the transformers version ("" for none).
        peer_note: what follows the peer's name in the section (how it is configured).
        images: images in a training step (inference always runs on the first one).
        measures: the names of the inference and train-step rows.
    """

    section: str
    script: str
    heading: str
    configs: dict[str, str]
    build_peer: Callable[[Any, str], nn.Module]
    peer_class: str = ""
    peer_note: str = " (same architecture, random weights)."
    images: int = 1
    measures: tuple[str, str] = ("inference", "train step")


def timed(fn: Callable[[], Any], repeat: int, device: torch.device) -> float:
    """Median seconds of `repeat` calls of `fn` after one warm-up call (CUDA synchronised)."""
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


def synthetic_item(h: int, w: int, gen: torch.Generator) -> dict:
    """A random uint8 image [3, h, w] with 8 boxes (xyxy pixels) of labels 0..7, as a
    contract item (docs/contracts.md)."""
    xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
    wh = torch.rand(8, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3]) + 16
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return {
        "image": image,
        "instances": {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.arange(8) % 80},
        "orig_size": (h, w),
    }


def transformers_inputs(batch: list[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Contract items (same size) -> the transformers detectors' inputs.

    Returns:
        pixel_values (Tensor[B, 3, H, W]): RGB in [0, 1] normalised with ImageNet's mean
        and std; pixel_mask (Tensor[B, H, W] int64): all ones (nothing padded); labels:
        per image `class_labels` (Tensor[N] int64) and `boxes` (Tensor[N, 4] cxcywh
        normalised by the image size).
    """
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    pixels = torch.stack([(item["image"].to(device).float() / 255 - mean) / std for item in batch])
    mask = torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long, device=device)
    labels = []
    for item in batch:
        (h, w), b = item["orig_size"], item["instances"]["boxes"]
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                              (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)  # fmt: skip
        labels.append({"class_labels": item["instances"]["labels"].to(device), "boxes": cxcywh.to(device)})
    return pixels, mask, labels


def resnet50_config(hf: Any, out_features: list[str]) -> Any:
    """transformers' own ResNet-50 (no timm) returning `out_features` ("stage2".."stage4")."""
    return hf.ResNetConfig(out_features=out_features, depth=[3, 4, 6, 3], layer_type="bottleneck")


def train_res3_to_res5(model: nn.Module) -> None:
    """transformers' non-timm backbone path freezes the whole ResNet (its name filter looks
    for "stage.1" in "stages.1..."); train res3..res5 as the recipes (and densenets) do."""
    for key, p in model.named_parameters():
        if ".backbone." in key and any(f".stages.{i}." in key for i in (1, 2, 3)):
            p.requires_grad_(True)


def _time_both(
    model: nn.Module,
    forward: Callable[[bool], Any],
    loss: Callable[[Any], torch.Tensor],
    repeat: int,
    device: torch.device,
) -> tuple[float, float]:
    """Inference (`forward(False)`, eval, inference mode) and a training step (`forward(True)`,
    `loss` of its output, backward, AdamW) -> their median seconds."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            forward(False)

    def train_step() -> None:
        model.train()
        value = loss(forward(True))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    return timed(infer, repeat, device), timed(train_step, repeat, device)


def _trainable(name: str, side: str, model: nn.Module) -> None:
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name} {side}: {count / 1e6:.2f}M trainable parameters", flush=True)


def time_ours(
    config: str, name: str, batch: list[dict], repeat: int, device: torch.device
) -> tuple[float, float]:
    """densenets' model of `config` (random weights): inference on `batch[:1]`, a training
    step on `batch` -> median seconds."""
    cfg = load_config(ROOT / "configs" / "detection" / config, ["model.backbone.weights=null"])
    model = build(cfg.model, MODELS).to(device)
    _trainable(name, "densenets", model)
    return _time_both(
        model,
        lambda train: model(batch if train else batch[:1]),
        lambda losses: sum(losses.values()),
        repeat,
        device,
    )


def time_peer(
    model: nn.Module, name: str, batch: list[dict], repeat: int, device: torch.device
) -> tuple[float, float]:
    """A transformers detector: inference on the first image, a training step on `batch`."""
    model.to(device)
    pixels, mask, labels = transformers_inputs(batch, device)
    _trainable(name, "transformers", model)

    def forward(train: bool) -> Any:
        if train:
            return model(pixel_values=pixels, pixel_mask=mask, labels=labels)
        return model(pixel_values=pixels[:1], pixel_mask=mask[:1])

    return _time_both(model, forward, lambda out: out.loss, repeat, device)


def parse_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measure (median)")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1067], metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-write", action="store_true", help="print the table only; leave RESULTS.md")
    return parser.parse_args(argv)


def run(bench: PeerBenchmark, description: str, argv: list[str] | None = None) -> int:
    """Time every model of `bench` and its peer, print the table, write the section."""
    args = parse_args(description, argv)
    densenets.register_all()
    device = torch.device(args.device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batch = [synthetic_item(*args.size, gen) for _ in range(bench.images)]
    try:
        import transformers as hf

        peer_name = f"transformers {hf.__version__}" + (f" {bench.peer_class}" if bench.peer_class else "")
    except ImportError:
        hf, peer_name = None, "transformers (not installed)"
    rows = []
    for name, config in bench.configs.items():
        ours = time_ours(config, name, batch, args.repeat, device)
        peer = time_peer(bench.build_peer(hf, name), name, batch, args.repeat, device) if hf else None
        for i, what in enumerate(bench.measures):
            p, ratio = (f"{peer[i]:.2f}", f"{ours[i] / peer[i]:.2f}") if peer else ("-", "-")
            rows.append(f"| {name} | {what} | {ours[i]:.2f} | {p} | {ratio} |")
            print(rows[-1], flush=True)
    body = _section(bench, args, peer_name, rows)
    if not args.no_write:
        write_section(bench.section, body)
    print(body)
    return 0


def _section(bench: PeerBenchmark, args: argparse.Namespace, peer_name: str, rows: list[str]) -> str:
    size = f"{args.size[0]}x{args.size[1]}"
    return "\n".join([
        "## " + bench.heading.format(size=size, device=args.device),
        "",
        f"`python benchmarks/{bench.script} --repeat {args.repeat}`; {machine()}.",
        f"Peer: {peer_name}{bench.peer_note} Median seconds of {args.repeat} runs; a train step "
        "is forward + backward + AdamW.",
        "",
        "| model | measure | densenets (s) | peer (s) | ratio |",
        "|---|---|---|---|---|",
        *rows,
    ])  # fmt: skip
