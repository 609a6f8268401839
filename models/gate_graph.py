"""The gate-table ONNX graph of a :class:`~models.lstm_spec.NetworkSpec` (:func:`build_fast_onnx`,
:func:`build_fast_parts`, :func:`build_from_spec`).

The ONNX ``LSTM`` op cannot use the gate table (:func:`models.lstm_spec.gate_table`; its input
projection with W = identity would cost 4U x 4U per step, more than E x 4U), so the
recurrence is spelled out, in one of two forms:

* ``loop`` (default): the step as the body of an ONNX ``Loop`` - a constant-size graph,
  built and loaded fast at any maxlen, and its trip count can be cut to the part of a
  batch that holds tokens (the ``window`` input; length-aware batching, see
  :func:`~models.lstm_spec.window_exact`); a masked model's loop also skips the masks where no
  row of the batch has padding (the ``dense`` input, see :func:`_build_loop`);
* ``unrolled``: ``maxlen`` copies of the step subgraph.  As fast as ``loop`` (within
  noise in ``bench/predictor.py``), but 15 nodes per step and no window.

A step: Gather (table rows), Gemm (``h R + rows``), Sigmoid over i, f, o, Tanh over the
candidate, Mul/Add/Tanh for ``c`` and ``h`` - with gate layout ``split`` (default) the
table and R are stored as (., 3U) and (., U) halves so no Split copy is needed before the
activations (the step's pieces: :mod:`models.gate_step`).  Served by
:mod:`models.fast_predictors`.

``precision="int8"`` builds an approximate variant of the same graph (int8 step products, see
:mod:`models.int8_maths`), served by :class:`~models.fast_predictors.Int8LstmPredictor` only
where its accuracy cost was measured and approved (:mod:`models.quantization`).
"""

from __future__ import annotations

import numpy as np

from models.gate_step import MS_DOMAIN, StepInputs, cell
from models.int8_maths import PRECISIONS
from models.lstm_spec import LstmWeights, NetworkSpec, describe, window_exact
from models.onnx_graph import Graph

OPSET = 17
INPUT_NAME = "tokens"
WINDOW_NAME = "window"
DENSE_NAME = "dense"
OUTPUT_NAME = "score"
FORMS = ("unrolled", "loop")
DEFAULT_FORM = "loop"

# Gate layouts: how a step's 4U pre-activations are grouped into tensors (each group has its own
# table / recurrent-kernel columns and its own Gemm).  "fused": one (N, 4U) tensor, split after the
# Gemm; "split": (N, 3U) for the sigmoid gates i, f, o and (N, U) for the candidate, no split copy.
LAYOUTS = ("fused", "split")
DEFAULT_LAYOUT = "split"


def _head(g: Graph, spec: NetworkSpec, features: list[str]) -> None:
    feat = features[0] if len(features) == 1 else g.op("Concat", features, "feat", axis=1)
    if spec.relu:
        feat = g.op("Relu", [feat], "relu")
    kernel = spec.dense_kernel
    if spec.ngram is not None:
        kernel = kernel[:-spec.ngram.width]
    logit = g.op("Gemm", [feat, g.const(kernel, "dense_w"), g.const(spec.dense_bias, "dense_b")], "logit")
    if spec.ngram is not None:
        logit = g.op("Add", [logit, _ngram_logit(g, spec)], "joined_logit")
    g.op("Sigmoid", [logit], outputs=[OUTPUT_NAME])


