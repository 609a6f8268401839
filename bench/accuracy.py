#!/usr/bin/env python
"""Benchmark: train a preset on the full real IMDB data and measure it on the test split.

    .venv/bin/python bench/accuracy.py [--preset seed|default] [--epochs N ...any TrainConfig field]
                                       [--repeat 2] [--register [URI]] [--data auto] [--json PATH]

The same code path as the ``retrain-sentiment`` flow: the task bodies (``load_data.fn``,
``prepare.fn``, ``train.fn``, ``evaluate.fn`` and, with ``--register``, ``register.fn``)
run in this process without Prefect.  The model is selected on the validation split
of the training reviews only (early stopping); the 25,000 test reviews are only
scored, after training.

Printed: one JSON line per run and, with ``--repeat``, a last JSON line with the
spread of the runs (reproducibility); then a readable summary.  ``--register`` puts
each trained model into a registry (a temporary one unless a URI is given) through
the real registration (Keras save, ONNX export, parity check) and times ONNX Runtime
and Keras on 1,000 test reviews.  Timings depend on what else runs on the machine;
the load average at start and end is recorded with every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import machine as bench_machine  # noqa: E402  (bench/machine.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.presets import PRESETS, TrainConfig  # noqa: E402

DEFAULT_JSON = os.path.join(HERE, "results", "accuracy-{preset}.json")


def _override_args(parser: argparse.ArgumentParser) -> list[str]:
    names = []
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset":
            continue
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, dest=f.name)
        else:
            kind = float if isinstance(default, float) else str if isinstance(default, str) else int
            parser.add_argument(flag, type=kind, default=None, dest=f.name, metavar=kind.__name__.upper())
        names.append(f.name)
    return names


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def time_predictors(registry_uri: str, version: str, x) -> dict[str, Any]:
    """ONNX Runtime (the scoring path) and Keras on the same rows, best of 3, after a warm-up."""
    import numpy as np

    from models.predictors import KerasPredictor
    from models.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    out: dict[str, Any] = {"rows": int(len(x))}
    onnx = registry.load_predictor(version)  # what scoring serves (auto); new versions have no model.onnx
    keras_p = KerasPredictor(registry.load_keras(version))
    scores = {}
    for name, predictor in (("onnx", onnx), ("keras", keras_p)):
        predictor.predict(x[:64])
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            scores[name] = predictor.predict(x)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_seconds"] = round(best, 3)
    out["onnx_vs_keras_max_abs_delta"] = float(np.max(np.abs(scores["onnx"] - scores["keras"])))
    return out


def run_once(config: TrainConfig, data: str, cache_dir: str | None, registry_uri: str | None,
             verbose: int) -> dict[str, Any]:
    from tasks.data import load_data, prepare
    from tasks.registry import register
    from tasks.training import evaluate, public_metrics, train

    load_start = _load()
    t0 = time.perf_counter()
    imdb = load_data.fn(data, cache_dir)
    ts = prepare.fn(imdb, config)
    prep_seconds = time.perf_counter() - t0
    result = train.fn(ts, config, verbose=verbose)
    t1 = time.perf_counter()
    report = evaluate.fn(result, ts)
    eval_seconds = time.perf_counter() - t1
    metrics = public_metrics(report)
    record: dict[str, Any] = {
        "preset": config.preset,
        "test_accuracy": round(metrics["accuracy"], 4),
        "test_auc": round(metrics["auc"], 4),
        "test_log_loss": round(metrics["log_loss"], 4),
        "train_seconds": metrics["train_seconds"],
        "epoch_seconds": metrics["epoch_seconds"],
        "epochs_run": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "val_accuracy": [round(v, 4) for v in metrics["history"].get("val_accuracy", [])],
        "val_loss": [round(v, 4) for v in metrics["history"].get("val_loss", [])],
        "data_seconds": round(prep_seconds, 2),
        "test_eval_seconds": round(eval_seconds, 2),
        "train_rows": int(len(ts.y_train)),
        "validation_rows": int(len(ts.y_val)),
        "test_rows": int(len(ts.y_test)),
        "fingerprint": ts.fingerprint,
        "hyperparameters": config.to_dict(),
        "loadavg_start": load_start,
    }
    if metrics.get("parts"):
        record["parts"] = metrics["parts"]
    if registry_uri is not None:
        from models.registry import ModelRegistry

        t2 = time.perf_counter()
        version = register.fn(registry_uri, result, ts, config, report, imdb)
        meta = ModelRegistry(registry_uri).metadata(version)
        record["registration"] = {
            "registry": registry_uri,
            "version": version,
            "seconds": round(time.perf_counter() - t2, 2),
            "parity_max_abs_delta": meta["export"]["parity_max_abs_delta"],
            "probe_rows": meta["export"]["probe_rows"],
            "int8": meta.get("int8"),
            "inference_1000_test_reviews": time_predictors(registry_uri, version, ts.x_test[:1000]),
        }
    record["loadavg_end"] = _load()
    return record


def spread(records: list[dict[str, Any]]) -> dict[str, Any]:
    accs = [r["test_accuracy"] for r in records]
    aucs = [r["test_auc"] for r in records]
    return {"runs": len(records), "test_accuracy": accs, "test_auc": aucs,
            "accuracy_spread": round(max(accs) - min(accs), 4), "auc_spread": round(max(aucs) - min(aucs), 4),
            "reproducible_within_0.005": max(accs) - min(accs) <= 0.005}


def summary(records: list[dict[str, Any]]) -> str:
    lines = []
    for i, r in enumerate(records, 1):
        hp = r["hyperparameters"]
        lines.append(f"run {i}: preset {r['preset']!r}: test accuracy {r['test_accuracy']:.4f}, AUC {r['test_auc']:.4f}, "
                     f"log loss {r['test_log_loss']:.4f}")
        lines.append(f"  trained {r['epochs_run']} epoch(s) (best {r['best_epoch']}) in {r['train_seconds']:.0f} s; "
                     f"epoch seconds {r['epoch_seconds']}; test scoring {r['test_eval_seconds']:.0f} s")
        lines.append(f"  val accuracy {r['val_accuracy']}, val loss {r['val_loss']}")
        lines.append(f"  maxlen {hp['maxlen']} ({hp['padding']}), num_words {hp['num_words']}, embedding "
                     f"{hp['embedding_dim']}, {hp['lstm_layers']}x{'Bi' if hp['bidirectional'] else ''}LSTM("
                     f"{hp['lstm_units']}), pooling {hp['pooling']}, mask_zero {hp['mask_zero']}, bucket_width "
                     f"{hp['bucket_width']}, batch {hp['batch_size']}, lr {hp['learning_rate']}"
                     + (f", n-gram bag orders 1..{hp['ngram_order']} in {hp['ngram_buckets']:,} buckets x "
                        f"{hp['ngram_dim']}" if hp.get("ngram_buckets") else ""))
        parts = r.get("parts")
        if parts:
            bag, val = parts["ngram_bag"], parts["validation"]
            lines.append(f"  n-gram bag trained apart: {bag['epochs_run']} epoch(s) (best {bag['best_epoch']}) in "
                         f"{bag['train_seconds']:.0f} s; the BiLSTM's logit weighted {parts['lstm_weight']:.2f}; "
                         f"validation accuracy BiLSTM {val['lstm']['accuracy']:.4f}, bag "
                         f"{val['ngram_bag']['accuracy']:.4f}, joined {val['joined']['accuracy']:.4f}")
        lines.append(f"  load average (1/5/15 min) at start {r['loadavg_start']}, at end {r['loadavg_end']}")
        reg = r.get("registration")
        if reg:
            inf = reg["inference_1000_test_reviews"]
            lines.append(f"  registered {reg['version']}: ONNX parity {reg['parity_max_abs_delta']:.2g} on "
                         f"{reg['probe_rows']} probe rows; 1,000 test reviews: ONNX Runtime "
                         f"{inf['onnx_seconds']:.2f} s, Keras {inf['keras_seconds']:.2f} s")
            q = reg.get("int8") or {}
            if "accuracy_int8" in q:
                lines.append(f"  int8 predictor {'approved' if q['approved'] else 'not stored'}: test accuracy "
                             f"{q['accuracy_int8']:.4f} vs {q['accuracy_float32']:.4f} float32 "
                             f"(drop {q['accuracy_drop'] * 100:.2f} points, bound {q['max_accuracy_drop'] * 100:.2f})")
    if len(records) > 1:
        s = spread(records)
        lines.append(f"reproducibility: test accuracy {s['test_accuracy']} (spread {s['accuracy_spread']:.4f}), "
                     f"AUC spread {s['auc_spread']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--data", default=None, help="IMDB data source (default $REVIEWS_DATA or auto)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--repeat", type=int, default=1, help="train this many times (reproducibility check)")
    parser.add_argument("--register", nargs="?", const="", default=None, metavar="URI",
                        help="register each model (a temporary registry unless URI is given)")
    parser.add_argument("--json", default=None, help=f"write the records here (default {DEFAULT_JSON})")
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity (2: one line per epoch)")
    names = _override_args(parser)
    args = parser.parse_args(argv)

    from infra.settings import default_data
    from models.presets import get_preset

    config = get_preset(args.preset, **{n: getattr(args, n) for n in names})
    records = []
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        for i in range(args.repeat):
            registry = None
            if args.register is not None:
                registry = args.register or os.path.join(tmp, "registry")
            record = run_once(config, args.data or default_data(), args.cache_dir, registry, args.verbose)
            record["run"] = i + 1
            records.append(record)
            print(json.dumps(record), flush=True)
    result: dict[str, Any] = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": bench_machine.machine_info(),
        "runs": records,
    }
    if len(records) > 1:
        result["reproducibility"] = spread(records)
        print(json.dumps(result["reproducibility"]), flush=True)
    path = args.json or DEFAULT_JSON.format(preset=config.preset)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(summary(records), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
