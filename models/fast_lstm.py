"""A faster ONNX graph for the Embedding-LSTM network: the gate table.

An LSTM step computes ``z = x_t W + h_{t-1} R + b`` (4U gate pre-activations).  For
the first LSTM ``x_t`` is an embedding row, so ``E[token] W + b`` depends on the token
only: it is computed once per vocabulary entry at build time (the V x 4U *gate
table*, float64 accumulation), and a step is left with ``Gather(table, token) + h R``.
For the seed model (E = 300, U = 128) that removes ``E / (E + U)`` = 70 % of the FLOPs
(3.3x fewer); the table is 4U/E = 1.7x the embedding's size (180 MB instead of 106 MB
for the full IMDB vocabulary).  The ONNX ``LSTM`` op cannot use the table (its input
projection with W = identity would cost 4U x 4U per step, more than E x 4U), so the
recurrence is spelled out, in one of two forms:

* ``loop`` (default): the step as the body of an ONNX ``Loop`` - a constant-size graph,
  built and loaded fast at any maxlen, and its trip count can be cut to the part of a
  batch that holds tokens (the ``window`` input; length-aware batching, see
  :func:`window_exact`); a masked model's loop also skips the masks where no row of the
  batch has padding (the ``dense`` input, see :func:`_build_loop`);
* ``unrolled``: ``maxlen`` copies of the step subgraph.  As fast as ``loop`` (within
  noise in ``bench/predictor.py``), but 15 nodes per step and no window.

A step: Gather (table rows), Gemm (``h R + rows``), Sigmoid over i, f, o, Tanh over the
candidate, Mul/Add/Tanh for ``c`` and ``h`` - with gate layout ``split`` (default) the
table and R are stored as (., 3U) and (., U) halves so no Split copy is needed before the
activations.  :class:`FastLstmPredictor` runs whole batches concurrently, one thread each
(:class:`BatchParallelOnnxPredictor`).

Semantics follow Keras exactly (``keras.src.backend.tensorflow.rnn``), including
``mask_zero``: a masked step keeps ``(h, c)``; its output is 0 when the RNN's
``zero_output_for_mask`` is set (Bidirectional with ``return_sequences``), else the
previous output.  Supported topology - anything else raises ``ValueError``:

    Input(int, fixed maxlen) -> Embedding(mask_zero?)
      -> n x (LSTM | Bidirectional(LSTM, merge_mode="concat")), all but the last
         returning sequences (the last may return sequences for pooling)
      -> [ReLU] -> [GlobalMaxPooling1D] -> [ReLU] -> Dense(1, sigmoid)

with Dropout / SpatialDropout1D anywhere (identity at inference), as a single chain.

LSTMs must use ``activation="tanh"``, ``recurrent_activation="sigmoid"``, float32,
no state in/out (``stateful``/``return_state``/``initial_state``).

``precision="int8"`` builds an approximate variant of the same graph (int8 step products, see
:data:`PRECISIONS`), served by :class:`Int8LstmPredictor` only where its accuracy cost was
measured and approved (:mod:`models.quantization`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from models.predictors import OnnxPredictor

OPSET = 17
INPUT_NAME = "tokens"
WINDOW_NAME = "window"
DENSE_NAME = "dense"
OUTPUT_NAME = "score"
FORMS = ("unrolled", "loop")
DEFAULT_FORM = "loop"
# The gate tables as ONNX external data (build_fast_parts): one file that the float32 and int8
# graphs of a version both reference, instead of a copy embedded in each (2 x 173 MB at seed size).
TABLES_FILE = "gate_tables.bin"


# ---------------------------------------------------------------------------
# Reading the Keras model
# ---------------------------------------------------------------------------

@dataclass
class LstmWeights:
    kernel: np.ndarray      # (input, 4U), Keras gate order i, f, c, o
    recurrent: np.ndarray   # (U, 4U)
    bias: np.ndarray        # (4U,)
    go_backwards: bool
    zero_output_for_mask: bool

    @property
    def units(self) -> int:
        return self.recurrent.shape[0]


@dataclass
class LstmLayer:
    directions: list[LstmWeights]   # [forward] or [forward, backward] (Bidirectional, concat)
    return_sequences: bool
    bidirectional: bool

    @property
    def width(self) -> int:
        return sum(d.units for d in self.directions)


@dataclass
class NetworkSpec:
    maxlen: int
    embeddings: np.ndarray          # (V, E)
    mask_zero: bool
    lstms: list[LstmLayer] = field(default_factory=list)
    pooling: str = "last"           # "last" | "max"
    relu: bool = False              # ReLU on the pooled features (commutes with max)
    dense_kernel: np.ndarray | None = None  # (D, 1)
    dense_bias: np.ndarray | None = None    # (1,)

    @property
    def vocab_size(self) -> int:
        return self.embeddings.shape[0]

    def step_flops(self) -> tuple[int, int]:
        """(plain, gate-table) multiply-add FLOPs per review per time step."""
        plain = fast = 0
        width = self.embeddings.shape[1]
        for i, layer in enumerate(self.lstms):
            for d in layer.directions:
                rec = 2 * d.units * 4 * d.units
                inp = 2 * width * 4 * d.units
                plain += rec + inp
                fast += rec + (0 if i == 0 else inp)
            width = layer.width
        return plain, fast


def _np(value) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _refuse(layer, why: str):
    raise ValueError(f"fast LSTM export: layer {layer.name!r} ({type(layer).__name__}) is not supported: {why}")


def _check_float32(layer) -> None:
    policy = getattr(layer, "dtype_policy", None)
    name = getattr(policy, "name", "float32")
    if name != "float32":
        _refuse(layer, f"dtype policy {name!r} (only float32)")
    if getattr(layer, "quantization_mode", None):
        _refuse(layer, f"quantized ({layer.quantization_mode})")


def _activation_name(fn) -> str:
    import keras

    try:
        name = keras.activations.serialize(fn)
    except Exception:  # noqa: BLE001 - a custom callable
        return repr(fn)
    return name if isinstance(name, str) else repr(name)


def _lstm_weights(layer, in_width: int) -> LstmWeights:
    import keras

    if not isinstance(layer, keras.layers.LSTM):
        _refuse(layer, "only LSTM recurrent layers are supported (not GRU/SimpleRNN/ConvLSTM/custom RNNs)")
    _check_float32(layer)
    cell = layer.cell
    act, rec_act = _activation_name(cell.activation), _activation_name(cell.recurrent_activation)
    if act != "tanh" or rec_act != "sigmoid":
        _refuse(layer, f"activation={act!r}, recurrent_activation={rec_act!r} (need 'tanh' and 'sigmoid')")
    if layer.stateful:
        _refuse(layer, "stateful=True")
    if layer.return_state:
        _refuse(layer, "return_state=True")
    kernel = _np(cell.kernel).astype(np.float32)
    recurrent = _np(cell.recurrent_kernel).astype(np.float32)
    units = cell.units
    bias = _np(cell.bias).astype(np.float32) if cell.use_bias else np.zeros(4 * units, np.float32)
    if kernel.shape != (in_width, 4 * units) or recurrent.shape != (units, 4 * units) or bias.shape != (4 * units,):
        _refuse(layer, f"unexpected weight shapes {kernel.shape}, {recurrent.shape}, {bias.shape}")
    return LstmWeights(kernel, recurrent, bias, bool(layer.go_backwards), bool(layer.zero_output_for_mask))


def _chain(model) -> list:
    """The model's layers in order, checked to form a single chain from one input to one output."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("fast LSTM export: the model must have exactly one input and one output")
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers:
        raise ValueError("fast LSTM export: the model has no layers")
    previous = model.inputs[0]
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            _refuse(layer, "a layer called more than once (shared layers)")
        args = nodes[0].arguments
        extra = set(args.kwargs) - {"mask", "training"}
        if len(args.args) != 1 or args.args[0] is not previous or extra:
            _refuse(layer, "the model is not a single chain of layers" +
                    (f" (extra call arguments {sorted(extra)})" if extra else ""))
        if len(nodes[0].outputs) != 1:
            _refuse(layer, "layers with several outputs")
        previous = nodes[0].outputs[0]
    if previous is not model.outputs[0]:
        raise ValueError("fast LSTM export: the model's output is not its last layer's output")
    return layers


