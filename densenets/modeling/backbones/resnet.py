"""The ResNet family as a feature extractor: ResNet, ResNeXt, Wide ResNet, ResNet-C/D.

Papers: He et al., "Deep Residual Learning for Image Recognition" (2016); Xie et al.,
"Aggregated Residual Transformations for Deep Neural Networks" (ResNeXt, 2017);
Zagoruyko and Komodakis, "Wide Residual Networks" (2016); He et al., "Bag of Tricks for
Image Classification with Convolutional Neural Networks" (ResNet-C/D stem and shortcut,
2019); Chen et al., "Rethinking Atrous Convolution" (dilation, multi-grid, 2017);
Dai et al. / Zhu et al., "Deformable ConvNets" v1/v2 (2017/2019); Huang et al.,
"Deep Networks with Stochastic Depth" (2016).

Shapes: N images, input Tensor[N, 3, H, W]; stage ``resK`` has stride ``2**K`` (4, 8,
16, 32) unless dilation replaces it (output stride 16 or 8).

State-dict layout (foreign layouts are mapped in `densenets.checkpoint.convert.resnet`)::

    stem.conv1.weight  stem.norm1.*            (deep stem: conv1..conv3, norm1..norm3)
    res2.0.conv1.weight  res2.0.norm1.*  ...  res2.0.conv3.weight  res2.0.norm3.*
    res2.0.shortcut.conv.weight  res2.0.shortcut.norm.*
    linear.weight  linear.bias                 (only with "linear" in out_features)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from densenets.config import BACKBONES
from densenets.layers import DropPath, ShapeSpec, conv_norm_act, freeze_batchnorm, get_norm
from densenets.ops import DeformConv2d, ModulatedDeformConv2d

from .base import Backbone

__all__ = ["ResNet", "ResNetStem", "BasicBlock", "Bottleneck", "PRESETS", "conv3x3_class"]

logger = logging.getLogger(__name__)

STAGES = ("res2", "res3", "res4", "res5")
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_FEATURES = ("stem", *STAGES, "pool", "linear")

# Named members of the family: keyword arguments for `ResNet.from_name`.
PRESETS: dict[str, dict] = {
    **{f"resnet{d}": {"depth": d} for d in _DEPTHS},
    "resnext50_32x4d": {"depth": 50, "groups": 32, "width_per_group": 4},
    "resnext101_32x8d": {"depth": 101, "groups": 32, "width_per_group": 8},
    "resnext101_64x4d": {"depth": 101, "groups": 64, "width_per_group": 4},
    "wide_resnet50_2": {"depth": 50, "width_per_group": 128},
    "wide_resnet101_2": {"depth": 101, "width_per_group": 128},
    "resnet50d": {"depth": 50, "deep_stem": True, "avg_down": True},
    "resnet101d": {"depth": 101, "deep_stem": True, "avg_down": True},
    # mmsegmentation's ResNetV1c: the deep stem alone (plain strided shortcuts).
    "resnet50v1c": {"depth": 50, "deep_stem": True},
    "resnet101v1c": {"depth": 101, "deep_stem": True},
}


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1
):
    padding = dilation * (kernel_size - 1) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)


# A 3x3 conv class for a bottleneck: called like `nn.Conv2d(in, out, 3, stride=,
# padding=, dilation=, groups=, bias=False)`; `DeformConv2d` and `ModulatedDeformConv2d`
# take the same arguments and predict their own offsets (and mask).
ConvClass = Callable[..., nn.Module]


def conv3x3_class(deformable: bool = False, modulated: bool = False) -> ConvClass:
    """The 3x3 conv of a bottleneck: `nn.Conv2d`, `DeformConv2d` (DCNv1, Dai et al.)
    or `ModulatedDeformConv2d` (DCNv2, Zhu et al.)."""
    if not deformable:
        return nn.Conv2d
    return ModulatedDeformConv2d if modulated else DeformConv2d


class _Shortcut(nn.Module):
    """Projection shortcut: 1x1 conv + norm, after a 2x2 average pool for ResNet-D."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, norm: str | dict, avg_down: bool
    ) -> None:
        super().__init__()
        pool = avg_down and stride > 1
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if pool else None
        self.conv = _conv(in_channels, out_channels, 1, 1 if pool else stride)
        self.norm = get_norm(norm, out_channels)
        self.fuse_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        return conv_norm_act(x, self.conv, self.norm, fuse=self.fuse_norm)


