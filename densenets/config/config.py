"""YAML experiment configs: `_base_` inheritance, dotted overrides, checked keys.

One file describes a whole experiment (`model`, `data`, `train`, `evaluation`,
`infer`). Rules:

* `_base_: path` or `_base_: [paths]` (relative to the file) merge first, in order;
  the file's own keys merge last. Dicts merge deeply, lists and scalars replace, and a
  dict holding `_delete_: true` replaces what it overrides instead of merging.
* Overrides are `key.sub=value` strings with YAML values. An override must name a key
  that exists or an argument of the component its dict builds (`type` looked up in the
  registries, defaults live in the constructor); `+key=value` adds a key on purpose.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .build import ConfigError, did_you_mean, join_path, to_plain, valid_keys
from .custom_imports import import_custom_modules
from .paths import find_config
from .tree import check_tree, schema_for

# The sections of an experiment file; top-level keys starting with `_` are the user's
# own (e.g. YAML anchors) and left alone.
TOP_LEVEL_KEYS = ("model", "data", "train", "evaluation", "infer", "custom_imports")

__all__ = [
    "TOP_LEVEL_KEYS",
    "ConfigNode",
    "load_config",
    "dump_config",
    "apply_overrides",
    "parse_value",
    "validate_config",
]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class ConfigNode(dict):
    """A dict with attribute access that remembers its key path (for error messages)."""

    def __init__(self, data: Mapping | None = None, key_path: str = "") -> None:
        super().__init__()
        object.__setattr__(self, "_key_path", key_path)
        for k, v in (data or {}).items():
            self[k] = v

    def _child_path(self, key: Any) -> str:
        return join_path(self._key_path, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _wrap(value, self._child_path(key)))

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{self._child_path(key)}: no such key") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __deepcopy__(self, memo: dict) -> ConfigNode:
        return ConfigNode(copy.deepcopy(dict(self), memo), self._key_path)

    def __reduce__(self):
        return (ConfigNode, (dict(self), self._key_path))

    def get_path(self) -> str:
        return self._key_path

    def to_dict(self) -> dict:
        """A plain nested dict/list copy (for YAML, checkpoints and constructors)."""
        return to_plain(self)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, other: Mapping = (), **kw: Any) -> None:  # type: ignore[override]
        for k, v in dict(other, **kw).items():
            self[k] = v


def _wrap(value: Any, path: str) -> Any:
    if isinstance(value, ConfigNode) and value._key_path == path:
        return value
    if isinstance(value, Mapping):
        return ConfigNode(value, path)
    if isinstance(value, (list, tuple)):
        return [_wrap(v, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (`0.01`, `1e-4`, `[640, 800]`, `{a: 1}`, `null`)."""
    return yaml.load(text, Loader=_Loader)


