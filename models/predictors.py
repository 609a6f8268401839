"""Predictors: turn a padded int32 matrix into positive-review probabilities.

The registry stores a probe batch and Keras' own scores for it with every version;
each predictor is checked against those scores when it is built, so a fast path can
never drift from the trained model unnoticed.  ONNX Runtime is the light path
(0.2 s import, no TensorFlow); Keras is the fallback.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

PARITY_TOLERANCE = 1e-5


class ParityError(RuntimeError):
    """A predictor's outputs differ from the Keras reference beyond tolerance."""


class Predictor(Protocol):
    kind: str

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class KerasPredictor:
    kind = "keras"

    def __init__(self, model, batch_size: int = 1024):
        self.model = model
        self.batch_size = batch_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.float32)
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            out[i:i + len(chunk)] = np.asarray(self.model(chunk, training=False)).reshape(-1)
        return out


class OnnxPredictor:
    kind = "onnx"

    def __init__(self, onnx_bytes: bytes, batch_size: int = 1024, threads: int = 0, arena: bool = True,
                 external_data: dict[str, bytes] | None = None):
        """``external_data``: file name -> content, for a graph whose initializers are stored as
        ONNX external data in those files (e.g. the gate tables two graphs share)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if external_data:
            # ONNX Runtime copies what it needs while it creates the session (the caller's dict keeps
            # the buffers alive until then); after that they can go.
            names = list(external_data)
            opts.add_external_initializers_from_files_in_memory(
                names, [external_data[n] for n in names], [len(external_data[n]) for n in names])
        opts.intra_op_num_threads = threads  # 0: one per core
        opts.enable_cpu_mem_arena = arena
        # Busy-waiting worker threads burn the CPU that other units and processes need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.int32)
        out = np.empty(len(x), dtype=np.float32)
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            out[i:i + len(chunk)] = self.session.run(None, {self.input_name: chunk})[0].reshape(-1)
        return out


def rows_per_batch(maxlen: int, tokens: int = 65536, cap: int = 1024, floor: int = 16) -> int:
    """Batch rows sized by tokens: activations grow with maxlen, so long reviews get smaller
    batches - at least ``floor`` rows, never more than ``cap``."""
    return min(cap, max(floor, tokens // max(maxlen, 1)))


def l2_cache_bytes(default: int = 1 << 20) -> int:
    """This CPU's per-core L2 cache size (Linux sysfs), else ``default``."""
    import glob

    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(f"{d}/level") as f:
                level = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if level == "2" and size[:-1].isdigit() and size[-1] in "KM":
            return int(size[:-1]) << (10 if size[-1] == "K" else 20)
    return default


def step_rows(units: int, cache_bytes: int | None = None) -> int:
    """Rows per run of the gate-table graph: as many as keep one step's gate pre-activations
    (rows x 4 units float32) within the L2 cache.  Each step's half-dozen passes over them then
    stay in cache: on AMD Zen 3 (512 KiB L2) 256 rows of the seed model (128 units) scored
    1.07-1.13x faster than 1,024, which had been the best on a 2 MiB-L2 machine - where this
    rule gives 1,024 again (``bench/README.md``)."""
    cache = l2_cache_bytes() if cache_bytes is None else cache_bytes
    return max(64, min(1024, cache // (16 * max(int(units), 1))))


def gate_graph_rows(maxlen: int, units: int) -> int:
    """Rows per run of a gate-table predictor: the token rule of :func:`rows_per_batch`, capped
    by :func:`step_rows`."""
    return rows_per_batch(maxlen, cap=step_rows(units))


def keras_reference(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, verbose=0, batch_size=256), dtype=np.float32).reshape(-1)


def check_parity(predictor: Predictor, probe: np.ndarray, reference: np.ndarray,
                 tolerance: float = PARITY_TOLERANCE, against: str = "Keras") -> float:
    got = predictor.predict(probe)
    delta = float(np.max(np.abs(got - reference))) if len(probe) else 0.0
    if not delta <= tolerance:
        raise ParityError(
            f"{predictor.kind} predictor differs from {against} on the probe batch: max |delta| = {delta:.3g} "
            f"> {tolerance:g}")
    return delta


def export_onnx(model, path: str) -> None:
    import contextlib
    import io

    # tf2onnx prints a conversion log to stdout; keep the CLI's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(path, format="onnx", verbose=False)


def probe_batch(input_dim: int, maxlen: int, n: int = 256, seed: int = 0) -> np.ndarray:
    """Random reviews of varied lengths, padded both ways, covering the index range."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, max(input_dim, 2), size=(n, maxlen), dtype=np.int32)
    lengths = rng.integers(0, maxlen + 1, size=n)
    for i, length in enumerate(lengths):
        if i % 2:
            x[i, length:] = 0
        else:
            x[i, : maxlen - length] = 0
    return x
