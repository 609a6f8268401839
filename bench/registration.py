#!/usr/bin/env python
"""Benchmark: registering a seed-size model - wall time, peak RSS, bytes stored.

    .venv/bin/python bench/registration.py [--repeat 1] [--label after] [--json PATH]
                                           [--vocab 88587] [--maxlen 50] [--test-rows 25000]

Each measurement runs in a fresh subprocess (peak RSS is per process): it builds the seed
network - Embedding(88587, 300) -> LSTM(128) -> Dense(1), random weights, no training - and does
what the ``register-model`` task (``tasks.registry.register``) does with it, into a temporary
local registry: the probe batch (128 test reviews + 128 random ones), ``int8_export`` scoring the
test reviews (random token ids, ``--test-rows`` of them; ``max_drop=1`` so the int8 graph is always
stored, the most work and bytes), then ``ModelRegistry.register``.  Not the training report's PNG
(drawn by the evaluate step).

Printed and written to the JSON: per run, seconds of each phase and of the whole registration
(probe + int8 + register), ``ru_maxrss`` before the registration (the model built) and at its end
(the process' peak; also after each phase), and the stored files' sizes; the machine (bench/machine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import machine as bench_machine  # noqa: E402  (bench/machine.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_JSON = os.path.join(HERE, "results", "registration.json")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    t0 = time.perf_counter()
    import keras

    from models.architecture import build_model
    from models.predictors import probe_batch
    from models.presets import get_preset
    from models.quantization import int8_export
    from models.registry import ModelRegistry

    config = get_preset("seed", maxlen=args.maxlen)
    keras.utils.set_random_seed(0)
    model = build_model(config, args.vocab)
    rng = np.random.default_rng(0)
    x_test = probe_batch(args.vocab, config.maxlen, n=args.test_rows, seed=1)
    y_test = rng.integers(0, 2, size=len(x_test)).astype(np.float32)
    prep = config.preprocessing(vocab_size=args.vocab)
    phases = {"build_model": time.perf_counter() - t0}
    rss_before = _peak_mb()

    with tempfile.TemporaryDirectory(prefix="bench-registration-") as root:
        registry = ModelRegistry(root)
        start = time.perf_counter()
        probe = np.concatenate([x_test[:128], probe_batch(prep.input_dim, prep.maxlen, n=128, seed=config.seed)])
        t = time.perf_counter()
        int8_files, int8_record = int8_export(model, x_test, y_test, 0.5, probe, max_drop=1.0)
        phases["int8_export"] = time.perf_counter() - t
        peaks = {"int8_export": round(_peak_mb())}
        t = time.perf_counter()
        version = registry.register(model, prep, None, {"preset": "seed", "int8": int8_record}, probe,
                                    extra_files=int8_files)
        phases["register"] = time.perf_counter() - t
        total = time.perf_counter() - start
        peak = _peak_mb()
        peaks["register"] = round(peak)
        vdir = os.path.join(root, "versions", version)
        sizes = {name: os.path.getsize(os.path.join(vdir, name)) for name in sorted(os.listdir(vdir))}
    return {"registration_seconds": round(total, 2), "phases_seconds": {k: round(v, 2) for k, v in phases.items()},
            "rss_mb_before_registration": round(rss_before), "peak_rss_mb": round(peak),
            "peak_rss_mb_after_phase": peaks,
            "peak_rss_set_by_registration": peak > rss_before,
            "files_bytes": sizes, "version_mb": round(sum(sizes.values()) / 1e6, 1),
            "int8_approved": int8_record["approved"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=1, help="fresh-process measurements (default: 1)")
    p.add_argument("--vocab", type=int, default=88587, help="input_dim (default: the full IMDB vocabulary)")
    p.add_argument("--maxlen", type=int, default=50, help="default: the seed preset's 50")
    p.add_argument("--test-rows", type=int, default=25000, help="reviews int8_export scores (default: 25000)")
    p.add_argument("--label", default="", help="what this run measures, e.g. before / after (default: none)")
    p.add_argument("--json", default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        with open(args.child, "w") as f:
            json.dump(child(args), f)
        return

    info = bench_machine.machine_info()
    runs = []
    for i in range(args.repeat):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            out = tmp.name
        try:
            subprocess.run([sys.executable, os.path.abspath(__file__), "--child", out, "--vocab", str(args.vocab),
                            "--maxlen", str(args.maxlen), "--test-rows", str(args.test_rows)],
                           check=True, cwd=ROOT)
            with open(out) as f:
                run = json.load(f)
        finally:
            os.unlink(out)
        runs.append(run)
        print(f"run {i + 1}: registration {run['registration_seconds']} s, peak RSS {run['peak_rss_mb']} MB "
              f"(before registration: {run['rss_mb_before_registration']} MB), phases {run['phases_seconds']}, "
              f"version {run['version_mb']} MB: {run['files_bytes']}", flush=True)
    result = {
        "benchmark": "registration", "label": args.label, "machine": info,
        "model": {"vocab": args.vocab, "embedding_dim": 300, "lstm_units": 128, "maxlen": args.maxlen},
        "test_rows": args.test_rows, "runs": runs,
        "median_registration_seconds": statistics.median(r["registration_seconds"] for r in runs),
        "median_peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(f"median: {result['median_registration_seconds']} s, peak RSS {result['median_peak_rss_mb']} MB "
          f"on {bench_machine.cpu_summary()} -> {args.json}")


if __name__ == "__main__":
    main()
