"""`custom_imports`: the user's own modules, imported before a config is checked.

A module that registers a dataset, model or evaluator (``@DATASETS.register()``) makes
it usable from every tool once the experiment file lists it::

    custom_imports: [my_project.my_datasets]

or, without editing the file, ``+custom_imports=[my_project.my_datasets]`` on the
command line. Modules are imported by name, as ``import`` would; the working
directory is searched too (after the rest of ``sys.path``), so a package in the folder
the tools run from needs no install and no ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from types import ModuleType

from .registry import ConfigError

__all__ = ["import_custom_modules"]


def import_custom_modules(cfg: Mapping) -> list[ModuleType]:
    """Import every module named in ``cfg["custom_imports"]`` (none when absent).

    Raises:
        ConfigError: the value is not a list of names, or a module fails to import
            (one line naming the module and the reason).
    """
    names = cfg.get("custom_imports") or []
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"custom_imports: must be a list of module names, got {names!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported the same way
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            raise ConfigError(f"custom_imports: cannot import {name!r} ({reason})") from e
    return modules
