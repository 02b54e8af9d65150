"""Registries: plain name -> class (or function) maps filled by decorators on import.

`build(cfg, registry, **extra)` (in build.py) turns a config dict with a `type` key into
the registered object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from .build import (
    ConfigError,
    did_you_mean,
)

__all__ = [
    "Registry",
    "find_component",
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
]


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
                f"{path}: unknown {self.name} type {name!r}{did_you_mean(name, self._entries)} "
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
# Top-level config sections without a `type` (e.g. `train`) are built into (and checked
# against) the class registered for them here; their nested sections are found from its
# field annotations.
SECTION_SCHEMAS: dict[str, Callable] = {}


def register_section(name: str) -> Callable:
    """Decorator: top-level section `name` is built into the class (a dataclass)."""

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
