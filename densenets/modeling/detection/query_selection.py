"""Queries selected from the encoder output: two-stage Deformable DETR and DINO's mixed selection.

Every encoder pixel proposes a box centred on itself, of size 0.05 * 2^level of the
image (`encoder_proposals`); a class head scores the pixels and the top Q become the
decoder's reference boxes (Zhu et al., 2021, Section 4.2; DINO, Zhang et al., 2022,
Section 3.4). Shapes: B images, S flattened pixels of all levels, D width, Q queries.
"""

from __future__ import annotations

import torch

__all__ = ["encoder_proposals", "gather_rows"]


def encoder_proposals(
    memory: torch.Tensor, mask: torch.Tensor, spatial_shapes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One box proposal per encoder pixel (the official `gen_encoder_output_proposals`).

    Args:
        memory (Tensor[B, S, D]): encoder output.
        mask (Tensor[B, S] bool): True on padded pixels.
        spatial_shapes (Tensor[L, 2] int64): (h, w) of each level.

    Returns:
        memory (Tensor[B, S, D]): zeroed on padded pixels and on proposals whose
        coordinates leave (0.01, 0.99).
        proposals (Tensor[B, S, 4]): cxcywh in inverse-sigmoid space; +inf where masked.
    """
    b = memory.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(spatial_shapes.tolist()):
        level_mask = mask[:, start : start + h * w].view(b, h, w)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        ys = torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device)
        xs = torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x, grid_y], -1)  # (h, w, 2)
        scale = torch.stack([valid_w, valid_h], -1).view(b, 1, 1, 2)
        grid = (grid.unsqueeze(0) + 0.5) / scale  # (B, h, w, 2)
        wh = torch.full_like(grid, 0.05 * 2.0**lvl)
        proposals.append(torch.cat([grid, wh], -1).view(b, -1, 4))
        start += h * w
    proposals = torch.cat(proposals, 1).to(memory.dtype)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
    proposals = torch.log(proposals / (1 - proposals))
    invalid = mask.unsqueeze(-1) | ~valid
    proposals = proposals.masked_fill(invalid, float("inf"))
    return memory.masked_fill(invalid, 0.0), proposals


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (Tensor[B, S, C]), index (Tensor[B, Q] int64) -> Tensor[B, Q, C]: rows x[b, index[b, q]]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
