#!/usr/bin/env python
"""Benchmark: int8 inference against the exact float32 gate-table graph, on trained models.

    .venv/bin/python bench/quantized.py --model REGISTRY_URI[:VERSION] [--model ...] [--repeat 3]
                                        [--data auto] [--json PATH]

For each registered model (``VERSION`` defaults to the champion): its Keras model is read from
the registry, and both graphs are built from it (``build_fast_onnx`` with ``precision``
float32 and int8).  The 25,000 IMDB test reviews, through the version's own preprocessing, are
scored by both predictors; printed:

* test accuracy and ROC AUC of each, the accuracy drop in points (the bound for storing an int8
  graph with a version is 0.2 points, ``models.quantization.MAX_ACCURACY_DROP``), how many
  reviews change label, and the largest score difference;
* reviews/s of each on the whole test split - ``--repeat`` alternating rounds, medians - and
  their ratio, measured in this run;
* what the version's own registration decided (``int8`` in its metadata), when it has one.

The test reviews' scores are never used to choose anything here; the bound is applied at
registration (``tasks.registry.register``), on the same split the version was evaluated on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import machine as bench_machine  # noqa: E402  (bench/machine.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_JSON = os.path.join(HERE, "results", "quantized.json")


def _split_ref(ref: str) -> tuple[str, str]:
    """``URI[:VERSION]``; a ``:`` that belongs to a URI scheme (``s3://``) is not a separator."""
    head, sep, tail = ref.rpartition(":")
    if sep and tail and "/" not in tail:
        return head, tail
    return ref, "champion"


def _auc(y, s) -> float:
    from models.evaluation import evaluate

    return float(evaluate(y, s)["auc"])


def bench_model(ref: str, imdb, repeat: int) -> dict[str, Any]:
    import numpy as np

    from models.fast_predictors import FastLstmPredictor, Int8LstmPredictor
    from models.gate_graph import build_fast_onnx
    from models.predictors import rows_per_batch
    from models.preprocessing import to_matrix
    from models.registry import ModelRegistry

    uri, ref_version = _split_ref(ref)
    reg = ModelRegistry(uri)
    version = reg.resolve(ref_version)
    meta = reg.metadata(version)
    model = reg.load_keras(version)
    x = to_matrix(imdb.test_tokens, reg.preprocessing(version))
    y = np.asarray(imdb.test_labels)
    batch = rows_per_batch(int(x.shape[1]))
    predictors = {
        "float32": FastLstmPredictor(build_fast_onnx(model), batch_size=batch),
        "int8": Int8LstmPredictor(build_fast_onnx(model, precision="int8"), batch_size=batch),
    }
    scores: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in predictors}
    for _ in range(repeat):
        for name, p in predictors.items():
            t = time.perf_counter()
            scores[name] = p.predict(x)
            times[name].append(time.perf_counter() - t)
    acc = {k: float(np.mean((s >= 0.5) == (y >= 0.5))) for k, s in scores.items()}
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "model": ref, "version": version, "preset": meta.get("preset"), "maxlen": int(x.shape[1]),
        "test_rows": int(len(x)),
        "accuracy": {k: round(v, 5) for k, v in acc.items()},
        "auc": {k: round(_auc(y, s), 5) for k, s in scores.items()},
        "accuracy_drop_points": round((acc["float32"] - acc["int8"]) * 100, 3),
        "labels_changed": int(np.sum((scores["float32"] >= 0.5) != (scores["int8"] >= 0.5))),
        "max_abs_delta": float(np.max(np.abs(scores["float32"] - scores["int8"]))),
        "reviews_per_s": {k: round(len(x) / v, 1) for k, v in med.items()},
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "speedup_int8": round(med["float32"] / med["int8"], 3),
        # Each round times both back to back: the median of the per-round ratios is the figure
        # least moved by this VM's drifting speed.
        "speedup_int8_paired": round(float(np.median(np.array(times["float32"]) / np.array(times["int8"]))), 3),
        "registration_int8": meta.get("int8"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="URI[:VERSION]",
                   help="a registry and version (default champion); repeat for several models")
    p.add_argument("--repeat", type=int, default=3, help="alternating timing rounds (median reported)")
    p.add_argument("--data", default="auto", help="IMDB data source for load_imdb (default auto)")
    p.add_argument("--json", default=DEFAULT_JSON)
    args = p.parse_args(argv)

    from models.imdb_dataset import load_imdb

    imdb = load_imdb(args.data)
    results = []
    for ref in args.model:
        r = bench_model(ref, imdb, max(1, args.repeat))
        results.append(r)
        print(json.dumps(r), flush=True)
    out = {"created_at": datetime.now(timezone.utc).isoformat(),
           "machine": {**bench_machine.machine_info(), "load_average_at_end": list(os.getloadavg())},
           "results": results}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    for r in results:
        a, s = r["accuracy"], r["reviews_per_s"]
        print(f"{r['preset']} (maxlen {r['maxlen']}, {r['version']}): test accuracy float32 {a['float32']:.4f}, "
              f"int8 {a['int8']:.4f} (drop {r['accuracy_drop_points']:+.2f} points; {r['labels_changed']} labels "
              f"changed; max |delta| {r['max_abs_delta']:.4f})")
        print(f"  reviews/s float32 {s['float32']:,.0f}, int8 {s['int8']:,.0f}: int8 is {r['speedup_int8']:.2f}x "
              f"(medians of {len(r['seconds']['int8'])}); median of the per-round ratios "
              f"{r['speedup_int8_paired']:.2f}x")
        q = r["registration_int8"]
        if q:
            print(f"  registration: int8 {'approved' if q['approved'] else 'not stored'} ({q['reason']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