def _merge(base: dict, new: Mapping) -> dict:
    """Deep-merge `new` into a copy of `base`; `_delete_: true` replaces instead."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping):
            value = dict(value)
            delete = value.pop("_delete_", False)
            if not delete and isinstance(out.get(key), Mapping):
                out[key] = _merge(out[key], value)
            else:
                out[key] = _merge({}, value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, chain: list[Path]) -> dict:
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        via = " -> ".join(str(p) for p in chain)
        raise ConfigError(f"{path}: config file not found" + (f" (base of {via})" if via else "")) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return dict(data)


def _load_file(path: Path, chain: list[Path]) -> dict:
    path = Path(os.path.normpath(path.absolute()))
    if path in chain:
        cycle = " -> ".join(str(p) for p in [*chain[chain.index(path) :], path])
        raise ConfigError(f"_base_ cycle: {cycle}")
    data = _read_yaml(path, chain)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_: expected a path or a list of paths, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _load_file(path.parent / base, [*chain, path]))
    return _strip_delete(_merge(merged, data))


def _strip_delete(d: Any) -> Any:
    if isinstance(d, Mapping):
        return {k: _strip_delete(v) for k, v in d.items() if k != "_delete_"}
    if isinstance(d, list):
        return [_strip_delete(v) for v in d]
    return d


def _check_new_key(node: Mapping, key: str, path: str, schema, add: bool, created: bool) -> None:
    """May an override add `key` to `node`? Keys of a checked dict (one `schema` checks:
    a registered section, a component with `type`, a sub-dict its parent annotates) must
    be its constructor's arguments, with or without `+`; elsewhere `+` adds any key and a
    plain override must name an existing key, unless `node` was made by this override."""
    full = join_path(path, key)
    if not path:  # the root holds the experiment's sections
        if key in TOP_LEVEL_KEYS or key.startswith("_"):
            return
        raise ConfigError(_unknown_section(key))
    if schema is not None:
        keys, var_kw = valid_keys(schema)
        if var_kw or key in keys:
            return
        message = f"{full}: unknown key" + did_you_mean(key, keys | set(node))
        if add:
            allowed = ", ".join(sorted(keys - {"type"}))
            message += f" ({path} is a checked section: {key} is not one of {allowed})"
        raise ConfigError(message)
    if add or created:
        return
    raise ConfigError(f"{full}: unknown key" + did_you_mean(key, set(node)) + f" (to add it: +{full}=...)")


def _unknown_section(key: str) -> str:
    return (
        f"{key}: unknown top-level section{did_you_mean(key, set(TOP_LEVEL_KEYS))} "
        f"(sections: {', '.join(TOP_LEVEL_KEYS)}; keys starting with _ are free)"
    )


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply `key.sub=value` / `+key.sub=value` strings to a plain nested dict, in place.

    A section or sub-dict missing on the way is created (`infer.visualizer.x=1` in a
    config without `infer`); each new key is checked as `_check_new_key` says.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, text = item.split("=", 1)
        add = key.startswith("+")
        parts = key.lstrip("+").strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key")
        node: Any = cfg
        created = False
        schema = None
        for depth, part in enumerate(parts):
            path = ".".join(parts[:depth])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{'.'.join(parts[: depth + 1])}: no such list index")
                part = int(part)
            elif part not in node:
                _check_new_key(node, part, path, schema, add, created)
                if not last:
                    node[part], created = {}, True
            if last:
                node[part] = parse_value(text)
                break
            if node[part] is None:  # `train.ema: null` overridden by `train.ema.decay=0.99`
                node[part], created = {}, True
            schema = schema_for(node[part], join_path(path, part), schema, str(part))
            node = node[part]
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, not a mapping")
    return cfg


def validate_config(cfg: Mapping) -> None:
    """Check the top-level sections, and every dict of the tree whose class is known (a
    registered `type`, a registered section, a sub-dict its parent's constructor
    annotates; see tree.py) against that constructor's signature and type hints.

    Raises:
        ConfigError: naming the key path (and the closest valid key, for a typo).
    """
    for key in cfg:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("_"):
            raise ConfigError(_unknown_section(str(key)))
    check_tree(cfg)


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (), validate: bool = True) -> ConfigNode:
    """Load a YAML config with its `_base_` files and apply overrides.

    Args:
        path: the experiment file; a relative path that does not exist from the current
            folder is looked up among the bundled configs (`configs/x.yaml`, see paths.py).
        overrides: `key.sub=value` strings (values parsed as YAML); `+key=value` adds.
        validate: check keys against the registered constructors' signatures.

    Returns:
        The merged config as a ConfigNode.

    Validation reads the registries: call `densenets.register_all()` once first (the tools
    do), or import the packages whose components the config names.
    """
    data = _load_file(find_config(path), [])
    import_custom_modules(data)
    apply_overrides(data, overrides)
    import_custom_modules(data)  # also those added by a `+custom_imports=[...]` override
    if validate:
        validate_config(data)
    return ConfigNode(data)


def dump_config(cfg: Mapping, path: str | os.PathLike) -> None:
    """Write the fully merged config; `load_config(path)` gives it back unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        yaml.safe_dump(to_plain(cfg), f, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)
