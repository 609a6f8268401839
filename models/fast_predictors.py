"""ONNX Runtime predictors for the gate-table graph (:mod:`models.gate_graph`):
:class:`BatchParallelOnnxPredictor` runs whole batches concurrently, one thread each;
:class:`FastLstmPredictor` adds length-aware batching (:mod:`models.batching`);
:class:`Int8LstmPredictor` serves the approved ``precision="int8"`` graph.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.batching import batch_order, dense_span, padding_window
from models.gate_graph import DENSE_NAME, WINDOW_NAME
from models.predictors import OnnxPredictor


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class BatchParallelOnnxPredictor(OnnxPredictor):
    """:class:`OnnxPredictor` that runs its batches concurrently, each on one thread.

    ONNX Runtime's own intra-op threads split every node and meet at a barrier after it; the
    gate-table graph has ~15 small nodes per time step, and on a busy machine a descheduled
    thread stalls each barrier.  Here the session has one intra-op thread and ``threads`` Python
    threads (default: one per usable core) each run whole batches (``session.run`` is
    thread-safe and releases the GIL), so nothing waits for anything else.

    ``shared_arena``: whether concurrent batches share ONNX Runtime's memory arena (see
    :class:`FastLstmPredictor`)."""

    kind = "onnx"
    shared_arena = True

    def __init__(self, onnx_bytes: bytes, batch_size: int = 1024, threads: int = 0,
                 external_data: dict[str, bytes] | None = None):
        workers = threads if threads > 0 else _cpu_count()
        super().__init__(onnx_bytes, batch_size=batch_size, threads=1, arena=self.shared_arena or workers == 1,
                         external_data=external_data)
        self.workers = workers
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-batch") if self.workers > 1 else None

    def _chunk(self, n: int) -> int:
        """Rows per run: ``batch_size``, or fewer so that a small input still keeps every worker busy."""
        return max(1, min(self.batch_size, -(-n // self.workers)))

    def _batches(self, x: np.ndarray) -> list:
        """The row selections run together, in any order (results go back to their rows)."""
        step = self._chunk(len(x))
        return [slice(i, i + step) for i in range(0, len(x), step)]

    def _feed(self, x: np.ndarray, rows) -> dict[str, np.ndarray]:
        # Built when the batch runs, so only the running batches' copies exist at a time.
        return {self.input_name: x[rows]}

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int32)
        out = np.empty(len(x), dtype=np.float32)
        batches = self._batches(x)

        def run(rows) -> None:
            out[rows] = self.session.run(None, self._feed(x, rows))[0].reshape(-1)

        if self._pool is None or len(batches) < 2:
            for rows in batches:
                run(rows)
        else:
            list(self._pool.map(run, batches))  # list(): re-raises a worker's exception here
        return out


class FastLstmPredictor(BatchParallelOnnxPredictor):
    """ONNX Runtime on the gate-table graph; same interface as :class:`OnnxPredictor`, batches run
    concurrently (:class:`BatchParallelOnnxPredictor`).

    ``length_aware`` (default on; only possible for a ``loop`` graph with a ``window`` input, i.e.
    a masked model, see :func:`~models.lstm_spec.window_exact`): rows are sorted by their non-padding span
    (:func:`batch_order`), and each batch runs only the positions where some row has a token.
    ``dense`` (default on; a masked model's ``loop`` graph): each batch runs the positions where
    none of its rows has padding without masks (:func:`dense_span`).  Both are bit-for-bit exact;
    results come back in the input order.

    With several threads the session does without ONNX Runtime's memory arena, which they would
    share for every step's small tensors: 1.14-1.20x on the seed model's graph with 2 threads, no
    change with one.  (The plain export's few large tensors are faster with it.)"""

    kind = "fast"
    shared_arena = False

    def __init__(self, onnx_bytes: bytes, batch_size: int = 1024, threads: int = 0, length_aware: bool = True,
                 dense: bool = True, external_data: dict[str, bytes] | None = None):
        """``external_data``: ``{TABLES_FILE: tables}`` for a graph from :func:`~models.gate_graph.build_fast_parts`."""
        super().__init__(onnx_bytes, batch_size=batch_size, threads=threads, external_data=external_data)
        # A graph input with a default (an initializer) is listed as an overridable initializer.
        names = {i.name for i in self.session.get_inputs()} | {
            i.name for i in self.session.get_overridable_initializers()}
        self.length_aware = bool(length_aware and WINDOW_NAME in names)
        self.dense = bool(dense and DENSE_NAME in names)  # graphs registered before it existed lack it

    def _batches(self, x: np.ndarray) -> list:
        if not (self.length_aware or self.dense):
            return super()._batches(x)
        # Sorted by span, a batch's rows also share a long stretch without padding (``dense``).
        order = batch_order(*padding_window(x), x.shape[1])
        step = self._chunk(len(x))
        return [order[s:s + step] for s in range(0, len(x), step)]

    def _feed(self, x: np.ndarray, rows) -> dict[str, np.ndarray]:
        feed = super()._feed(x, rows)
        if not (self.length_aware or self.dense):
            return feed
        tokens = feed[self.input_name]
        start, stop = padding_window(tokens)
        if self.length_aware:
            T = x.shape[1]
            lo, hi = int(start.min()), int(stop.max())
            if hi <= lo:  # all padding: one (masked, state-preserving) step
                lo, hi = T - 1, T
            feed[WINDOW_NAME] = np.array([lo, hi], dtype=np.int64)
        if self.dense:
            feed[DENSE_NAME] = np.array(dense_span(tokens, start, stop), dtype=np.int64)
        return feed


class Int8LstmPredictor(FastLstmPredictor):
    """:class:`FastLstmPredictor` on the ``precision="int8"`` graph: approximate, deterministic,
    batch-independent; only used for versions whose accuracy cost was measured and approved
    (:mod:`models.quantization`)."""

    kind = "int8"