def describe(model) -> NetworkSpec:
    """Read the supported topology and its weights from a Keras model; ValueError otherwise."""
    from keras import layers as L

    chain = _chain(model)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 2 or shape[1] is None:
        raise ValueError(f"fast LSTM export: the input must be (batch, maxlen) with a fixed maxlen, got {shape}")
    maxlen = int(shape[1])

    first = chain[0]
    if not isinstance(first, L.Embedding):
        _refuse(first, "the first layer must be an Embedding")
    _check_float32(first)
    embeddings = _np(first.embeddings).astype(np.float32, copy=False)
    spec = NetworkSpec(maxlen=maxlen, embeddings=embeddings, mask_zero=bool(first.mask_zero))

    state = "seq"          # "seq": a sequence (batch, T, D); "vec": (batch, D); "done": after Dense
    width = embeddings.shape[1]
    relu_on_seq = False
    for layer in chain[1:]:
        if state == "done":
            _refuse(layer, "layers after the final Dense")
        if isinstance(layer, (L.Dropout, L.SpatialDropout1D)):
            continue  # identity at inference
        if isinstance(layer, (L.RNN, L.Bidirectional)):  # non-LSTM RNNs are refused by _lstm_weights
            if state != "seq" or relu_on_seq or spec.pooling != "last":
                _refuse(layer, "an LSTM must follow the embedding or a sequence-returning LSTM directly")
            if isinstance(layer, L.Bidirectional):
                if layer.merge_mode != "concat":
                    _refuse(layer, f"merge_mode={layer.merge_mode!r} (only 'concat')")
                _check_float32(layer)
                if layer.forward_layer.go_backwards or not layer.backward_layer.go_backwards:
                    _refuse(layer, "the backward layer must be the one with go_backwards=True")
                dirs = [_lstm_weights(layer.forward_layer, width), _lstm_weights(layer.backward_layer, width)]
                lstm = LstmLayer(dirs, bool(layer.return_sequences), True)
            else:
                lstm = LstmLayer([_lstm_weights(layer, width)], bool(layer.return_sequences), False)
            spec.lstms.append(lstm)
            width = lstm.width
            state = "seq" if lstm.return_sequences else "vec"
            continue
        if not spec.lstms:
            _refuse(layer, "expected an LSTM after the embedding")
        if isinstance(layer, L.ReLU):
            cfg = layer.get_config()
            if cfg.get("max_value") is not None or cfg.get("negative_slope", 0.0) or cfg.get("threshold", 0.0):
                _refuse(layer, "only a plain ReLU (no max_value, negative_slope or threshold)")
            if spec.relu:
                continue  # relu(relu(x)) == relu(x)
            spec.relu = True
            relu_on_seq = state == "seq"
            continue
        if isinstance(layer, L.GlobalMaxPooling1D):
            cfg = layer.get_config()
            if state != "seq" or cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("keepdims"):
                _refuse(layer, "GlobalMaxPooling1D must pool a sequence over time (channels_last, keepdims=False)")
            spec.pooling = "max"
            state, relu_on_seq = "vec", False
            continue
        if isinstance(layer, L.Dense):
            _check_float32(layer)
            cfg = layer.get_config()
            if state != "vec":
                _refuse(layer, "Dense must receive the pooled (batch, features) vector")
            if cfg["units"] != 1 or cfg["activation"] != "sigmoid":
                _refuse(layer, f"the output must be Dense(1, 'sigmoid'), got units={cfg['units']}, "
                               f"activation={cfg['activation']!r}")
            spec.dense_kernel = _np(layer.kernel).astype(np.float32).reshape(width, 1)
            spec.dense_bias = (_np(layer.bias).astype(np.float32).reshape(1) if layer.use_bias
                               else np.zeros(1, np.float32))
            state = "done"
            continue
        _refuse(layer, "not one of Embedding, SpatialDropout1D, Dropout, LSTM, Bidirectional(LSTM), ReLU, "
                       "GlobalMaxPooling1D, Dense(1, sigmoid)")
    if state != "done":
        raise ValueError("fast LSTM export: the model must end in Dense(1, sigmoid) on pooled features")
    if not spec.lstms:
        raise ValueError("fast LSTM export: the model has no LSTM")
    if spec.lstms[-1].return_sequences and spec.pooling != "max":
        raise ValueError("fast LSTM export: the last LSTM returns sequences but nothing pools them")
    return spec


