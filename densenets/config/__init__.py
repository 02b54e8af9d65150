"""The config system: YAML files with `_base_` inheritance, overrides, registries, and
the one way from a config dict to an object (`build`, `instantiate`, in build.py)."""

from .build import (
    ConfigError,
    build,
    check_keys,
    config_value,
    construct,
    did_you_mean,
    instantiate,
    join_path,
    key_path,
    to_plain,
)
from .config import ConfigNode, apply_overrides, dump_config, load_config, parse_value, validate_config
from .paths import bundled_config, bundled_config_dirs, find_config
from .registry import *  # noqa: F403 - the registries, Registry, register_section
from .registry import __all__ as _registry_names

__all__ = [
    "ConfigError",
    "build",
    "instantiate",
    "check_keys",
    "config_value",
    "construct",
    "did_you_mean",
    "join_path",
    "key_path",
    "to_plain",
    "ConfigNode",
    "load_config",
    "find_config",
    "bundled_config",
    "bundled_config_dirs",
    "dump_config",
    "apply_overrides",
    "parse_value",
    "validate_config",
    *_registry_names,
]
