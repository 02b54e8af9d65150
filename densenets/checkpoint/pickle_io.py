"""Read pickled checkpoints (detectron2 / caffe2 ``.pkl``) without running arbitrary code.

Plain `pickle.load` can call any importable function, so a downloaded file could run code.
`load_pickle` only lets through the standard containers and what numpy needs to rebuild
arrays and scalars; any other global is an error naming the file and the global.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import os
import pickle
from typing import Any

import numpy as np

__all__ = ["load_pickle", "RestrictedUnpickler"]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy functions that array/scalar pickles reference, under every module path
    numpy has used for them (``numpy.core`` before 2.0, ``numpy._core`` since)."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{core}.multiarray", "scalar")] = scalar
        found[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return found


_ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Protocol-2 pickles written by Python 3 store bytes as latin-1 text re-encoded here.
    ("_codecs", "encode"): codecs.encode,
    **{
        (module, name): getattr(builtins, name)
        for module in ("builtins", "__builtin__")
        for name in ("set", "frozenset", "slice", "complex")
    },
}


class _Refused(pickle.UnpicklingError):
    """A global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only containers and numpy arrays/scalars."""

    def __init__(self, file, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise _Refused(
                f"{self.source}: refusing to load global {module}.{name}; checkpoints may only "
                "hold containers, numbers, strings and numpy arrays"
            )
        return obj


def load_pickle(path: str | os.PathLike) -> Any:
    """Load a pickled checkpoint (e.g. detectron2's ``R-50.pkl``) with `RestrictedUnpickler`.

    Args:
        path: the ``.pkl`` file.

    Returns:
        The unpickled object: dicts/lists of numbers, strings and numpy arrays.

    Raises:
        pickle.UnpicklingError: the file references anything else (message names the file).
    """
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path)).load()
        except _Refused:
            raise
        except Exception as e:  # a truncated or non-pickle file
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
