"""Export wrappers: one uint8 image in, the finished prediction out.

Each wrapper holds a trained model and runs its eval path on one image
`image (Tensor[3, H, W] uint8 RGB)` with preprocessing (channel order, normalisation,
padding to the size divisibility) and postprocessing (box decoding, NMS, cropping the
padding off) inside, written with traceable ops only (no Python branch on data), so that
the ONNX exporter and `torch.export` see one graph for every image size.

Outputs are in the pixels of the input image:
- detection: `boxes (Tensor[D, 4] float32 xyxy)`, `scores (Tensor[D])`, `labels (Tensor[D] int64)`;
- segmentation: `sem_seg (Tensor[H, W] int64)`, the class of each pixel;
- super-resolution: `sr (Tensor[3, s*H, s*W] uint8)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OUTPUT_NAMES",
    "SegmentationExport",
    "SuperResolutionExport",
    "crop",
    "normalize_and_pad",
    "wrap_model",
]

OUTPUT_NAMES = {
    "detection": ("boxes", "scores", "labels"),
    "segmentation": ("sem_seg",),
    "super_resolution": ("sr",),
}


def normalize_and_pad(image: Tensor, model: nn.Module, divisibility: int) -> Tensor:
    """uint8 Tensor[3, H, W] RGB -> float Tensor[1, 3, H', W'] normalised, zero-padded at
    the bottom/right to a multiple of `divisibility` (as `ImageList.from_uint8`)."""
    x = image.float()
    if getattr(model, "input_format", "RGB") == "BGR":
        x = x.flip(0)
    x = ((x - model.pixel_mean.view(3, 1, 1)) / model.pixel_std.view(3, 1, 1))[None]
    if divisibility > 1:
        h, w = x.shape[-2:]
        x = F.pad(
            x,
            (
                0,
                (divisibility - w % divisibility) % divisibility,
                0,
                (divisibility - h % divisibility) % divisibility,
            ),
        )
    return x


def crop(x: Tensor, h, w) -> Tensor:
    """`x[..., :h, :w]` as two gathers: a slice makes `torch.export` specialise on
    whether the padding is empty, which differs between image sizes."""
    x = x.index_select(-2, torch.arange(h, device=x.device))
    return x.index_select(-1, torch.arange(w, device=x.device))


class SegmentationExport(nn.Module):
    """FCN / DeepLabV3 / DeepLabV3+ (`EncoderDecoder`), whole-image inference -> class map.

    Sliding-window, multi-scale and flip test modes are not exported (docs/export.md):
    the class map is that of the config's `whole` mode on the given image.
    """

    task = "segmentation"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        """uint8 Tensor[3, H, W] RGB -> int64 Tensor[H, W] class indices."""
        m = self.model
        x = normalize_and_pad(image, m, 0)  # inference runs unpadded, as mmseg and torchvision
        logits = m.decode_head(m.backbone(x))  # (1, K, H/s, W/s)
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=m.align_corners)
        return logits[0].argmax(0)


class SuperResolutionExport(nn.Module):
    """EDSR: one low-resolution image -> the super-resolved uint8 image (no tiling, no
    self-ensemble: see docs/export.md)."""

    task = "super_resolution"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        """uint8 Tensor[3, h, w] RGB -> uint8 Tensor[3, s*h, s*w] RGB."""
        sr = self.model.network(image[None].float())[0]
        return sr.clamp(0, 255).round().to(torch.uint8)


def wrap_model(model: nn.Module) -> nn.Module:
    """The export wrapper of a densenets model (in eval mode), by its class.

    Raises:
        TypeError: the model has no export wrapper.
    """
    from densenets.modeling.detection import FasterRCNN
    from densenets.modeling.segmentation import EncoderDecoder
    from densenets.modeling.super_resolution import EDSR

    from .detection import DETRExport, FasterRCNNExport

    wrappers = {EncoderDecoder: SegmentationExport, EDSR: SuperResolutionExport, FasterRCNN: FasterRCNNExport}
    try:
        from densenets.modeling.detection import MultiScaleDETR, SingleScaleDETR

        from .deformable import DeformableDETRExport

        wrappers[MultiScaleDETR] = DeformableDETRExport  # Deformable DETR, DINO
        wrappers[SingleScaleDETR] = DETRExport  # DETR, DAB-DETR
    except ImportError:  # pragma: no cover
        pass
    for cls, wrapper in wrappers.items():
        if isinstance(model, cls):
            return wrapper(model.eval())
    raise TypeError(
        f"export: no export wrapper for {type(model).__name__} (supported: "
        f"{', '.join(c.__name__ for c in wrappers)})"
    )
