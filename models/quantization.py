"""int8 inference: the gate-table graph with int8 step products, approved per model version.

The int8 graph (:mod:`models.int8_maths`) is not exact, so a version only gets one
when, on the labelled test reviews it was evaluated on, its accuracy is at most
:data:`MAX_ACCURACY_DROP` below the float32 model's.  Its own scores on the registration probe
are stored with it: whenever it is loaded it must reproduce them (its arithmetic is integer,
and the quantisation scale is fixed, so it is deterministic and does not depend on batching),
which catches a runtime that computes something else.  Scoring only uses it when asked
(``predictor="int8"``); ``auto`` stays exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.npy import npy_bytes

INT8_FILE = "model.fast-int8.onnx"
INT8_PROBE_SCORES = "probe_scores_int8.npy"
# The bound: int8 only where it costs at most 0.2 points of test accuracy.
MAX_ACCURACY_DROP = 0.002
# The int8 graph's arithmetic, recorded with every approved graph.  2: weights in [-64, 64], so
# that no u8 x s8 kernel saturates and the scores do not depend on the CPU's instruction set
# (models.int8_maths.INT8_WEIGHT_MAX).  Graphs without it (full-range weights, which give other
# scores on CPUs without VNNI) are never served.
INT8_SCHEME = 2


def int8_refusal(record: dict[str, Any]) -> str | None:
    """Why a version's stored int8 graph must not be served, or None when it may be."""
    scheme = record.get("scheme")
    if scheme == INT8_SCHEME:
        return None
    what = "has no recorded int8 scheme (registered before scheme 2)" if scheme is None else f"uses int8 scheme {scheme}"
    return (f"its int8 graph {what}: full-range int8 weights saturate in ONNX Runtime's kernels on CPUs "
            f"without VNNI, so its scores would depend on the machine; score it with predictor=auto, or "
            f"register the model again to get a scheme-{INT8_SCHEME} int8 graph")


def int8_export(model, x_test: np.ndarray, y_test: np.ndarray, accuracy: float, probe: np.ndarray,
                max_drop: float = MAX_ACCURACY_DROP) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files to store with the version, its ``int8`` metadata record).

    ``accuracy``: the float32 model's accuracy on (``x_test``, ``y_test``).  No files when the
    topology has no gate-table graph, when there are no labelled reviews to measure on, or when
    the int8 graph loses more than ``max_drop`` accuracy; the record says which, with figures.
    The graph's gate tables are external data (:func:`models.gate_graph.build_fast_parts`): the
    files include :data:`~models.onnx_graph.TABLES_FILE`, the same bytes as the float32 graph's."""
    from models.fast_predictors import Int8LstmPredictor
    from models.gate_graph import build_fast_parts
    from models.onnx_graph import TABLES_FILE
    from models.predictors import rows_per_batch

    record: dict[str, Any] = {"approved": False, "max_accuracy_drop": max_drop, "scheme": INT8_SCHEME}
    if not len(x_test):
        return {}, {**record, "reason": "no labelled test reviews to measure the accuracy cost on"}
    try:
        data, tables = build_fast_parts(model, precision="int8")
    except ValueError as exc:
        return {}, {**record, "reason": str(exc).splitlines()[0]}
    try:
        predictor = Int8LstmPredictor(data, batch_size=rows_per_batch(int(x_test.shape[1])),
                                      external_data={TABLES_FILE: tables})
        scores = predictor.predict(x_test)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors share no base class but Exception
        # int8 is an option: a runtime that cannot run it (e.g. a build without the int8 kernels)
        # must not fail the registration; the record (and the task's log) says what happened.
        return {}, {**record, "reason": f"ONNX Runtime cannot run the int8 graph: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:300]}"}
    int8_accuracy = float(np.mean((scores >= 0.5) == (np.asarray(y_test) >= 0.5)))
    drop = float(accuracy) - int8_accuracy
    record.update(accuracy_float32=round(float(accuracy), 6), accuracy_int8=round(int8_accuracy, 6),
                  accuracy_drop=round(drop, 6), test_rows=int(len(x_test)))
    if drop > max_drop:
        return {}, {**record, "reason": f"int8 accuracy {int8_accuracy:.4f} is {drop * 100:.2f} points below "
                                        f"float32 {accuracy:.4f} (allowed: {max_drop * 100:.2f})"}
    probe_scores = predictor.predict(probe)
    record.update(approved=True, reason="within the accuracy bound")
    return {INT8_FILE: data, TABLES_FILE: tables, INT8_PROBE_SCORES: npy_bytes(probe_scores)}, record
