"""Official EDSR-PyTorch checkpoints (``edsr_x2-0edfb8a3.pt``, ``edsr_baseline_x4-6b446fab.pt``,
...) <-> densenets `EDSR` state dicts.

The official files are plain state dicts (load them with ``torch.load(path,
weights_only=True)``). Key map, official -> ours:

=====================================  ==================================
``head.0.*``                           ``head.*``
``body.{i}.body.0.*`` / ``.body.2.*``  ``body.blocks.{i}.conv1.*`` / ``conv2.*``
``body.{N}.*`` (after the N blocks)    ``body.conv.*``
``tail.0.{2k}.*`` (conv before the     ``upsampler.convs.{k}.*``
k-th PixelShuffle)
``tail.1.*``                           ``upsampler.conv_out.*``
``sub_mean.*``, ``add_mean.*``         dropped: our mean shift is the constant
                                       ``pixel_mean`` (checked to match)
=====================================  ==================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from densenets.data.sr import DIV2K_RGB_MEAN

from . import register_converter

__all__ = ["convert_edsr", "edsr_to_official"]

_TO_OURS = [
    (re.compile(r"^head\.0\.(weight|bias)$"), r"head.\1"),
    (re.compile(r"^body\.(\d+)\.body\.0\.(weight|bias)$"), r"body.blocks.\1.conv1.\2"),
    (re.compile(r"^body\.(\d+)\.body\.2\.(weight|bias)$"), r"body.blocks.\1.conv2.\2"),
    (re.compile(r"^tail\.1\.(weight|bias)$"), r"upsampler.conv_out.\1"),
]
_BODY_CONV = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_TAIL_CONV = re.compile(r"^tail\.0\.(\d+)\.(weight|bias)$")


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a `module.` (DataParallel) or `model.` (trainer wrapper) prefix."""
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _check_mean_shift(state: Mapping[str, torch.Tensor], mean: Sequence[float]) -> None:
    expected = torch.tensor(mean, dtype=torch.float64)
    for key, sign in (("sub_mean", -1), ("add_mean", 1)):
        if f"{key}.weight" not in state:
            continue
        weight = state[f"{key}.weight"].double().reshape(3, 3)
        bias = state[f"{key}.bias"].double()
        if not (torch.allclose(weight, torch.eye(3, dtype=torch.float64)) and
                torch.allclose(bias, sign * expected, atol=1e-3)):
            raise ValueError(f"edsr: {key} of the checkpoint (bias {bias.tolist()}) is not the 0..255 "
                             f"DIV2K mean shift; set model.pixel_mean to {(-sign * bias).tolist()}")


@register_converter("edsr")
def convert_edsr(obj: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official EDSR / EDSR-baseline state dict -> `EDSR` state dict.

    Args:
        obj: the loaded checkpoint (a state dict, or a dict holding one under
            `state_dict` / `model`).

    Returns:
        A state dict for ``EDSR(EDSRBody(...), PixelShuffleUpsampler(...))``.

    Raises:
        ValueError: a key the map does not know, or a mean shift other than DIV2K's.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    state = _strip_prefix(obj)
    _check_mean_shift(state, DIV2K_RGB_MEAN)
    num_blocks = len({k.split(".")[1] for k in state if re.match(r"^body\.\d+\.body\.", k)})
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("sub_mean.", "add_mean.")):
            continue
        out[_map_key(key, num_blocks)] = value
    return out


def _map_key(key: str, num_blocks: int) -> str:
    for pattern, repl in _TO_OURS:
        if pattern.match(key):
            return pattern.sub(repl, key)
    m = _BODY_CONV.match(key)
    if m and int(m.group(1)) == num_blocks:
        return f"body.conv.{m.group(2)}"
    m = _TAIL_CONV.match(key)
    if m and int(m.group(1)) % 2 == 0:
        return f"upsampler.convs.{int(m.group(1)) // 2}.{m.group(2)}"
    raise ValueError(f"edsr: unexpected key {key!r} in the checkpoint")


def edsr_to_official(state: Mapping[str, torch.Tensor], pixel_mean: Sequence[float] = DIV2K_RGB_MEAN) -> dict:
    """`EDSR` state dict -> the official layout (inverse of `convert_edsr`), with the
    mean-shift convs the official model expects."""
    num_blocks = len({k.split(".")[2] for k in state if k.startswith("body.blocks.")})
    rules = [
        (r"^head\.", "head.0."),
        (r"^body\.blocks\.(\d+)\.conv1\.", r"body.\1.body.0."),
        (r"^body\.blocks\.(\d+)\.conv2\.", r"body.\1.body.2."),
        (r"^body\.conv\.", f"body.{num_blocks}."),
        (r"^upsampler\.conv_out\.", "tail.1."),
    ]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^upsampler\.convs\.(\d+)\.(weight|bias)$", key)
        if m:
            out[f"tail.0.{2 * int(m.group(1))}.{m.group(2)}"] = value
            continue
        for pattern, repl in rules:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise ValueError(f"edsr: unexpected key {key!r} in the EDSR state dict")
    mean = torch.tensor(pixel_mean, dtype=torch.float32)
    eye = torch.eye(3).view(3, 3, 1, 1)
    out.update({"sub_mean.weight": eye, "sub_mean.bias": -mean, "add_mean.weight": eye.clone(),
                "add_mean.bias": mean.clone()})
    return out
