#!/usr/bin/env python
"""Benchmark: the ``score-reviews`` flow against the naive pandas + Keras script a user would write.

    .venv/bin/python bench/score.py [--rows 200000] [--files 8] [--maxlen 50 [400 ...]]
                                    [--registry DIR [--model V] [--predictor int8]] [--workdir DIR] [--json PATH]

Set-up (not measured; the model is built and registered in a child process of its own):

* a model: the ``seed`` preset (``--preset``) built with the real IMDB vocabulary size, random
  seeded weights, registered in a temporary registry (ONNX export + parity check, as in
  production); one model per ``--maxlen``.  ``--registry DIR`` benchmarks that registry's
  ``--model`` (default: champion) instead.
* review dumps: the 50,000 real IMDB token sequences (train + test) repeated and shuffled up to
  ``--rows`` with new ``review_id`` values, written with :func:`infra.dump_writer.write_dump` into
  ``--files`` Parquet files with ``--row-group-rows`` row groups.

Measured, each in its own fresh Python process (so peak RSS belongs to one pipeline):

* ``ours``: ``score_reviews(input, output, model=<version>, registry=...)``, Parquet -> Parquet.
  The child first runs an empty flow so the ephemeral Prefect API is up before the timed call:
  ``prefect_startup_s`` is that warm-up, ``flow_call_s`` the scoring flow call alone.
* ``cli``: ``reviews score INPUT OUTPUT --registry ... --model <version>`` (``flows.cli.main``) with no
  Prefect API, so untracked and with no Prefect server: the whole-process figure a user sees.
  Its whole-process throughput against ``naive``'s is printed as the untracked CLI's ratio.
* ``naive``: ``pandas.read_parquet`` of the dump -> ``keras.utils.pad_sequences`` ->
  ``model.predict(batch_size=--naive-batch-size)`` with the registry's Keras model ->
  ``df[["review_id"]].assign(score=...).to_parquet``.
* ``ours`` again on a dump of ``--flat-rows`` reviews (default: 10x fewer) to check that peak
  memory does not grow with the input size.

The compute ceiling, to tell how far the arithmetic lets ``ours`` go: the FLOPs per review the
fast graph cannot avoid on this dump (its step products after the gate table, on the positions
its batching runs; from the model and the dump, not timed), and after each round a 2048^3 float32
numpy matmul (the issue's roofline, GFLOP/s on all cores).  Reported: the reviews/s a pipeline
doing nothing but those products at that rate would reach, as a ratio to the same round's naive
run, and the share of the sgemm rate the products would need, everything else free, for 5x.

Before the measured runs one unmeasured child starts Prefect once, so the run's own
``PREFECT_HOME`` already has its database (as on any machine that has used Prefect).
``--repeat N`` runs the pipelines N times, alternating, and reports the median run of each, and
the ratio of each round's back-to-back runs with their median (on a VM whose speed drifts, the
paired ratios are the steadier figure).

Both outputs are joined on ``review_id`` and the largest score difference is reported.  Every
figure is measured in this run; ratios compare pipelines measured in this run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
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

DEFAULT_JSON = os.path.join(HERE, "results", "score.json")
PARITY_LIMIT = 1e-5
FLAT_TARGET = 1.2


# --------------------------------------------------------------------------- helpers

def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB.

    ``VmHWM`` (the high-water mark of this process image) first: ``ru_maxrss`` survives ``exec``,
    so in a child started by a big parent it reports the parent's peak when that is higher.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cpu_s() -> float:
    """CPU time (user + system, all threads) of this process so far."""
    t = os.times()
    return t.user + t.system


def children_cpu_s() -> float:
    """CPU time of this process's live child processes (the ephemeral Prefect API server)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_info() -> dict[str, Any]:
    info = bench_machine.machine_info()
    try:
        from importlib.metadata import version

        info["libraries"]["pandas"] = version("pandas")
    except Exception:  # noqa: BLE001
        pass
    return info


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- set-up: model and dumps

def register_random_model(registry_dir: str, preset: str, maxlen: int, imdb, seed: int) -> str:
    """A model of the preset's architecture with seeded random weights, registered like a trained one."""
    import keras
    import numpy as np

    from models.architecture import build_model
    from models.predictors import probe_batch
    from models.presets import get_preset
    from models.preprocessing import to_matrix
    from models.registry import ModelRegistry

    config = get_preset(preset, maxlen=maxlen, seed=seed)
    prep = config.preprocessing(vocab_size=imdb.vocab_size)
    keras.utils.set_random_seed(seed)
    model = build_model(config, prep.input_dim)
    # The same probe as tasks/registry.py: real reviews plus random ones covering both padding sides.
    probe = np.concatenate([to_matrix(imdb.test_tokens.slice(0, 128), prep),
                            probe_batch(prep.input_dim, prep.maxlen, n=128, seed=seed)])
    metadata = {"preset": config.preset, "hyperparameters": config.to_dict(),
                "note": "benchmark model: random seeded weights, not trained",
                "data": {"source": imdb.source, "vocab_size": imdb.vocab_size}}
    return ModelRegistry(registry_dir).register(model, prep, None, metadata, probe)


