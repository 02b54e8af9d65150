"""Import the official Deformable-DETR and DINO code on CPU, for parity tests.

The sources are not part of densenets: set ``DEFORMABLE_DETR_SRC`` and ``DINO_SRC`` to
a checkout (or a bare git directory) of fundamentalvision/Deformable-DETR and
IDEA-Research/DINO; the tests that need them skip otherwise. A copy in a temporary
directory gets three small edits so that it runs here:

* ``util/misc.py`` reads ``float(torchvision.__version__[:3])``, which takes torchvision
  0.2x for 0.2 and imports helpers torchvision no longer has: the check reads 99;
* the compiled CUDA extension ``MultiScaleDeformableAttention`` is replaced by a module
  whose forward is the repository's own ``ms_deform_attn_core_pytorch`` (its
  ``grid_sample`` path, what the authors test the kernel against);
* DINO: ``timm`` (imported by its Swin/ConvNeXt backbones, unused here) is stubbed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

_TOP_LEVEL = ("models", "util", "datasets", "MultiScaleDeformableAttention", "timm")


def official_tree(env: str, tmp_dir: Path) -> Path:
    """A patched copy of the repository named by the environment variable `env`."""
    src = os.environ.get(env)
    if not src:
        pytest.skip(f"{env} is not set (a checkout of the official repository)")
    src_path, dst = Path(src), tmp_dir / env.lower()
    if dst.exists():
        return dst
    if (src_path / "models").is_dir():
        shutil.copytree(src_path, dst, ignore=shutil.ignore_patterns(".git"))
    else:  # a bare git directory
        dst.mkdir(parents=True)
        archive = subprocess.run(
            ["git", f"--git-dir={src_path}", "archive", "HEAD"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    misc = dst / "util" / "misc.py"
    misc.write_text(misc.read_text().replace("float(torchvision.__version__[:3])", "99.0"))
    return dst


def _msda_stub() -> types.ModuleType:
    def forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
        funcs = next(
            m for name, m in sys.modules.items() if name.endswith("ops.functions.ms_deform_attn_func")
        )
        shapes = [(int(h), int(w)) for h, w in spatial_shapes]
        return funcs.ms_deform_attn_core_pytorch(value, shapes, sampling_locations, attention_weights)

    stub = types.ModuleType("MultiScaleDeformableAttention")
    stub.ms_deform_attn_forward = forward
    return stub


def _timm_stub() -> dict[str, types.ModuleType]:
    timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    layers.DropPath = torch.nn.Identity
    layers.to_2tuple = lambda x: (x, x)
    timm.models, models.layers = models, layers
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


@contextlib.contextmanager
def official_imports(root: Path):
    """Make `root`'s top-level packages importable; restore sys.modules and sys.path after."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] in _TOP_LEVEL}
    sys.modules["MultiScaleDeformableAttention"] = _msda_stub()
    sys.modules.update(_timm_stub())
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for k in [k for k in sys.modules if k.split(".")[0] in _TOP_LEVEL]:
            del sys.modules[k]
        sys.modules.update(saved)


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Perturb every parameter (the zero-initialised heads and attention weights too) and
    give frozen BatchNorms non-trivial statistics, so that parity covers every weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(
                torch.randn(p.shape, generator=g, dtype=p.dtype)
                * (0.02 if name.startswith("backbone") else 0.1)
            )
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5, generator=g)
            elif name.endswith("running_mean"):
                b.uniform_(-0.1, 0.1, generator=g)


def photo_crops() -> list[torch.Tensor]:
    """Two differently sized uint8 [3, H, W] crops of skimage's coffee photo (a padded batch)."""
    import skimage.data

    photo = torch.from_numpy(skimage.data.coffee().copy()).permute(2, 0, 1)
    return [photo[:, 120:216, 180:324].contiguous(), photo[:, 60:140, 220:340].contiguous()]


def official_input(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """ImageNet-normalised float64 images, the official data pipeline's last step."""
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(3, 1, 1)
    return [(i.double() / 255 - mean) / std for i in images]
