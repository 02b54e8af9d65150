"""Small random-weight models (ResNet-18 sizes) for the export tests."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _quiet_tracer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
