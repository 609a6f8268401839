"""Registering a trained model."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from infra.imdb import ImdbData
from models.predictors import probe_batch
from models.presets import TrainConfig
from models.registry import ModelRegistry
from models.training import FitResult
from tasks.data import TrainingSet
from tasks.reporting import logger, markdown
from tasks.training import history_markdown, public_metrics


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register(registry_uri: str, result: FitResult, ts: TrainingSet, config: TrainConfig,
             report: dict[str, Any], imdb: ImdbData) -> str:
    registry = ModelRegistry(registry_uri)
    prep = ts.preprocessing
    # Real reviews plus random ones, so parity is checked on both padding sides and the whole index range.
    probe = probe_batch(prep.input_dim, prep.maxlen, n=128, seed=config.seed)
    if len(ts.x_test):
        import numpy as np

        probe = np.concatenate([ts.x_test[:128], probe])
    metrics = public_metrics(report)
    metadata = {
        "preset": config.preset,
        "hyperparameters": config.to_dict(),
        "metrics": {"test_accuracy": metrics["accuracy"], "test_auc": metrics["auc"],
                    "test_log_loss": metrics["log_loss"], "train_seconds": metrics["train_seconds"]},
        "evaluation": metrics,
        "data": {"source": imdb.source, "fingerprint": ts.fingerprint, "train_rows": int(len(ts.y_train)),
                 "validation_rows": int(len(ts.y_val)), "test_rows": int(len(ts.y_test)),
                 "vocab_size": imdb.vocab_size},
    }
    vocab = imdb.vocabulary.to_json() if imdb.vocabulary is not None else None
    version = registry.register(result.model, prep, vocab, metadata, probe,
                                extra_files={"report.png": report["report_png"]})
    logger().info("registered version %s in %s (champion: %s)", version, registry.root.uri, registry.champion())
    markdown("training-report", history_markdown(config, report) +
             f"\n\nRegistered as `{version}` in `{registry.root.uri}`; learning curves and ROC: "
             f"`{registry.root.uri}/versions/{version}/report.png`.", "Training history and registration")
    return version
