"""Utilities: process groups, logging, visualisation."""

from . import comm
from .logging import setup_logger
from .visualization import DetectionVisualizer, SemSegVisualizer, SRVisualizer, color_palette

__all__ = ["comm", "setup_logger", "DetectionVisualizer", "SemSegVisualizer", "SRVisualizer", "color_palette"]