def sample_rows(n_source: int, n: int, seed: int):
    """Indices into the source reviews: whole shuffled passes over all of them, cut to ``n``.

    The first ``k`` indices do not depend on ``n``, so a smaller dump is a prefix of a larger one.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    passes = [rng.permutation(n_source) for _ in range(math.ceil(n / n_source))]
    return np.concatenate(passes)[:n] if passes else np.zeros(0, dtype=np.int64)


def write_bench_dump(imdb, rows: int, files: int, row_group_rows: int, out_dir: str, seed: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from infra.dump_writer import dump_table, write_dump

    tokens = pa.concat_arrays([imdb.train_tokens, imdb.test_tokens])
    labels = np.concatenate([imdb.train_labels, imdb.test_labels])
    idx = sample_rows(len(tokens), rows, seed)
    # New ids, increasing through the dump like a real export; 10**9 keeps them apart from the source's.
    ids = np.arange(10**9, 10**9 + rows, dtype=np.int64)
    table = dump_table(ids, pc.take(tokens, pa.array(idx)), labels[idx])
    uris = write_dump(table, out_dir, rows_per_file=math.ceil(rows / files), row_group_size=row_group_rows)
    lengths = pc.list_value_length(table.column("tokens")).to_numpy()
    size = sum(os.path.getsize(u) for u in uris)
    return {"dir": out_dir, "rows": rows, "files": len(uris), "row_group_rows": row_group_rows,
            "bytes": size, "mean_tokens": round(float(lengths.mean()), 1),
            "median_tokens": float(np.median(lengths))}


# --------------------------------------------------------------------------- the measured children

def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    from flows.score import score_reviews  # first: it sets the project's Prefect defaults before Prefect loads
    from prefect import flow
    import_s = time.perf_counter() - t0

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        """Starts the (ephemeral) Prefect API, so the timed call measures scoring only."""

    t1 = time.perf_counter()
    warm_up()
    startup_s = time.perf_counter() - t1
    rss_before = current_rss_mb()
    c2, server_c2, t2 = cpu_s(), children_cpu_s(), time.perf_counter()
    summary = score_reviews(input=spec["input"], output=spec["output"], model=spec["version"],
                            registry=spec["registry"], batch_size=spec["batch_size"],
                            predictor=spec.get("predictor", "auto"))
    flow_call_s = time.perf_counter() - t2
    work_cpu_s, server_cpu_s = cpu_s() - c2, children_cpu_s() - server_c2
    return {"import_s": import_s, "prefect_startup_s": startup_s, "flow_call_s": flow_call_s,
            "flow_body_s": summary["seconds"], "work_s": flow_call_s, "work_cpu_s": work_cpu_s,
            "prefect_server_cpu_s": server_cpu_s,
            "rows_in": summary["rows_in"], "rows_scored": summary["rows_scored"],
            "rows_rejected": summary["rows_rejected"], "rss_before_work_mb": rss_before}


def child_cli(spec: dict[str, Any]) -> dict[str, Any]:
    """``reviews score`` as a user runs it with no Prefect API: untracked, no Prefect server.

    ``flows.cli.main`` is what the ``reviews`` script calls; the child's whole process (interpreter
    start to exit) is what the parent times as ``process_s``.
    """
    import contextlib
    import io

    t0 = time.perf_counter()
    from flows.cli import main
    import_s = time.perf_counter() - t0
    rss_before = current_rss_mb()
    argv = ["score", spec["input"], spec["output"], "--registry", spec["registry"], "--model", spec["version"],
            "--batch-size", str(spec["batch_size"]), "--predictor", spec.get("predictor", "auto")]
    stdout = io.StringIO()
    c0, t = cpu_s(), time.perf_counter()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    work_s, work_cpu_s = time.perf_counter() - t, cpu_s() - c0
    if code != 0:
        raise SystemExit(f"reviews score exited with {code}")
    summary = json.loads(stdout.getvalue().strip().splitlines()[-1])
    return {"import_s": import_s, "work_s": work_s, "work_cpu_s": work_cpu_s, "flow_body_s": summary["seconds"],
            "rows_in": summary["rows_in"], "rows_scored": summary["rows_scored"],
            "rows_rejected": summary["rows_rejected"], "rss_before_work_mb": rss_before,
            "prefect_server_module_loaded": "prefect.server.api.server" in sys.modules,
            "tensorflow_imported": "tensorflow" in sys.modules}


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    import keras
    import pandas as pd

    from models.registry import ModelRegistry
    import_s = time.perf_counter() - t0
    rss_before = current_rss_mb()

    timings: dict[str, float] = {}
    c0, t = cpu_s(), time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = now - t
        t = now

    registry = ModelRegistry(spec["registry"])
    model = registry.load_keras(spec["version"])
    prep = registry.preprocessing(spec["version"])
    lap("load_model_s")
    df = pd.read_parquet(spec["input"])
    lap("read_s")
    x = keras.utils.pad_sequences(df.tokens, maxlen=prep.maxlen, padding=prep.padding,
                                  truncating=prep.truncating)
    if prep.num_words is not None or prep.skip_top:
        # The vocabulary cut of keras.datasets.imdb.load_data; tokens are never 0, padding is.
        upper = prep.input_dim
        x[(x != 0) & ((x < prep.skip_top) | (x >= upper))] = prep.oov_char
    lap("pad_s")
    scores = model.predict(x, batch_size=spec["naive_batch_size"], verbose=0).reshape(-1)
    lap("predict_s")
    os.makedirs(spec["output"], exist_ok=True)
    df[["review_id"]].assign(score=scores).to_parquet(os.path.join(spec["output"], "scores.parquet"))
    lap("write_s")
    return {"import_s": import_s, **timings, "work_s": sum(timings.values()), "work_cpu_s": cpu_s() - c0,
            "rows_in": int(len(df)), "rows_scored": int(len(scores)), "rows_rejected": 0,
            "rss_before_work_mb": rss_before}


def child_prefect_init(spec: dict[str, Any]) -> dict[str, Any]:
    """Starts the ephemeral Prefect API once, which creates the database under PREFECT_HOME."""
    import flows.score  # noqa: F401  (first, as in the measured child: the project's Prefect defaults)
    from prefect import flow

    @flow(name="bench-prefect-init")
    def init() -> None:
        pass

    init()
    return {}


def child_register(spec: dict[str, Any]) -> dict[str, Any]:
    """Builds and registers the benchmark model.  In a child of its own because TensorFlow and the
    ONNX export of an 88,079 x 300 embedding leave many GB resident, which the parent must not keep."""
    from models.imdb_dataset import load_imdb

    imdb = load_imdb(spec["data"])
    t = time.perf_counter()
    version = register_random_model(spec["registry"], spec["preset"], spec["maxlen"], imdb, spec["seed"])
    return {"version": version, "seconds": time.perf_counter() - t}


def child_flops(spec: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per review of the benchmark model on the dump: the plain model's, and those the fast
    graph cannot avoid (the step products left after the gate table, on the positions its batching
    runs).  Nothing here is timed."""
    import pyarrow.dataset as ds

    from models.batching import window_steps
    from models.lstm_spec import describe, window_exact
    from models.predictors import rows_per_batch
    from models.preprocessing import to_matrix
    from models.registry import ModelRegistry
    from models.scoring_steps import record_batch_rows

    registry = ModelRegistry(spec["registry"])
    net = describe(registry.load_keras(spec["version"]))
    prep = registry.preprocessing(spec["version"])
    plain, fast = net.step_flops()
    tokens = ds.dataset(spec["input"], format="parquet").to_table(columns=["tokens"]).column("tokens")
    x = to_matrix(tokens.combine_chunks(), prep)
    steps, full = len(x) * prep.maxlen, len(x) * prep.maxlen
    if window_exact(net):  # length-aware: each record batch sorted, run in predictor batches
        pool, batch = record_batch_rows(spec["batch_size"], prep.maxlen), rows_per_batch(prep.maxlen)
        steps = sum(window_steps(x[s:s + pool], batch)[0] for s in range(0, len(x), pool))
    return {"rows_in": len(x), "rows_scored": len(x), "rows_rejected": 0,
            "plain_flops_per_review": plain * prep.maxlen, "fast_flops_per_review": fast * steps / len(x),
            "steps_run_fraction": steps / full}


