#!/usr/bin/env python
"""Benchmark: rows per run of the gate-table predictor (issue 18: batches sized to the L2 cache).

    .venv/bin/python bench/batch_rows.py [--preset seed] [--rows 20000] [--sizes 128 256 512 1024]
                                         [--repeat 4] [--json PATH]

A ``--preset`` model with random seeded weights (real IMDB vocabulary size), its gate-table graph
(:func:`models.gate_graph.build_fast_onnx`), and :class:`models.fast_predictors.FastLstmPredictor`
with each ``--sizes`` batch on all cores, scoring the same ``--rows`` real IMDB test reviews
(random rows when the data is not at hand).  The sizes alternate within each round; reported:
the median reviews/s per size, its ratio to the largest size, and the size
:func:`models.predictors.gate_graph_rows` picks on this CPU (its L2 cache, printed with the CPU flags).
Every size must give the same scores (exact: the rows of a batch do not interact).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import machine as bench_machine  # noqa: E402  (bench/machine.py)
import predictor as bench_predictor  # noqa: E402  (bench/predictor.py: model and rows)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--repeat", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import numpy as np

    from models.fast_predictors import FastLstmPredictor
    from models.gate_graph import build_fast_onnx
    from models.predictors import gate_graph_rows, l2_cache_bytes
    from models.presets import get_preset

    config = get_preset(args.preset)
    print(f"# {bench_machine.cpu_summary()}, L2 {l2_cache_bytes() >> 10} KiB per core, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    model = bench_predictor.build(config, seed=0)
    x, source = bench_predictor.make_rows(bench_predictor.load_reviews("auto"), config, args.rows, seed=1)
    graph = build_fast_onnx(model)
    predictors = {size: FastLstmPredictor(graph, batch_size=size) for size in args.sizes}
    rates: dict[int, list[float]] = {size: [] for size in args.sizes}
    reference = None
    for r in range(args.repeat):
        order = args.sizes[r % len(args.sizes):] + args.sizes[:r % len(args.sizes)]
        for size in order:
            t = time.perf_counter()
            scores = predictors[size].predict(x)
            rates[size].append(len(x) / (time.perf_counter() - t))
            if reference is None:
                reference = scores
            elif not np.array_equal(scores, reference):
                raise SystemExit(f"batch size {size} changed the scores (max |delta| "
                                 f"{float(np.max(np.abs(scores - reference))):.3g})")
    largest = max(args.sizes)
    medians = {size: statistics.median(v) for size, v in rates.items()}
    chosen = gate_graph_rows(config.maxlen, config.lstm_units)
    print(f"{args.preset} (maxlen {config.maxlen}, {config.lstm_units} units), {len(x):,} rows of {source}; "
          f"gate_graph_rows picks {chosen} here")
    for size in args.sizes:
        print(f"  {size:5d} rows: {medians[size]:8,.0f} reviews/s  ({medians[size] / medians[largest]:.2f}x "
              f"{largest} rows; rounds {', '.join(f'{v:,.0f}' for v in rates[size])})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": bench_machine.machine_info(), "settings": vars(args), "chosen": chosen,
                       "rows": len(x), "source": source, "reviews_per_s": rates,
                       "median_reviews_per_s": medians}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
