"""``reviews``: the project's command line.  It parses arguments and calls flows or
plain functions; the work itself lives in ``tasks/`` and ``models/``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Sequence

import infra.prefect_defaults  # noqa: F401  (before anything imports Prefect)
from flows.cli_support import (UNTRACKED_NOTE, Parser, add_training_options, api_configured, check_storage,
                               console_without_tracebacks, flow_arguments, given_uris, prefect_parameter_errors,
                               storage_error_line, training_overrides, untracked_console)
from infra.settings import default_data, default_registry


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from models.imdb_dataset import load_imdb

    imdb = load_imdb(args.data, cache_dir=args.cache_dir)
    _print_json(imdb.summary())
    return 0


RETRAIN_TAGS = ("reviews", "retrain")


def cmd_train(args: argparse.Namespace) -> int:
    check_storage(args.registry)  # before importing TensorFlow and long before registering
    from prefect import tags

    from flows.retrain import retrain_sentiment

    # The tags a deployment's runs carry (prefect.yaml), so a filter on them finds CLI runs too.
    with tags(*RETRAIN_TAGS):
        summary = retrain_sentiment(preset=args.preset, overrides=training_overrides(args) or None,
                                    registry=args.registry, data=args.data, cache_dir=args.cache_dir,
                                    min_improvement=args.min_improvement,
                                    labelled=args.labelled or None, holdout_share=args.holdout_share,
                                    force=args.force)
    _print_json(summary)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    champion = registry.champion()
    rows = [{
        "version": m["version"],
        "champion": m["version"] == champion,
        "preset": m.get("preset"),
        "test_accuracy": m.get("metrics", {}).get("test_accuracy"),
        "test_auc": m.get("metrics", {}).get("test_auc"),
        "created_at": m.get("created_at"),
    } for m in registry.versions()]
    if args.json:
        _print_json({"registry": registry.root.uri, "champion": champion, "versions": rows})
        return 0
    print(f"registry: {registry.root.uri}")
    if not rows:
        print("(no versions)")
        return 0
    print(f"{'':2}{'version':26} {'preset':8} {'test_acc':>8} {'test_auc':>8}  created_at")
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        auc = f"{r['test_auc']:.4f}" if r["test_auc"] is not None else "-"
        print(f"{'*' if r['champion'] else ' ':2}{r['version']:26} {r['preset'] or '-':8} {acc:>8} {auc:>8}  "
              f"{r['created_at']}")
    print("(* = champion)")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry
    from models.version_summary import summary_lines

    registry = ModelRegistry(args.registry)
    meta = registry.metadata(registry.resolve(args.version))
    if args.json:
        _print_json(meta)
        return 0
    print("\n".join(summary_lines(meta, registry.root.uri, registry.champion())))
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    version = registry.resolve(args.version)
    registry.promote(version, reason=args.reason or "promoted by hand", actor="cli")
    _print_json({"champion": version, "registry": registry.root.uri})
    return 0


def cmd_models_rollback(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    version = registry.rollback(reason=args.reason or "rolled back by hand", actor="cli")
    _print_json({"champion": version, "registry": registry.root.uri})
    return 0


def cmd_models_prune(args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry
    from models.retention import prune

    registry = ModelRegistry(args.registry)
    plan = prune(registry, args.keep, dry_run=args.dry_run, actor="cli")
    verb = "would remove" if args.dry_run else "removed"
    for version in plan.unfinished + plan.remove:
        print(f"{verb} {version}", flush=True)
    _print_json({"registry": registry.root.uri, **plan.to_dict()})
    return 0


def run_scoring(parameters: dict[str, Any], track: bool = False, debug: bool = False) -> dict[str, Any]:
    """The score-reviews run: tracked with ``track`` or when Prefect has an API, else untracked
    (the same flow body with no Prefect server: starting one costs 20-45 s, flows/untracked.py)."""
    if track or api_configured():
        from flows.score import score_reviews
        from infra.prefect_server_lifetime import tie_if_ephemeral

        tie_if_ephemeral()  # as main() does for the other flow commands: a temporary server dies with us
        if not debug:
            console_without_tracebacks()
        return score_reviews(**parameters)  # the flow tags its own run (tasks.reporting.tag_run)
    from flows.untracked import score_untracked

    print(UNTRACKED_NOTE, file=sys.stderr, flush=True)
    untracked_console(debug)  # the step logs a tracked run shows, with no Prefect to print them
    return score_untracked(**parameters)


def cmd_score(args: argparse.Namespace) -> int:
    from flows.score_run import score_reviews

    check_storage(args.registry, args.output, args.input)
    _print_json(run_scoring(flow_arguments(score_reviews, args), track=args.track, debug=args.debug))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from flows.cli_report import print_report, report

    check_storage(args.output)
    summary = report(args.output)
    if args.json:
        _print_json(summary)
    else:
        print_report(summary)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job on embedded defaults: fetch data, train, register, score the test split.

    With ``--skip-existing`` (the compose file's bootstrap service) each step is skipped when its
    result is already there: the registry's champion, a dump with ``_READY``, scores with ``_SUCCESS``.
    """
    import os

    from infra import storage
    from models.dump_discovery import READY, SUCCESS, mark_ready
    from models.registry import ModelRegistry

    dump = args.dump or os.path.join(args.workdir, "imdb-test-dump")
    output = args.output or os.path.join(args.workdir, "imdb-test-scores")
    check_storage(args.registry, dump, output)
    champion = ModelRegistry(args.registry).champion() if args.skip_existing else None
    dump_ready = args.skip_existing and storage.exists(storage.resolve(dump).join(READY))
    scored_before = args.skip_existing and storage.exists(storage.resolve(output).join(SUCCESS))
    if champion and dump_ready and scored_before:
        # Decided before TensorFlow, the data or a flow run is touched: a repeated `up` costs seconds.
        _print_json({"skipped": True, "champion": champion, "dump": dump, "output": output})
        return 0

    from flows.retrain import retrain_sentiment
    from infra.dump_writer import write_imdb_split
    from models.imdb_dataset import load_imdb

    steps = {"train": "skipped" if champion else "ran", "dump": "skipped" if dump_ready else "ran",
             "score": "skipped" if scored_before else "ran"}
    imdb = None
    if not dump_ready:
        imdb = load_imdb(args.data)
        print(json.dumps({"data": imdb.summary()}, default=str), flush=True)
    if champion:
        metrics = ModelRegistry(args.registry).metadata(champion).get("metrics", {})
        trained = {"version": champion, **{k: metrics.get(k) for k in ("test_accuracy", "test_auc")},
                   "train_seconds": None}
    else:
        # The main job always trains: a skipped run ("nothing changed") would have no new metrics to show.
        from prefect import tags

        with tags(*RETRAIN_TAGS):
            trained = retrain_sentiment(preset=args.preset, registry=args.registry, data=args.data, force=True)
        print(json.dumps({"trained": trained}), flush=True)
    if imdb is not None:
        write_imdb_split(imdb, "test", dump, rows_per_file=5000)
        # The producer contract of score-new-dumps: the demo partition counts as complete there too.
        mark_ready(dump)
    scored = None
    if not scored_before:
        # overwrite: a partial output left by an earlier attempt may hold another model's parts.
        # Tracked as `reviews score` is: untracked unless Prefect has an API (then no server starts
        # when the champion was reused and nothing trained).
        scored = run_scoring({"input": dump, "output": output, "model": trained["version"],
                              "registry": args.registry, "overwrite": True}, debug=args.debug)
    _print_json({"skipped": False, "steps": steps, "version": trained["version"],
                 "test_accuracy": trained["test_accuracy"], "test_auc": trained["test_auc"],
                 "train_seconds": trained["train_seconds"], "dump": dump, "output": output, "scored": scored})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main as serve_main

    serve_main(args.cron, args.timezone)
    return 0


