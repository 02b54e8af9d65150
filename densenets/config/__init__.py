"""The config system: YAML files with `_base_` inheritance, overrides, registries."""

from .config import ConfigNode, apply_overrides, dump_config, load_config, parse_value, validate_config
from .paths import bundled_config, bundled_config_dirs, find_config
from .registry import (
    BACKBONES,
    DATASETS,
    EVALUATORS,
    HEADS,
    MODELS,
    NECKS,
    SECTION_SCHEMAS,
    TRANSFORMS,
    VISUALIZERS,
    ConfigError,
    Registry,
    build,
    register_section,
)

__all__ = [
    "ConfigNode",
    "ConfigError",
    "Registry",
    "build",
    "load_config",
    "find_config",
    "bundled_config",
    "bundled_config_dirs",
    "dump_config",
    "apply_overrides",
    "parse_value",
    "validate_config",
    "register_section",
    "SECTION_SCHEMAS",
    "MODELS",
    "BACKBONES",
    "NECKS",
    "HEADS",
    "DATASETS",
    "TRANSFORMS",
    "EVALUATORS",
    "VISUALIZERS",
]
