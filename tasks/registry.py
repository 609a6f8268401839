"""Registering a trained model."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.comparison import compare
from models.evaluation_set import EvaluationSet, evaluation_set, version_matrix
from models.imdb_dataset import ImdbData
from models.predictors import probe_batch
from models.presets import TrainConfig
from models.promotion import decide, decision_markdown
from models.quantization import int8_export
from models.registry import ModelRegistry, RegistryError
from models.training import FitResult
from tasks import events
from tasks.data import TrainingSet
from tasks.lazy_task import task
from tasks.reporting import in_run, inline_png, logger, markdown
from tasks.training import history_markdown, public_metrics


@task(name="register-model", retries=2, retry_delay_seconds=[2, 10])
def register(registry_uri: str, result: FitResult, ts: TrainingSet, config: TrainConfig,
             report: dict[str, Any], imdb: ImdbData,
             lineage: dict[str, Any] | None = None) -> str:
    """``lineage``: the data snapshot, labelled-data report and code version (``RunInputs.metadata``)."""
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
                 "vocab_size": imdb.vocab_size, "holdout_rows": int(len(ts.y_holdout))},
        **(lineage or {}),
    }
    if report.get("drift_reference") is not None:
        # Scoring runs with this version compare their dumps against it (models/run_drift.py).
        metadata["drift_reference"] = report["drift_reference"]
    int8_files, metadata["int8"] = int8_export(result.model, ts.x_test, ts.y_test, report["accuracy"], probe)
    vocab = imdb.vocabulary.to_json() if imdb.vocabulary is not None else None
    version = registry.register(result.model, prep, vocab, metadata, probe,
                                extra_files={"report.png": report["report_png"], **int8_files})
    log = logger()
    log.info("registered version %s in %s (champion: %s)", version, registry.root.uri, registry.champion())
    q = metadata["int8"]
    log.info("int8 predictor %s: %s%s", "approved" if q["approved"] else "not stored", q["reason"],
             f" (test accuracy {q['accuracy_int8']:.4f} vs {q['accuracy_float32']:.4f})" if "accuracy_int8" in q else "")
    markdown("training-report", history_markdown(config, report) + "\n\n"
             + inline_png("learning curves, ROC and test score histogram", report["report_png"])
             + f"\n\nRegistered as `{version}` in `{registry.root.uri}`; the picture is also stored as "
             f"`{registry.root.uri}/versions/{version}/report.png`.", "Training history and registration")
    return version


def _scores(registry: ModelRegistry, version: str, es: EvaluationSet, predictor) -> tuple[np.ndarray, str]:
    x, how = version_matrix(es, registry.preprocessing(version), registry.vocabulary(version))
    return np.asarray(predictor.predict(x)).reshape(-1), how


@task(name="promotion-gate", retries=2, retry_delay_seconds=[2, 10])
def gate(registry_uri: str, version: str, imdb: ImdbData, ts: TrainingSet,
         min_improvement: float = 0.0) -> dict[str, Any]:
    """Score challenger and champion on one evaluation set (the IMDB test split plus the labelled
    holdout) with their registered predictors; promote by the paired rule of
    :func:`models.promotion.decide`.  Every decision is audited."""
    registry = ModelRegistry(registry_uri)
    champion_version = registry.champion()
    try:
        challenger_predictor = registry.load_predictor(version)  # rebuilds the predictor, re-checks parity
        parity_ok, detail = True, ""
    except RegistryError as exc:
        parity_ok, detail = False, str(exc)
    comparison = champion_error = evaluation = None
    if parity_ok and champion_version not in (None, version):
        # The holdout's uncut token lists, not ts.x_holdout: that matrix is cut to this run's maxlen,
        # and each version reads the reviews with its own preprocessing (models/evaluation_set.py).
        es = evaluation_set(imdb.test_tokens, imdb.test_labels, imdb.vocabulary, ts.holdout_tokens, ts.y_holdout)
        challenger_scores, challenger_input = _scores(registry, version, es, challenger_predictor)
        evaluation = {"parts": es.parts, "challenger_input": challenger_input}
        try:
            champion_scores, evaluation["champion_input"] = _scores(
                registry, champion_version, es, registry.load_predictor(champion_version))
        except RegistryError as exc:
            champion_error = str(exc)
        else:
            comparison = compare(es.labels, champion_scores, challenger_scores)
    decision = decide(version, champion_version, parity_ok, detail, comparison, min_improvement,
                      champion_error, evaluation)
    registry.audit("gate", decision)
    if decision["promote"] and champion_version != version:
        registry.promote(version, reason=decision["reason"], actor="retrain-sentiment", decision=decision)
    log = logger()
    (log.info if decision["promote"] else log.warning)("promotion gate: %s (%s)",
                                                       "promoted" if decision["promote"] else "rejected",
                                                       decision["reason"])
    markdown("promotion-decision", decision_markdown(decision), "Challenger vs champion on one evaluation set")
    # After the champion changed: an automation on reviews.model.promoted (prefect.yaml's
    # score-new-dumps/after-promotion) then reads the new champion.
    _emit_decision(registry, decision)
    return decision


def _emit_decision(registry: ModelRegistry, decision: dict[str, Any]) -> None:
    if not in_run():
        return
    try:
        metrics = registry.metadata(decision["challenger"]).get("metrics")
    except Exception as exc:  # noqa: BLE001 - a failed read must not retry a gate that already promoted
        logger().warning("the gate's event goes out without the test metrics: %s", exc)
        metrics = None
    events.emit(*events.gate_decision(decision, registry.root.uri, metrics))
