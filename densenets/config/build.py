"""Config -> object: the one mechanism every config dict goes through.

* `build(cfg, registry, **extra)`: a dict with `type` naming a registered component.
* `instantiate(cls, cfg, path, **extra)`: an untyped sub-dict (no `type`) built into a
  class the caller knows (a matcher, a transformer, a loss, a typed section).

Both check every key against the constructor's signature and every value against its
type hints before calling it, honour `from_config` (which ends with `construct`, the
constructor call itself), and raise a one-line `ConfigError` naming the full key path
and, for a misspelt key, the closest valid one. Defaults live only in signatures: a
sub-dict for an argument annotated with a dataclass lists what it changes from that
argument's default (`config_value` reads a default a `from_config` needs). The helpers
for the messages (`did_you_mean`, `join_path`, `key_path`) and `to_plain` live here once.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .types import check_value, is_union, type_hints

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "ConfigError",
    "build",
    "instantiate",
    "check_keys",
    "valid_keys",
    "required_keys",
    "closest",
    "did_you_mean",
    "join_path",
    "key_path",
    "to_plain",
    "construct",
    "known_class",
    "config_value",
]


class ConfigError(ValueError):
    """A config problem; the message names the full key path."""


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to `name`, or None if nothing is close."""
    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``", did you mean X?"`` for the closest candidate, or ``""``."""
    guess = closest(name, candidates)
    return f", did you mean {guess}?" if guess else ""


def join_path(path: str, key: Any) -> str:
    """``path.key`` (or ``key`` at the root): the key paths error messages name."""
    return f"{path}.{key}" if path else str(key)


def key_path(cfg: Any, default: str = "") -> str:
    """The key path a `ConfigNode` remembers, else `default`."""
    return getattr(cfg, "_key_path", "") or default


def to_plain(value: Any) -> Any:
    """Mappings -> dicts and lists/tuples -> lists, recursively (ConfigNode included), so
    that constructors, YAML and checkpoints get ordinary containers. Other objects,
    named tuples among them, are returned as they are."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [to_plain(v) for v in value]
    return value


def _signature_target(obj: Callable) -> Callable:
    return obj.__init__ if inspect.isclass(obj) else obj


def valid_keys(obj: Callable) -> tuple[set[str], bool]:
    """Keys a config dict building `obj` may hold, and whether it takes **kwargs."""
    params = inspect.signature(_signature_target(obj)).parameters
    keys = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    keys.discard("self")
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    return keys, has_var_kw


