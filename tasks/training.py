"""Training and evaluation tasks."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from models import evaluation
from models.dump_profile import DumpProfile
from models.onnx_export import gate_graph_scores
from models.presets import TrainConfig
from models.training import FitResult, fit, predict_scores
from tasks.data import TrainingSet
from tasks.lazy_task import task
from tasks.reporting import logger, table


@task(name="train-model")
def train(ts: TrainingSet, config: TrainConfig, verbose: int | str | None = None) -> FitResult:
    log = logger()
    log.info("training preset %r on %d reviews (%d held out for validation), maxlen %d, input_dim %d",
             config.preset, len(ts.y_train), len(ts.y_val), config.maxlen, ts.preprocessing.input_dim)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        # The n-gram bag trained apart reports its epochs first, as ngram_* metrics.
        bag = any(k.startswith("ngram_") for k in metrics)
        log.info("%sepoch %d/%d: %s", "n-gram bag " if bag else "", epoch, config.ngram_epochs if bag else config.epochs,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))

    result = fit(config, ts.preprocessing.input_dim, ts.x_train, ts.y_train, ts.x_val, ts.y_val,
                 on_epoch=on_epoch, verbose=verbose)
    log.info("trained %d epoch(s) in %.1f s (best epoch %d)", result.epochs_run, result.train_seconds,
             result.best_epoch)
    if result.parts:
        log.info("joined with the n-gram bag (%d epoch(s), best %d): the BiLSTM's logit weighted %.2f; "
                 "validation accuracy %s", result.parts["ngram_bag"]["epochs_run"],
                 result.parts["ngram_bag"]["best_epoch"], result.parts["lstm_weight"],
                 {k: v["accuracy"] for k, v in result.parts["validation"].items()})
    return result


def curves_png(result: FitResult, ts: TrainingSet, scores) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.png")
        evaluation.plot_report(result.history, ts.y_test, scores, path, steps=result.step_history,
                               steps_per_epoch=result.steps_per_epoch)
        with open(path, "rb") as f:
            return f.read()


@task(name="evaluate-model")
def evaluate(result: FitResult, ts: TrainingSet) -> dict[str, Any]:
    # The gate-table graph the version will be served from gives the same scores (checked) faster.
    scores = gate_graph_scores(result.model, ts.x_test)
    if scores is None:
        scores = predict_scores(result.model, ts.x_test)
    report = evaluation.evaluate(ts.y_test, scores, lengths=ts.test_lengths)
    report["train_seconds"] = round(result.train_seconds, 2)
    report["epoch_seconds"] = [round(s, 2) for s in result.epoch_seconds]
    report["epochs_run"] = result.epochs_run
    report["best_epoch"] = result.best_epoch
    report["history"] = result.history
    report["step_history"] = result.step_history
    if result.parts:
        report["parts"] = result.parts
    report["report_png"] = curves_png(result, ts, scores)
    if len(ts.test_tokens) and len(ts.test_tokens) == len(ts.y_test):
        # What a dump like the evaluation data looks like to this model: the reference that every
        # scoring run with it compares its dump against (models/dump_profile.py).  Float32 scores,
        # as scoring runs store them.
        report["drift_reference"] = DumpProfile.from_batch(
            ts.test_tokens, np.asarray(scores, dtype=np.float32), ts.preprocessing.num_words).to_dict()
    c = report["confusion"]
    logger().info("test accuracy %.4f, AUC %.4f, log loss %.4f on %d reviews", report["accuracy"],
                  report["auc"], report["log_loss"], report["n"])
    table("test-metrics", [
        {"metric": "accuracy", "value": round(report["accuracy"], 4)},
        {"metric": "roc_auc", "value": round(report["auc"], 4)},
        {"metric": "log_loss", "value": round(report["log_loss"], 4)},
        {"metric": "expected_calibration_error", "value": report["calibration"]["expected_calibration_error"]},
        {"metric": "true_negatives", "value": c["tn"]},
        {"metric": "false_positives", "value": c["fp"]},
        {"metric": "false_negatives", "value": c["fn"]},
        {"metric": "true_positives", "value": c["tp"]},
        {"metric": "train_seconds", "value": report["train_seconds"]},
        {"metric": "epochs_run", "value": report["epochs_run"]},
    ], "Test-split metrics of the freshly trained model")
    table("accuracy-by-length", report.get("accuracy_by_length", []), "Test accuracy by review length (tokens)")
    table("calibration", report["calibration"]["bins"], "Calibration: mean score vs fraction positive per bin")
    return report


def public_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe part of a report (no image bytes), without the drift reference (stored on its own)."""
    return {k: v for k, v in report.items() if k not in ("report_png", "drift_reference")}


def history_markdown(config: TrainConfig, report: dict[str, Any]) -> str:
    hist = report["history"]
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in hist]
    lines = [f"## Training history (preset `{config.preset}`)", "", "| epoch | seconds | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 2) + "|"]
    for i in range(report["epochs_run"]):
        secs = report["epoch_seconds"][i] if i < len(report["epoch_seconds"]) else ""
        lines.append(f"| {i + 1} | {secs} | " + " | ".join(f"{hist[k][i]:.4f}" for k in keys) + " |")
    return "\n".join(lines)