def _ngram_logit(g: Graph, spec: NetworkSpec) -> str:
    """(N, 1): the n-gram bag's share of the logit, with :class:`models.ngram_layers.HashedNgrams`'
    ids (the same int64 arithmetic).  The Dense after the bag's mean is linear, so each bucket's
    row is folded into its scalar share of the logit (``E @ k_bag``): a table of one float per
    bucket instead of d (4 MB instead of 64 at the `default` preset), and one gathered float per
    n-gram.  The table's row 0 is stored as zero, so masked ids add nothing and the sum needs no
    mask; the count of unmasked ids (at least 1) divides it."""
    from models.ngram_layers import PRIME

    bag = spec.ngram
    t = g.op("Cast", [INPUT_NAME], "t64", to=7)  # int64
    zero = g.const(np.int64(0), "zero64")
    ids = []
    for k in bag.orders:
        h, valid = t, g.op("Not", [g.op("Equal", [t, zero], "pad")], "valid")
        for j in range(1, k):
            # The token j positions on, 0 past the end: Slice then Pad on the right.
            nxt = g.op("Pad", [g.op("Slice", [t, g.const([j], "j", np.int64), g.const([spec.maxlen], "T", np.int64),
                                              g.const([1], "ax1", np.int64)], "tail"),
                               g.const([0, 0, 0, j], "pads", np.int64)], "next")
            h = g.op("Mod", [g.op("Add", [g.op("Mul", [h, g.const(np.int64(PRIME), "prime")], "hp"), nxt], "hn"),
                             g.const(np.int64(bag.buckets - 1), "mod")], "h")
            valid = g.op("And", [valid, g.op("Not", [g.op("Equal", [nxt, zero], "pad")], "v")], "valid")
        bucket = g.op("Add", [g.op("Mod", [h, g.const(np.int64(bag.buckets - 1), "mod")], "hm"),
                              g.const(np.int64(1), "one64")], "bucket")
        ids.append(g.op("Where", [valid, bucket, zero], "ids"))
    ids = ids[0] if len(ids) == 1 else g.op("Concat", ids, "ids", axis=1)
    if bag.distinct:
        ids = _distinct(g, ids, spec.maxlen * len(bag.orders))
    table = (bag.embeddings.astype(np.float64) @ spec.dense_kernel[-bag.width:].astype(np.float64)).astype(np.float32)
    table[0] = 0.0
    rows = g.op("Gather", [g.table(table if g.table_mode != "given" else None, table.shape, "ngram_table"), ids],
                "ngram_rows", axis=0)                                            # (N, TK, 1)
    total = g.op("ReduceSum", [rows, g.const([1], "ax1", np.int64)], "ngram_sum", keepdims=0)
    if bag.pooling == "sum":
        return total
    count = g.op("ReduceSum", [g.op("Cast", [g.op("Not", [g.op("Equal", [ids, zero], "masked")], "kept")],
                                     "keptf", to=1), g.const([1], "ax1", np.int64)], "ngram_count", keepdims=1)
    return g.op("Div", [total, g.op("Max", [count, g.const(np.float32(1.0), "onef")], "count")], "ngram_logit")


def _distinct(g: Graph, ids: str, width: int) -> str:
    """Each row's ids sorted, every repeat replaced by 0: :class:`HashedNgrams`' ``distinct``."""
    ids = g.op("TopK", [ids, g.const([width], "width", np.int64)], "sorted", outputs=2, axis=1, largest=0,
               sorted=1)[0]
    rest = g.op("Slice", [ids, g.const([1], "j", np.int64), g.const([width], "T", np.int64),
                          g.const([1], "ax1", np.int64)], "rest")
    before = g.op("Slice", [ids, g.const([0], "z", np.int64), g.const([width - 1], "T1", np.int64),
                            g.const([1], "ax1", np.int64)], "before")
    rest = g.op("Where", [g.op("Equal", [rest, before], "repeat"), g.const(np.int64(0), "zero64"), rest], "once")
    first = g.op("Slice", [ids, g.const([0], "z", np.int64), g.const([1], "one", np.int64),
                           g.const([1], "ax1", np.int64)], "first")
    return g.op("Concat", [first, rest], "distinct", axis=1)


def _mask_seq(g: Graph, xt: str) -> str:
    """(T, N, 1) bool: token != 0."""
    return g.op("Unsqueeze", [g.op("Not", [g.op("Equal", [xt, g.const(np.int32(0), "pad")], "eq")], "m"),
                              g.const([2], "ax", np.int64)], "mask")


def _build_unrolled(spec: NetworkSpec, layout: str, precision: str, tables: str = "embedded") -> Graph:
    g = Graph(tables=tables)
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
            inp = StepInputs(g, spec, li, d, part_widths, layout, f"l{li}d{di}", precision)
            h = c = None
            outs = []
            for k in (range(T - 1, -1, -1) if d.go_backwards else range(T)):
                bases = inp.bases(g, idx[k], seq[k] if li else None)
                zs = inp.step(g, bases, h)
                h, c, out = cell(g, zs, c, d.units, masks[k] if masks else None, h, d.zero_output_for_mask)
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