class _ResidualBlock(nn.Module):
    """What both blocks share: a branch of `num_convs` conv + norm (+ ReLU but the last),
    the projection shortcut, stochastic depth, the final ReLU."""

    num_convs: int  # the branch is conv1/norm1 .. conv{num_convs}/norm{num_convs}

    @property
    def last_norm(self) -> nn.Module:
        """The branch's last norm (zero-initialised by ``zero_init_residual``)."""
        return getattr(self, f"norm{self.num_convs}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.num_convs + 1):
            act = self.relu if i < self.num_convs else None
            out = conv_norm_act(
                out, getattr(self, f"conv{i}"), getattr(self, f"norm{i}"), act, self.fuse_norm
            )
        return self._residual(out, x)

    def _init_residual(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm: str | dict,
        drop_path: float,
        avg_down: bool,
    ) -> None:
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = _Shortcut(in_channels, out_channels, stride, norm, avg_down)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else None
        self.relu = nn.ReLU(inplace=True)
        self.fuse_norm = True

    def _residual(self, branch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """relu(drop_path(branch) + shortcut(x))."""
        identity = x if self.shortcut is None else self.shortcut(x)
        if self.drop_path is not None:
            branch = self.drop_path(branch)
        # `branch` is a fresh tensor that no backward needs, so it can be updated in place.
        return branch.add_(identity).relu_()


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv.
        dilation: dilation of both convs.
        norm: `get_norm` spec.
        drop_path: stochastic-depth drop probability of the residual branch.
        avg_down: ResNet-D shortcut (average pool, then a stride-1 1x1 conv).
    """

    num_convs = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        norm: str | dict = "BN",
        drop_path: float = 0.0,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, stride, dilation)
        self.norm1 = get_norm(norm, out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3, 1, dilation)
        self.norm2 = get_norm(norm, out_channels)
        self._init_residual(in_channels, out_channels, stride, norm, drop_path, avg_down)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3 (grouped, dilated or deformable), 1x1 expand, plus a shortcut.

    Args:
        in_channels: input channels.
        out_channels: output channels (4x the bottleneck of a standard ResNet).
        bottleneck_channels: channels of the 3x3 conv.
        stride: stride of the block.
        dilation: dilation of the 3x3 conv.
        groups: groups of the 3x3 conv (ResNeXt cardinality).
        stride_in_1x1: put the stride on the first 1x1 conv (MSRA/detectron2) instead of the
            3x3 conv (torchvision, "ResNet v1.5").
        norm: `get_norm` spec.
        conv3x3: the class of the 3x3 conv, called like `nn.Conv2d` (``(in, out, 3,
            stride=, padding=, dilation=, groups=, bias=False)``): `nn.Conv2d`, or
            `DeformConv2d` / `ModulatedDeformConv2d` for DCNv1 / DCNv2 (see `conv3x3_class`).
        drop_path: stochastic-depth drop probability of the residual branch.
        avg_down: ResNet-D shortcut (average pool, then a stride-1 1x1 conv).
    """

    num_convs = 3

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        stride_in_1x1: bool = False,
        norm: str | dict = "BN",
        conv3x3: ConvClass = nn.Conv2d,
        drop_path: float = 0.0,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        width = bottleneck_channels
        self.conv1 = _conv(in_channels, width, 1, stride_1x1)
        self.norm1 = get_norm(norm, width)
        self.conv2 = conv3x3(
            width, width, 3, stride=stride_3x3, padding=dilation, dilation=dilation, groups=groups, bias=False
        )
        self.norm2 = get_norm(norm, width)
        self.conv3 = _conv(width, out_channels, 1)
        self.norm3 = get_norm(norm, out_channels)
        self._init_residual(in_channels, out_channels, stride, norm, drop_path, avg_down)


class ResNetStem(nn.Module):
    """7x7/2 conv (or the ResNet-C deep stem: three 3x3 convs), norm, ReLU, 3x3/2 max pool.

    Args:
        in_channels: image channels.
        out_channels: stem output channels (64 in every standard model).
        norm: `get_norm` spec.
        deep: three 3x3 convs (out/2, out/2, out channels) instead of one 7x7 conv.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 64, norm: str | dict = "BN", deep: bool = False
    ) -> None:
        super().__init__()
        if deep:
            mid = out_channels // 2
            self.conv1 = _conv(in_channels, mid, 3, 2)
            self.norm1 = get_norm(norm, mid)
            self.conv2 = _conv(mid, mid, 3)
            self.norm2 = get_norm(norm, mid)
            self.conv3 = _conv(mid, out_channels, 3)
            self.norm3 = get_norm(norm, out_channels)
            self.num_convs = 3
        else:
            self.conv1 = _conv(in_channels, out_channels, 7, 2)
            self.norm1 = get_norm(norm, out_channels)
            self.num_convs = 1
        self.relu = nn.ReLU(inplace=True)
        self.fuse_norm = True
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, out_channels, H / 4, W / 4]."""
        for i in range(1, self.num_convs + 1):
            x = conv_norm_act(
                x, getattr(self, f"conv{i}"), getattr(self, f"norm{i}"), self.relu, self.fuse_norm
            )
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


@BACKBONES.register()
class ResNet(Backbone):
    """ResNet / ResNeXt / Wide ResNet / ResNet-D backbone returning a dict of features.

    Args:
        depth: 18, 34 (basic blocks) or 50, 101, 152 (bottlenecks).
        out_features: features to return, in ``stem``, ``res2``..``res5``, ``pool``
            (Tensor[N, C] global average) and ``linear`` (Tensor[N, num_classes] logits).
            Stages after the last requested one are not built.
        norm: "BN", "SyncBN", "FrozenBN", "GN" or a `get_norm` dict.
        freeze_at: 0 trains everything; 1 freezes the stem; k freezes the stem and
            res2..res(k). Frozen parameters get ``requires_grad=False`` and their norms
            stay in eval mode through ``train()``.
        stride_in_1x1: stride on the first 1x1 conv of a bottleneck (MSRA/detectron2
            checkpoints) instead of the 3x3 conv (torchvision/timm checkpoints).
        output_stride: 32, 16 or 8; the strides of res5 (16) or res4 and res5 (8) become
            dilations, as DeepLab and DETR-DC5 use.
        multi_grid: per-block dilation multipliers of res5 (e.g. [1, 2, 4]).
        contract_dilation: the first block of a dilated stage uses half its dilation
            (torchvision's ``replace_stride_with_dilation`` layout).
        groups: 3x3 conv groups (ResNeXt cardinality).
        width_per_group: bottleneck width per group in res2 (64 standard, 128 wide).
        deep_stem: ResNet-C stem (three 3x3 convs, 3 -> 32 -> 32 -> 64); without
            `avg_down` this is mmsegmentation's ResNetV1c, with it ResNet-D (V1d).
        avg_down: ResNet-D shortcut (2x2 average pool before a stride-1 1x1 conv).
        stage_with_dcn: per stage (res2..res5), whether its 3x3 convs are deformable
            (`DeformConv2d`, see `conv3x3_class`).
        dcn_modulated: modulated DCNv2 instead of DCNv1.
        drop_path_rate: stochastic depth; the rate grows linearly from 0 at the first
            block to this value at the last.
        zero_init_residual: initialise the last norm of each residual branch to zero, so
            every block starts as the identity.
        num_classes: outputs of ``linear``.
        weights: initialisation weights: None, a checkpoint path,
            ``torchvision://resnet50`` or ``detectron2://ImageNetPretrained/MSRA/R-50.pkl``
            (see `load_weights`). Kept as a spec, not loaded here: `load_pretrained()`
            loads it, which the training launcher calls when a run starts from it.
        fuse_frozen_bn: fold frozen norms into the preceding conv at forward time
            (same result up to float rounding; faster).
        channels_last: keep weights and activations in channels-last (NHWC) memory
            format; faster for inference on CPUs and with mixed precision on GPUs. The
            returned features are then channels-last tensors (same shapes and values).
            ``"eval"``: channels-last in eval mode only; `train()` converts the weights
            to NCHW and `eval()` back (the same parameters). On some CPUs oneDNN's
            channels-last convolution backward is slower than NCHW's (1.5-6x for ResNet-50
            res3-res5 at 800 x 1067 on an AMD EPYC: docs/backbones.md).
    """

    def __init__(
        self,
        depth: int = 50,
        out_features: Sequence[str] = STAGES,
        norm: str | dict = "BN",
        freeze_at: int = 0,
        stride_in_1x1: bool = False,
        output_stride: int = 32,
        multi_grid: Sequence[int] | None = None,
        contract_dilation: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        deep_stem: bool = False,
        avg_down: bool = False,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        dcn_modulated: bool = False,
        drop_path_rate: float = 0.0,
        zero_init_residual: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        weights: str | None = None,
        fuse_frozen_bn: bool = True,
        channels_last: bool | Literal["eval"] = False,
    ) -> None:
        super().__init__()
        _check_args(depth, out_features, freeze_at, output_stride, groups, width_per_group, stage_with_dcn)
        self.depth = depth
        self.out_features = list(out_features)
        self.stem = ResNetStem(in_channels, 64, norm, deep_stem)
        wanted = [f for f in self.out_features if f in STAGES]
        last = (
            3
            if {"pool", "linear"} & set(self.out_features)
            else max((STAGES.index(f) for f in wanted), default=-1)
        )
        self.stage_names = list(STAGES[: last + 1])
        self._shapes = {"stem": ShapeSpec(64, 4)}
        blocks = _DEPTHS[depth]
        dpr = _linear_rates(drop_path_rate, sum(blocks[: last + 1]))
        in_ch, stride, dilation = 64, 4, 1
        for i, name in enumerate(self.stage_names):
            first_stride, dilation, dilations = _stage_dilations(
                i, blocks[i], stride, dilation, output_stride, multi_grid, contract_dilation
            )
            stride *= first_stride
            out_ch = 64 * 2**i * (1 if depth < 50 else 4)
            stage = []
            for b in range(blocks[i]):
                common = {
                    "dilation": dilations[b],
                    "norm": norm,
                    "drop_path": dpr.pop(0),
                    "avg_down": avg_down,
                }
                if depth < 50:
                    block = BasicBlock(in_ch, out_ch, first_stride if b == 0 else 1, **common)
                else:
                    width = width_per_group * groups * 2**i
                    conv3x3 = conv3x3_class(stage_with_dcn[i], dcn_modulated)
                    block = Bottleneck(in_ch, out_ch, width, first_stride if b == 0 else 1, groups=groups,
                                       stride_in_1x1=stride_in_1x1, conv3x3=conv3x3, **common)  # fmt: skip
                stage.append(block)
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*stage))
            self._shapes[name] = ShapeSpec(out_ch, stride)
        if {"pool", "linear"} & set(self.out_features):
            self._shapes["pool"] = ShapeSpec(in_ch, 0)
        if "linear" in self.out_features:
            self.linear = nn.Linear(in_ch, num_classes)
            self._shapes["linear"] = ShapeSpec(num_classes, 0)
        self.size_divisibility = max(
            (s.stride for f, s in self._shapes.items() if f in self.out_features), default=0
        )
        self._init_weights(zero_init_residual)
        self.set_fuse_frozen_bn(fuse_frozen_bn)
        self.freeze_at = freeze_at
        self._freeze()
        self.weights = weights
        self.channels_last = channels_last
        self._set_memory_format()

    @classmethod
    def from_name(cls, name: str, **kwargs) -> ResNet:
        """Build a named member of the family (`PRESETS`), e.g. ``"resnext50_32x4d"``."""
        if name not in PRESETS:
            raise KeyError(f"unknown ResNet preset {name!r} (one of {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **kwargs})

    def load_pretrained(self) -> None:
        """Load the `weights` spec (no-op without one); missing/unused keys are logged."""
        if self.weights:
            from densenets.checkpoint.weights import load_weights

            load_weights(self, self.weights)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for name, m in self.named_modules():
            if name.endswith("conv_offset"):  # DCN offset predictors stay zero-initialised
                continue
            if isinstance(m, nn.Conv2d) or hasattr(m, "deform_groups"):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if (
                    isinstance(m, (BasicBlock, Bottleneck))
                    and getattr(m.last_norm, "weight", None) is not None
                ):
                    with torch.no_grad():
                        m.last_norm.weight.zero_()

    def set_fuse_frozen_bn(self, enabled: bool) -> None:
        """Turn the folding of frozen norms into convs on or off (bit-exact unfused maths)."""
        for m in self.modules():
            if hasattr(m, "fuse_norm"):
                m.fuse_norm = enabled

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *(getattr(self, s) for s in self.stage_names)][: self.freeze_at]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
            freeze_batchnorm(module)

    def train(self, mode: bool = True) -> ResNet:
        """Set the training mode; norms of frozen stages stay in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            freeze_batchnorm(module)
        self._set_memory_format()
        return self

    def _nhwc(self) -> bool:
        """Channels-last now: always (``True``), or in eval mode (``"eval"``)."""
        return self.channels_last is True or (self.channels_last == "eval" and not self.training)

    def _set_memory_format(self) -> None:
        fmt = torch.channels_last if self._nhwc() else torch.contiguous_format
        if self.channels_last and not self.stem.conv1.weight.is_contiguous(memory_format=fmt):
            self.to(memory_format=fmt)

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every returned feature (stride 0: ``pool``/``linear`` vectors)."""
        return {f: self._shapes[f] for f in self.out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the requested features.

        Args:
            x (Tensor[N, C, H, W]): normalised images.

        Returns:
            dict: ``stem``/``resK`` -> Tensor[N, C_k, H / s_k, W / s_k] (rounded up),
            ``pool`` -> Tensor[N, C], ``linear`` -> Tensor[N, num_classes].
        """
        if x.dim() != 4:
            raise ValueError(f"ResNet expects a [N, C, H, W] tensor, got shape {tuple(x.shape)}")
        if self._nhwc():
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = {}
        x = self.stem(x)
        if "stem" in self.out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        if "pool" in self._shapes:
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            if "pool" in self.out_features:
                outputs["pool"] = x
            if "linear" in self.out_features:
                outputs["linear"] = self.linear(x)
        return outputs


def _check_args(
    depth, out_features, freeze_at, output_stride, groups, width_per_group, stage_with_dcn
) -> None:
    if depth not in _DEPTHS:
        raise ValueError(f"depth: must be one of {', '.join(map(str, _DEPTHS))}, got {depth}")
    for f in out_features:
        if f not in _FEATURES:
            raise ValueError(f"out_features: unknown feature {f!r} (one of {', '.join(_FEATURES)})")
    if not out_features:
        raise ValueError("out_features: must name at least one feature")
    if not 0 <= freeze_at <= 5:
        raise ValueError(f"freeze_at: must be in 0..5, got {freeze_at}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride: must be 32, 16 or 8, got {output_stride}")
    if len(stage_with_dcn) != 4:
        raise ValueError(f"stage_with_dcn: needs 4 entries (res2..res5), got {len(stage_with_dcn)}")
    if depth < 50 and (groups != 1 or width_per_group != 64 or any(stage_with_dcn)):
        raise ValueError(
            f"depth {depth}: basic blocks support neither groups/width_per_group nor stage_with_dcn"
        )


def _stage_dilations(i, num_blocks, stride, dilation, output_stride, multi_grid, contract):
    """Stride of stage i's first block, the stage's dilation and each block's dilation.

    `stride`/`dilation` are the input stride and the dilation reached before stage i.
    """
    first_stride = 1 if i == 0 else 2
    first = dilation
    if first_stride == 2 and stride * 2 > output_stride:
        first_stride, dilation = 1, dilation * 2
        first = dilation // 2 if contract else dilation
    dilations = [first] + [dilation] * (num_blocks - 1)
    if i == 3 and multi_grid:
        if len(multi_grid) != num_blocks:
            raise ValueError(f"multi_grid: res5 has {num_blocks} blocks, got {len(multi_grid)} rates")
        dilations = [dilation * g for g in multi_grid]
    return first_stride, dilation, dilations


def _linear_rates(rate: float, n: int) -> list[float]:
    return [rate * i / max(n - 1, 1) for i in range(n)]
