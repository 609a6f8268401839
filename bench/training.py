#!/usr/bin/env python
"""Benchmark: one training epoch of a preset through our training path vs plain ``model.fit``.

    .venv/bin/python bench/training.py [--preset seed] [--rounds 2] [--json PATH]

Both on the same real IMDB training rows (the preset's validation split held out), in this
process, alternating ``--rounds`` times; the median epoch time of each is reported.

* ``ours``: ``tasks.training.train.fn`` (what the ``retrain-sentiment`` flow runs) with
  ``epochs=1``: :func:`models.training.fit` on the :class:`tasks.data.TrainingSet`, with its
  callbacks (epoch timer; early stopping and the learning-rate schedule when the preset has them;
  length-bucketed ``tf.data`` batches when it has ``bucket_width``).
* ``plain``: what the Keras tutorial writes - the same layers built as a ``keras.Sequential``, then
  ``model.fit(x_train, y_train, batch_size, epochs=1, validation_data=(x_val, y_val))`` on the
  padded NumPy arrays.  For a bucketed preset this is the full ``maxlen`` matrix.

Printed: epoch seconds of each (fit only: not data loading, not model building), their ratio
(plain / ours: above 1 means ours is faster), and the validation accuracy after the epoch.
Target (#6): ours no slower than plain, i.e. ratio >= 1 within noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_JSON = os.path.join(HERE, "results", "training-{preset}.json")


def plain_model(config, input_dim: int):
    """The tutorial's way of writing the network (same layers and settings as models.architecture)."""
    import keras
    from keras import layers

    stack: list[Any] = [keras.Input(shape=(config.maxlen,), dtype="int32"),
                        layers.Embedding(input_dim, config.embedding_dim, mask_zero=config.mask_zero)]
    if config.embedding_dropout:
        stack.append(layers.SpatialDropout1D(config.embedding_dropout))
    for i in range(config.lstm_layers):
        top = i == config.lstm_layers - 1
        lstm = layers.LSTM(config.lstm_units, return_sequences=not top or config.pooling == "max")
        stack.append(layers.Bidirectional(lstm) if config.bidirectional else lstm)
    if config.pooling == "max":
        if config.mask_zero:
            stack.append(layers.ReLU())
        stack.append(layers.GlobalMaxPooling1D())
    if config.dropout:
        stack.append(layers.Dropout(config.dropout))
    stack.append(layers.Dense(1, activation="sigmoid"))
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


def epoch_plain(config, ts) -> dict[str, Any]:
    import keras
    import numpy as np

    keras.utils.set_random_seed(config.seed)
    model = plain_model(config, ts.preprocessing.input_dim)
    t = time.perf_counter()
    h = model.fit(ts.x_train, ts.y_train.astype(np.float32), batch_size=config.batch_size, epochs=1,
                  validation_data=(ts.x_val, ts.y_val.astype(np.float32)), verbose=0)
    return {"epoch_s": time.perf_counter() - t, "val_accuracy": float(h.history["val_accuracy"][-1])}


def epoch_ours(config, ts) -> dict[str, Any]:
    from tasks.training import train

    result = train.fn(ts, config.with_overrides(epochs=1), verbose=0)
    return {"epoch_s": result.epoch_seconds[0] if result.epoch_seconds else result.train_seconds,
            "fit_s": result.train_seconds, "val_accuracy": float(result.history["val_accuracy"][-1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    sys.path.insert(0, HERE)
    import score as score_bench  # set-up helpers shared by the benchmarks

    from models.presets import get_preset
    from tasks.data import load_data, prepare

    machine = score_bench.machine_info()
    config = get_preset(args.preset)
    ts = prepare.fn(load_data.fn(args.data, None), config)
    score_bench.log(f"preset {config.preset}: {len(ts.y_train):,} training rows, {len(ts.y_val):,} validation "
                    f"rows, maxlen {config.maxlen}, batch {config.batch_size}; load average "
                    f"{machine['load_average_at_start']}")
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
    for r in range(args.rounds):
        for name, fn in (("ours", epoch_ours), ("plain", epoch_plain)):
            res = fn(config, ts)
            runs[name].append(res)
            score_bench.log(f"round {r + 1}: {name}: epoch {res['epoch_s']:.1f} s, val accuracy "
                            f"{res['val_accuracy']:.4f}")
    med = {k: statistics.median(x["epoch_s"] for x in v) for k, v in runs.items()}
    out = {"benchmark": "training epoch: ours vs plain model.fit", "machine": machine,
           "preset": config.to_dict(), "rounds": args.rounds, "runs": runs,
           "median_epoch_s": med, "ratio_plain_over_ours": med["plain"] / med["ours"],
           "load_average_at_end": list(os.getloadavg())}
    print(f"\n{config.preset}: epoch ours {med['ours']:.1f} s, plain model.fit {med['plain']:.1f} s (medians of "
          f"{args.rounds}); plain/ours = {out['ratio_plain_over_ours']:.2f}x (>= 1: ours no slower)")
    path = args.json or DEFAULT_JSON.format(preset=config.preset)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