def _build_loop(spec: NetworkSpec, layout: str, precision: str, tables: str = "embedded") -> Graph:
    """Each direction a chain of ONNX ``Loop``s over positions ``[start, stop)`` of the optional
    ``window`` input (default ``[0, maxlen]``; only declared when :func:`window_exact`).

    A masked model also takes the optional ``dense`` input ``[a, b)`` (default empty): positions
    where every row of the batch holds a token, so masking them is the identity.  Each direction
    then runs three loops, ``[start, a)`` and ``[b, stop)`` with masks and ``[a, b)`` without:
    on the long padding-free middle of a length-sorted batch that saves the three ``Where``
    nodes per step (1.39x on the ``default`` preset in ``bench/predictor.py``), bit for bit.
    (Several steps per ``Loop`` iteration were tried too: no faster.)"""
    from onnx import TensorProto, helper

    g = Graph(tables=tables)
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
            inp = StepInputs(g, spec, li, d, part_widths, layout, tag, precision)
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


def _segment_loop(g: Graph, tag: str, li: int, d: LstmWeights, inp: StepInputs, xt: str,
                  seq_parts: list[str], origin: str, mask_seq: str | None, first: str, trip: str,
                  state: list[str], pooled: bool, scanned: bool) -> list[str]:
    """One ``Loop`` of ``trip`` LSTM steps from position ``first`` (forward: up, backward: down),
    carrying ``state`` = (h, c[, running max]); returns the new state, then (when ``scanned``)
    the step outputs as (trip, N, U) in processing order.  ``mask_seq`` None: no step is masked."""
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    body = Graph(prefix=f"{tag}_", outer=g)
    it, cond_in, h_in, c_in, m_in = (f"{tag}_{n}" for n in ("it", "cond", "h_in", "c_in", "max_in"))
    k = body.op("Sub" if d.go_backwards else "Add", [first, it], "k")
    tokens = body.op("Gather", [xt, k], "idx", axis=0) if li == 0 else None
    prev = None
    if li:
        rel = body.op("Sub", [k, origin], "rel")
        prev = [body.op("Gather", [p, rel], "x", axis=0) for p in seq_parts]
    zs = inp.step(body, inp.bases(body, tokens, prev), h_in)
    mask = body.op("Gather", [mask_seq, k], "mk", axis=0) if mask_seq else None
    h, c, out = cell(body, zs, c_in, d.units, mask, h_in, d.zero_output_for_mask)
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
    (:func:`~models.lstm_spec.window_exact`; :class:`~models.fast_predictors.FastLstmPredictor` uses it for length-aware batching), and
    the ``loop`` form of any masked model an optional ``dense`` (int64 [a, b], default empty):
    positions where no row has padding, run without masks (see :func:`_build_loop`).
    ``precision="int8"``: the approximate graph of :data:`~models.int8_maths.PRECISIONS`."""
    return build_from_spec(describe(model), form, layout, precision)


def build_fast_parts(model, precision: str = "float32", tables: bytes | None = None) -> tuple[bytes, bytes]:
    """(graph, tables): :func:`build_fast_onnx`'s graph (default form and layout) with its gate
    tables as ONNX external data in :data:`~models.onnx_graph.TABLES_FILE` (``tables``: that file's bytes).  The
    same computation; ``tables`` is the same for both precisions, so a version stores it once,
    and given the other precision's ``tables`` they are not computed again (4 s and 250 MB at
    seed size).  Served by :class:`~models.fast_predictors.FastLstmPredictor` with ``external_data={TABLES_FILE: tables}``."""
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
               tables: str = "embedded") -> tuple[bytes, Graph]:
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
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(MS_DOMAIN, 1)] if precision == "int8" else [])
    onnx_model = helper.make_model(graph, opset_imports=opsets,
                                   producer_name="imdb-reviews-fast-lstm")
    onnx_model.ir_version = 8
    return onnx_model.SerializeToString(), g