_DATA_HELP = "IMDB data source: auto | npm | keras | path to imdb.npz | npm-format .tgz | aclImdb/ directory " \
             "(taken from $REVIEWS_DATA when set)"
_CACHE_HELP = "data cache directory (default: $REVIEWS_DATA_DIR, else ~/.cache/imdb-reviews)"
_REGISTRY_HELP = "model registry URI: a path or s3://bucket/prefix (taken from $REVIEWS_REGISTRY when set)"


def build_parser() -> argparse.ArgumentParser:
    from models.dump_profile import DRIFT_THRESHOLD
    from models.presets import PRESETS

    p = Parser(prog="reviews", description=__doc__)
    p.add_argument("--debug", action="store_true",
                   help="on failure, show the tracebacks (Prefect's on the console, and the command's own)")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="the IMDB data").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download, verify and cache the IMDB data; print a summary")
    fetch.add_argument("--data", default=default_data(), help=_DATA_HELP)
    fetch.add_argument("--cache-dir", default=None, help=_CACHE_HELP)
    fetch.set_defaults(func=cmd_data_fetch)

    train = sub.add_parser("train", help="run the retrain-sentiment flow and print a JSON summary line")
    train.add_argument("--preset", default="seed", choices=list(PRESETS),
                       help="named settings (README: Training); the options below override single values")
    train.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    train.add_argument("--data", default=default_data(), help=_DATA_HELP)
    train.add_argument("--cache-dir", default=None, help=_CACHE_HELP)
    train.add_argument("--min-improvement", type=float, default=0.0,
                       help="promote only if the new model's accuracy beats the champion's by more than this, "
                            "both scored on the same evaluation set (README: gated promotion)")
    train.add_argument("--labelled", action="append", default=None, metavar="URI",
                       help="labelled Parquet reviews (review_id, label 0/1, text) to train on besides IMDB: a file, "
                            "directory/prefix or glob, path or s3://; repeat for more (default: none)")
    train.add_argument("--holdout-share", type=float, default=0.2,
                       help="share of the labelled reviews held out for evaluation, by a stable hash of review_id")
    train.add_argument("--force", action="store_true",
                       help="train even when data snapshot, config and code equal the latest version's (default: "
                            "such a run is skipped)")
    add_training_options(train)
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="models_command",
                                                                                  required=True)
    mlist = models.add_parser("list", help="versions, metrics and the champion")
    mlist.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    mlist.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    mlist.set_defaults(func=cmd_models_list)
    promote = models.add_parser("promote", help="make VERSION the champion (audited)")
    promote.add_argument("version", help="an exact version, or latest")
    promote.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    promote.add_argument("--reason", default=None, help="recorded in the audit log (default: 'promoted by hand')")
    promote.set_defaults(func=cmd_models_promote)
    rollback = models.add_parser("rollback", help="restore the previous champion (audited)")
    rollback.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    rollback.add_argument("--reason", default=None, help="recorded in the audit log (default: 'rolled back by hand')")
    rollback.set_defaults(func=cmd_models_rollback)
    prune = models.add_parser("prune", help="remove all but the N newest versions; the champion and its rollback "
                                            "history always stay (audited)")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="newest versions to keep, >= 1 (required: no default)")
    prune.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
    prune.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    prune.set_defaults(func=cmd_models_prune)
    show = models.add_parser("show", help="a version's metadata summary: metrics, data snapshot, code version")
    show.add_argument("version", help="an exact version, latest or champion")
    show.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    show.add_argument("--json", action="store_true", help="print the version's metadata.json record instead")
    show.set_defaults(func=cmd_models_show)

    score = sub.add_parser("score", help="score Parquet review dumps (file, directory/prefix or glob)")
    score.add_argument("input", help="input URI: a .parquet file, a directory/prefix or a glob; path or s3://")
    score.add_argument("output", help="output directory URI (path or s3://bucket/prefix)")
    score.add_argument("--model", default="champion", help="champion | latest | an exact version")
    score.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    score.add_argument("--batch-size", type=int, default=8192,
                       help="most rows per record batch read and scored at once (fewer for long maxlen)")
    score.add_argument("--threshold", type=float, default=0.5, help="label = 1 where score >= threshold")
    score.add_argument("--id-column", default="review_id", help="input column with the review id")
    score.add_argument("--tokens-column", default="tokens", help="input column with the token index list")
    score.add_argument("--text-column", default=None,
                       help="score this raw-text column with the model's vocabulary (default: none, score "
                            "--tokens-column)")
    score.add_argument("--max-rows-per-unit", type=int, default=200_000,
                       help="most rows per work unit (a file's row-group range, one task run and output part)")
    score.add_argument("--max-reject-fraction", type=float, default=0.05,
                       help="fail the run (no _SUCCESS) when more than this share of rows is rejected")
    score.add_argument("--overwrite", action="store_true",
                       help="remove OUTPUT's earlier parts, rejects and markers, then score every unit again")
    score.add_argument("--predictor", default="auto", choices=["auto", "fast", "onnx", "keras", "int8"],
                       help="auto: exact gate-table graph, else plain ONNX; int8: approximate, only for versions "
                            "whose accuracy cost was approved at registration")
    score.add_argument("--dask-address", default=None,
                       help="run units on this Dask scheduler (default $REVIEWS_DASK_ADDRESS; else local threads)")
    score.add_argument("--allow-failed-files", action="store_true",
                       help="complete the run (_SUCCESS) even if input files or row groups cannot be read; their "
                            "rows count as rejected towards --max-reject-fraction (default: off, such a run fails)")
    score.add_argument("--on-duplicate-id", default="keep", choices=["keep", "reject"],
                       help="keep: score every row of a repeated id; reject: send later occurrences (by file, row) "
                            "to _rejected/ (default: keep; duplicates are counted in the manifest either way)")
    score.add_argument("--drift-threshold", type=float, default=DRIFT_THRESHOLD,
                       help="a feature of the dump drifted when its PSI against the model's evaluation data exceeds "
                            "this (manifest 'drift', `reviews report`)")
    score.add_argument("--fail-on-drift", action="store_true",
                       help="fail the run (manifest written, no _SUCCESS) when a feature drifted (default: off, drift "
                            "is reported only)")
    score.add_argument("--track", action="store_true",
                       help="record the run in Prefect even with no API configured, by starting Prefect's temporary "
                            "server first (default: off; runs are tracked when PREFECT_API_URL or the Prefect "
                            "profile names an API, and otherwise run untracked, with no server)")
    score.set_defaults(func=cmd_score)

    rep = sub.add_parser("report", help="a scoring run's summary from OUTPUT/_manifest.json: totals, model, timings, "
                                        "score histogram, drift (finished or failed runs)")
    rep.add_argument("output", help="the scoring output URI (path or s3://bucket/prefix)")
    rep.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of tables")
    rep.set_defaults(func=cmd_report)

    quick = sub.add_parser("quickstart", help="fetch data, train, register, then score the IMDB test split")
    quick.add_argument("--preset", default="seed", choices=list(PRESETS), help="training preset")
    quick.add_argument("--registry", default=default_registry(), help=_REGISTRY_HELP)
    quick.add_argument("--data", default=default_data(), help=_DATA_HELP)
    quick.add_argument("--workdir", default=os.path.expanduser("~/.imdb-reviews"),
                       help="where the test-split dump and its scores are written")
    quick.add_argument("--dump", default=None, metavar="URI",
                       help="write the test-split dump here, path or s3://, and mark it _READY "
                            "(default: WORKDIR/imdb-test-dump)")
    quick.add_argument("--output", default=None, metavar="URI",
                       help="score the dump into here, path or s3:// (default: WORKDIR/imdb-test-scores)")
    quick.add_argument("--skip-existing", action="store_true",
                       help="bootstrap mode: keep the registry's champion instead of training, a dump that has "
                            "_READY and scores that have _SUCCESS; with all three there, exit 0 at once and "
                            'print {"skipped": true, ...} (default: always train, write and score)')
    quick.set_defaults(func=cmd_quickstart)

    srv = sub.add_parser("serve", help="serve score-reviews, the nightly retrain, the hourly dump discovery and "
                                       "the rescoring after a promotion from this process")
    srv.add_argument("--cron", default=None, help="nightly retrain schedule (default $REVIEWS_NIGHTLY_CRON or 0 3 * * *)")
    srv.add_argument("--timezone", default=None, help="IANA time zone of the schedule (default UTC)")
    srv.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from infra.imdb import DataError
    from infra.storage import StorageError
    from models.registry import RegistryError
    from tasks.scoring import ScoringError

    if args.command in ("train", "quickstart", "serve"):
        # These run flows: a temporary Prefect server they start must not outlive a killed CLI.
        # (score does this itself, only for a tracked run: the server module alone takes seconds to load.)
        from infra.prefect_server_lifetime import tie_if_ephemeral

        tie_if_ephemeral()
    # serve's console is a service log; score sets its console up once it knows whether Prefect runs it.
    if args.command in ("train", "quickstart") and not args.debug:
        console_without_tracebacks()
    try:
        return args.func(args)
    except (DataError, StorageError, RegistryError, ScoringError, ValueError, FileNotFoundError,
            *prefect_parameter_errors()) as exc:
        if args.debug:
            traceback.print_exc()
        message = storage_error_line(exc, given_uris(args)) if isinstance(exc, StorageError) else exc
        print(f"reviews: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