# ---------------------------------------------------------------------------
# Building the ONNX graph
# ---------------------------------------------------------------------------

def _reorder(w: np.ndarray, units: int) -> np.ndarray:
    """Keras gate columns i, f, c, o -> i, f, o, c (one Sigmoid over the first 3U)."""
    i, f, c, o = (w[..., k * units:(k + 1) * units] for k in range(4))
    return np.ascontiguousarray(np.concatenate([i, f, o, c], axis=-1))


def gate_table(embeddings: np.ndarray, weights: LstmWeights, chunk: int = 8192) -> np.ndarray:
    """``embeddings @ kernel + bias`` for every vocabulary row (float64 accumulation), gates i, f, o, c."""
    kernel = weights.kernel.astype(np.float64)
    bias = weights.bias.astype(np.float64)
    # Each chunk's columns go straight to their reordered place: no second V x 4U table.
    order = _reorder(np.arange(kernel.shape[1]), weights.units)
    out = np.empty((embeddings.shape[0], kernel.shape[1]), np.float32)
    for s in range(0, len(embeddings), chunk):
        out[s:s + chunk] = (embeddings[s:s + chunk].astype(np.float64) @ kernel + bias)[:, order]
    return out


class _Graph:
    """Nodes and initializers of one ONNX graph.  A ``Loop`` body has the enclosing graph as
    ``outer``: its constants live there (outer-scope references), its :meth:`local` ones in it."""

    def __init__(self, prefix: str = "", outer: _Graph | None = None, tables: str = "embedded"):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.prefix = prefix
        self.window = False  # the graph declares the optional window input
        self.dense = False   # ... and the optional dense input
        self._count = 0
        self._consts: dict = {}
        self._locals: dict = {}
        self.outer = outer
        self.table_mode = tables    # where the gate tables go (see :meth:`table`)
        self.tables: list[np.ndarray] = []  # "external": their values, in file order
        self.table_bytes = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, hint: str = "c", dtype=None) -> str:
        if self.outer is not None:
            return self.outer.const(value, hint, dtype)
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 8 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def table(self, value: np.ndarray | None, shape: tuple[int, int], hint: str) -> str:
        """A gate table: an initializer like :meth:`const`'s (mode ``embedded``), or one whose data
        is at the next offset of TABLES_FILE - ``external``: ``value`` is kept for the file,
        ``given``: the file exists already (``value`` None).  The tables come in the same order at
        every precision, so a model's float32 and int8 graphs reference the same bytes."""
        if self.table_mode == "embedded":
            return self.const(value, hint)
        from onnx import TensorProto

        name = self.name(hint)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape, data_location=TensorProto.EXTERNAL)
        nbytes = int(np.prod(shape)) * 4
        for key, val in {"location": TABLES_FILE, "offset": self.table_bytes, "length": nbytes}.items():
            tensor.external_data.add(key=key, value=str(val))
        self.initializers.append(tensor)
        self.table_bytes += nbytes
        if value is not None:
            self.tables.append(np.ascontiguousarray(value, np.float32))
        return name

    def local(self, value: np.ndarray, hint: str) -> str:
        """An initializer of this graph itself (not shared through ``const`` with an outer graph),
        made once per array object: for weights ONNX Runtime should pre-pack (see :class:`_Weight`)."""
        key = id(value)
        if key not in self._locals:
            name = self.name(hint)
            self.initializers.append(self.numpy_helper.from_array(value, name))
            self._locals[key] = (value, name)  # the array is kept, so its id is not reused
        return self._locals[key][1]

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           **attrs):
        names = outputs if isinstance(outputs, list) else [self.name(hint or op_type.lower())
                                                            for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names


# Gate layouts: how a step's 4U pre-activations are grouped into tensors (each group has its own
# table / recurrent-kernel columns and its own Gemm).  "fused": one (N, 4U) tensor, split after the
# Gemm; "split": (N, 3U) for the sigmoid gates i, f, o and (N, U) for the candidate, no split copy.
LAYOUTS = ("fused", "split")
DEFAULT_LAYOUT = "split"


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
_MS = "com.microsoft"


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-INT8_WEIGHT_MAX, INT8_WEIGHT_MAX] with one float32 scale per
    output column: ``w ~ q * scale``."""
    scale = np.maximum(np.abs(w).max(axis=0), np.finfo(np.float32).tiny) / INT8_WEIGHT_MAX
    q = np.clip(np.rint(w / scale), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX).astype(np.int8)
    return q, scale.astype(np.float32)


def _groups(layout: str, units: int) -> list[tuple[int, int]]:
    return [(0, 4 * units)] if layout == "fused" else [(0, 3 * units), (3 * units, 4 * units)]


def _cols(w: np.ndarray, group: tuple[int, int]) -> np.ndarray:
    return np.ascontiguousarray(w[..., group[0]:group[1]])


def _cell(g: _Graph, zs: list[str], c_prev: str | None, units: int, mask: str | None, h_prev: str | None,
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


class _Weight:
    """One weight matrix of a step's products, float32 or int8 (see PRECISIONS).

    Its initializers are made in the graph of the node that multiplies by it (:meth:`_Graph.local`),
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
    def prepare(g: _Graph, x: str, precision: str) -> str:
        """``x`` as the products take it: quantised once, however many weights it meets."""
        if precision != "int8":
            return x
        return g.op("QuantizeLinear", [x, g.const(INT8_INPUT_SCALE, "xs"), g.const(INT8_INPUT_ZERO, "xz")], "xq")

    def times_plus(self, g: _Graph, x: str, acc: str, hint: str) -> str:
        """``x @ w + acc`` (``x`` from :meth:`prepare`)."""
        if not self.int8:
            return g.op("Gemm", [x, g.local(self.w, self.hint), acc], hint)
        y = g.op("MatMulIntegerToFloat", [x, g.local(self.q, self.hint + "q"), g.const(INT8_INPUT_SCALE, "xs"),
                                          g.local(self.scale, self.hint + "s"), g.const(INT8_INPUT_ZERO, "xz")],
                 hint + "_i8", domain=_MS)
        return g.op("Add", [y, acc], hint)


