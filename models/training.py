"""Fitting the network: plain functions, no orchestration."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from models.architecture import build_model, join_apart
from models.ngram_bag import build_bag_model, nb_ratios
from models.preprocessing import OOV
from models.presets import TrainConfig


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray


def validation_split(n: int, fraction: float, seed: int) -> Split:
    """A seeded random hold-out of the training rows (never the test split)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return Split(train=np.sort(order[n_val:]), validation=np.sort(order[:n_val]))


def epoch_callback(on_epoch: Callable[[int, dict[str, float]], None]):
    import keras

    class _EpochHook(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            on_epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})

    return _EpochHook()


# At most about this many training points per epoch: enough for a curve, few enough for the metadata.
STEP_POINTS_PER_EPOCH = 50


def step_callback(steps_per_epoch: int, into: dict[str, list[float]]):
    """Training loss/accuracy every few batches into ``into`` (``step`` is the global batch count).

    A one-epoch run would otherwise have a single point per curve.  Keras
    reports the running mean since the epoch began, so each epoch's curve starts noisy and smooths.
    """
    import keras

    every = max(1, steps_per_epoch // STEP_POINTS_PER_EPOCH)

    class _StepHook(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % every and batch + 1 != steps_per_epoch:
                return
            into.setdefault("step", []).append(self.epoch * steps_per_epoch + batch + 1)
            for key in ("loss", "accuracy"):
                if logs and key in logs:
                    into.setdefault(key, []).append(float(logs[key]))

    return _StepHook()


def row_lengths(x: np.ndarray) -> np.ndarray:
    """Tokens per row of a padded matrix (0 is padding only, never a token)."""
    return np.count_nonzero(x, axis=1)


def trim_batch(x: np.ndarray, width: int) -> np.ndarray:
    """The batch cut to the columns that hold tokens, widened to a multiple of ``width``.

    Works for pre and post padding alike: only all-padding columns are dropped, so a
    model that masks padding scores every row exactly as on the full matrix.
    """
    used = np.flatnonzero(x.any(axis=0))
    if not len(used):
        return x[:, :width]
    first, last = int(used[0]), int(used[-1]) + 1
    size = min(x.shape[1], -(-(last - first) // width) * width)
    start = min(first, x.shape[1] - size)
    return x[:, start:start + size]


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                   pool_batches: int = 50) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length.

    With ``rng``: shuffle, sort by length within pools of ``pool_batches`` batches, cut
    into batches, shuffle the batch order (random batches, little padding).  Without:
    every row sorted by length (evaluation).
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
    else:
        order = rng.permutation(n)
        pool = batch_size * pool_batches
        order = np.concatenate([chunk[np.argsort(lengths[chunk], kind="stable")]
                                for chunk in np.split(order, range(pool, n, pool))]) if n else order
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def bucketed_dataset(x: np.ndarray, y: np.ndarray | None, batch_size: int, width: int, seed: int | None,
                     token_dropout: float = 0.0):
    """A ``tf.data`` pipeline of length-bucketed, trimmed batches.

    ``seed`` given: a fresh seeded shuffle every epoch (epoch ``e`` uses ``(seed, e)``), so
    a run is reproducible; ``None``: a fixed length-sorted order.  ``token_dropout`` (with a
    seed only): each word (index > OOV; not padding, the start marker or OOV itself) becomes
    OOV with that probability, drawn afresh every epoch.
    """
    import tensorflow as tf

    lengths = row_lengths(x)
    epoch = [0]
    y = None if y is None else np.asarray(y, dtype=np.float32)

    def generate():
        rng = None if seed is None else np.random.default_rng([seed, epoch[0]])
        epoch[0] += 1
        for idx in length_batches(lengths, batch_size, rng):
            idx = np.sort(idx)
            xb = trim_batch(x[idx], width)
            if token_dropout and rng is not None:
                xb = np.where((xb > OOV) & (rng.random(xb.shape) < token_dropout), OOV, xb).astype(np.int32)
            yield (xb, y[idx]) if y is not None else xb

    spec = tf.TensorSpec((None, None), tf.int32)
    signature = spec if y is None else (spec, tf.TensorSpec((None,), tf.float32))
    n_batches = -(-len(x) // batch_size)
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    # A known length: Keras then neither warns about running out of data nor guesses the epoch size.
    return dataset.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


@contextlib.contextmanager
def own_seed_stream(seed: int):
    """Keras seeds every layer that has no explicit seed from Python's process-wide ``random``
    module, which other threads of this process draw from too (Prefect's services, the S3 client's
    retry jitter...): a draw between ``set_random_seed`` and the model build would change the
    initial weights and the run.  Inside this block Keras draws from its own stream, seeded like
    the global one after ``set_random_seed(seed)``, so the weights are the same as before -
    whatever other threads do."""
    from keras.src.random import seed_generator

    shared = seed_generator.python_random
    seed_generator.python_random = random.Random(seed)
    try:
        yield
    finally:
        seed_generator.python_random = shared


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    train_seconds: float
    epoch_seconds: list[float]
    epochs_run: int
    best_epoch: int
    # Training metrics every few batches (``step_callback``) and the batches per epoch, so the
    # per-epoch validation points sit at steps ``epoch * steps_per_epoch``.
    step_history: dict[str, list[float]] = field(default_factory=dict)
    steps_per_epoch: int = 0
    # A network trained in parts (``ngram_epochs``): each part's training and how they were joined.
    parts: dict[str, Any] = field(default_factory=dict)


def fit(
    config: TrainConfig,
    input_dim: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    verbose: int | str | None = None,
) -> FitResult:
    import keras

    if config.ngram_epochs:
        return _fit_apart(config, input_dim, x_train, y_train, x_val, y_val, on_epoch, verbose)
    keras.utils.set_random_seed(config.seed)
    bucketed = bool(config.bucket_width)
    # Bucketed batches vary in length: train a variable-length twin of the serving model.
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    with own_seed_stream(config.seed):  # every layer's seed is drawn here (initialisers, dropout)
        model = build_model(config, input_dim, sequence_length=None if bucketed else "maxlen",
                            steps_per_epoch=steps_per_epoch)
    has_val = x_val is not None and len(x_val) > 0
    epoch_times: list[float] = []
    callbacks: list[Any] = []

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.t0)

    callbacks.append(_Timer())
    step_history: dict[str, list[float]] = {}
    callbacks.append(step_callback(steps_per_epoch, step_history))
    if on_epoch is not None:
        callbacks.append(epoch_callback(on_epoch))
    if config.learning_rate_decay != 1.0:
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: config.learning_rate * config.learning_rate_decay ** epoch))
    callbacks += _early_stopping(config, has_val)
    verbose = _verbosity(verbose)
    start = time.perf_counter()
    if bucketed:
        history = model.fit(
            bucketed_dataset(x_train, y_train, config.batch_size, config.bucket_width, config.seed,
                             config.token_dropout),
            epochs=config.epochs,
            validation_data=bucketed_dataset(x_val, y_val, 512, config.bucket_width, None) if has_val else None,
            shuffle=False,  # the pipeline shuffles, seeded per epoch
            callbacks=callbacks,
            verbose=verbose,
        )
        trained = model
        model = build_model(config, input_dim)  # fixed maxlen: what is served and exported
        model.set_weights(trained.get_weights())
    else:
        history = model.fit(
            x_train,
            y_train.astype(np.float32),
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=(x_val, y_val.astype(np.float32)) if has_val else None,
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    hist = _floats(history.history)
    return FitResult(model, hist, seconds, epoch_times, len(hist.get("loss", [])),
                     _best_epoch(hist, config.early_stopping_monitor), step_history, steps_per_epoch)


def _floats(history: dict[str, list]) -> dict[str, list[float]]:
    return {k: [float(v) for v in vals] for k, vals in history.items()}


def _early_stopping(config: TrainConfig, has_val: bool) -> list[Any]:
    import keras

    if config.early_stopping_patience is None or not has_val:
        return []
    return [keras.callbacks.EarlyStopping(monitor=config.early_stopping_monitor,
                                          patience=config.early_stopping_patience, restore_best_weights=True)]


def _verbosity(verbose: int | str | None) -> int | str:
    # A live progress bar on a terminal, one line per epoch in logs.
    return (1 if sys.stdout.isatty() else 2) if verbose is None else verbose


def _best_epoch(hist: dict[str, list[float]], monitor: str) -> int:
    monitored = hist.get(monitor)
    if not monitored:
        return len(hist.get("loss", []))
    pick = np.argmax if monitor == "val_accuracy" else np.argmin
    return int(pick(monitored)) + 1  # the first best epoch, as Keras' EarlyStopping keeps it


def _fit_apart(config: TrainConfig, input_dim: int, x_train, y_train, x_val, y_val, on_epoch, verbose) -> FitResult:
    """The n-gram bag trained on its own (large batches, a large step, its own best epoch), then the
    LSTM alone exactly as without the bag, joined into one network that averages their logits with
    the weight that scores the validation split best (even weights without one)."""
    import keras

    has_val = x_val is not None and len(x_val) > 0
    keras.utils.set_random_seed(config.seed)
    start = time.perf_counter()
    ratios = nb_ratios(config, x_train, y_train) if config.ngram_weighting == "nb" else None
    with own_seed_stream(config.seed):
        bag = build_bag_model(config, ratios, len(x_train))
    callbacks: list[Any] = []
    if on_epoch is not None:
        callbacks.append(epoch_callback(lambda e, logs: on_epoch(e, {f"ngram_{k}": v for k, v in logs.items()})))
    callbacks += _early_stopping(config, has_val)
    history = bag.fit(x_train, y_train.astype(np.float32), batch_size=config.ngram_batch_size,
                      epochs=config.ngram_epochs, shuffle=True, callbacks=callbacks,
                      validation_data=(x_val, y_val.astype(np.float32)) if has_val else None,
                      verbose=_verbosity(verbose))
    bag_seconds = time.perf_counter() - start
    bag_hist = _floats(history.history)
    lstm = fit(replace(config, ngram_buckets=0, ngram_epochs=0), input_dim, x_train, y_train, x_val, y_val,
               on_epoch, verbose)
    weight, validation = 0.5, {}
    if has_val:
        weight, validation = lstm_weight(predict_scores(lstm.model, x_val),
                                         np.asarray(bag.predict(x_val, batch_size=1024, verbose=0)).reshape(-1),
                                         np.asarray(y_val))
    parts = {"ngram_bag": {"history": bag_hist, "epochs_run": len(bag_hist.get("loss", [])),
                           "best_epoch": _best_epoch(bag_hist, config.early_stopping_monitor),
                           "train_seconds": round(bag_seconds, 2)},
             "lstm_weight": weight, "validation": validation}
    return replace(lstm, model=join_apart(config, input_dim, lstm.model, bag, weight),
                   train_seconds=lstm.train_seconds + bag_seconds, parts=parts)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _log_loss(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^-z) for positives, log(1 + e^z) for negatives, without overflow.
    return float(np.mean(np.logaddexp(0.0, np.where(y > 0.5, -z, z))))


def lstm_weight(p_lstm: np.ndarray, p_bag: np.ndarray, y: np.ndarray, steps: int = 20) -> tuple[float, dict]:
    """The LSTM's share ``w`` in ``w * logit_lstm + (1 - w) * logit_bag`` with the lowest
    validation log loss (a grid of ``steps + 1`` weights), and each candidate's validation figures."""
    z_lstm, z_bag = _logit(p_lstm), _logit(p_bag)
    weights = np.round(np.linspace(0.0, 1.0, steps + 1), 6)  # 0.35, not 0.35000000000000003, in metadata
    losses = [_log_loss(w * z_lstm + (1 - w) * z_bag, y) for w in weights]
    w = float(weights[int(np.argmin(losses))])

    def figures(z):
        return {"accuracy": round(float(np.mean((z > 0) == (y > 0.5))), 4), "log_loss": round(_log_loss(z, y), 4)}

    return w, {"lstm": figures(z_lstm), "ngram_bag": figures(z_bag), "joined": figures(w * z_lstm + (1 - w) * z_bag)}


def masks_padding(model) -> bool:
    """Whether the model masks index 0, i.e. scores do not depend on padding."""
    import keras

    return any(isinstance(layer, keras.layers.Embedding) and layer.mask_zero for layer in model.layers)


def variable_length_twin(model):
    """The same network and weights with a variable-length input."""
    import keras

    twin = keras.models.clone_model(model, input_tensors=keras.Input((None,), dtype="int32", name="tokens"))
    twin.set_weights(model.get_weights())
    return twin


def predict_scores(model, x: np.ndarray, batch_size: int = 512, bucket_width: int = 16) -> np.ndarray:
    """Scores for the padded matrix ``x``.  A model that masks padding scores length-sorted
    batches cut to their longest review (same scores, a fraction of the LSTM steps)."""
    if len(x) <= batch_size or not masks_padding(model) or model.input_shape[1] is None:
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32).reshape(-1)
    order = np.concatenate([np.sort(idx) for idx in length_batches(row_lengths(x), batch_size, None)])
    scores = variable_length_twin(model).predict(bucketed_dataset(x, None, batch_size, bucket_width, None),
                                                 verbose=0)
    out = np.empty(len(x), dtype=np.float32)
    out[order] = np.asarray(scores, dtype=np.float32).reshape(-1)
    return out

