"""Shared pytest setup: markers, GPU skipping, thread counts under xdist."""

import os

import pytest
import torch


def pytest_configure(config):
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
