"""One LSTM step of the gate-table graph (:mod:`models.gate_graph`): the input pre-activations
(gate-table rows for the first layer, the previous layer's outputs times W above it), the recurrent
product ``h R`` and the cell update, each product in float32 or int8 (:mod:`models.int8_maths`).
Both graph forms, ``loop`` and ``unrolled``, build their steps from these pieces."""

from __future__ import annotations

import numpy as np

from models.int8_maths import INT8_INPUT_SCALE, INT8_INPUT_ZERO, quantize_columns
from models.lstm_spec import LstmWeights, NetworkSpec, gate_table, reorder_gates
from models.onnx_graph import Graph

MS_DOMAIN = "com.microsoft"


def groups(layout: str, units: int) -> list[tuple[int, int]]:
    return [(0, 4 * units)] if layout == "fused" else [(0, 3 * units), (3 * units, 4 * units)]


def _cols(w: np.ndarray, group: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(w[..., group[0]:group[1]])


def cell(g: Graph, zs: list[str], c_prev: str | None, units: int, mask: str | None, h_prev: str | None,
          zero_output: bool) -> tuple[str, str, str]:
    """One LSTM step from the pre-activations ``zs`` (gates i, f, o, c, grouped) -> (h, c, output)."""
    if len(zs) == 1:
        sig_part, cand_part = g.op("Split", [zs[0], g.const([3 * units, units], "split", np.int64)], "zs",
                                   outputs=2, axis=1)
    else:
        sig_part, cand_part = zs
    gates = g.op("Sigmoid", [sig_part], "sig")
    cand = g.op("Tanh", [cand_part], "cand")
    i, f, o = g.op("Split", [gates, g.const([units] * 3, "split", np.int64)], "ifo", outputs=3, axis=1)
    ig = g.op("Mul", [i, cand], "ig")
    c_new = ig if c_prev is None else g.op("Add", [g.op("Mul", [f, c_prev], "fc"), ig], "c")
    h_new = g.op("Mul", [o, g.op("Tanh", [c_new], "tc")], "h")
    if mask is None:
        return h_new, c_new, h_new
    zero = g.const(np.float32(0), "zero")
    c = g.op("Where", [mask, c_new, c_prev or zero], "cm")
    h = g.op("Where", [mask, h_new, h_prev or zero], "hm")
    out = g.op("Where", [mask, h_new, zero], "om") if zero_output else h
    return h, c, out


class Weight:
    """One weight matrix of a step's products, float32 or int8 (see :mod:`models.int8_maths`).

    Its initializers are made in the graph of the node that multiplies by it (:meth:`Graph.local`),
    also inside a ``Loop`` body: ONNX Runtime pre-packs a Gemm/MatMul weight only when it is an
    initializer of the node's own graph, not an outer-scope value.  Packing it again at every step
    cost 1.03-1.34x at maxlen 50 and 1.07-1.48x on the ``default`` preset in A/B runs, the most in
    the VM's slow phases (``bench/README.md``)."""

    def __init__(self, w: np.ndarray, hint: str, precision: str):
        self.int8 = precision == "int8"
        self.hint = hint
        if self.int8:
            self.q, self.scale = quantize_columns(w)
        else:
            self.w = w

    @staticmethod
    def prepare(g: Graph, x: str, precision: str) -> str:
        """``x`` as the products take it: quantised once, however many weights it meets."""
        if precision != "int8":
            return x
        return g.op("QuantizeLinear", [x, g.const(INT8_INPUT_SCALE, "xs"), g.const(INT8_INPUT_ZERO, "xz")], "xq")

    def times_plus(self, g: Graph, x: str, acc: str, hint: str) -> str:
        """``x @ w + acc`` (``x`` from :meth:`prepare`)."""
        if not self.int8:
            return g.op("Gemm", [x, g.local(self.w, self.hint), acc], hint)
        y = g.op("MatMulIntegerToFloat", [x, g.local(self.q, self.hint + "q"), g.const(INT8_INPUT_SCALE, "xs"),
                                          g.local(self.scale, self.hint + "s"), g.const(INT8_INPUT_ZERO, "xz")],
                 hint + "_i8", domain=MS_DOMAIN)
        return g.op("Add", [y, acc], hint)


class StepInputs:
    """Per-group initializers for one direction's input pre-activations (the ``base`` of a step)."""

    def __init__(self, g: Graph, spec: NetworkSpec, layer_index: int, d: LstmWeights,
                 part_widths: list[int], layout: str, tag: str, precision: str = "float32"):
        self.groups = groups(layout, d.units)
        self.first = layer_index == 0
        self.precision = precision
        if self.first:
            table = None if g.table_mode == "given" else gate_table(spec.embeddings, d)
            self.tables = [g.table(None if table is None else _cols(table, gr), (spec.vocab_size, gr[1] - gr[0]),
                                   f"{tag}_table") for gr in self.groups]
        else:
            kernel = reorder_gates(d.kernel, d.units)
            bias = reorder_gates(d.bias, d.units)
            self.biases = [g.const(_cols(bias, gr), f"{tag}_b") for gr in self.groups]
            self.weights = []  # [group][part]
            for gr in self.groups:
                row, ws = 0, []
                for width in part_widths:
                    ws.append(Weight(_cols(kernel[row:row + width], gr), f"{tag}_W", precision))
                    row += width
                self.weights.append(ws)
        recurrent = reorder_gates(d.recurrent, d.units)
        self.recurrent = [Weight(_cols(recurrent, gr), f"{tag}_R", precision) for gr in self.groups]

    def bases(self, g: Graph, tokens: str | None, parts: list[str] | None) -> list[str]:
        """Nodes (in graph ``g``) computing the step's input pre-activations from the token ids
        (first layer) or the previous layer's outputs at this position."""
        if self.first:
            return [g.op("Gather", [t, tokens], "g", axis=0) for t in self.tables]
        out = []
        xs = [Weight.prepare(g, x, self.precision) for x in parts]
        for bias, ws in zip(self.biases, self.weights):
            acc = bias
            for x, w in zip(xs, ws):
                acc = w.times_plus(g, x, acc, "xw")
            out.append(acc)
        return out

    def step(self, g: Graph, bases: list[str], h: str | None) -> list[str]:
        if h is None:  # first step: h = 0
            return bases
        h = Weight.prepare(g, h, self.precision)
        return [r.times_plus(g, h, b, "z") for r, b in zip(self.recurrent, bases)]
