"""The n-gram bag trained apart from the LSTM (``ngram_epochs``): its training network, the
naive-Bayes ratios of the ``nb`` weighting, and the weights it hands to the served network.

``mean`` (fastText): hashed n-grams -> ``Embedding(buckets, d)`` -> masked mean -> Dense.

``nb`` (NBSVM's logistic-regression form, Wang & Manning 2012): the score of a review is
``sum_j theta_j r_j`` over its n-gram buckets ``j`` (each distinct one once with
``ngram_distinct``), where ``r_j = log((p_j/|p|) / (q_j/|q|))`` is bucket j's log-count ratio
between the positive and the negative training reviews (``p_j``, ``q_j``: reviews holding it, plus
1) and ``theta`` is learned under the penalty ``|theta|^2 / (2 C n)``.  The ratio is the prior on
each feature's sign and size; the penalty on ``theta`` rather than on ``theta * r`` shrinks rare,
uninformative n-grams hardest.  Trained, ``theta * r`` is folded into one table, so the served
branch is ``Embedding(buckets, 1) -> MaskedSum`` with the Dense kernel 1 and bias 0: one float per
bucket, the layout the gate-table graph already serves.
"""

from __future__ import annotations

import numpy as np

from models.presets import TrainConfig

# Laplace smoothing of the per-bucket review counts (NBSVM's alpha).
NB_ALPHA = 1.0


def bag_ids(config: TrainConfig):
    """The bag's id layer, as the served network and the training network both build it."""
    from models.ngram_layers import HashedNgrams

    return HashedNgrams(config.ngram_buckets, tuple(range(1, config.ngram_order + 1)), distinct=config.ngram_distinct,
                        name="ngram_ids")


def pooling(config: TrainConfig):
    from models.ngram_layers import MaskedMean, MaskedSum

    return MaskedSum(name="ngram_sum") if config.ngram_weighting == "nb" else MaskedMean(name="ngram_mean")


def nb_ratios(config: TrainConfig, x: np.ndarray, y: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """(buckets,) float32 log-count ratios of the training reviews ``x`` (row 0, padding: 0)."""
    ids = bag_ids(config)
    positive = np.zeros(config.ngram_buckets, np.float64)
    negative = np.zeros(config.ngram_buckets, np.float64)
    y = np.asarray(y).reshape(-1) > 0.5
    for start in range(0, len(x), batch_size):
        rows, pos = np.asarray(ids(x[start:start + batch_size])), y[start:start + batch_size]
        positive += np.bincount(rows[pos].ravel(), minlength=config.ngram_buckets)
        negative += np.bincount(rows[~pos].ravel(), minlength=config.ngram_buckets)
    p, q = positive + NB_ALPHA, negative + NB_ALPHA
    p[0] = q[0] = NB_ALPHA  # padding's count is meaningless; its row is masked anyway
    ratios = np.log(p / p.sum()) - np.log(q / q.sum())
    ratios[0] = 0.0
    return ratios.astype(np.float32)


def build_bag_model(config: TrainConfig, ratios: np.ndarray | None = None, n_train: int | None = None):
    """The n-gram bag alone on the ``maxlen`` token matrix; its layers are named as in the joined
    network.  ``nb`` needs the training split's ``ratios`` and its size ``n_train`` (the penalty)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(config.maxlen,), dtype="int32", name="tokens")
    ids = bag_ids(config)(inputs)
    if config.ngram_weighting == "nb":
        if ratios is None or not n_train:
            raise ValueError("the nb bag needs the training split's ratios and size")
        theta = layers.Embedding(config.ngram_buckets, 1, mask_zero=True, embeddings_initializer="zeros",
                                 embeddings_regularizer=keras.regularizers.L2(1.0 / (2.0 * config.ngram_c * n_train)),
                                 name="ngram_embedding")(ids)
        ratio = layers.Embedding(config.ngram_buckets, 1, mask_zero=True, trainable=False, name="ngram_ratio")
        weighted = layers.Multiply(name="ngram_weighted")([theta, ratio(ids)])
        # Kernel 1, bias 0, frozen: a free scale here would undo the penalty on theta.
        score = layers.Dense(1, activation="sigmoid", kernel_initializer="ones", trainable=False, name="ngram_score")
        model = keras.Model(inputs, score(pooling(config)(weighted)), name=f"imdb_ngram_bag_{config.preset}")
        ratio.set_weights([np.asarray(ratios, np.float32).reshape(-1, 1)])
    else:
        bag = layers.Embedding(config.ngram_buckets, config.ngram_dim, mask_zero=True, name="ngram_embedding")(ids)
        outputs = layers.Dense(1, activation="sigmoid", name="ngram_score")(pooling(config)(bag))
        model = keras.Model(inputs, outputs, name=f"imdb_ngram_bag_{config.preset}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.ngram_learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


def served_weights(bag_model) -> dict[str, list[np.ndarray]]:
    """The bag's weights by layer name in the served (joined) network: ``nb``'s factors folded
    into its ratios; the ``ngram_score`` head is left to the join."""
    table = bag_model.get_layer("ngram_embedding").get_weights()[0]
    if any(layer.name == "ngram_ratio" for layer in bag_model.layers):
        table = table * bag_model.get_layer("ngram_ratio").get_weights()[0]
    return {"ngram_embedding": [table.astype(np.float32)]}
