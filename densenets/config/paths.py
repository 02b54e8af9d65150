"""Where experiment configs are: the current folder first, then the configs that come with
densenets, so `--config configs/detection/x.yaml` works from any folder once installed.

An installed package (`pip install .`, a wheel) carries them as `densenets/configs/`
(setup.py copies `configs/` there at build time); a source checkout (editable install,
`make`) has them in `<checkout>/configs/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .registry import ConfigError

__all__ = ["bundled_config_dirs", "find_config", "bundled_config"]

_PACKAGE = Path(__file__).resolve().parents[1]


def bundled_config_dirs() -> list[Path]:
    """The folders holding densenets' own configs: `densenets/configs` when installed,
    `<checkout>/configs` in a source tree (recognised by its setup.py)."""
    dirs = [_PACKAGE / "configs"]
    if (_PACKAGE.parent / "setup.py").is_file():
        dirs.append(_PACKAGE.parent / "configs")
    return [d for d in dirs if d.is_dir()]


def _relative_to_configs(path: Path) -> Path:
    """`configs/a/b.yaml` -> `a/b.yaml`; other relative paths stay as they are."""
    return Path(*path.parts[1:]) if len(path.parts) > 1 and path.parts[0] == "configs" else path


def find_config(path: str | os.PathLike) -> Path:
    """`path` itself when it exists (or is absolute), else the bundled config of that name
    (`configs/x/y.yaml` or `x/y.yaml`), else `path` unchanged (so the error names it)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    rel = _relative_to_configs(path)
    for root in bundled_config_dirs():
        if (root / rel).is_file():
            return root / rel
    return path


def bundled_config(path: str | os.PathLike) -> Path:
    """The bundled config `path` (`configs/x/y.yaml` or `x/y.yaml`), ignoring the current folder.

    Raises:
        ConfigError: no bundled config of that name.
    """
    rel = _relative_to_configs(Path(path))
    for root in bundled_config_dirs():
        if (root / rel).is_file():
            return root / rel
    looked = ", ".join(str(d) for d in bundled_config_dirs()) or "no configs folder installed"
    raise ConfigError(f"{path}: not among the bundled configs ({looked})")
