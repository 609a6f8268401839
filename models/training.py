"""Fitting the network: plain functions, no orchestration."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from models.architecture import build_model
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


@dataclass
class FitResult:
    model: Any
    history: dict[str, list[float]]
    train_seconds: float
    epoch_seconds: list[float]
    epochs_run: int
    best_epoch: int


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

    keras.utils.set_random_seed(config.seed)
    model = build_model(config, input_dim)
    has_val = x_val is not None and len(x_val) > 0
    epoch_times: list[float] = []
    callbacks: list[Any] = []

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.t0)

    callbacks.append(_Timer())
    if on_epoch is not None:
        callbacks.append(epoch_callback(on_epoch))
    if config.early_stopping_patience is not None and has_val:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience, restore_best_weights=True))
    if verbose is None:
        # A live progress bar on a terminal, one line per epoch in logs.
        verbose = 1 if sys.stdout.isatty() else 2
    start = time.perf_counter()
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
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    best = int(np.argmin(hist["val_loss"])) + 1 if "val_loss" in hist else len(hist.get("loss", []))
    return FitResult(model, hist, seconds, epoch_times, len(hist.get("loss", [])), best)


def predict_scores(model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32).reshape(-1)