class _Inputs:
    """Per-group initializers for one direction's input pre-activations (the ``base`` of a step)."""

    def __init__(self, g: _Graph, spec: NetworkSpec, layer_index: int, d: LstmWeights,
                 part_widths: list[int], layout: str, tag: str, precision: str = "float32"):
        self.groups = _groups(layout, d.units)
        self.first = layer_index == 0
        self.precision = precision
        if self.first:
            table = None if g.table_mode == "given" else gate_table(spec.embeddings, d)
            self.tables = [g.table(None if table is None else _cols(table, gr), (spec.vocab_size, gr[1] - gr[0]),
                                   f"{tag}_table") for gr in self.groups]
        else:
            kernel = _reorder(d.kernel, d.units)
            bias = _reorder(d.bias, d.units)
            self.biases = [g.const(_cols(bias, gr), f"{tag}_b") for gr in self.groups]
            self.weights = []  # [group][part]
            for gr in self.groups:
                row, ws = 0, []
                for width in part_widths:
                    ws.append(_Weight(_cols(kernel[row:row + width], gr), f"{tag}_W", precision))
                    row += width
                self.weights.append(ws)
        recurrent = _reorder(d.recurrent, d.units)
        self.recurrent = [_Weight(_cols(recurrent, gr), f"{tag}_R", precision) for gr in self.groups]

    def bases(self, g: _Graph, tokens: str | None, parts: list[str] | None) -> list[str]:
        """Nodes (in graph ``g``) computing the step's input pre-activations from the token ids
        (first layer) or the previous layer's outputs at this position."""
        if self.first:
            return [g.op("Gather", [t, tokens], "g", axis=0) for t in self.tables]
        out = []
        xs = [_Weight.prepare(g, x, self.precision) for x in parts]
        for bias, ws in zip(self.biases, self.weights):
            acc = bias
            for x, w in zip(xs, ws):
                acc = w.times_plus(g, x, acc, "xw")
            out.append(acc)
        return out

    def step(self, g: _Graph, bases: list[str], h: str | None) -> list[str]:
        if h is None:  # first step: h = 0
            return bases
        h = _Weight.prepare(g, h, self.precision)
        return [r.times_plus(g, h, b, "z") for r, b in zip(self.recurrent, bases)]


