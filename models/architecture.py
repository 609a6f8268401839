"""The Embedding-LSTM network: Embedding(vocab, 300) -> LSTM(128) -> Dense(1, sigmoid).

Only built-in Keras layers are used so that models load with ``safe_mode=True``
and export to ONNX.
"""

from __future__ import annotations

from models.presets import TrainConfig


def build_model(config: TrainConfig, input_dim: int):
    import keras
    from keras import layers

    inputs = keras.Input(shape=(config.maxlen,), dtype="int32", name="tokens")
    x = layers.Embedding(input_dim, config.embedding_dim, name="embedding")(inputs)
    if config.embedding_dropout:
        # Drops whole word vectors, not single units: a cheap, strong regulariser for text.
        x = layers.SpatialDropout1D(config.embedding_dropout, name="embedding_dropout")(x)
    lstm = layers.LSTM(config.lstm_units, return_sequences=config.pooling == "max", name="lstm")
    x = layers.Bidirectional(lstm, name="bilstm")(x) if config.bidirectional else lstm(x)
    if config.pooling == "max":
        x = layers.GlobalMaxPooling1D(name="max_pool")(x)
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="score")(x)
    model = keras.Model(inputs, outputs, name=f"imdb_lstm_{config.preset}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model
