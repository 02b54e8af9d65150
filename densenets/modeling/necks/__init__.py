"""Necks. Importing this package registers them in NECKS."""

from .channel_mapper import ChannelMapper
from .fpn import FPN, LastLevelMaxPool, LastLevelP6P7

__all__ = ["ChannelMapper", "FPN", "LastLevelMaxPool", "LastLevelP6P7"]