def _head(g: _Graph, spec: NetworkSpec, features: list[str]) -> None:
    feat = features[0] if len(features) == 1 else g.op("Concat", features, "feat", axis=1)
    if spec.relu:
        feat = g.op("Relu", [feat], "relu")
    logit = g.op("Gemm", [feat, g.const(spec.dense_kernel, "dense_w"), g.const(spec.dense_bias, "dense_b")],
                 "logit")
    g.op("Sigmoid", [logit], outputs=[OUTPUT_NAME])


def _mask_seq(g: _Graph, xt: str) -> str:
    """(T, N, 1) bool: token != 0."""
    return g.op("Unsqueeze", [g.op("Not", [g.op("Equal", [xt, g.const(np.int32(0), "pad")], "eq")], "m"),
                              g.const([2], "ax", np.int64)], "mask")


def _build_unrolled(spec: NetworkSpec, layout: str, precision: str, tables: str = "embedded") -> _Graph:
    g = _Graph(tables=tables)
    T = spec.maxlen
    xt = g.op("Transpose", [INPUT_NAME], "xt", perm=[1, 0])                     # (T, N)
    idx = [g.op("Gather", [xt, g.const(np.int64(k), "t")], "idx", axis=0) for k in range(T)]  # (N,)
    masks = None
    if spec.mask_zero:
        m = _mask_seq(g, xt)
        masks = [g.op("Gather", [m, g.const(np.int64(k), "t")], "mk", axis=0) for k in range(T)]

    seq: list[list[str]] = []  # previous layer's outputs by position: list of parts
    part_widths: list[int] = []
    features: list[str] = []
    for li, layer in enumerate(spec.lstms):
        finals, per_dir = [], []
        for di, d in enumerate(layer.directions):
            inp = _Inputs(g, spec, li, d, part_widths, layout, f"l{li}d{di}", precision)
            h = c = None
            outs = []
            for k in (range(T - 1, -1, -1) if d.go_backwards else range(T)):
                bases = inp.bases(g, idx[k], seq[k] if li else None)
                zs = inp.step(g, bases, h)
                h, c, out = _cell(g, zs, c, d.units, masks[k] if masks else None, h, d.zero_output_for_mask)
                outs.append(out)
            finals.append(h)
            # Keras: a Bidirectional layer flips the backward outputs back into time order;
            # a standalone go_backwards LSTM returns them in processing order.
            if layer.bidirectional and d.go_backwards:
                outs = outs[::-1]
            per_dir.append(outs)
        if layer.return_sequences:
            seq = [list(parts) for parts in zip(*per_dir)]
            part_widths = [d.units for d in layer.directions]
            if li == len(spec.lstms) - 1:  # pooled (max; relu commutes with it, see _head)
                features = [g.op("Max", outs, "maxpool") for outs in per_dir]
        else:
            features = finals
    _head(g, spec, features)
    return g


