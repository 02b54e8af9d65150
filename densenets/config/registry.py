"""Registries: plain name -> class (or function) maps filled by decorators on import.

`build(cfg, registry, **extra)` turns a config dict with a `type` key into an object,
checking every key against the constructor's signature so that a misspelt key is an
error naming its full path and the closest valid key.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .types import check_value, type_hints

__all__ = [
    "Registry",
    "build",
    "valid_keys",
    "closest",
    "find_component",
    "ConfigError",
    "MODELS",
    "BACKBONES",
    "NECKS",
    "HEADS",
    "DATASETS",
    "TRANSFORMS",
    "EVALUATORS",
    "VISUALIZERS",
    "SECTION_SCHEMAS",
    "register_section",
    "check_keys",
]


class ConfigError(ValueError):
    """A config problem; the message names the full key path."""


def closest(name: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """Return the candidate most similar to `name`, or None if nothing is close."""
    matches = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def _did_you_mean(name: str, candidates) -> str:
    guess = closest(name, candidates)
    return f", did you mean {guess}?" if guess else ""


class Registry(Mapping[str, Callable]):
    """A name -> class/function map. Register with `@REGISTRY.register()`.

    The registered name is the object's `__name__` exactly; there are no aliases.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable] = {}

    def register(self, obj: Callable | None = None) -> Callable:
        """Decorator (``@R.register()``) or call (``R.register(fn)``)."""

        def _add(o: Callable) -> Callable:
            key = o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(f"{key} is already registered in {self.name}")
            self._entries[key] = o
            return o

        return _add if obj is None else _add(obj)

    def get(self, name: str, path: str = "type") -> Callable:  # type: ignore[override]
        if name not in self._entries:
            hint = "" if _all_registered else "; densenets.register_all() registers the built-in ones"
            raise ConfigError(
                f"{path}: unknown {self.name} type {name!r}{_did_you_mean(name, self._entries)} "
                f"(registered: {', '.join(sorted(self._entries)) or 'none'}{hint})"
            )
        return self._entries[name]

    def __getitem__(self, name: str) -> Callable:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {sorted(self._entries)})"


# Components register when the module defining them is imported. `densenets.register_all()`
# (the one registration point, called by the tools before loading a config) imports every
# package that registers and then calls `mark_all_registered`; this package imports none
# of them, as it sits below them all.
_all_registered = False


def mark_all_registered() -> None:
    """Record that every built-in component is registered (called by `densenets.register_all`)."""
    global _all_registered
    _all_registered = True


MODELS = Registry("model")
BACKBONES = Registry("backbone")
NECKS = Registry("neck")
HEADS = Registry("head")
DATASETS = Registry("dataset")
TRANSFORMS = Registry("transform")
EVALUATORS = Registry("evaluator")
VISUALIZERS = Registry("visualizer")
# Top-level config sections without a `type` (e.g. `train`) are checked against the
# signature of the class registered for them here.
SECTION_SCHEMAS: dict[str, Callable] = {}


def register_section(name: str) -> Callable:
    """Decorator: the class's constructor signature lists the valid keys of section `name`."""

    def _add(obj: Callable) -> Callable:
        SECTION_SCHEMAS[name] = obj
        return obj

    return _add


_ALL_REGISTRIES = (MODELS, BACKBONES, NECKS, HEADS, DATASETS, TRANSFORMS, EVALUATORS, VISUALIZERS)


def find_component(type_name: str) -> Callable | None:
    """Find a registered class/function by name in any registry."""
    for reg in _ALL_REGISTRIES:
        if type_name in reg:
            return reg[type_name]
    return None


def _signature_target(obj: Callable) -> Callable:
    return obj.__init__ if inspect.isclass(obj) else obj


def valid_keys(obj: Callable) -> tuple[set[str], bool]:
    """Keys a config dict building `obj` may hold, and whether it takes **kwargs.

    A class with `from_config` may name extra keys it consumes in `extra_config_keys`.
    """
    params = inspect.signature(_signature_target(obj)).parameters
    keys = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    keys.discard("self")
    keys |= set(getattr(obj, "extra_config_keys", ()))
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    return keys, has_var_kw


def _required_keys(obj: Callable) -> set[str]:
    params = inspect.signature(_signature_target(obj)).parameters
    return {
        n
        for n, p in params.items()
        if n != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def check_keys(cfg: Mapping, obj: Callable, path: str, extra: Mapping = (), require: bool = True) -> None:
    """Raise ConfigError for keys of `cfg` that `obj` does not accept, and for values
    that do not fit the constructor's type hints (`types.check_value`).

    With `require`, also for required constructor arguments that neither `cfg` nor
    `extra` supplies (classes with `from_config` check their own).
    """
    keys, has_var_kw = valid_keys(obj)
    hints = type_hints(obj)
    for key, value in cfg.items():
        if key in hints:
            check_value(value, hints[key], _join(path, key))
    if has_var_kw:
        return
    for key in cfg:
        if key == "type" or key in keys:
            continue
        raise ConfigError(f"{_join(path, key)}: unknown key{_did_you_mean(key, keys)}")
    if require and not hasattr(obj, "from_config"):
        missing = _required_keys(obj) - set(cfg) - set(extra)
        if missing:
            raise ConfigError(f"{path}: missing required argument {sorted(missing)[0]!r}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build(cfg: Mapping | None, registry: Registry, **extra: Any) -> Any:
    """Build the object that `cfg` describes.

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
    path = getattr(cfg, "_key_path", "") or registry.name
    if "type" not in cfg:
        raise ConfigError(f"{path}: missing 'type' (one of {', '.join(registry)})")
    obj = registry.get(cfg["type"], path=_join(path, "type"))
    check_keys(cfg, obj, path, extra)
    try:
        if hasattr(obj, "from_config"):
            return obj.from_config(cfg, **extra)
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        kwargs.update(extra)
        return obj(**_plain(kwargs))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        # A constructor's own check ("depth: must be one of ..."): say which key path.
        text = str(e)
        key = text.split(":", 1)[0]
        if key in cfg and key != text:
            raise ConfigError(f"{_join(path, key)}:{text.split(':', 1)[1]}") from e
        raise ConfigError(f"{path}: {text}") from e


def _plain(value: Any) -> Any:
    """ConfigNode -> dict recursively, so constructors receive ordinary containers."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
