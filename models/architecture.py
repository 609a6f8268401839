"""The Embedding-LSTM network.

``seed``: ``Embedding(vocab, 300) -> LSTM(128) -> Dense(1, sigmoid)`` (the Keras tutorial).

In general: ``Embedding(vocab, embedding_dim, mask_zero?) -> [SpatialDropout1D] ->
lstm_layers x [Bi]LSTM(lstm_units) -> pooling -> [Dropout] -> Dense(1, sigmoid)``.

With ``mask_zero=True`` index 0 (padding) is masked: the LSTMs skip padded steps
exactly, so a review's score does not depend on how much padding surrounds it.
That is what lets training cut each batch to its own longest review (length
bucketing, :mod:`models.training`) while inference keeps the fixed ``maxlen``
matrix.  Pooling must then ignore padded steps too:

* ``last``: the final LSTM state - masked steps leave it untouched.
* ``max``: global max over time of ``ReLU(outputs)``.  Keras'
  ``GlobalMaxPooling1D`` ignores masks, but a masked step's LSTM output is either 0
  (bidirectional layers, or before the first token) or a copy of an earlier step's
  output (after the last token), and after the ReLU every real step is >= 0, so
  neither can change the maximum.  Without a mask the plain outputs are pooled, as
  before.

With ``ngram_buckets`` an n-gram bag branch reads the same token matrix beside the LSTM:
hashed word n-grams -> ``Embedding(mask_zero)`` -> masked mean (or sum), concatenated with the
pooled LSTM features before the output (:mod:`models.ngram_layers`, :mod:`models.ngram_bag`).
Its ids depend on the tokens only and n-grams touching padding are masked, so it too is exact on
length-bucketed batches.

Apart from that branch's registered layer classes, only built-in Keras layers are used, so
that models load with ``safe_mode=True``; the gate-table ONNX graph serves both.
"""

from __future__ import annotations

import warnings

from models.presets import TrainConfig

# Keras warns on every trace that GlobalMaxPooling1D drops the mask: intended, see above.
warnings.filterwarnings("ignore", message=r"Layer 'max_pool' \(of type GlobalMaxPooling1D\) was passed an input "
                        r"with a mask")


def build_model(config: TrainConfig, input_dim: int, sequence_length: int | None | str = "maxlen",
                steps_per_epoch: int | None = None):
    """The network for ``config``; ``sequence_length=None`` gives a variable-length input
    (training on length buckets), the default the fixed ``config.maxlen`` (serving, export).
    The two share layer names and weight shapes, so ``set_weights`` moves weights across.
    ``steps_per_epoch``: needed for ``config.ema_momentum`` (when the average is folded in)."""
    import keras
    from keras import layers

    length = config.maxlen if sequence_length == "maxlen" else sequence_length
    inputs = keras.Input(shape=(length,), dtype="int32", name="tokens")
    x = layers.Embedding(input_dim, config.embedding_dim, mask_zero=config.mask_zero, name="embedding")(inputs)
    if config.embedding_dropout:
        # Drops whole embedding channels across the review: a cheap, strong regulariser for text.
        x = layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    for i in range(config.lstm_layers):
        top = i == config.lstm_layers - 1
        suffix = "" if top else f"_{i + 1}"
        lstm = layers.LSTM(config.lstm_units, return_sequences=not top or config.pooling == "max",
                           name="lstm" + suffix)
        x = layers.Bidirectional(lstm, name="bilstm" + suffix)(x) if config.bidirectional else lstm(x)
    if config.pooling == "max":
        if config.mask_zero:
            x = layers.ReLU(name="relu")(x)
        x = layers.GlobalMaxPooling1D(name="max_pool")(x)
    if config.ngram_buckets:
        x = layers.Concatenate(name="features")([x, ngram_bag(config, inputs)])
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="score")(x)
    model = keras.Model(inputs, outputs, name=f"imdb_lstm_{config.preset}")
    compile_model(model, config, steps_per_epoch)
    return model


def ngram_bag(config: TrainConfig, tokens):
    """The n-gram bag branch: hashed n-grams of orders 1..ngram_order -> Embedding -> masked mean
    (``mean``) or sum (``nb``, its ratios folded into the table: :mod:`models.ngram_bag`)."""
    from keras import layers

    from models.ngram_bag import bag_ids, pooling

    bag = layers.Embedding(config.ngram_buckets, config.ngram_dim, mask_zero=True, name="ngram_embedding")
    return pooling(config)(bag(bag_ids(config)(tokens)))


def join_apart(config: TrainConfig, input_dim: int, lstm_model, bag_model, lstm_weight: float):
    """The network of ``config`` scoring ``sigmoid(w * logit_lstm + (1 - w) * logit_bag)``, from an
    LSTM and a bag trained apart.  A weighted sum of the two logits is one Dense over the
    concatenated features, so the joined network is the served topology, with no new layer: the
    gate-table graph and every predictor serve it unchanged."""
    import numpy as np

    from models.ngram_bag import served_weights

    model = build_model(config, input_dim)
    for layer in lstm_model.layers:
        if layer.weights and layer.name != "score":
            model.get_layer(layer.name).set_weights(layer.get_weights())
    for name, weights in served_weights(bag_model).items():
        model.get_layer(name).set_weights(weights)
    k_lstm, b_lstm = lstm_model.get_layer("score").get_weights()
    k_bag, b_bag = bag_model.get_layer("ngram_score").get_weights()
    w = float(lstm_weight)
    model.get_layer("score").set_weights([np.concatenate([w * k_lstm, (1.0 - w) * k_bag]).astype(np.float32),
                                          (w * b_lstm + (1.0 - w) * b_bag).astype(np.float32)])
    return model


def compile_model(model, config: TrainConfig, steps_per_epoch: int | None = None) -> None:
    import keras

    ema = {}
    if config.ema_momentum and steps_per_epoch:
        # Keras' own Polyak averaging: the average overwrites the weights every epoch's last
        # step, so validation, early stopping and the saved model all see the averaged weights.
        ema = dict(use_ema=True, ema_momentum=config.ema_momentum, ema_overwrite_frequency=steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate, **ema),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