def window_exact(spec: NetworkSpec) -> bool:
    """Whether running only the positions ``[start, stop)`` of a batch, when every position outside
    is padding in every row, gives exactly the full result.  With ``mask_zero`` the skipped steps
    leave ``(h, c)`` unchanged (forward: leading zeros state, backward: trailing), and their outputs
    are 0 or copies of earlier outputs; dropping them cannot change the final state, nor the max
    over time once a ReLU makes every output >= 0 (a copy never changes a max).  Not for a
    standalone ``go_backwards`` LSTM feeding another one: Keras hands on its outputs in processing
    (reversed) order with the unreversed mask, so positions and padding no longer line up."""
    reversed_seq = any(not layer.bidirectional and d.go_backwards
                       for layer in spec.lstms[:-1] for d in layer.directions)
    return spec.mask_zero and (spec.pooling == "last" or spec.relu) and not reversed_seq


def _build_loop(spec: NetworkSpec, layout: str, precision: str, tables: str = "embedded") -> _Graph:
    """Each direction a chain of ONNX ``Loop``s over positions ``[start, stop)`` of the optional
    ``window`` input (default ``[0, maxlen]``; only declared when :func:`window_exact`).

    A masked model also takes the optional ``dense`` input ``[a, b)`` (default empty): positions
    where every row of the batch holds a token, so masking them is the identity.  Each direction
    then runs three loops, ``[start, a)`` and ``[b, stop)`` with masks and ``[a, b)`` without:
    on the long padding-free middle of a length-sorted batch that saves the three ``Where``
    nodes per step (1.39x on the ``default`` preset in ``bench/predictor.py``), bit for bit.
    (Several steps per ``Loop`` iteration were tried too: no faster.)"""
    from onnx import TensorProto, helper

    g = _Graph(tables=tables)
    T = spec.maxlen
    xt = g.op("Transpose", [INPUT_NAME], "xt", perm=[1, 0])                     # (T, N)
    batch = g.op("Slice", [g.op("Shape", [INPUT_NAME], "shape"), g.const([0], "s0", np.int64),
                           g.const([1], "s1", np.int64)], "batch")
    mask_seq = _mask_seq(g, xt) if spec.mask_zero else None

    def pair(name: str, default: list[int]) -> tuple[str, str]:
        g.initializers.append(g.numpy_helper.from_array(np.array(default, np.int64), name))
        return (g.op("Gather", [name, g.const(np.int64(0), "i0")], f"{name}0", axis=0),
                g.op("Gather", [name, g.const(np.int64(1), "i1")], f"{name}1", axis=0))

    if window_exact(spec):
        g.window = True
        start, stop = pair(WINDOW_NAME, [0, T])
    else:
        start, stop = g.const(np.int64(0), "start"), g.const(np.int64(T), "stop")
    if spec.mask_zero:
        g.dense = True
        a, b = pair(DENSE_NAME, [0, 0])
        a = g.op("Min", [g.op("Max", [a, start], "a"), stop], "a")  # start <= a <= b <= stop
        b = g.op("Min", [g.op("Max", [b, a], "b"), stop], "b")
    else:
        a, b = start, stop
    # (first position, one past the last, masked), in time order; an unmasked model has one
    segments = [(start, a, True), (a, b, False), (b, stop, True)] if spec.mask_zero else [(start, stop, False)]
    one = g.const(np.int64(1), "one")

    seq_parts: list[str] = []  # previous layer's outputs, (stop - start, N, U) per part, time order
    part_widths: list[int] = []
    features: list[str] = []
    for li, layer in enumerate(spec.lstms):
        top = li == len(spec.lstms) - 1
        pooled = top and layer.return_sequences         # max over time, as a running max
        scanned = layer.return_sequences and not top    # the next layer reads every output
        finals, parts = [], []
        for di, d in enumerate(layer.directions):
            tag = f"l{li}d{di}"
            inp = _Inputs(g, spec, li, d, part_widths, layout, tag, precision)
            shape = g.op("Concat", [batch, g.const([d.units], "u", np.int64)], "shape", axis=0)
            zeros = g.op("ConstantOfShape", [shape], "zeros",
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
            state = [zeros, zeros]
            if pooled:
                state.append(g.op("ConstantOfShape", [shape], "ninf",
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [-np.inf])))
            pieces = []  # scanned outputs, processing order
            seq_shape = g.op("Concat", [g.const([-1], "m1", np.int64), shape], "seq_shape", axis=0)
            order = reversed(segments) if d.go_backwards else segments
            for si, (lo, hi, masked) in enumerate(order):
                # backward: from the segment's last position down
                first = g.op("Sub", [hi, one], "last") if d.go_backwards else lo
                results = _segment_loop(g, f"{tag}s{si}", li, d, inp, xt, seq_parts, start,
                                        mask_seq if masked else None, first, g.op("Sub", [hi, lo], "trip"),
                                        state, pooled, scanned)
                state = results[:len(state)]
                if scanned:  # a loop of no iterations scans out a (0,) tensor: give it its rank
                    pieces.append(g.op("Reshape", [results[-1], seq_shape], "piece"))
            finals.append(state[2] if pooled else state[0])
            if scanned:
                seq_out = g.op("Concat", pieces, "seq", axis=0)  # (stop - start, N, U), processing order
                if layer.bidirectional and d.go_backwards:
                    seq_out = g.op("Slice", [seq_out, g.const([-1], "r0", np.int64),
                                             g.const([np.iinfo(np.int64).min], "r1", np.int64),
                                             g.const([0], "r2", np.int64), g.const([-1], "r3", np.int64)], "flip")
                parts.append(seq_out)
        seq_parts = parts
        part_widths = [d.units for d in layer.directions]
        features = finals
    _head(g, spec, features)
    return g


