"""``retrain-sentiment``: load data -> train (with validation) -> evaluate on test -> register."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from infra.settings import default_data, default_registry
from models.presets import get_preset
from tasks.data import load_data, prepare
from tasks.registry import gate, register
from tasks.reporting import rename_run
from tasks.training import evaluate, train


@flow(name="retrain-sentiment", log_prints=True, validate_parameters=True, flow_run_name="retrain-{preset}")
def retrain_sentiment(
    preset: Literal["seed", "default"] = "seed",
    registry: str | None = None,
    data: str | None = None,
    cache_dir: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    maxlen: int | None = None,
    padding: Literal["pre", "post"] | None = None,
    truncating: Literal["pre", "post"] | None = None,
    num_words: int | None = None,
    skip_top: int | None = None,
    embedding_dim: int | None = None,
    lstm_units: int | None = None,
    bidirectional: bool | None = None,
    pooling: Literal["last", "max"] | None = None,
    embedding_dropout: float | None = None,
    token_dropout: float | None = None,
    dropout: float | None = None,
    learning_rate: float | None = None,
    validation_split: float | None = None,
    early_stopping_patience: int | None = None,
    early_stopping_monitor: Literal["val_loss", "val_accuracy"] | None = None,
    lstm_layers: int | None = None,
    mask_zero: bool | None = None,
    bucket_width: int | None = None,
    learning_rate_decay: float | None = None,
    ema_momentum: float | None = None,
    seed: int | None = None,
    accuracy_tolerance: float = 0.0,
    auc_tolerance: float = 0.0,
) -> dict[str, Any]:
    overrides = {k: v for k, v in locals().items()
                 if k not in ("preset", "registry", "data", "cache_dir", "accuracy_tolerance", "auc_tolerance")
                 and v is not None}
    config = get_preset(preset, **overrides)
    registry_uri = registry or default_registry()
    imdb = load_data(data or default_data(), cache_dir)
    ts = prepare(imdb, config)
    result = train(ts, config)
    report = evaluate(result, ts)
    version = register(registry_uri, result, ts, config, report, imdb)
    decision = gate(registry_uri, version, accuracy_tolerance, auc_tolerance)
    rename_run(f"retrain-{config.preset}-{version}-{'promoted' if decision['promote'] else 'rejected'}",
               only_if_named=f"retrain-{preset}")
    return {
        "version": version,
        "promoted": decision["promote"],
        "champion": version if decision["promote"] else decision["champion"],
        "test_accuracy": round(report["accuracy"], 4),
        "test_auc": round(report["auc"], 4),
        "train_seconds": report["train_seconds"],
    }
