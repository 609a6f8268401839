"""The int8 arithmetic of the gate-table graph's ``precision="int8"`` step products: the fixed
input quantisation and the per-column weight quantisation (:func:`quantize_columns`).  The nodes
that use them are built in :mod:`models.gate_graph`; approval per version: :mod:`models.quantization`.
"""

from __future__ import annotations

import numpy as np


# Precisions of the per-step matrix products (the gate table, activations and head stay float32).
# "int8": h = o * tanh(c) lies in (-1, 1), as does every LSTM output a next layer reads, so step
# inputs are quantised with one fixed scale (1/127, uint8 with zero point 128) - no per-batch range,
# so a review's score never depends on the other rows of its batch - and multiplied by int8 weights
# (symmetric, one scale per output column) with ONNX Runtime's u8 x s8 kernels.  Not exact:
# registration measures what it costs in accuracy (models.quantization).
#
# The weights use [-64, 64], not [-127, 127], so that the integer sums are the same on every CPU.
# Without VNNI (AVX2, AVX-512BW) ONNX Runtime's kernels add each pair of adjacent u8 x s8 products
# in int16 (vpmaddubsw), which saturates: 255 * 127 * 2 = 64,770 > 32,767, and full-range graphs
# scored up to 0.31 away from VNNI machines.  With |q| <= 64 a pair is at most 255 * 128 = 32,640,
# so no intermediate saturates by construction and every kernel computes the exact int32 sum
# (bench/README.md: measured under an emulated AVX2 CPU).  The cost is one bit of weight
# resolution, i.e. a half-as-fine step per column (bench/quantized.py measures the accuracy).
PRECISIONS = ("float32", "int8")
INT8_INPUT_SCALE = np.float32(1.0 / 127.0)
INT8_INPUT_ZERO = np.uint8(128)
INT8_WEIGHT_MAX = 64


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-INT8_WEIGHT_MAX, INT8_WEIGHT_MAX] with one float32 scale per
    output column: ``w ~ q * scale``."""
    scale = np.maximum(np.abs(w).max(axis=0), np.finfo(np.float32).tiny) / INT8_WEIGHT_MAX
    q = np.clip(np.rint(w / scale), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).astype(np.int8)
    return q, scale.astype(np.float32)
