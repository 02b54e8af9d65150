"""Export wrapper of Deformable DETR and DINO (one uint8 image in, top-k detections out).

The models read the level sizes back from the `spatial_shapes` tensor (`.tolist()` in
the encoder's reference points and in the two-stage / DINO proposals), which would freeze
the example's sizes into an exported graph. While the wrapper runs, those three places
take the sizes from the feature maps' shapes instead (symbolic in both exporters); with
one unpadded image the padding masks are all False and every valid ratio is 1, so the
values are those of the model's own code. Everything else is the model's `predict`.

Shapes: L levels of sizes (h_l, w_l), S = sum(h_l * w_l), B = 1 image, D width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .detection import DETRExport, _size
from .wrappers import normalize_and_pad

__all__ = ["DeformableDETRExport", "level_shapes"]


def level_shapes(srcs: Sequence[Tensor]) -> Tensor:
    """Tensor[L, 2] int64 (h, w) of each level, computed from the shapes (not constants)."""
    if torch.onnx.is_in_onnx_export():
        return torch.stack([torch._shape_as_tensor(s)[-2:] for s in srcs])
    return torch.stack(
        [torch.stack([torch.scalar_tensor(d, dtype=torch.long) for d in s.shape[-2:]]) for s in srcs]
    )


def _centres(h, w, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel centres (y, x) of an h x w level in pixels, each Tensor[h * w] (row-major)."""
    ys = torch.arange(h, device=device).to(dtype) + 0.5
    xs = torch.arange(w, device=device).to(dtype) + 0.5
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return y.reshape(-1), x.reshape(-1)


def _reference_points(sizes: list, mem) -> Tensor:
    """`DeformableEncoder.reference_points` for unpadded levels of the given sizes."""
    ratios = mem.valid_ratios
    refs = []
    for lvl, (h, w) in enumerate(sizes):
        y, x = _centres(h, w, ratios.dtype, ratios.device)
        ref_y = y[None] / (ratios[:, None, lvl, 1] * h)
        ref_x = x[None] / (ratios[:, None, lvl, 0] * w)
        refs.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(refs, 1)[:, :, None] * ratios[:, None]


def _encoder_proposals(sizes: list, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """`query_selection.encoder_proposals` for one unpadded image (valid size = level size)."""
    b = memory.shape[0]
    proposals = []
    for lvl, (h, w) in enumerate(sizes):
        y, x = _centres(h, w, torch.float32, memory.device)
        grid = torch.stack((x / w, y / h), -1)[None].expand(b, -1, -1)  # (B, h*w, 2)
        proposals.append(torch.cat([grid, torch.full_like(grid, 0.05 * 2.0**lvl)], -1))
    proposals = torch.cat(proposals, 1).to(memory.dtype)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    invalid = mask.unsqueeze(-1) | ~valid
    return memory.masked_fill(invalid, 0.0), proposals.masked_fill(invalid, float("inf"))


def _flatten_levels(srcs, masks, pos, level_embed):
    """`deformable_transformer.flatten_levels` with `spatial_shapes` from the shapes."""
    from densenets.modeling.detection.deformable_transformer import MultiScaleMemory, valid_ratios

    src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
    mask = torch.cat([m.flatten(1) for m in masks], 1)
    flat_pos = []
    for lvl, p in enumerate(pos):
        p = p.to(src.dtype).flatten(2).transpose(1, 2)
        flat_pos.append(p if level_embed is None else p + level_embed[lvl].view(1, 1, -1))
    shapes = level_shapes(srcs)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    ratios = torch.stack([valid_ratios(m) for m in masks], 1).to(src.dtype)
    return MultiScaleMemory(src, torch.cat(flat_pos, 1), mask, shapes, starts, ratios)


class traceable_levels:  # noqa: N801 - used as a context manager, like a function
    """`with traceable_levels(model):` run `model.predict` on one unpadded image with level
    sizes taken from shapes.

    Entering and leaving patch the model and two modules; `torch.compile` runs them as
    plain Python (graph breaks) and compiles what runs in between with the patches seen.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.sizes: list = []

    @torch.compiler.disable
    def __enter__(self) -> None:
        from densenets.modeling.detection import deformable_detr, deformable_transformer

        model, sizes = self.model, self.sizes

        def features(images):
            srcs = list(model.neck(model.backbone(images.tensor)).values())
            sizes[:] = [tuple(s.shape[-2:]) for s in srcs]
            return srcs, [torch.zeros_like(s[:, 0], dtype=torch.bool) for s in srcs]  # nothing padded

        def proposals(memory, mask, spatial_shapes):
            return _encoder_proposals(sizes, memory, mask)

        self.saved = (deformable_transformer.flatten_levels, deformable_detr.encoder_proposals)
        model.features = features
        model.transformer.encoder.reference_points = lambda mem: _reference_points(sizes, mem)
        deformable_transformer.flatten_levels = _flatten_levels
        deformable_detr.encoder_proposals = proposals

    @torch.compiler.disable
    def __exit__(self, *exc_info) -> None:
        from densenets.modeling.detection import deformable_detr, deformable_transformer

        del self.model.features, self.model.transformer.encoder.reference_points
        deformable_transformer.flatten_levels, deformable_detr.encoder_proposals = self.saved


class DeformableDETRExport(DETRExport):
    """Deformable DETR (plain, box refinement, two-stage) and DINO on one uint8 image ->
    the `num_select` best (query, class) pairs by sigmoid score, as their `inference`
    (no NMS), boxes in input-image pixels."""

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 Tensor[3, H, W] RGB -> boxes Tensor[D, 4] xyxy pixels, scores Tensor[D], labels Tensor[D]."""
        from densenets.layers import ImageList

        m = self.model
        h, w = _size(image)
        x = normalize_and_pad(image, m, 0)  # one image: no padding, so no padded feature cell
        with traceable_levels(m):
            logits, boxes = m.predict(ImageList(x, [tuple(x.shape[-2:])]))[:2]
        scores, labels, boxes = m.inference(logits[-1], boxes[-1])  # (1, D), (1, D), (1, D, 4) cxcywh
        return self.to_pixels(boxes[0], h, w), scores[0], labels[0]
