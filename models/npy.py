"""Arrays as ``.npy`` file bytes, for files stored with a model version (the registry's probe
scores, the int8 graph's)."""

from __future__ import annotations

import io

import numpy as np


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
