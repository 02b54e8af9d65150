"""Shared pytest setup: markers, GPU skipping, thread counts under xdist."""

import os

import pytest
import torch

import densenets


def pytest_configure(config):
    # The one registration point, as the tools call it: every built-in component is registered.
    densenets.register_all()
    # Under pytest-xdist each worker gets one thread so two workers share two cores.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
