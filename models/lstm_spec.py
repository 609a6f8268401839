"""The Keras Embedding-LSTM model read into a :class:`NetworkSpec`, and its gate tables.

An LSTM step computes ``z = x_t W + h_{t-1} R + b`` (4U gate pre-activations).  For
the first LSTM ``x_t`` is an embedding row, so ``E[token] W + b`` depends on the token
only: it is computed once per vocabulary entry at build time (the V x 4U *gate
table*, float64 accumulation, :func:`gate_table`), and a step is left with
``Gather(table, token) + h R`` (the graph: :mod:`models.gate_graph`).
For the seed model (E = 300, U = 128) that removes ``E / (E + U)`` = 70 % of the FLOPs
(3.3x fewer); the table is 4U/E = 1.7x the embedding's size (180 MB instead of 106 MB
for the full IMDB vocabulary).

Semantics follow Keras exactly (``keras.src.backend.tensorflow.rnn``), including
``mask_zero``: a masked step keeps ``(h, c)``; its output is 0 when the RNN's
``zero_output_for_mask`` is set (Bidirectional with ``return_sequences``), else the
previous output.  Supported topology - anything else raises ``ValueError`` (:func:`describe`):

    Input(int, fixed maxlen) -> Embedding(mask_zero?)
      -> n x (LSTM | Bidirectional(LSTM, merge_mode="concat")), all but the last
         returning sequences (the last may return sequences for pooling)
      -> [ReLU] -> [GlobalMaxPooling1D] -> [ReLU] -> [Concatenate with the n-gram bag]
      -> Dense(1, sigmoid)

with Dropout / SpatialDropout1D anywhere (identity at inference), as a single chain, except for
the optional n-gram bag branch off the input: ``HashedNgrams -> Embedding(mask_zero) -> MaskedMean``
(:mod:`models.ngram_layers`), joined to the pooled LSTM features by a ``Concatenate`` (LSTM first).

LSTMs must use ``activation="tanh"``, ``recurrent_activation="sigmoid"``, float32,
no state in/out (``stateful``/``return_state``/``initial_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
class NgramBag:
    buckets: int
    orders: tuple[int, ...]
    embeddings: np.ndarray          # (buckets, d); row 0 (n-grams touching padding) is masked
    distinct: bool = False          # each distinct id of a review once (repeats masked)
    pooling: str = "mean"           # "mean" | "sum" over the unmasked ids

    @property
    def width(self) -> int:
        return self.embeddings.shape[1]


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
    ngram: NgramBag | None = None           # the n-gram bag's features follow the LSTM's

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
    branch = _ngram_branch(model, layers)
    layers = [layer for layer in layers if layer not in branch]
    previous = model.inputs[0]
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            _refuse(layer, "a layer called more than once (shared layers)")
        args = nodes[0].arguments
        extra = set(args.kwargs) - {"mask", "training"}
        if branch and isinstance(layer, keras.layers.Concatenate):
            joined = args.args[0] if len(args.args) == 1 else None
            if (not isinstance(joined, (list, tuple)) or len(joined) != 2 or joined[0] is not previous
                    or joined[1] is not branch[-1]._inbound_nodes[0].outputs[0]
                    or layer.get_config().get("axis") not in (-1, 1)):
                _refuse(layer, "a Concatenate must join the pooled LSTM features and the n-gram bag, in that order")
        elif len(args.args) != 1 or args.args[0] is not previous or extra:
            _refuse(layer, "the model is not a single chain of layers" +
                    (f" (extra call arguments {sorted(extra)})" if extra else ""))
        if len(nodes[0].outputs) != 1:
            _refuse(layer, "layers with several outputs")
        previous = nodes[0].outputs[0]
    if previous is not model.outputs[0]:
        raise ValueError("fast LSTM export: the model's output is not its last layer's output")
    return layers


def _ngram_branch(model, layers: list) -> list:
    """The n-gram bag's three layers (input -> HashedNgrams -> Embedding(mask_zero) -> MaskedMean or
    MaskedSum), checked; [] when the model has none."""
    from models.ngram_layers import HashedNgrams, MaskedSum

    starts = [layer for layer in layers if isinstance(layer, HashedNgrams)]
    if not starts:
        return []
    if len(starts) > 1:
        _refuse(starts[1], "more than one n-gram branch")
    import keras

    branch, previous = [], model.inputs[0]
    for kind in (HashedNgrams, keras.layers.Embedding, MaskedSum):  # MaskedMean is one too
        users = [layer for layer in layers if layer not in branch and any(
            a is previous for a in layer._inbound_nodes[0].arguments.args)] if branch else starts
        if len(users) != 1 or not isinstance(users[0], kind) or len(users[0]._inbound_nodes) != 1:
            _refuse(users[0] if users else starts[0],
                    "the n-gram branch must be HashedNgrams -> Embedding -> MaskedMean or MaskedSum")
        branch.append(users[0])
        previous = users[0]._inbound_nodes[0].outputs[0]
    if not branch[1].mask_zero:
        _refuse(branch[1], "the n-gram embedding must mask id 0 (mask_zero=True)")
    _check_float32(branch[1])
    return branch


def _ngram_bag(model) -> NgramBag | None:
    import keras

    branch = _ngram_branch(model, [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)])
    if not branch:
        return None
    from models.ngram_layers import MaskedMean

    ids, embedding, pool = branch
    table = _np(embedding.embeddings).astype(np.float32)
    if table.shape[0] != ids.buckets:
        _refuse(embedding, f"{table.shape[0]} rows for {ids.buckets} n-gram buckets")
    return NgramBag(ids.buckets, tuple(ids.orders), table, distinct=ids.distinct,
                    pooling="mean" if isinstance(pool, MaskedMean) else "sum")  # MaskedMean is a MaskedSum


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
    spec = NetworkSpec(maxlen=maxlen, embeddings=embeddings, mask_zero=bool(first.mask_zero), ngram=_ngram_bag(model))

    state = "seq"          # "seq": a sequence (batch, T, D); "vec": (batch, D); "done": after Dense
    width = embeddings.shape[1]
    relu_on_seq = joined = False
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
            if joined:
                _refuse(layer, "a ReLU after the n-gram bag joined")
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
        if isinstance(layer, L.Concatenate):  # the n-gram bag joins (checked by _chain)
            if state != "vec":
                _refuse(layer, "the n-gram bag must join the pooled (batch, features) vector")
            width += spec.ngram.width
            joined = True
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



def reorder_gates(w: np.ndarray, units: int) -> np.ndarray:
    """Keras gate columns i, f, c, o -> i, f, o, c (one Sigmoid over the first 3U)."""
    i, f, c, o = (w[..., k * units:(k + 1) * units] for k in range(4))
    return np.ascontiguousarray(np.concatenate([i, f, o, c], axis=-1))


def gate_table(embeddings: np.ndarray, weights: LstmWeights, chunk: int = 8192) -> np.ndarray:
    """``embeddings @ kernel + bias`` for every vocabulary row (float64 accumulation), gates i, f, o, c."""
    kernel = weights.kernel.astype(np.float64)
    bias = weights.bias.astype(np.float64)
    # Each chunk's columns go straight to their reordered place: no second V x 4U table.
    order = reorder_gates(np.arange(kernel.shape[1]), weights.units)
    out = np.empty((embeddings.shape[0], kernel.shape[1]), np.float32)
    for s in range(0, len(embeddings), chunk):
        out[s:s + chunk] = (embeddings[s:s + chunk].astype(np.float64) @ kernel + bias)[:, order]
    return out


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