def child_sgemm(spec: dict[str, Any]) -> dict[str, Any]:
    """GFLOP/s of a large float32 matrix product on all cores (median of 5): the issue's roofline,
    measured as ``bench/predictor.py`` does."""
    from predictor import sgemm_gflops  # bench/ is this script's directory

    run = sgemm_gflops()
    return {"rows_in": 0, "rows_scored": 0, "rows_rejected": 0,
            "sgemm_gflops": statistics.median(run() for _ in range(5))}


CHILDREN = {"ours": child_ours, "cli": child_cli, "naive": child_naive, "prefect-init": child_prefect_init,
            "register": child_register, "flops": child_flops, "sgemm": child_sgemm}


def run_child_main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    result = CHILDREN[spec["pipeline"]](spec)
    result["peak_rss_mb"] = peak_rss_mb()
    result["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(spec["result"], "w") as f:
        json.dump(result, f)


def run_child(pipeline: str, spec: dict[str, Any], workdir: str, name: str, env: dict[str, str],
              check_rows: bool = True) -> dict[str, Any]:
    """Runs one pipeline in a fresh interpreter; returns its figures plus the wall time of the process."""
    spec = {**spec, "pipeline": pipeline, "result": os.path.join(workdir, f"{name}.result.json")}
    spec_path = os.path.join(workdir, f"{name}.spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    log_path = os.path.join(workdir, f"{name}.log")
    if check_rows:
        log(f"{name}: {pipeline} pipeline on {spec['rows']:,} reviews (log: {log_path})")
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec_path],
                              stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    process_s = time.perf_counter() - start
    if proc.returncode != 0 or not os.path.exists(spec["result"]):
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise SystemExit(f"{name} failed (exit code {proc.returncode}); end of {log_path}:\n{tail}")
    with open(spec["result"]) as f:
        result = json.load(f)
    if not check_rows:
        return result
    rows = spec["rows"]
    if result["rows_scored"] != rows:
        raise SystemExit(f"{name}: scored {result['rows_scored']:,} of {rows:,} rows "
                         f"({result['rows_rejected']:,} rejected); see {log_path}")
    result.update(pipeline=pipeline, rows=rows, process_s=process_s,
                  work_reviews_per_s=rows / result["work_s"], process_reviews_per_s=rows / process_s,
                  reviews_per_cpu_s=rows / result["work_cpu_s"])
    log(f"{name}: {result['work_reviews_per_s']:,.0f} reviews/s (work), "
        f"{result['process_reviews_per_s']:,.0f} reviews/s (process), {result['reviews_per_cpu_s']:,.0f} reviews "
        f"per CPU-second, peak RSS {result['peak_rss_mb']:,.0f} MB")
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeated runs of one pipeline -> the run with the median work time, with the highest peak RSS."""
    ordered = sorted(runs, key=lambda r: r["work_s"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    if len(runs) > 1:
        out["repeats"] = [{k: r[k] for k in ("work_s", "work_cpu_s", "process_s", "work_reviews_per_s",
                                             "peak_rss_mb")}
                          for r in runs]
    return out


def compute_ceiling(flops: dict[str, Any], sgemm: list[float], ours: list[dict[str, Any]],
                    naive: list[dict[str, Any]]) -> dict[str, Any]:
    """How far the arithmetic lets ours go: a pipeline that did nothing but the fast graph's step
    products, at the large-sgemm rate of the same round, against that round's naive run."""
    fast, plain = flops["fast_flops_per_review"], flops["plain_flops_per_review"]
    ceiling = [g * 1e9 / fast for g in sgemm]
    n_rps = [n["work_reviews_per_s"] for n in naive]
    o_rps = [o["work_reviews_per_s"] for o in ours]
    return {
        **flops, "fast_mflop_per_review": fast / 1e6, "plain_mflop_per_review": plain / 1e6,
        "sgemm_gflops": sgemm, "ceiling_reviews_per_s": statistics.median(ceiling),
        "ceiling_ratio_per_round": [c / n for c, n in zip(ceiling, n_rps)],
        "ceiling_ratio_paired_median": statistics.median(c / n for c, n in zip(ceiling, n_rps)),
        # The share of the sgemm rate the fast graph's products must run at, with nothing else
        # costing time, for ours to reach 5x the naive run of the same round.
        "share_of_sgemm_for_5x_median": statistics.median(5 * n * fast / (g * 1e9) for n, g in zip(n_rps, sgemm)),
        "ours_share_of_sgemm_median": statistics.median(o * fast / (g * 1e9) for o, g in zip(o_rps, sgemm)),
        "naive_share_of_sgemm_median": statistics.median(n * plain / (g * 1e9) for n, g in zip(n_rps, sgemm)),
    }


# --------------------------------------------------------------------------- comparing outputs

def max_score_delta(ours_dir: str, naive_dir: str) -> tuple[float, int]:
    """Largest |ours - naive| after joining on review_id; also the number of joined rows."""
    import numpy as np
    import pyarrow.dataset as ds

    # pyarrow's dataset discovery skips _rejected/, _manifest.json and _SUCCESS (the "_" prefix).
    ours = ds.dataset(ours_dir, format="parquet").to_table(columns=["review_id", "score"])
    naive = ds.dataset(naive_dir, format="parquet").to_table(columns=["review_id", "score"])
    joined = ours.join(naive, "review_id", join_type="inner", left_suffix="_ours", right_suffix="_naive")
    if joined.num_rows != ours.num_rows or joined.num_rows != naive.num_rows:
        raise SystemExit(f"outputs do not join one to one: ours {ours.num_rows:,}, naive {naive.num_rows:,}, "
                         f"joined {joined.num_rows:,}")
    a = joined.column("score_ours").to_numpy().astype(np.float64)
    b = joined.column("score_naive").to_numpy().astype(np.float64)
    return (float(np.max(np.abs(a - b))) if len(a) else 0.0), joined.num_rows


# --------------------------------------------------------------------------- report

def fmt_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[h for _, h in columns]] + [[str(r.get(k, "")) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_row(case: str, r: dict[str, Any]) -> dict[str, Any]:
    return {"case": case, "pipeline": r["pipeline"], "reviews": f"{r['rows']:,}",
            "work_s": f"{r['work_s']:.1f}", "work_rps": f"{r['work_reviews_per_s']:,.0f}",
            "process_s": f"{r['process_s']:.1f}", "process_rps": f"{r['process_reviews_per_s']:,.0f}",
            "cpu_s": f"{r['work_cpu_s']:.1f}", "cpu_rps": f"{r['reviews_per_cpu_s']:,.0f}",
            "startup_s": f"{r['import_s'] + r.get('prefect_startup_s', 0.0):.1f}",
            "peak_rss_mb": f"{r['peak_rss_mb']:,.0f}"}


TABLE_COLUMNS = [("case", "case"), ("pipeline", "pipeline"), ("reviews", "reviews"),
                 ("work_s", "work s"), ("work_rps", "reviews/s (work)"),
                 ("process_s", "process s"), ("process_rps", "reviews/s (process)"),
                 ("cpu_s", "CPU s (work)"), ("cpu_rps", "reviews/CPU-s"),
                 ("startup_s", "imports+Prefect s"), ("peak_rss_mb", "peak RSS MB")]


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000, help="reviews in the main dump (default 200,000)")
    p.add_argument("--files", type=int, default=8, help="Parquet files per dump (default 8)")
    p.add_argument("--row-group-rows", type=int, default=10_000,
                   help="rows per Parquet row group (default 10,000, about 9 MB of tokens)")
    p.add_argument("--maxlen", type=int, nargs="+", default=None,
                   help="maxlen of the benchmark model(s); the first is the main case, others are extra "
                        "cases (default: the preset's, 50 for seed), e.g. --maxlen 50 400")
    p.add_argument("--long-rows", type=int, default=None,
                   help="reviews for the extra --maxlen cases (default: rows x main maxlen / maxlen, "
                        "so each case costs about the same)")
    p.add_argument("--preset", default="seed", help="architecture of the benchmark model (default seed)")
    p.add_argument("--registry", default=None, help="benchmark this registry's model instead of a random one")
    p.add_argument("--model", default="champion", help="with --registry: champion, latest or a version")
    p.add_argument("--predictor", default="auto", choices=["auto", "fast", "onnx", "keras", "int8"],
                   help="score_reviews' predictor (int8: only for a --registry version that has an approved "
                        "int8 graph; its scores are then not identical to the naive pipeline's)")
    p.add_argument("--flat-rows", type=int, default=None,
                   help="reviews of the memory-flatness dump (default rows/10; larger than --rows for a 10x "
                        "larger check; 0 skips it)")
    p.add_argument("--batch-size", type=int, default=8192, help="score_reviews batch_size (its default)")
    p.add_argument("--naive-batch-size", type=int, default=1024, help="model.predict batch_size of the naive pipeline")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each pipeline this many times, alternating; report the median (default 1)")
    p.add_argument("--data", default="auto", help="IMDB data source for load_imdb (default auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="keep models, dumps, outputs and logs here (default: a temp dir, "
                                                  "removed at the end)")
    p.add_argument("--json", default=DEFAULT_JSON, help=f"where to write the results (default {DEFAULT_JSON})")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("rows", "files", "row_group_rows", "batch_size", "naive_batch_size", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.flat_rows is None:
        args.flat_rows = max(args.rows // 10, 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        run_child_main(args.child)
        return 0

    started = time.perf_counter()
    own_workdir = args.workdir is None
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="bench-score-"))
    os.makedirs(workdir, exist_ok=True)
    machine = machine_info()
    log(f"{machine['nproc']} CPU(s) ({bench_machine.cpu_summary()}), load average {machine['load_average_at_start']}; "
        f"workdir {workdir}")

    # One Prefect home for the children of this run: its own SQLite database, not shared with other
    # work on the machine; PREFECT_API_URL is dropped so every child uses an ephemeral API.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=os.path.join(workdir, "prefect-home"), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))

    from models.imdb_dataset import load_imdb
    from models.presets import get_preset
    from models.registry import ModelRegistry

    t = time.perf_counter()
    imdb = load_imdb(args.data)
    log(f"IMDB loaded in {time.perf_counter() - t:.1f} s: {len(imdb.train_labels) + len(imdb.test_labels):,} "
        f"reviews, vocabulary size {imdb.vocab_size:,}")

    # ---- models: one case per maxlen (or the given registry's model)
    cases: list[dict[str, Any]] = []
    if args.registry:
        if args.maxlen:
            log("--registry given: --maxlen is ignored (the model's own preprocessing applies)")
        reg = ModelRegistry(args.registry)
        version = reg.resolve(args.model)
        prep = reg.preprocessing(version)
        cases.append({"name": f"maxlen{prep.maxlen}", "registry": args.registry, "version": version,
                      "maxlen": prep.maxlen, "rows": args.rows, "model": "registry " + args.model})
    else:
        main_maxlen = get_preset(args.preset).maxlen
        maxlens = args.maxlen or [main_maxlen]
        for i, maxlen in enumerate(maxlens):
            rows = args.rows if i == 0 else (args.long_rows or max(args.files, round(args.rows * maxlens[0] / maxlen)))
            reg_dir = os.path.join(workdir, f"registry-maxlen{maxlen}")
            reg = run_child("register", {"registry": reg_dir, "preset": args.preset, "maxlen": maxlen,
                                         "seed": args.seed, "data": args.data, "rows": 0},
                            workdir, f"register-maxlen{maxlen}", env, check_rows=False)
            log(f"registered a random {args.preset} model with maxlen {maxlen} as {reg['version']} "
                f"({reg['seconds']:.1f} s, includes the ONNX export; peak RSS {reg['peak_rss_mb']:,.0f} MB)")
            cases.append({"name": f"maxlen{maxlen}", "registry": reg_dir, "version": reg["version"], "maxlen": maxlen,
                          "rows": rows, "model": f"random {args.preset}",
                          "registration": {"seconds": reg["seconds"], "peak_rss_mb": reg["peak_rss_mb"]}})

    # ---- dumps
    dumps: dict[int, dict[str, Any]] = {}
    for rows in sorted({c["rows"] for c in cases} | ({args.flat_rows} if args.flat_rows else set())):
        t = time.perf_counter()
        dumps[rows] = write_bench_dump(imdb, rows, args.files, args.row_group_rows,
                                       os.path.join(workdir, f"dump-{rows}"), args.seed)
        d = dumps[rows]
        log(f"dump of {rows:,} reviews: {d['files']} files, {d['bytes'] / 2**20:,.0f} MB, tokens per review "
            f"mean {d['mean_tokens']} / median {d['median_tokens']} ({time.perf_counter() - t:.1f} s)")
    del imdb

    # ---- measured runs
    # A first Prefect start creates and migrates the run's database; do it once, unmeasured, so the
    # measured children start Prefect the way it starts on a machine that has used it before.
    t = time.perf_counter()
    run_child("prefect-init", {"rows": 0}, workdir, "prefect-init", env, check_rows=False)
    log(f"Prefect home initialised in {time.perf_counter() - t:.1f} s")
    results: dict[str, Any] = {}
    table: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        name = case["name"]
        base = {"registry": case["registry"], "version": case["version"], "batch_size": args.batch_size,
                "naive_batch_size": args.naive_batch_size, "predictor": args.predictor}
        jobs = {"ours": ("ours", dumps[case["rows"]]), "cli": ("cli", dumps[case["rows"]]),
                "naive": ("naive", dumps[case["rows"]])}
        if i == 0 and args.flat_rows:
            jobs["flat"] = ("ours", dumps[args.flat_rows])
        runs: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
        flops = run_child("flops", {**base, "input": dumps[case["rows"]]["dir"], "rows": case["rows"]},
                          workdir, f"{name}-flops", env, check_rows=False)
        sgemm: list[float] = []
        for rep in range(args.repeat):
            # Pipelines alternate, so a burst of load from elsewhere hits them alike.
            for job, (pipeline, dump) in jobs.items():
                out = os.path.join(workdir, f"out-{name}-{job}")
                shutil.rmtree(out, ignore_errors=True)
                suffix = f"-{rep + 1}" if args.repeat > 1 else ""
                r = run_child(pipeline, {**base, "input": dump["dir"], "output": out, "rows": dump["rows"]},
                              workdir, f"{name}-{job}-{dump['rows']}rows{suffix}", env)
                runs[job].append({**r, "output": out})
            # The roofline of this round, measured right after its pipelines.
            sgemm.append(run_child("sgemm", {"rows": 0}, workdir, f"{name}-sgemm-{rep + 1}", env,
                                   check_rows=False)["sgemm_gflops"])
        ours, naive, cli = combine(runs["ours"]), combine(runs["naive"]), combine(runs["cli"])
        # Each round's ours and naive runs are back to back, so their ratio shares the machine's mood.
        paired = [o["work_reviews_per_s"] / n["work_reviews_per_s"] for o, n in zip(runs["ours"], runs["naive"])]
        delta, joined = max_score_delta(ours["output"], naive["output"])
        cli_delta, _ = max_score_delta(cli["output"], naive["output"])
        cli_paired = [u["process_reviews_per_s"] / n["process_reviews_per_s"]
                      for u, n in zip(runs["cli"], runs["naive"])]
        case_result = {
            **case, "dump": dumps[case["rows"]], "ours": ours, "naive": naive, "cli": cli,
            # The untracked `reviews score` process against the naive script's, start to exit of each.
            "cli_throughput_ratio_process": cli["process_reviews_per_s"] / naive["process_reviews_per_s"],
            "cli_throughput_ratio_process_per_round": cli_paired,
            "cli_throughput_ratio_process_paired_median": statistics.median(cli_paired),
            "cli_max_abs_delta": cli_delta,
            "throughput_ratio_work": ours["work_reviews_per_s"] / naive["work_reviews_per_s"],
            "throughput_ratio_work_per_round": paired,
            "throughput_ratio_work_paired_median": statistics.median(paired),
            "throughput_ratio_process": ours["process_reviews_per_s"] / naive["process_reviews_per_s"],
            "cpu_efficiency_ratio": ours["reviews_per_cpu_s"] / naive["reviews_per_cpu_s"],
            "peak_rss_ratio_ours_over_naive": ours["peak_rss_mb"] / naive["peak_rss_mb"],
            "max_abs_delta": delta, "joined_rows": joined, "parity_ok": delta <= PARITY_LIMIT,
            "predictor": args.predictor,
            "compute_ceiling": compute_ceiling(flops, sgemm, runs["ours"], runs["naive"]),
        }
        log(f"{name}: ours/naive reviews/s = {case_result['throughput_ratio_work']:.2f}x (work), "
            f"{case_result['throughput_ratio_process']:.2f}x (process), reviews per CPU-second "
            f"{case_result['cpu_efficiency_ratio']:.2f}x; max |delta| = {delta:.3g} over {joined:,} rows")
        log(f"{name}: untracked CLI/naive reviews/s = {case_result['cli_throughput_ratio_process']:.2f}x "
            f"(whole process); max |delta| = {cli_delta:.3g}")
        table += [table_row(name, ours), table_row(name, cli), table_row(name, naive)]
        if "flat" in runs:
            flat = combine(runs["flat"])
            big, small = (ours, flat) if ours["rows"] >= flat["rows"] else (flat, ours)
            ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
            case_result["memory_flatness"] = {
                "small_rows": small["rows"], "large_rows": big["rows"],
                "small_peak_rss_mb": small["peak_rss_mb"], "large_peak_rss_mb": big["peak_rss_mb"],
                "rows_ratio": big["rows"] / small["rows"], "peak_rss_ratio": ratio,
                "target": FLAT_TARGET, "ok": ratio < FLAT_TARGET, "run": flat,
            }
            table.append(table_row(f"{name} flat", flat))
        results[name] = case_result

    total_s = time.perf_counter() - started
    report = {"benchmark": "score-reviews vs naive pandas + Keras", "machine": machine,
              "arguments": {k: v for k, v in vars(args).items() if k != "child"},
              "cases": results, "table": table, "total_seconds": total_s}

    # ---- summary
    print()
    print(fmt_table(table, TABLE_COLUMNS))
    if args.repeat > 1:
        print(f"(each row: the median of {args.repeat} runs by work time; peak RSS: the highest of them)")
    print()
    for name, r in results.items():
        print(f"{name} ({r['model']}, version {r['version']}):")
        print(f"  throughput ours/naive: {r['throughput_ratio_work']:.2f}x excluding imports and Prefect start-up, "
              f"{r['throughput_ratio_process']:.2f}x whole process; reviews per CPU-second "
              f"{r['cpu_efficiency_ratio']:.2f}x")
        if len(r["throughput_ratio_work_per_round"]) > 1:
            print("  per round (ours and naive back to back): " +
                  ", ".join(f"{x:.2f}x" for x in r["throughput_ratio_work_per_round"]) +
                  f"; median {r['throughput_ratio_work_paired_median']:.2f}x")
        o = r["ours"]
        print(f"  ours: flow call {o['flow_call_s']:.1f} s (flow body {o['flow_body_s']:.1f} s), Prefect start-up "
              f"{o['prefect_startup_s']:.1f} s, imports {o['import_s']:.1f} s; CPU {o['work_cpu_s']:.1f} s "
              f"(+ {o['prefect_server_cpu_s']:.1f} s in the Prefect API server)")
        u = r["cli"]
        print(f"  untracked CLI (reviews score, no Prefect API) / naive: {r['cli_throughput_ratio_process']:.2f}x "
              f"whole process ({u['process_s']:.1f} s vs {r['naive']['process_s']:.1f} s; per round "
              f"{', '.join(f'{x:.2f}x' for x in r['cli_throughput_ratio_process_per_round'])}, median "
              f"{r['cli_throughput_ratio_process_paired_median']:.2f}x); imports {u['import_s']:.1f} s, main() "
              f"{u['work_s']:.1f} s (flow body {u['flow_body_s']:.1f} s); Prefect server module loaded: "
              f"{u['prefect_server_module_loaded']}, TensorFlow imported: {u['tensorflow_imported']}; "
              f"max |score delta| {r['cli_max_abs_delta']:.3g}")
        n = r["naive"]
        print("  naive: " + ", ".join(f"{k[:-2]} {n[k]:.1f} s" for k in
                                      ("load_model_s", "read_s", "pad_s", "predict_s", "write_s")) +
              f", imports {n['import_s']:.1f} s; CPU {n['work_cpu_s']:.1f} s")
        print(f"  peak RSS ours {o['peak_rss_mb']:,.0f} MB, naive {n['peak_rss_mb']:,.0f} MB "
              f"(ours/naive {r['peak_rss_ratio_ours_over_naive']:.2f}x)")
        print(f"  max |score delta| after joining on review_id: {r['max_abs_delta']:.3g} "
              f"({'ok' if r['parity_ok'] else 'FAIL'}, limit {PARITY_LIMIT:g}"
              f"{'; int8 predictor: approximate by design, see bench/quantized.py' if r['predictor'] == 'int8' else ''})")
        c = r["compute_ceiling"]
        print(f"  compute ceiling: the fast graph needs {c['fast_mflop_per_review']:.2f} MFLOP per review on this "
              f"dump ({100 * c['steps_run_fraction']:.1f}% of the steps; plain model {c['plain_mflop_per_review']:.2f}). "
              f"At the sgemm rate of the same rounds ({', '.join(f'{g:.0f}' for g in c['sgemm_gflops'])} GFLOP/s) "
              f"only those products would score {c['ceiling_reviews_per_s']:,.0f} reviews/s = "
              f"{c['ceiling_ratio_paired_median']:.2f}x naive (per round "
              f"{', '.join(f'{x:.2f}x' for x in c['ceiling_ratio_per_round'])}); 5x naive needs "
              f"{100 * c['share_of_sgemm_for_5x_median']:.0f}% of that rate end to end; ours ran at "
              f"{100 * c['ours_share_of_sgemm_median']:.0f}%, naive at {100 * c['naive_share_of_sgemm_median']:.0f}% "
              f"(plain FLOPs)")
        if "memory_flatness" in r:
            m = r["memory_flatness"]
            print(f"  memory flatness: peak RSS {m['small_peak_rss_mb']:,.0f} MB at {m['small_rows']:,} reviews, "
                  f"{m['large_peak_rss_mb']:,.0f} MB at {m['large_rows']:,} ({m['rows_ratio']:.0f}x the rows): "
                  f"{m['peak_rss_ratio']:.2f}x ({'ok' if m['ok'] else 'ABOVE'} target < {m['target']}x)")
    print(f"total runtime {total_s:.0f} s (this process's peak RSS {peak_rss_mb():,.0f} MB; "
          f"TensorFlow loaded here: {'tensorflow' in sys.modules})")

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
        print(f"results written to {args.json}")
    if own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = all(r["parity_ok"] and r["cli_max_abs_delta"] <= PARITY_LIMIT for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
