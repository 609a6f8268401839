#!/usr/bin/env python
"""Benchmark: predictors of the seed-size network (issue 6: the gate-table LSTM graph).

    .venv/bin/python bench/predictor.py [--maxlen 50 400] [--rows N] [--batch-size 1024]
                                        [--repeat 5] [--threads 0] [--data auto|random]
                                        [--forms loop unrolled] [--no-length-aware] [--json PATH]
    .venv/bin/python bench/predictor.py --presets default:ngram_buckets=0 default [--rows 8192] [--repeat 5]

Set-up (not measured): the ``seed`` preset (Embedding(88,079, 300) -> LSTM(128) -> Dense(1,
sigmoid); 88,079 is the real IMDB vocabulary size) with random seeded weights, one model per
``--maxlen``; inputs are real IMDB test reviews through the seed preprocessing (post padding /
truncating) when the data is at hand (``REVIEWS_DATA_DIR``), else random ``probe_batch`` rows.

Measured, interleaved in rounds (each round runs every predictor once on the same rows, in a
rotating order), reported as medians over ``--repeat`` rounds:

* ``keras``: ``model.predict(x, batch_size=--batch-size)``;
* ``onnx``: ONNX Runtime on the plain export (``model.export(format="onnx")``), :class:`OnnxPredictor`
  (one run at a time, ONNX Runtime's intra-op threads);
* ``onnx-batch-parallel``: the same plain graph, batches run concurrently on one thread each
  (:class:`models.fast_predictors.BatchParallelOnnxPredictor`, the fast predictor's scheduling) - so
  ``fast/onnx-batch-parallel`` is the gain of the graph alone;
* ``fast-<form>``: :class:`models.fast_predictors.FastLstmPredictor` on the gate-table graph, per ``--forms``;
* ``roofline``: a 2048 x 2048 @ 2048 x 2048 float32 numpy matmul: GFLOP/s, turned into the
  reviews/s a machine doing nothing but the plain model's FLOPs at that rate would reach
  (per review: maxlen x 4U(E+U) x 2).

Ratios are medians of the per-round ratios (both sides measured back to back), so they hold up
on a shared machine better than the absolute figures.  ``max |delta|`` is against the Keras
scores of the measured rows.

Length-aware batching (unless ``--no-length-aware``): the fast predictor sorts rows by their
non-padding span and runs each batch only over positions holding a token, and without masks over
the positions where none of its rows has padding (dense spans) - both exact only with
``mask_zero``.  Reported: the share of steps it skips on the real IMDB length distribution (all
50,000 reviews, pre padding as in the ``default`` preset, for each maxlen and 500), and, measured
on ``--length-aware-rows`` reviews (one record batch of the scoring flow), a ``mask_zero`` +
pre-padding variant of the seed model per maxlen and the ``default`` preset itself, each with
masks everywhere on the full matrix, length-aware with masks everywhere, and length-aware with
dense spans.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import machine as bench_machine  # noqa: E402  (bench/machine.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IMDB_VOCAB = 88079


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maxlen", type=int, nargs="+", default=[50, 400])
    p.add_argument("--rows", type=int, default=0,
                   help="reviews per measurement (default: 409,600 / maxlen, at least --batch-size)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=5, help="measurement rounds (medians are reported)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for ONNX Runtime, TensorFlow and numpy (0: library defaults, all cores)")
    p.add_argument("--data", choices=["auto", "random"], default="auto",
                   help="auto: real IMDB reviews if loadable, else random rows")
    p.add_argument("--forms", nargs="+", default=["loop", "unrolled"], choices=["loop", "unrolled"])
    p.add_argument("--no-length-aware", dest="length_aware", action="store_false")
    p.add_argument("--length-aware-rows", type=int, default=8192,
                   help="reviews per measurement of the length-aware section")
    p.add_argument("--skip-keras", action="store_true", help="no Keras timing (max |delta| still uses Keras)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--presets", nargs="+", default=[], metavar="PRESET",
                   help="only compare these presets' served predictors on the same reviews (the first is the "
                        "reference); NAME:SETTING=VALUE,... overrides settings, e.g. --presets "
                        "default:ngram_buckets=0 default")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def _median(values: list[float]) -> float:
    import numpy as np

    return float(np.median(values)) if values else float("nan")


def load_reviews(data: str):
    """IMDB token lists (train + test) or None."""
    if data == "random":
        return None
    try:
        import pyarrow as pa

        from models.imdb_dataset import load_imdb

        d = load_imdb()
    except Exception as exc:  # noqa: BLE001 - a benchmark falls back to random rows
        print(f"# IMDB data not available ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
              "using random rows", flush=True)
        return None
    if d.vocab_size != IMDB_VOCAB:
        print(f"# note: this IMDB copy has vocab_size {d.vocab_size}, the model uses {IMDB_VOCAB}")
    return {"test": d.test_tokens, "all": pa.concat_arrays([d.train_tokens, d.test_tokens]),
            "source": d.source}


def make_rows(reviews, config, rows: int, seed: int):
    import numpy as np

    from models.predictors import probe_batch
    from models.preprocessing import to_matrix

    if reviews is None:
        return probe_batch(IMDB_VOCAB, config.maxlen, n=rows, seed=seed), "random probe_batch rows"
    x = to_matrix(reviews["test"], config.preprocessing(vocab_size=IMDB_VOCAB))
    pick = np.random.default_rng(seed).choice(len(x), size=rows, replace=rows > len(x))
    return np.ascontiguousarray(x[pick]), f"IMDB test reviews ({reviews['source']}), {config.padding} padding"


def build(config, seed: int):
    import keras
    import numpy as np

    from models.architecture import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(config, config.preprocessing(vocab_size=IMDB_VOCAB).input_dim)
    model.predict(np.zeros((1, config.maxlen), np.int32), verbose=0)  # built and called (export needs it)
    return model


def plain_onnx_bytes(model) -> bytes:
    from models.predictors import export_onnx

    with tempfile.TemporaryDirectory(prefix="bench-predictor-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(model, path)
        with open(path, "rb") as f:
            return f.read()


def sgemm_gflops(n: int = 2048) -> Callable[[], float]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up

    def run() -> float:
        t = time.perf_counter()
        a @ b
        return 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9

    return run


def rounds(runners: dict[str, Callable[[], Any]], repeat: int) -> dict[str, list[tuple[float, float]]]:
    """name -> [(wall s, process CPU s)] per round, runners interleaved in a rotating order."""
    names = list(runners)
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c, t = time.process_time(), time.perf_counter()
            runners[name]()
            out[name].append((time.perf_counter() - t, time.process_time() - c))
    return out


def bench_maxlen(maxlen: int, args, reviews) -> dict[str, Any]:
    import numpy as np

    from models.fast_predictors import BatchParallelOnnxPredictor, FastLstmPredictor
    from models.gate_graph import build_fast_onnx
    from models.lstm_spec import describe
    from models.predictors import OnnxPredictor, keras_reference
    from models.presets import get_preset

    config = get_preset("seed", maxlen=maxlen)
    rows = args.rows or max(args.batch_size, 409_600 // maxlen)
    t0 = time.perf_counter()
    model = build(config, args.seed)
    x, source = make_rows(reviews, config, rows, args.seed + 1)
    spec = describe(model)
    plain_flops, fast_flops = (f * maxlen for f in spec.step_flops())
    print(f"\n## maxlen {maxlen}: {rows} rows of {source}; per review {plain_flops / 1e6:.1f} MFLOP plain, "
          f"{fast_flops / 1e6:.1f} MFLOP with the gate table ({plain_flops / fast_flops:.2f}x fewer)", flush=True)

    reference = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0), np.float32).reshape(-1)
    threads = args.threads
    plain = plain_onnx_bytes(model)
    predictors: dict[str, Any] = {"onnx": OnnxPredictor(plain, args.batch_size, threads),
                                  "onnx-batch-parallel": BatchParallelOnnxPredictor(plain, args.batch_size, threads)}
    del plain
    build_s = {}
    for form in args.forms:
        t = time.perf_counter()
        predictors[f"fast-{form}"] = FastLstmPredictor(build_fast_onnx(model, form=form), args.batch_size, threads)
        build_s[f"fast-{form}"] = round(time.perf_counter() - t, 2)
    deltas = {name: float(np.max(np.abs(p.predict(x) - reference))) for name, p in predictors.items()}
    deltas["keras-vs-keras_reference"] = float(np.max(np.abs(keras_reference(model, x[:256]) - reference[:256])))
    print(f"# set-up {time.perf_counter() - t0:.0f} s; fast graph build + session: {build_s}", flush=True)

    runners: dict[str, Callable[[], Any]] = {}
    if not args.skip_keras:
        runners["keras"] = lambda: model.predict(x, batch_size=args.batch_size, verbose=0)
    for name, p in predictors.items():
        runners[name] = (lambda p=p: p.predict(x))
    gemm = sgemm_gflops()
    gflops: list[float] = []
    runners["roofline"] = lambda: gflops.append(gemm())
    timings = rounds(runners, args.repeat)

    result: dict[str, Any] = {"maxlen": maxlen, "rows": rows, "inputs": source, "batch_size": args.batch_size,
                              "plain_mflop_per_review": plain_flops / 1e6,
                              "fast_mflop_per_review": fast_flops / 1e6,
                              "build_s": build_s, "max_abs_delta_vs_keras": deltas, "predictors": {}}
    per_round: dict[str, list[float]] = {}
    for name, times in timings.items():
        if name == "roofline":
            continue
        per_round[name] = [rows / wall for wall, _ in times]
        result["predictors"][name] = {
            "reviews_per_s": _median(per_round[name]),
            "reviews_per_cpu_s": _median([rows / cpu for _, cpu in times if cpu > 0]),
            "rounds": [round(v, 1) for v in per_round[name]],
        }
    gf = _median(gflops)
    roofline = gf * 1e9 / plain_flops
    per_round["roofline"] = [g * 1e9 / plain_flops for g in gflops]
    result["roofline"] = {"sgemm_gflops": gf, "reviews_per_s": roofline,
                          "fast_flops_reviews_per_s": gf * 1e9 / fast_flops,
                          "rounds_gflops": [round(g, 1) for g in gflops]}

    def ratio(a: str, b: str) -> float:
        return _median([p / q for p, q in zip(per_round[a], per_round[b])])

    fast_names = [n for n in per_round if n.startswith("fast-")]
    best = max(fast_names, key=lambda n: result["predictors"][n]["reviews_per_s"])
    result["best_fast"] = best
    result["ratios"] = {f"{n}/onnx": ratio(n, "onnx") for n in fast_names}
    result["ratios"].update({f"{n}/onnx-batch-parallel": ratio(n, "onnx-batch-parallel") for n in fast_names})
    result["ratios"].update({f"{n}/roofline": ratio(n, "roofline") for n in fast_names})
    result["ratios"]["onnx/roofline"] = ratio("onnx", "roofline")
    if "keras" in per_round:
        result["ratios"].update({f"{n}/keras": ratio(n, "keras") for n in fast_names + ["onnx"]})

    print(f"{'predictor':16s} {'reviews/s':>10s} {'per CPU-s':>10s} {'max |delta|':>12s}")
    for name, r in result["predictors"].items():
        d = deltas.get(name)
        print(f"{name:16s} {r['reviews_per_s']:10.0f} {r['reviews_per_cpu_s']:10.0f} "
              f"{'' if d is None else f'{d:12.2e}'}")
    print(f"{'roofline':16s} {roofline:10.0f}   (sgemm {gf:.1f} GFLOP/s; at that rate the gate-table FLOPs "
          f"would allow {gf * 1e9 / fast_flops:.0f}/s)")
    print("ratios (medians of per-round ratios): " +
          ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()), flush=True)
    del predictors, model
    return result


def length_aware_section(maxlens: list[int], args, reviews) -> dict[str, Any]:
    """Step savings on the real length distribution, and a measured masked variant."""
    import numpy as np

    from models.batching import window_steps
    from models.fast_predictors import FastLstmPredictor
    from models.gate_graph import build_fast_onnx
    from models.predictors import rows_per_batch
    from models.preprocessing import lengths, to_matrix
    from models.presets import get_preset

    out: dict[str, Any] = {"step_savings": {}, "measured": {}}
    print("\n## length-aware batching (exact only with mask_zero)", flush=True)
    if reviews is not None:
        n_tokens = lengths(reviews["all"])
        print(f"IMDB reviews: {len(n_tokens)}, tokens per review median {np.median(n_tokens):.0f}, "
              f"mean {n_tokens.mean():.0f}")
        for maxlen in sorted(set(maxlens) | {500}):
            prep = get_preset("default", maxlen=maxlen, padding="pre", truncating="pre").preprocessing(IMDB_VOCAB)
            x = to_matrix(reviews["all"], prep)
            sorted_steps, full = window_steps(x, args.batch_size, sort=True)
            unsorted_steps, _ = window_steps(x, args.batch_size, sort=False)
            ideal = int(np.minimum(n_tokens, maxlen).sum())
            out["step_savings"][maxlen] = {"sorted": 1 - sorted_steps / full, "unsorted": 1 - unsorted_steps / full,
                                           "ideal_per_row": 1 - ideal / full}
            print(f"maxlen {maxlen:4d}: steps skipped with sorted batches of {args.batch_size}: "
                  f"{100 * (1 - sorted_steps / full):.1f}% (unsorted: {100 * (1 - unsorted_steps / full):.1f}%, "
                  f"per-row ideal: {100 * (1 - ideal / full):.1f}%)")
    cases = [(f"seed-size, mask_zero, maxlen {m}", m, args.batch_size,
              get_preset("seed", maxlen=m, padding="pre", truncating="pre", mask_zero=True)) for m in maxlens]
    # The default preset as scoring runs it: a record batch of --length-aware-rows sorted by length,
    # split into the registry's batches for its maxlen.
    default = get_preset("default")
    cases.append(("default preset (BiLSTM(64), max pooling)", default.maxlen, rows_per_batch(default.maxlen), default))
    for name, maxlen, batch, config in cases:
        rows = args.length_aware_rows  # several batches: one batch holds a long review, whatever the order
        model = build(config, args.seed)
        x, source = make_rows(reviews, config, rows, args.seed + 1)
        reference = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0), np.float32).reshape(-1)
        onnx_bytes = build_fast_onnx(model, form="loop")
        predictors = {"full, masks everywhere": FastLstmPredictor(onnx_bytes, batch, args.threads,
                                                                  length_aware=False, dense=False),
                      "length-aware, masks everywhere": FastLstmPredictor(onnx_bytes, batch, args.threads,
                                                                          dense=False),
                      "length-aware + dense spans": FastLstmPredictor(onnx_bytes, batch, args.threads)}
        deltas = {n: float(np.max(np.abs(p.predict(x) - reference))) for n, p in predictors.items()}
        timings = rounds({n: (lambda p=p: p.predict(x)) for n, p in predictors.items()}, args.repeat)
        rates = {n: [rows / w for w, _ in t] for n, t in timings.items()}
        steps, full = window_steps(x, batch)
        names = list(predictors)

        def speedup(num: str, den: str) -> float:
            return _median([a / b for a, b in zip(rates[num], rates[den])])

        result = {"inputs": source, "rows": rows, "batch_size": batch, "steps_skipped": 1 - steps / full,
                  "reviews_per_s": {n: _median(v) for n, v in rates.items()},
                  "speedup_length_aware": speedup(names[1], names[0]),
                  "speedup_dense_spans": speedup(names[2], names[1]),
                  "speedup_both": speedup(names[2], names[0]), "max_abs_delta_vs_keras": deltas}
        out["measured"][name] = result
        print(f"{name}, pre padding, {rows} rows in batches of {batch}: "
              + ", ".join(f"{n} {_median(v):.0f}/s (max |delta| {deltas[n]:.1e})" for n, v in rates.items())
              + f"; {100 * (1 - steps / full):.1f}% steps skipped; speed-up: length-aware "
              f"{result['speedup_length_aware']:.2f}x, dense spans {result['speedup_dense_spans']:.2f}x, "
              f"both {result['speedup_both']:.2f}x", flush=True)
        del model, predictors
    return out


def presets_section(names: list[str], args, reviews) -> dict[str, Any]:
    """What each preset costs to serve: its gate-table predictor as the registry loads it (batch rows
    by ``gate_graph_rows``), on the same test reviews through each preset's own preprocessing."""
    import numpy as np

    from models.fast_predictors import FastLstmPredictor
    from models.gate_graph import build_fast_onnx
    from models.predictors import gate_graph_rows
    from models.presets import get_preset

    rows = args.rows or 8192
    print(f"\n## presets served by the gate-table graph, {rows} reviews each, {args.repeat} rounds", flush=True)
    predictors, inputs, out = {}, {}, {}
    for name in names:
        base, _, settings = name.partition(":")
        config = get_preset(base, **{k: json.loads(v) for k, v in (kv.split("=", 1) for kv in settings.split(",") if kv)})
        model = build(config, args.seed)
        x, source = make_rows(reviews, config, rows, args.seed + 1)
        batch = gate_graph_rows(config.maxlen, config.lstm_units)
        predictor = FastLstmPredictor(build_fast_onnx(model), batch, args.threads)
        check = x[:256]
        reference = np.asarray(model.predict(check, batch_size=256, verbose=0), np.float32).reshape(-1)
        out[name] = {"inputs": source, "batch_rows": batch,
                     "max_abs_delta_vs_keras_256_rows": float(np.max(np.abs(predictor.predict(check) - reference)))}
        predictors[name], inputs[name] = predictor, x
        del model
    timings = rounds({n: (lambda n=n: predictors[n].predict(inputs[n])) for n in names}, args.repeat)
    rates = {n: [rows / w for w, _ in t] for n, t in timings.items()}
    for name in names:
        out[name]["reviews_per_s"] = _median(rates[name])
        out[name]["throughput_vs_" + names[0]] = _median([a / b for a, b in zip(rates[name], rates[names[0]])])
        print(f"{name}: {out[name]['reviews_per_s']:.0f} reviews/s in batches of {out[name]['batch_rows']} "
              f"({out[name]['throughput_vs_' + names[0]]:.2f}x {names[0]}; max |delta| vs Keras "
              f"{out[name]['max_abs_delta_vs_keras_256_rows']:.1e})", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras
    import numpy as np
    import onnxruntime as ort

    load_before = os.getloadavg()
    print(f"# {bench_machine.cpu_summary()}, {platform.platform()}, {os.cpu_count()} CPUs, load average {load_before[0]:.1f}; "
          f"numpy {np.__version__}, keras {keras.__version__}, onnxruntime {ort.__version__}; "
          f"threads {args.threads or 'default'}, batch {args.batch_size}, {args.repeat} rounds", flush=True)
    reviews = load_reviews(args.data)
    results: dict[str, Any] = {"maxlen": {}, "machine": bench_machine.machine_info(),
                               "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    if args.presets:
        results["presets"] = presets_section(args.presets, args, reviews)
    for maxlen in [] if args.presets else args.maxlen:
        results["maxlen"][maxlen] = bench_maxlen(maxlen, args, reviews)
    if args.length_aware and not args.presets:
        results["length_aware"] = length_aware_section(args.maxlen, args, reviews)
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    print(f"\n# load average at the end: {results['machine']['load_average_end']:.1f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
