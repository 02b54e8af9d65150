"""`import densenets` fails with one clear line when torchvision's ops cannot load."""

import subprocess
import sys


def _import_with(prelude: str) -> subprocess.CompletedProcess:
    code = prelude + "\nimport densenets\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_broken_torchvision_gives_one_clear_error():
    # A torchvision whose import fails, as a CPU-only torch under a CUDA torchvision does.
    res = _import_with("import sys; sys.modules['torchvision'] = None")
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: densenets needs torchvision's compiled ops")
    assert "pip install --upgrade --force-reinstall 'torch>=2.6' 'torchvision>=0.21'" in last


def test_unregistered_torchvision_ops_are_reported():
    prelude = (
        "import torch, torchvision\n"
        "class _NoOps:\n"
        "    def __getattr__(self, name): raise AttributeError(name)\n"
        "torch.ops.torchvision = _NoOps()\n"
    )
    res = _import_with(prelude)
    assert res.returncode != 0
    assert "its operators are not registered" in res.stderr.strip().splitlines()[-1]