def _segment_loop(g: _Graph, tag: str, li: int, d: LstmWeights, inp: "_Inputs", xt: str,
                  seq_parts: list[str], origin: str, mask_seq: str | None, first: str, trip: str,
                  state: list[str], pooled: bool, scanned: bool) -> list[str]:
    """One ``Loop`` of ``trip`` LSTM steps from position ``first`` (forward: up, backward: down),
    carrying ``state`` = (h, c[, running max]); returns the new state, then (when ``scanned``)
    the step outputs as (trip, N, U) in processing order.  ``mask_seq`` None: no step is masked."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    body = _Graph(prefix=f"{tag}_", outer=g)
    it, cond_in, h_in, c_in, m_in = (f"{tag}_{n}" for n in ("it", "cond", "h_in", "c_in", "max_in"))
    k = body.op("Sub" if d.go_backwards else "Add", [first, it], "k")
    tokens = body.op("Gather", [xt, k], "idx", axis=0) if li == 0 else None
    prev = None
    if li:
        rel = body.op("Sub", [k, origin], "rel")
        prev = [body.op("Gather", [p, rel], "x", axis=0) for p in seq_parts]
    zs = inp.step(body, inp.bases(body, tokens, prev), h_in)
    mask = body.op("Gather", [mask_seq, k], "mk", axis=0) if mask_seq else None
    h, c, out = _cell(body, zs, c_in, d.units, mask, h_in, d.zero_output_for_mask)
    results = [body.op("Identity", [cond_in], "cond_out"), h, c]
    ins = [helper.make_tensor_value_info(it, TensorProto.INT64, []),
           helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
           helper.make_tensor_value_info(h_in, f32, None),
           helper.make_tensor_value_info(c_in, f32, None)]
    if pooled:
        results.append(body.op("Max", [m_in, out], "max"))
        ins.append(helper.make_tensor_value_info(m_in, f32, None))
    if scanned:
        results.append(out if out not in results else body.op("Identity", [out], "o"))
    graph = helper.make_graph(body.nodes, f"{tag}_body", ins,
                              [helper.make_tensor_value_info(o, TensorProto.BOOL if i == 0 else f32, None)
                               for i, o in enumerate(results)], initializer=body.initializers)
    return g.op("Loop", [trip, g.const(np.bool_(True), "true"), *state], f"{tag}_loop",
                outputs=len(results) - 1, body=graph)


def build_fast_onnx(model, form: str = DEFAULT_FORM, layout: str = DEFAULT_LAYOUT,
                    precision: str = "float32") -> bytes:
    """The gate-table ONNX graph of a supported Keras model (ValueError if unsupported).

    Input ``tokens``: int32 (batch, maxlen); output ``score``: float32 (batch, 1).  The ``loop``
    form of a masked model also takes an optional ``window`` (int64 [start, stop], default
    [0, maxlen]): only those positions are run, which is exact when all others are padding
    (:func:`window_exact`; :class:`FastLstmPredictor` uses it for length-aware batching), and
    the ``loop`` form of any masked model an optional ``dense`` (int64 [a, b], default empty):
    positions where no row has padding, run without masks (see :func:`_build_loop`).
    ``precision="int8"``: the approximate graph of :data:`PRECISIONS`."""
    return build_from_spec(describe(model), form, layout, precision)


def build_fast_parts(model, precision: str = "float32", tables: bytes | None = None) -> tuple[bytes, bytes]:
    """(graph, tables): :func:`build_fast_onnx`'s graph (default form and layout) with its gate
    tables as ONNX external data in :data:`TABLES_FILE` (``tables``: that file's bytes).  The
    same computation; ``tables`` is the same for both precisions, so a version stores it once,
    and given the other precision's ``tables`` they are not computed again (4 s and 250 MB at
    seed size).  Served by :class:`FastLstmPredictor` with ``external_data={TABLES_FILE: tables}``."""
    graph, g = _serialise(describe(model), DEFAULT_FORM, DEFAULT_LAYOUT, precision,
                          "external" if tables is None else "given")
    if tables is None:
        return graph, b"".join(t.data for t in g.tables)
    if len(tables) != g.table_bytes:
        raise ValueError(f"fast LSTM export: the given gate tables hold {len(tables)} bytes, the model's "
                         f"{g.table_bytes}")
    return graph, tables


def build_from_spec(spec: NetworkSpec, form: str = DEFAULT_FORM, layout: str = DEFAULT_LAYOUT,
                    precision: str = "float32") -> bytes:
    return _serialise(spec, form, layout, precision)[0]


def _serialise(spec: NetworkSpec, form: str, layout: str, precision: str,
               tables: str = "embedded") -> tuple[bytes, _Graph]:
    from onnx import TensorProto, helper

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    g = (_build_unrolled if form == "unrolled" else _build_loop)(spec, layout, precision, tables)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT32, ["batch", spec.maxlen])]
    if g.window:
        inputs.append(helper.make_tensor_value_info(WINDOW_NAME, TensorProto.INT64, [2]))
    if g.dense:
        inputs.append(helper.make_tensor_value_info(DENSE_NAME, TensorProto.INT64, [2]))
    graph = helper.make_graph(
        g.nodes, "fast_lstm", inputs,
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1])],
        initializer=g.initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(_MS, 1)] if precision == "int8" else [])
    onnx_model = helper.make_model(graph, opset_imports=opsets,
                                   producer_name="imdb-reviews-fast-lstm")
    onnx_model.ir_version = 8
    return onnx_model.SerializeToString(), g


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
    a masked model, see :func:`window_exact`): rows are sorted by their non-padding span
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
        """``external_data``: ``{TABLES_FILE: tables}`` for a graph from :func:`build_fast_parts`."""
        super().__init__(onnx_bytes, batch_size=batch_size, threads=threads, external_data=external_data)
        # A graph input with a default (an initializer) is listed as an overridable initializer.
        names = {i.name for i in self.session.get_inputs()} | {
            i.name for i in self.session.get_overridable_initializers()}
        self.length_aware = bool(length_aware and WINDOW_NAME in names)
        self.dense = bool(dense and DENSE_NAME in names)  # graphs registered before it existed lack it

    @classmethod
    def from_model(cls, model, form: str = DEFAULT_FORM, layout: str = DEFAULT_LAYOUT,
                   **kwargs) -> "FastLstmPredictor":
        return cls(build_fast_onnx(model, form=form, layout=layout), **kwargs)

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
