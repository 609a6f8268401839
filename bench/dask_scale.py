#!/usr/bin/env python
"""Benchmark: ``score-reviews`` on a Dask cluster of 1 worker process and of 2, same dump, same model.

    .venv/bin/python bench/dask_scale.py [--rows 800000] [--files 8] [--workers 1 2] [--workdir DIR]

Scale-out is measured as adding machines: every worker process is pinned to a core of its own
(all its threads, so ONNX Runtime sees one core and runs one thread), ``threads_per_worker=1``.
On this 2-core machine that makes "1 worker" one core and "2 workers" both.

Set-up (not measured): the ``seed`` model with random seeded weights and the real IMDB vocabulary
size, registered like a trained one (in a child process, see ``bench/score.py``); a dump of
``--rows`` real IMDB reviews in ``--files`` Parquet files; a Prefect API (Prefect's test harness: a
real server process on a temporary database); per cluster, a warm-up that imports the project in
every worker (what a long-running worker has done once).

Measured per cluster size, two flow runs on the same cluster: ``cold`` (each worker loads the
model in its first unit) and ``warm`` (the workers' cached predictor is reused, as on a
long-lived cluster).  For each, the ``score_reviews(..., dask_address=...)`` call, and from its
``_manifest.json``

* ``units_seconds``: wall time from submitting the units to the last result back;
* per unit, ``seconds`` inside the task and ``model_seconds`` of that spent getting the predictor.

``per-unit overhead = 1 - sum(unit seconds - model seconds) / (workers x units_seconds)``: the share of
the workers' time in the units phase not spent scoring (Prefect task start and bookkeeping, Dask
dispatch, model loads, idle tails).  Target: under 5%.  Speed-up: 1-worker time / 2-worker time
for the units phase and for the whole flow call; target >= 1.7x.  All outputs must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import score as score_bench  # noqa: E402  (bench/score.py: set-up helpers shared by the benchmarks)

DEFAULT_JSON = os.path.join(HERE, "results", "dask_scale.json")


def pin_worker(cpu: int) -> int:
    """Runs in a worker: pins every thread of the process to ``cpu``; threads started later inherit it."""
    pid = os.getpid()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # the thread has just exited
            pass
    return cpu


def warm_worker() -> float:
    """Runs in a worker: the imports a first task would pay (Prefect, the project, ONNX Runtime)."""
    t = time.perf_counter()
    import onnxruntime  # noqa: F401

    import flows.score  # noqa: F401
    return time.perf_counter() - t


def unit_figures(workers: int, output: str, call_s: float, rows: int) -> dict[str, Any]:
    """Throughput and overhead of one flow run, from its manifest."""
    with open(os.path.join(output, "_manifest.json")) as f:
        manifest = json.load(f)
    units = manifest["units"]
    units_s = manifest["timings"]["units_seconds"]
    unit_s = sum(u["seconds"] for u in units)
    model_s = sum(u["model_seconds"] for u in units)
    capacity = workers * units_s
    return {
        "rows": rows, "units": len(units), "flow_call_s": call_s, "flow_body_s": manifest["timings"]["seconds"],
        "units_s": units_s, "unit_seconds": [u["seconds"] for u in units],
        "model_seconds": [u["model_seconds"] for u in units],
        "reviews_per_s_flow": rows / call_s, "reviews_per_s_units": rows / units_s,
        "scoring_share": (unit_s - model_s) / capacity, "model_load_share": model_s / capacity,
        "per_unit_overhead": 1 - (unit_s - model_s) / capacity, "mean_unit_s": unit_s / len(units),
    }


def run_cluster(workers: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Two flow runs on one cluster: ``cold`` (each worker loads the model in its first unit) and
    ``warm`` (the workers' cached predictor is reused, as on a long-lived cluster)."""
    from distributed import Client, LocalCluster

    from flows.score import score_reviews

    ncpu = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"workers": workers}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        addresses = sorted(client.scheduler_info()["workers"])
        for i, addr in enumerate(addresses):
            client.run(pin_worker, i % ncpu, workers=[addr])
        out["worker_warm_up_s"] = max(client.run(warm_worker).values())
        for run in ("cold", "warm"):
            output = f"{spec['output']}-{run}"
            t = time.perf_counter()
            summary = score_reviews(input=spec["input"], output=output, model=spec["version"],
                                    registry=spec["registry"], max_rows_per_unit=spec["max_rows_per_unit"],
                                    dask_address=cluster.scheduler_address)
            out[run] = unit_figures(workers, output, time.perf_counter() - t, summary["rows_scored"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=800_000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--row-group-rows", type=int, default=10_000)
    p.add_argument("--max-rows-per-unit", type=int, default=100_000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--preset", default="seed")
    p.add_argument("--data", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=DEFAULT_JSON)
    args = p.parse_args(argv)

    started = time.perf_counter()
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="bench-dask-"))
    os.makedirs(workdir, exist_ok=True)
    machine = score_bench.machine_info()
    log = score_bench.log
    log(f"{machine['nproc']} CPU(s) ({score_bench.bench_machine.cpu_summary()}), load average {machine['load_average_at_start']}; "
        f"workdir {workdir}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}

    from models.presets import get_preset

    maxlen = get_preset(args.preset).maxlen
    registry = os.path.join(workdir, "registry")
    reg = score_bench.run_child("register", {"registry": registry, "preset": args.preset, "maxlen": maxlen,
                                             "seed": args.seed, "data": args.data, "rows": 0},
                                workdir, "register", env, check_rows=False)
    log(f"registered a random {args.preset} model (maxlen {maxlen}) as {reg['version']} ({reg['seconds']:.1f} s)")

    from models.imdb_dataset import load_imdb

    imdb = load_imdb(args.data)
    dump = score_bench.write_bench_dump(imdb, args.rows, args.files, args.row_group_rows,
                                        os.path.join(workdir, f"dump-{args.rows}"), args.seed)
    del imdb
    log(f"dump of {args.rows:,} reviews: {dump['files']} files, {dump['bytes'] / 2**20:,.0f} MB")

    import logging

    import flows.score  # noqa: F401  (first: the project's Prefect defaults)
    from prefect.testing.utilities import prefect_test_harness

    # Dask logs every connection and, at cluster shutdown, a harmless CommClosedError traceback.
    logging.getLogger("distributed").setLevel(logging.WARNING)

    runs: list[dict[str, Any]] = []
    with prefect_test_harness(server_startup_timeout=180):
        for n in args.workers:
            spec = {"input": dump["dir"], "output": os.path.join(workdir, f"out-{n}-workers"),
                    "registry": registry, "version": reg["version"], "max_rows_per_unit": args.max_rows_per_unit}
            log(f"{n} worker process(es), one core each: scoring {args.rows:,} reviews")
            r = run_cluster(n, spec)
            runs.append(r)
            for run in ("cold", "warm"):
                f = r[run]
                log(f"  {run}: flow call {f['flow_call_s']:.1f} s ({f['reviews_per_s_flow']:,.0f} reviews/s), units "
                    f"phase {f['units_s']:.1f} s ({f['reviews_per_s_units']:,.0f} reviews/s), {f['units']} units of "
                    f"{f['mean_unit_s']:.2f} s on average; per-unit overhead {f['per_unit_overhead']:.1%} "
                    f"(model loads {f['model_load_share']:.1%})")

    out = {"benchmark": "score-reviews on Dask: 1 vs 2 worker processes", "machine": machine,
           "arguments": vars(args), "model": {"preset": args.preset, "maxlen": maxlen, "version": reg["version"]},
           "dump": dump, "runs": runs}
    by = {r["workers"]: r for r in runs}
    if 1 in by and 2 in by:
        import numpy as np
        import pyarrow.dataset as ds

        def scores(path: str):
            t = ds.dataset(path, format="parquet").to_table(columns=["review_id", "score"]).sort_by("review_id")
            return t.column("review_id").to_numpy(), t.column("score").to_numpy()

        ref = scores(os.path.join(workdir, "out-1-workers-cold"))
        same = all(np.array_equal(a, b) for n in (1, 2) for run in ("cold", "warm")
                   for a, b in zip(ref, scores(os.path.join(workdir, f"out-{n}-workers-{run}"))))
        out["outputs_identical"] = same
        print()
        for run in ("cold", "warm"):
            one, two = by[1][run], by[2][run]
            out[f"speedup_units_{run}"] = one["units_s"] / two["units_s"]
            out[f"speedup_flow_{run}"] = one["flow_call_s"] / two["flow_call_s"]
            print(f"{run}: speed-up 2 workers / 1 worker: units phase {out[f'speedup_units_{run}']:.2f}x, whole "
                  f"flow call {out[f'speedup_flow_{run}']:.2f}x (target >= 1.7x); per-unit overhead 1 worker "
                  f"{one['per_unit_overhead']:.1%}, 2 workers {two['per_unit_overhead']:.1%} (target < 5%)")
        print(f"all four outputs identical: {same}")
    out["total_s"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"total runtime {out['total_s']:.0f} s; results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
