"""Length-aware batching for the gate-table graph: each row's non-padding window
(:func:`padding_window`), rows ordered by it (:func:`batch_order`), the stretch of a batch
without padding (:func:`dense_span`), and the steps that saves (:func:`window_steps`).
"""

from __future__ import annotations

import numpy as np


def padding_window(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, ``[start, stop)``: its first and one past its last non-padding position
    (``start = maxlen, stop = 0`` for an all-padding row)."""
    nz = x != 0
    any_ = nz.any(axis=1)
    T = x.shape[1]
    start = np.where(any_, nz.argmax(axis=1), T)
    stop = np.where(any_, T - nz[:, ::-1].argmax(axis=1), 0)
    return start, stop


def batch_order(start: np.ndarray, stop: np.ndarray, maxlen: int) -> np.ndarray:
    """Rows ordered so that consecutive ones have similar windows: pre-padded rows (ending at
    ``maxlen``), then post-padded ones (starting at 0), then the rest, each by span."""
    side = np.where(stop == maxlen, 0, np.where(start == 0, 1, 2))
    return np.lexsort((stop - start, side))


def dense_span(x: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[int, int]:
    """``[a, b)``: positions where every row of ``x`` holds a token (``(0, 0)`` if none), given
    the rows' :func:`padding_window`."""
    if not len(x):
        return 0, 0
    a, b = int(start.max()), int(stop.min())
    if a >= b or not (x[:, a:b] != 0).all():  # none, or a padding token inside a review
        return 0, 0
    return a, b


def window_steps(x: np.ndarray, batch_size: int, sort: bool = True) -> tuple[int, int]:
    """(steps run with length-aware batching, steps of the full matrix) for ``x``: batches of
    ``batch_size`` rows (sorted by span when ``sort``) each run only their ``[min start, max stop)``."""
    start, stop = padding_window(x)
    order = batch_order(start, stop, x.shape[1]) if sort else np.arange(len(x))
    steps = 0
    for s in range(0, len(x), batch_size):
        rows = order[s:s + batch_size]
        lo, hi = int(start[rows].min()), int(stop[rows].max())
        steps += max(hi - lo, 1) * len(rows)
    return steps, len(x) * x.shape[1]
