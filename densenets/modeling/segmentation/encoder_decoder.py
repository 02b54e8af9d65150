"""The encoder-decoder meta-architecture of FCN, DeepLabV3 and DeepLabV3+.

normalise -> backbone (a dilated ResNet, output stride 8 or 16) -> decode head
(+ auxiliary head in training) -> losses, or -> logits resized to the image ->
class probabilities at the original size. Training batches are padded to a common size
(labels with ignore); inference never pads an image.

Shapes: N images, K classes, H x W padded batch, (h, w) one image, s = head stride.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from densenets.config import BACKBONES, HEADS, MODELS, build, instantiate
from densenets.layers import ImageList
from densenets.modeling.backbones.base import Backbone
from densenets.modeling.meta_arch import MetaArch

from .decode_head import DecodeHead

__all__ = ["EncoderDecoder", "SegInference"]


@dataclass
class SegInference:
    """How the model predicts in eval mode.

    Attributes:
        mode: `whole` (one pass over the padded image) or `slide` (windows of
            `crop_size` every `stride` pixels; overlapping logits are averaged).
        crop_size: (h, w) of a sliding window.
        stride: (h, w) step between windows.
        scales: test-time rescaling factors; class probabilities are averaged over them.
        flip: also predict the horizontally flipped image and average.
        window_batch: windows per forward pass in `slide` mode.
    """

    mode: str = "whole"
    crop_size: tuple[int, int] = (512, 1024)
    stride: tuple[int, int] = (341, 683)
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    window_batch: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise ValueError(f"inference.mode: expected whole or slide, got {self.mode!r}")
        self.crop_size = tuple(int(v) for v in self.crop_size)
        self.stride = tuple(int(v) for v in self.stride)
        self.scales = tuple(float(s) for s in self.scales)
        if len(self.crop_size) != 2 or len(self.stride) != 2 or min(self.crop_size + self.stride) <= 0:
            raise ValueError(
                f"inference: crop_size and stride must be two positive ints, got "
                f"{list(self.crop_size)} and {list(self.stride)}"
            )
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"inference.scales: expected positive factors, got {list(self.scales)}")


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of sliding windows along one axis: every `stride`, the last one
    moved back so that it ends at `size`; one window when `crop >= size`."""
    if crop >= size:
        return [0]
    n = (size - crop + stride - 1) // stride + 1
    return sorted({min(i * stride, size - crop) for i in range(n)})


