"""The ONNX graphs a registered version is served from, each parity-checked against Keras.

* the gate-table graph (:mod:`models.gate_graph`) when the topology allows it and parity holds:
  ``model.fast.onnx`` with its gate tables in :data:`~models.onnx_graph.TABLES_FILE` (ONNX
  external data, shared with the int8 graph of :mod:`models.quantization`);
* otherwise the plain tf2onnx export, ``model.onnx``.  Not when the gate-table graph exists:
  tf2onnx is what made registering a seed-size model need 8.5 GB and a minute
  (``bench/registration.py``), for a graph that ``auto`` never serves next to the exact one.
  Versions registered before kept both; ``predictor="onnx"`` serves theirs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from models.predictors import (
    OnnxPredictor,
    ParityError,
    check_parity,
    export_onnx,
    gate_graph_rows,
    keras_reference,
    rows_per_batch,
)

FAST_FILE = "model.fast.onnx"
PLAIN_FILE = "model.onnx"
PLAIN_SKIPPED = f"not exported: {FAST_FILE} is exact"


def _checked_fast_predictor(model, probe: np.ndarray, reference: np.ndarray, tables: bytes | None = None,
                            batch_size: int | None = None):
    """(graph, tables, predictor, parity) of ``model``'s gate-table graph, checked against
    ``reference`` (Keras' scores of ``probe``); ValueError for an unsupported topology,
    ParityError when the check fails."""
    from models.fast_predictors import FastLstmPredictor
    from models.gate_graph import build_fast_parts
    from models.onnx_graph import TABLES_FILE

    graph, tables = build_fast_parts(model, tables=tables)
    predictor = FastLstmPredictor(graph, batch_size=batch_size or rows_per_batch(int(probe.shape[1])),
                                  external_data={TABLES_FILE: tables})
    return graph, tables, predictor, check_parity(predictor, probe, reference)


def _fast_graph(model, probe: np.ndarray, reference: np.ndarray,
                tables: bytes | None) -> tuple[dict[str, bytes], str, float | None]:
    from models.onnx_graph import TABLES_FILE

    try:
        graph, tables, _, delta = _checked_fast_predictor(model, probe, reference, tables)
    except (ValueError, ParityError) as exc:
        return {}, f"not exported: {str(exc).splitlines()[0]}", None
    return {FAST_FILE: graph, TABLES_FILE: tables}, f"{FAST_FILE}, parity max |delta| = {delta:.3g}", delta


def inference_graphs(model, probe: np.ndarray, reference: np.ndarray,
                     tables: bytes | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, the ``export`` record of metadata.json) for ``model``, whose Keras scores on
    ``probe`` are ``reference``.  ParityError when the plain export is needed and differs.

    ``tables``: the gate tables of the model's int8 graph (models.quantization), reused instead
    of computed again; the float32 graph's parity against Keras checks them."""
    files, fast_note, parity = _fast_graph(model, probe, reference, tables)
    plain_note = f"{PLAIN_SKIPPED}; serve with predictor auto, fast or keras"
    if not files:
        with tempfile.TemporaryDirectory(prefix="reviews-onnx-") as tmp:
            path = os.path.join(tmp, PLAIN_FILE)
            export_onnx(model, path)
            with open(path, "rb") as f:
                files[PLAIN_FILE] = f.read()
        parity = check_parity(OnnxPredictor(files[PLAIN_FILE]), probe, reference)
        plain_note = f"{PLAIN_FILE} (tf2onnx), parity max |delta| = {parity:.3g}"
    return files, {"format": "onnx", "parity_max_abs_delta": parity, "probe_rows": int(len(probe)),
                   "fast": fast_note, "plain": plain_note}


def gate_graph_scores(model, x: np.ndarray, check_rows: int = 256) -> np.ndarray | None:
    """Scores of ``x`` from ``model``'s gate-table graph, checked against Keras on its first
    ``check_rows`` rows (within the parity tolerance), or None when the topology has no such graph
    or the check fails.  On 25,000 test reviews (2 cores, AVX2): seed 7.6 s against Keras' 11.5 s,
    ``default`` 11.9 s against 82.4 s, building the graph included (``bench/README.md``)."""
    x = np.ascontiguousarray(x, dtype=np.int32)
    head = x[:check_rows]
    units = max([getattr(getattr(layer, "forward_layer", layer), "units", 0) for layer in model.layers] + [1])
    try:
        *_, predictor, _ = _checked_fast_predictor(model, head, keras_reference(model, head),
                                                   batch_size=gate_graph_rows(int(x.shape[1]), units))
    except (ValueError, ParityError):
        return None
    return predictor.predict(x)
