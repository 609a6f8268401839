"""Registering a trained model."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from infra.imdb import ImdbData
from models.predictors import probe_batch
from models.presets import TrainConfig
from models.promotion import decide, decision_markdown
from models.quantization import int8_export
from models.registry import ModelRegistry, RegistryError
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
    int8_files, metadata["int8"] = int8_export(result.model, ts.x_test, ts.y_test, report["accuracy"], probe)
    vocab = imdb.vocabulary.to_json() if imdb.vocabulary is not None else None
    version = registry.register(result.model, prep, vocab, metadata, probe,
                                extra_files={"report.png": report["report_png"], **int8_files})
    log = logger()
    log.info("registered version %s in %s (champion: %s)", version, registry.root.uri, registry.champion())
    q = metadata["int8"]
    log.info("int8 predictor %s: %s%s", "approved" if q["approved"] else "not stored", q["reason"],
             f" (test accuracy {q['accuracy_int8']:.4f} vs {q['accuracy_float32']:.4f})" if "accuracy_int8" in q else "")
    markdown("training-report", history_markdown(config, report) +
             f"\n\nRegistered as `{version}` in `{registry.root.uri}`; learning curves and ROC: "
             f"`{registry.root.uri}/versions/{version}/report.png`.", "Training history and registration")
    return version


@task(name="promotion-gate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def gate(registry_uri: str, version: str, accuracy_tolerance: float = 0.0,
         auc_tolerance: float = 0.0) -> dict[str, Any]:
    """Promote the challenger only if it passes the gate; every decision is audited."""
    registry = ModelRegistry(registry_uri)
    challenger = registry.metadata(version)
    champion_version = registry.champion()
    champion = registry.metadata(champion_version) if champion_version else None
    try:
        registry.load_predictor(version)  # rebuilds the fast predictor and re-checks parity
        parity_ok, detail = True, ""
    except RegistryError as exc:
        parity_ok, detail = False, str(exc)
    decision = decide(challenger, champion, parity_ok, detail, accuracy_tolerance, auc_tolerance)
    registry.audit("gate", decision)
    if decision["promote"] and champion_version != version:
        registry.promote(version, reason=decision["reason"], actor="retrain-sentiment", decision=decision)
    log = logger()
    (log.info if decision["promote"] else log.warning)("promotion gate: %s (%s)",
                                                       "promoted" if decision["promote"] else "rejected",
                                                       decision["reason"])
    markdown("promotion-decision", decision_markdown(decision), "Challenger vs champion")
    return decision