@MODELS.register()
class EncoderDecoder(MetaArch):
    """Semantic segmentation with a backbone and a decode head: FCN (Long et al., 2015),
    DeepLabV3 (Chen et al., 2017), DeepLabV3+ (Chen et al., 2018) by the head's type.

    Args:
        backbone: returns a dict of features (`res2` ... `res5`); training batches are
            padded to its `size_divisibility`.
        decode_head: a `DecodeHead`; its loss is `loss_sem_seg`.
        auxiliary_head: an optional `DecodeHead` used only in training (`loss_aux`).
        pixel_mean, pixel_std: per-channel normalisation, in the `input_format` order and
            the 0..255 range.
        input_format: `RGB` or `BGR`: the channel order the weights expect.
        align_corners: of every bilinear resize of logits.
        inference: a `SegInference` or a dict of its fields.
    """

    def __init__(
        self,
        backbone: Backbone,
        decode_head: DecodeHead,
        auxiliary_head: DecodeHead | None = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        align_corners: bool = False,
        inference: SegInference | Mapping | None = None,
    ) -> None:
        super().__init__(pixel_mean, pixel_std, input_format, backbone.size_divisibility)
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners
        if not isinstance(inference, SegInference):
            inference = instantiate(SegInference, inference, "inference")
        self.inference_cfg = inference
        self.ignore_index = decode_head.loss.ignore_index

    @classmethod
    def from_config(cls, cfg: Mapping) -> EncoderDecoder:
        backbone = build(cfg["backbone"], BACKBONES)
        shapes = backbone.output_shape()
        align = bool(cfg.get("align_corners", False))
        heads = {
            key: build(cfg[key], HEADS, input_shape=shapes, align_corners=align)
            for key in ("decode_head", "auxiliary_head")
            if cfg.get(key) is not None
        }
        kwargs = cls.config_options(cfg, "backbone", "decode_head", "auxiliary_head")
        return cls(backbone=backbone, **heads, **kwargs)

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        """
        Args:
            batch: items with `image` (uint8 Tensor[3, h, w], RGB); in training also
                `sem_seg` (int64 Tensor[h, w], 255 = ignore); in eval optionally
                `orig_size` (the (H, W) predictions are resized to).

        Returns:
            Training: `{"loss_sem_seg": ..., "loss_aux": ...}` (scalars, weighted).
            Eval: per image `{"sem_seg": Tensor[K, H, W]}` class probabilities (float32).
        """
        if not self.training:
            return self.predict(batch)
        images = self.preprocess(batch)
        targets = self.prepare_targets(batch, images)
        return self.losses(images.tensor, targets)

    def predict(self, batch: list[dict]) -> list[dict]:
        """Eval-mode predictions. Images of one size run together and none is padded, so
        each image gets the result it gets alone (zero padding would change the
        convolutions near its border), as in mmsegmentation and torchvision."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault(tuple(item["image"].shape[-2:]), []).append(i)
        results: list[dict] = [{} for _ in batch]
        for indices in groups.values():
            items = [batch[i] for i in indices]
            images = self.preprocess(items, size_divisibility=0)
            for i, result in zip(
                indices, self.postprocess(self.inference(images), images.image_sizes, items)
            ):
                results[i] = result
        return results

    def prepare_targets(self, batch: list[dict], images: ImageList) -> torch.Tensor:
        """int64 Tensor[N, H, W]: the labels padded like the images, with ignore."""
        n, _, h, w = images.tensor.shape
        targets = torch.full((n, h, w), self.ignore_index, dtype=torch.long, device=self.device)
        for i, item in enumerate(batch):
            label = item["sem_seg"].to(self.device, non_blocking=True)
            if tuple(label.shape) != images.image_sizes[i]:
                raise ValueError(
                    f"{item.get('file_name', f'item {i}')}: sem_seg is {tuple(label.shape)}, "
                    f"image is {images.image_sizes[i]}"
                )
            targets[i, : label.shape[0], : label.shape[1]] = label
        return targets

    def losses(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of the decode head and the auxiliary head on a padded batch."""
        features = self.backbone(images)
        out = {"loss_sem_seg": self.decode_head.losses(self.decode_head(features), targets)}
        if self.auxiliary_head is not None:
            out["loss_aux"] = self.auxiliary_head.losses(self.auxiliary_head(features), targets)
        return out

    def encode_decode(self, images: torch.Tensor) -> torch.Tensor:
        """Tensor[N, 3, H, W] normalised -> logits Tensor[N, K, H, W] at the input size.

        The input is not padded: the head's logits (about H / s x W / s, rounded as the
        strided convs round) are resized straight to H x W, as mmsegmentation's and
        torchvision's segmenters do, for any H and W.
        """
        logits = self.decode_head(self.backbone(images))  # (N, K, ~H / s, ~W / s)
        return F.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )

    def slide_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits Tensor[N, K, H, W] averaged over overlapping sliding windows."""
        cfg = self.inference_cfg
        h, w = images.shape[-2:]
        (ch, cw), (sh, sw) = cfg.crop_size, cfg.stride
        boxes = [(y, x) for y in window_starts(h, ch, sh) for x in window_starts(w, cw, sw)]
        logits = count = None
        for i in range(0, len(boxes), cfg.window_batch):
            chunk = boxes[i : i + cfg.window_batch]
            crops = torch.cat(
                [images[..., y : y + ch, x : x + cw] for y, x in chunk]
            )  # (len * N, 3, ch', cw')
            out = self.encode_decode(crops).split(images.shape[0])
            if logits is None:
                logits = images.new_zeros((images.shape[0], out[0].shape[1], h, w))
                count = images.new_zeros((1, 1, h, w))
            for (y, x), o in zip(chunk, out):
                logits[..., y : y + ch, x : x + cw] += o
                count[..., y : y + ch, x : x + cw] += 1
        return logits / count

    def inference(self, images: ImageList) -> torch.Tensor:
        """Class probabilities Tensor[N, K, H, W] of a padded batch, averaged over the
        configured scales and flips (softmax of each view, then the mean)."""
        cfg = self.inference_cfg
        x = images.tensor
        h, w = x.shape[-2:]
        probs = None
        views = [(s, f) for s in cfg.scales for f in ((False, True) if cfg.flip else (False,))]
        for scale, flip in views:
            view = (
                x
                if scale == 1.0
                else F.interpolate(
                    x,
                    scale_factor=scale,
                    mode="bilinear",
                    align_corners=self.align_corners,
                    recompute_scale_factor=True,
                )
            )
            if flip:
                view = view.flip(-1)
            logits = self.slide_logits(view) if cfg.mode == "slide" else self.encode_decode(view)
            if flip:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=self.align_corners)
            p = logits.float().softmax(dim=1)
            probs = p if probs is None else probs.add_(p)
        return probs / len(views)

    def postprocess(
        self, probs: torch.Tensor, image_sizes: list[tuple[int, int]], batch: list[dict]
    ) -> list[dict]:
        """Crop each image's probabilities out of the padded batch and resize them to
        its `orig_size` (when the test transform resized it)."""
        results = []
        for p, (h, w), item in zip(probs, image_sizes, batch):
            p = p[:, :h, :w]
            orig = tuple(int(v) for v in item.get("orig_size", (h, w)))
            if orig != (h, w):
                p = F.interpolate(p[None], size=orig, mode="bilinear", align_corners=self.align_corners)[0]
            results.append({"sem_seg": p})
        return results