def required_keys(obj: Callable) -> set[str]:
    """Constructor arguments without a default."""
    params = inspect.signature(_signature_target(obj)).parameters
    return {
        n
        for n, p in params.items()
        if n != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def check_keys(
    cfg: Mapping,
    obj: Callable,
    path: str,
    extra: Iterable[str] = (),
    require: bool = True,
    typed: bool = True,
) -> None:
    """Raise ConfigError for keys of `cfg` that `obj` does not accept, and for values
    that do not fit the constructor's type hints (`types.check_value`).

    With `require`, also for required constructor arguments that neither `cfg` nor
    `extra` supplies (classes with `from_config` check their own). With `typed`, `cfg`
    names `obj` by its `type` key, which is then no argument.
    """
    keys, has_var_kw = valid_keys(obj)
    hints = type_hints(obj)
    for key, value in cfg.items():
        if key in hints:
            check_value(value, hints[key], join_path(path, key))
    if not has_var_kw:
        for key in cfg:
            if key not in keys and not (typed and key == "type"):
                raise ConfigError(f"{join_path(path, key)}: unknown key{did_you_mean(key, keys)}")
    if require and not hasattr(obj, "from_config"):
        missing = required_keys(obj) - set(cfg) - set(extra)
        if missing:
            raise ConfigError(f"{path}: missing required argument {sorted(missing)[0]!r}")


def _call(obj: Callable, cfg: Mapping, path: str, extra: dict[str, Any]) -> Any:
    """`obj.from_config(cfg, **extra)` or `construct(obj, cfg, path, **extra)`; a
    constructor's own ValueError/TypeError ("depth: must be one of ...") becomes a
    ConfigError with the key path."""
    try:
        if hasattr(obj, "from_config"):
            return obj.from_config(cfg, **extra)
        return construct(obj, cfg, path, **extra)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        text = str(e)
        key = text.split(":", 1)[0]
        if key in cfg and key != text:
            raise ConfigError(f"{join_path(path, key)}:{text.split(':', 1)[1]}") from e
        raise ConfigError(f"{path}: {text}") from e


def construct(cls: Callable, cfg: Mapping, path: str, **extra: Any) -> Any:
    """Call `cls`'s constructor (never its `from_config`) with the keys of `cfg` plus `extra`.

    What a `from_config` ends with, after computing its `extra` (shapes, built children).
    `cfg`'s keys are not checked here (`build`/`instantiate` did). A `type` key is dropped
    unless the constructor takes one. A sub-dict for an argument annotated with a
    dataclass (`matcher: Matcher`, `optimizer: OptimizerConfig`) is built into it,
    starting from the argument's default when that is an instance (so the sub-dict lists
    only what it changes). A dataclass's `check(path)`, if any, runs after construction.

    Returns:
        The object. Config values reach other classes as plain dicts and lists
        (`to_plain`); a dataclass's fields keep their `ConfigNode`s (and key paths), so
        the components in them (`data.train`) name their keys in errors. `extra` is
        passed as it is.
    """
    params = inspect.signature(_signature_target(cls)).parameters
    hints = type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "type" and key not in params:
            continue
        sub = known_class(hints.get(key))
        if isinstance(value, Mapping) and sub is not None and dataclasses.is_dataclass(sub):
            default = params[key].default if key in params else None
            value = _nested(sub, value, join_path(path, key), default)
        kwargs[key] = value
    if not dataclasses.is_dataclass(cls):
        return cls(**{**to_plain(kwargs), **extra})
    obj = cls(**{**kwargs, **extra})
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def _nested(cls: type, cfg: Mapping, path: str, default: Any) -> Any:
    """A dataclass argument from its sub-dict: `default` with the sub-dict's keys replaced
    when the default is such an object, else `cls` built from the sub-dict."""
    if not isinstance(default, cls):
        return instantiate(cls, cfg, path)
    check_keys(cfg, cls, path, typed=False)
    fields = {f.name: getattr(default, f.name) for f in dataclasses.fields(default) if f.init}
    return _call(cls, {**fields, **cfg}, path, {})


def build(cfg: Mapping | None, registry: Registry, **extra: Any) -> Any:
    """Build the registered component that `cfg` describes.

    Args:
        cfg: a mapping with `type` (a name in `registry`) and keyword arguments. A
            `ConfigNode` knows its key path, which error messages use.
        registry: where `type` is looked up.
        **extra: arguments computed by the caller (e.g. `input_shape`); they win over
            config keys of the same name.

    Returns:
        ``cls.from_config(cfg, **extra)`` when the class defines it, else
        ``cls(**cfg_without_type, **extra)``. None when `cfg` is None.
    """
    if cfg is None:
        return None
    path = key_path(cfg, registry.name)
    if "type" not in cfg:
        raise ConfigError(f"{path}: missing 'type' (one of {', '.join(registry)})")
    obj = registry.get(cfg["type"], path=join_path(path, "type"))
    check_keys(cfg, obj, path, extra)
    return _call(obj, cfg, path, extra)


def instantiate(cls: Callable, cfg: Mapping | None, path: str, **extra: Any) -> Any:
    """Build the known class `cls` from an untyped sub-dict (no `type` key).

    Args:
        cls: the class (or function) the sub-dict's keys are arguments of.
        cfg: its keyword arguments; None builds `cls` from its defaults plus `extra`.
        path: the sub-dict's key path for error messages (a `ConfigNode`'s own path wins).
        **extra: arguments computed by the caller (input shapes, built children); they
            win over config keys of the same name.

    Returns:
        ``cls.from_config(cfg, **extra)`` when `cls` defines it, else ``cls(**cfg, **extra)``.

    Raises:
        ConfigError: `cfg` is not a mapping, holds a key `cls` does not take or a value
            that does not fit its type hints, or misses a required argument.
    """
    path = key_path(cfg, path)
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {cfg!r}")
    check_keys(cfg, cls, path, extra, typed=False)
    return _call(cls, cfg, path, extra)


def known_class(annotation: Any) -> type | None:
    """The one class an annotation names that a sub-dict can be built into:
    `Matcher`, `SemSegLoss | Mapping | None` -> the class; None for builtins,
    containers, `Any`, strings that did not resolve and unions of several classes."""
    args = typing.get_args(annotation) if is_union(annotation) else (annotation,)
    found = [a for a in args if inspect.isclass(a) and a.__module__ not in _NOT_BUILDABLE]
    return found[0] if len(found) == 1 else None


# Modules whose classes are values, not objects built from a sub-dict.
_NOT_BUILDABLE = {"builtins", "typing", "collections.abc", "collections", "types", "pathlib"}


def config_value(cfg: Mapping, cls: Callable, key: str) -> Any:
    """``cfg[key]``, else the default of `cls`'s constructor argument `key`: for a
    `from_config` that needs a value (e.g. `in_features`) without restating its default."""
    if key in cfg:
        return cfg[key]
    default = inspect.signature(_signature_target(cls)).parameters[key].default
    if default is inspect.Parameter.empty:
        raise ConfigError(f"{join_path(key_path(cfg), key)}: missing required argument")
    return default
