"""A NumPy reference of the int8 gate-table graph: the same ONNX graph, evaluated by ONNX's own
pure-NumPy ``ReferenceEvaluator``, with ``MatMulIntegerToFloat`` computed as exact int64 sums of
``(x - x_zero) * q`` and then the float32 epilogue ``sum * (x_scale * w_scale)``.

ONNX Runtime's result for the same graph must agree within float32 rounding on any CPU: its
kernels differ by instruction set only in how they add the integer products, so a kernel that
saturates (or otherwise computes another integer sum) shows up here, far outside rounding.
"""

from __future__ import annotations

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_loop import Loop as _ReferenceLoop

from models.gate_graph import DENSE_NAME, INPUT_NAME, WINDOW_NAME


class MatMulIntegerToFloat(OpRun):
    op_domain = "com.microsoft"

    def _run(self, a, b, a_scale, b_scale, a_zero_point=None, b_zero_point=None, bias=None):
        acc = a.astype(np.int64) - (0 if a_zero_point is None else np.int64(a_zero_point))
        w = b.astype(np.int64) - (0 if b_zero_point is None else b_zero_point.astype(np.int64))
        sums = acc @ w  # exact: no intermediate of any width but int64
        y = sums.astype(np.float32) * (np.float32(a_scale) * b_scale.astype(np.float32))
        if bias is not None:
            y = y + bias
        return (y.astype(np.float32),)


class Loop(_ReferenceLoop):
    """ONNX's Loop, also for zero trips: the reference stacks no scan outputs then, where the
    spec (and ONNX Runtime) gives empty ones; the fast graph's masked segments can be empty."""

    def _run(self, M, cond, *args, **kwargs):
        if M is not None and int(M) == 0 and self.K:
            return tuple(args[:self.N]) + tuple(np.empty((0,), np.float32) for _ in range(self.K))
        return super()._run(M, cond, *args, **kwargs)


def reference_predict(onnx_bytes: bytes, x: np.ndarray, input_name: str = INPUT_NAME) -> np.ndarray:
    """Scores of the int8 graph for ``x`` (rows of token ids), computed without ONNX Runtime."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    session = ReferenceEvaluator(model, new_ops=[MatMulIntegerToFloat, Loop])
    names = [i.name for i in model.graph.input]
    feed = {input_name: np.ascontiguousarray(x, dtype=np.int32)}
    # The fast graph's optional inputs: every step, masks everywhere (what their defaults mean).
    if WINDOW_NAME in names:
        feed[WINDOW_NAME] = np.array([0, x.shape[1]], dtype=np.int64)
    if DENSE_NAME in names:
        feed[DENSE_NAME] = np.array([0, 0], dtype=np.int64)
    (scores,) = session.run(None, feed)
    return np.asarray(scores, dtype=np.float32).reshape(-1)


# A CPU without AVX-512 and VNNI, for ONNX Runtime to pick its AVX2 kernels on any host:
# QEMU's user-mode emulator runs the same Python and wheels and answers CPUID as that model.
EMULATED_CPU = "Haswell"
_EMULATED_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from models.fast_predictors import Int8LstmPredictor
x = np.load(sys.argv[3])
with open(sys.argv[2], "rb") as f:
    scores = Int8LstmPredictor(f.read(), batch_size=int(sys.argv[5])).predict(x)
np.save(sys.argv[4], scores)
"""


def emulator() -> str | None:
    import shutil

    return shutil.which("qemu-x86_64")


def emulated_predict(onnx_bytes: bytes, x: np.ndarray, workdir, batch_size: int = 16,
                     cpu: str = EMULATED_CPU) -> np.ndarray:
    """:class:`Int8LstmPredictor`'s scores for ``x``, computed by this interpreter running under
    ``qemu-x86_64 -cpu CPU`` (ONNX Runtime then dispatches its kernels for that CPU)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    graph, xs, out = (os.path.join(str(workdir), n) for n in ("graph.onnx", "x.npy", "scores.npy"))
    with open(graph, "wb") as f:
        f.write(onnx_bytes)
    np.save(xs, x)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([emulator(), "-cpu", cpu, sys.executable, "-c", _EMULATED_SCRIPT, root, graph, xs, out,
                          str(batch_size)], env=env, capture_output=True, text=True, timeout=600)
    if run.returncode:
        raise RuntimeError(f"the emulated run failed ({run.returncode}): {run.stderr[-2000:]}")
    return np.load(out)
