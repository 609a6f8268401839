#!/usr/bin/env python
"""Benchmark: where the gate-table graph's time goes, by ONNX operator (issue #18, item 2).

    .venv/bin/python bench/graph_profile.py [--preset seed] [--vocab 88079] [--rows 512]
                                            [--runs 10] [--form loop|unrolled] [--json PATH]

A network of ``--preset`` with random seeded weights, its gate-table graph, and ``--runs`` timed
runs of ``--rows`` random token rows on one intra-op thread (the fast predictor runs each batch on
one thread), after three warm-up runs.  ONNX Runtime's own profiler gives each node's kernel time.
Printed per operator type: its share of the nodes' time, milliseconds per run and nodes per run.
Node times inside the ``Loop`` body are also counted in the ``Loop`` node, so the Loop's own share
is its time minus its body's.  The GEMMs' rate (multiply-adds x 2 / their time) is printed beside
a 2048 x 2048 numpy matmul on one thread, the recurrent products' ceiling.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the numpy matmul: one thread, like the graph's runs
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import machine as bench_machine  # noqa: E402  (bench/machine.py)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--vocab", type=int, default=88079, help="input vocabulary (88,079: the real IMDB one)")
    p.add_argument("--rows", type=int, default=512, help="rows per run (the fast predictor's batch here)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--form", default=None, help="gate-graph form (default: the served one)")
    p.add_argument("--json", default=os.path.join(HERE, "results", "graph_profile.json"))
    args = p.parse_args()

    import keras
    import onnxruntime as ort

    from models.architecture import build_model
    from models.gate_graph import DEFAULT_FORM, build_fast_onnx
    from models.lstm_spec import describe
    from models.presets import get_preset

    config = get_preset(args.preset)
    keras.utils.set_random_seed(0)
    model = build_model(config, args.vocab)
    form = args.form or DEFAULT_FORM
    graph = build_fast_onnx(model, form=form)
    x = np.random.default_rng(0).integers(1, args.vocab, (args.rows, config.maxlen)).astype(np.int32)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.enable_profiling = True
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(args.runs):
        session.run(None, feed)
    seconds = time.perf_counter() - start
    with open(session.end_profiling()) as f:
        events = json.load(f)
    os.remove(f.name)

    runs = 3 + args.runs  # the profiler saw the warm-up runs too
    spent, nodes = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            spent[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]] += 1
    body = sum(d for op, d in spent.items() if op != "Loop")
    if "Loop" in spent:
        spent["Loop (its own)"] = spent.pop("Loop") - body
    total = sum(spent.values())
    ops = [{"op": op, "share": round(d / total, 4), "ms_per_run": round(d / runs / 1000, 3),
            "nodes_per_run": round(nodes.get(op, nodes.get("Loop", 0)) / runs, 1)} for op, d in spent.most_common()]

    spec = describe(model)
    gemm_flops = 2 * args.rows * config.maxlen * sum(4 * d.units * d.units for layer in spec.lstms
                                                      for d in layer.directions)
    gemm_ms = sum(o["ms_per_run"] for o in ops if "Gemm" in o["op"] or o["op"] == "MatMul")
    a = np.random.default_rng(1).standard_normal((2048, 2048), dtype=np.float32)
    a @ a
    t = time.perf_counter()
    for _ in range(3):
        a @ a
    sgemm = 3 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9

    result = {"machine": bench_machine.machine_info(), "arguments": vars(args), "form": form,
              "rows_per_second_one_thread": round(args.runs * args.rows / seconds, 1), "ops": ops,
              "gemm_gflops": round(gemm_flops / (gemm_ms / 1000) / 1e9, 1) if gemm_ms else None,
              "sgemm_one_thread_gflops": round(sgemm, 1)}
    print(f"# {bench_machine.cpu_summary()}; preset {args.preset}, form {form}, {args.rows} rows x maxlen "
          f"{config.maxlen}, one thread: {result['rows_per_second_one_thread']:,.0f} rows/s")
    for o in ops:
        print(f"{o['op']:16s} {100 * o['share']:5.1f}%  {o['ms_per_run']:7.2f} ms/run  {o['nodes_per_run']:6.1f} nodes/run")
    print(f"recurrent GEMMs: {result['gemm_gflops']} GFLOP/s (numpy 2048^2 sgemm on one thread: "
          f"{result['sgemm_one_thread_gflops']} GFLOP/s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
