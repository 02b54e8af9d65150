"""Value checks for config keys from the type hints of the class that takes them.

`check_value(value, annotation, path)` raises a one-line `ConfigError` naming the key,
the value and what is allowed, e.g. ``train.seed: expected an integer, got 'abc'``.
Only what a YAML value can be is checked (numbers, strings, booleans, null, lists,
mappings and unions of those); an annotation naming anything else (a module, a
callable) accepts every value, since `from_config` turns config dicts into such objects.
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["check_value", "type_hints", "describe", "is_union", "POSITIVE_KEYS"]

# Constructor arguments that must be positive integers wherever they appear.
POSITIVE_KEYS = frozenset(
    {
        "num_classes",
        "in_channels",
        "out_channels",
        "channels",
        "hidden_dim",
        "num_queries",
        "batch_size_per_image",
    }
)

_SEQUENCES = (list, tuple, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def type_hints(obj: Callable) -> dict[str, Any]:
    """Resolved annotations of `obj` (a class's `__init__` or a function); unresolvable
    ones are left out, so they accept anything."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a name only imported for type checkers
        pass
    hints = {}
    globalns = getattr(target, "__globals__", {})
    for name, ann in getattr(target, "__annotations__", {}).items():
        try:
            hints[name] = eval(ann, globalns) if isinstance(ann, str) else ann  # noqa: S307 - annotations only
        except Exception:  # noqa: BLE001
            continue
    return hints


def is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _matches(value: Any, tp: Any) -> bool:
    """Whether `value` fits `tp`; True for annotations a config value cannot be checked against."""
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if tp is type(None) or tp is None:
        return value is None
    if is_union(tp):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in _SEQUENCES or origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_matches(v, a) for v, a in zip(value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return isinstance(value, Mapping)
    return True  # a class the config cannot express directly (built by from_config)


def describe(tp: Any) -> str:
    """Words for what `tp` allows: `an integer`, `a list of numbers`, `null`, ..."""
    if is_union(tp):
        return " or ".join(dict.fromkeys(describe(a) for a in typing.get_args(tp)))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if tp in _SEQUENCES or origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {_plural(args[0])}" if args else "a list"
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return "a mapping"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    words = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
    if tp in words:
        return words[tp]
    text = describe(tp)
    return "lists" + text[len("a list") :] if text.startswith("a list") else text


def check_value(value: Any, annotation: Any, path: str) -> None:
    """Raise ConfigError when `value` does not fit `annotation` (or a positive-key rule)."""
    from .build import ConfigError

    if not _matches(value, annotation):
        raise ConfigError(f"{path}: expected {describe(annotation)}, got {value!r}")
    key = path.rsplit(".", 1)[-1]
    if key in POSITIVE_KEYS and isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ConfigError(f"{path}: expected a positive integer, got {value!r}")
