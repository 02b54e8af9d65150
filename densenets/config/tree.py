"""Which class checks each dict of a config tree, found without building anything.

A dict is checked against the constructor of

* the component its `type` names (in any registry), else
* the class registered for it with `register_section` (top-level sections), else
* the class its parent's constructor annotates for that key: `matcher: Matcher`,
  `loss: SemSegLoss | Mapping | None`, `optimizer: OptimizerConfig` (`build.known_class`).

So `validate_config` (run by `load_config`) checks every key of the whole model tree,
e.g. ``model.rpn.anchor_generator.sizs: unknown key, did you mean sizes?``. Where no
class is known (an annotation that names no single class, a registered base class that
takes ``**kwargs``), only the keys above it are checked, and the sub-dicts below it that
carry a `type`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .build import check_keys, join_path, known_class, valid_keys
from .registry import SECTION_SCHEMAS, find_component
from .types import type_hints

__all__ = ["schema_for", "check_tree"]


def schema_for(
    node: Any, path: str, parent: Callable | None = None, key: str | None = None
) -> Callable | None:
    """The class whose constructor lists the valid keys of `node`, the dict at `path`.

    Args:
        node: the dict (or None: a sub-dict a key override is about to create).
        path: its key path (`train`, `model.rpn.matcher`).
        parent: the class that checks the dict holding `node`, if known.
        key: `node`'s key in that dict.
    """
    if isinstance(node, Mapping) and isinstance(node.get("type"), str):
        component = find_component(node["type"])
        if component is not None:
            return component
    if path in SECTION_SCHEMAS:
        return SECTION_SCHEMAS[path]
    if parent is None or key is None:
        return None
    cls = known_class(type_hints(parent).get(key))
    return cls if cls is not None and _has_signature(cls) else None


def _has_signature(cls: type) -> bool:
    """Whether the constructor's arguments can be read (not so for some C types)."""
    try:
        valid_keys(cls)
    except (TypeError, ValueError):
        return False
    return True


def check_tree(node: Any, path: str = "", schema: Callable | None = None) -> None:
    """Check every dict below `node` against its class (`schema_for`), keys and value
    types, without requiring arguments (a `from_config` computes some).

    Raises:
        ConfigError: naming the full key path, with the closest valid key for a typo.
    """
    if isinstance(node, Mapping):
        if schema is not None:
            check_keys(node, schema, path, require=False)
        for key, value in node.items():
            child = join_path(path, key)
            if isinstance(value, (Mapping, list)):
                check_tree(value, child, schema_for(value, child, schema, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            child = join_path(path, i)
            check_tree(value, child, schema_for(value, child))
