"""Necks. Importing this package registers them in NECKS."""

from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7"]
