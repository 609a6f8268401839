"""The n-gram bag branch's Keras layers: hashed n-gram ids of a token matrix, and their masked mean.

A bag of word n-grams is what linear text classifiers (NBSVM, fastText) win IMDB with; beside
the LSTM it adds phrases ("not good", "waste of time") that one pass of a small LSTM learns
slowly.  The ids are computed *inside* the model from the same token matrix the LSTM reads, so a
version still takes one ``(batch, maxlen)`` input everywhere it is served, and the gate-table
ONNX graph computes the same ids with the same integer arithmetic (:mod:`models.gate_graph`).

The n-gram ``t_1 .. t_n`` at a position has the id ``1 + h mod (buckets - 1)``, where
``h = t_1 P^(n-1) + ... + t_n`` (P = :data:`PRIME`), computed in int64 as
``h_1 = t_1, h_j = (h_(j-1) P + t_j) mod (buckets - 1)``: the same residue, and no product
reaches 2^63 for any int32 token; an n-gram that touches padding (token 0) gets id 0, which the
bag's ``Embedding(mask_zero=True)`` masks.  Order k's ids fill columns ``[(k-1)T, kT)``, one per
start position (the last k-1 of them are always padding).

With ``distinct=True`` each review's ids come sorted, every repeat of an id replaced by 0: a bag
that sums them counts each distinct n-gram once, NBSVM's binarised features (Wang & Manning
2012), which score IMDB better than counts.  Sorting is the one way to find repeats per row that
Keras and ONNX (``TopK``) both offer; the sum does not depend on the order.

These are registered Keras classes (``reviews>``), so a version loads with ``safe_mode=True``
once this module is imported (:mod:`models.architecture` imports it).
"""

from __future__ import annotations

import keras
from keras import ops

PRIME = 1_000_003
MAX_ORDER = 3


@keras.saving.register_keras_serializable(package="reviews")
class HashedNgrams(keras.layers.Layer):
    """``(batch, T)`` token ids -> ``(batch, T * len(orders))`` n-gram bucket ids in [0, buckets)."""

    def __init__(self, buckets: int, orders: tuple[int, ...] = (1, 2), distinct: bool = False, **kwargs):
        super().__init__(**kwargs)
        orders = tuple(int(k) for k in orders)
        if buckets < 2 or not orders or any(not 1 <= k <= MAX_ORDER for k in orders):
            raise ValueError(f"HashedNgrams needs buckets >= 2 and orders within 1..{MAX_ORDER}, "
                             f"got {buckets}, {orders}")
        self.buckets = int(buckets)
        self.orders = orders
        self.distinct = bool(distinct)

    def call(self, tokens):
        t = ops.cast(tokens, "int64")
        width = ops.shape(t)[1]
        pad = ops.zeros_like(t)
        ids = []
        for k in self.orders:
            # Shifted views padded with 0 on the right: the n-gram starting at every position.
            h = t
            valid = ops.not_equal(t, 0)
            for j in range(1, k):
                nxt = ops.concatenate([t[:, j:], pad[:, :j]], axis=1)[:, :width]
                h = ops.mod(h * PRIME + nxt, self.buckets - 1)
                valid = ops.logical_and(valid, ops.not_equal(nxt, 0))
            bucket = 1 + ops.mod(h, self.buckets - 1)
            ids.append(ops.where(valid, bucket, ops.zeros_like(bucket)))
        ids = ops.cast(ops.concatenate(ids, axis=1), "int32")
        if self.distinct:
            ids = ops.sort(ids, axis=1)
            repeat = ops.equal(ids[:, 1:], ids[:, :-1])
            ids = ops.concatenate([ids[:, :1], ops.where(repeat, ops.zeros_like(ids[:, 1:]), ids[:, 1:])], axis=1)
        return ids

    def compute_output_shape(self, input_shape):
        width = input_shape[1]
        return (input_shape[0], None if width is None else width * len(self.orders))

    def get_config(self):
        return {**super().get_config(), "buckets": self.buckets, "orders": list(self.orders),
                "distinct": self.distinct}


@keras.saving.register_keras_serializable(package="reviews")
class MaskedSum(keras.layers.Layer):
    """The sum over unmasked steps: a linear model's logit over the n-grams present (the NB bag)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        if mask is None:
            return ops.sum(x, axis=1)
        return ops.sum(x * ops.expand_dims(ops.cast(mask, x.dtype), -1), axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="reviews")
class MaskedMean(MaskedSum):
    """The mean over unmasked steps; a row with none gives 0 (not NaN, as Keras' average pooling)."""

    def call(self, x, mask=None):
        if mask is None:
            return ops.mean(x, axis=1)
        m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
        return ops.sum(x * m, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)
