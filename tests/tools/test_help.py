"""`--help` of every tool answers without importing torch (or numpy, OpenCV, matplotlib):
heavy imports wait until the arguments are parsed. Every option has a help text.

Checked through `sys.modules` in a fresh interpreter, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.stem for p in (ROOT / "densenets" / "tools").glob("*.py") if p.stem != "__init__")
HEAVY = ("torch", "torchvision", "numpy", "cv2", "matplotlib", "pycocotools", "albumentations")

# Runs tools/<name>.py --help as a user does; records every parser's options without help.
WRAPPER = """
import argparse, json, runpy, sys
undocumented = []
_print_help = argparse.ArgumentParser.print_help
def print_help(self, file=None):
    for a in self._actions:
        if not a.help and not isinstance(a, argparse._HelpAction):
            undocumented.append(a.dest)
    return _print_help(self, file)
argparse.ArgumentParser.print_help = print_help
sys.argv = [sys.argv[1], "--help"]
code = None
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
heavy = [m for m in {heavy} if m in sys.modules]
print("@@" + json.dumps({{"code": code, "heavy": heavy, "undocumented": undocumented}}))
"""


def test_every_tool_is_tested():
    assert {
        "train",
        "eval",
        "infer",
        "benchmark",
        "convert_checkpoint",
        "demo",
        "plot_metrics",
        "print_config",
    } <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_imports_nothing_heavy_and_documents_every_option(tool):
    code = WRAPPER.format(heavy=repr(HEAVY))
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "tools" / f"{tool}.py")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    report = json.loads(res.stdout.rsplit("@@", 1)[1])
    assert report["code"] in (0, None), res.stderr
    assert "usage:" in res.stdout
    assert report["heavy"] == [], f"tools/{tool}.py --help imported {report['heavy']}"
    assert report["undocumented"] == [], f"tools/{tool}.py: options without help: {report['undocumented']}"
