"""Evaluation report for a binary sentiment model: exact metrics from scores and labels."""

from __future__ import annotations

from typing import Any

import numpy as np

LENGTH_BUCKETS = (0, 100, 200, 400, 800, np.inf)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank per run of tied scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool)
    thresholds = np.quantile(scores, np.linspace(1, 0, points)) if len(scores) else np.array([0.5])
    pos, neg = max(labels.sum(), 1), max((~labels).sum(), 1)
    tpr = np.array([(scores[labels] >= t).sum() / pos for t in thresholds])
    fpr = np.array([(scores[~labels] >= t).sum() / neg for t in thresholds])
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def log_loss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(scores, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def confusion(labels: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    y, p = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    return {
        "tn": int((~y & ~p).sum()),
        "fp": int((~y & p).sum()),
        "fn": int((y & ~p).sum()),
        "tp": int((y & p).sum()),
    }


def calibration(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        if n == 0:
            continue
        mean_score, frac_pos = float(scores[m].mean()), float(np.asarray(labels)[m].mean())
        ece += n / len(scores) * abs(mean_score - frac_pos)
        rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "count": n,
                     "mean_score": round(mean_score, 4), "fraction_positive": round(frac_pos, 4)})
    return {"expected_calibration_error": round(float(ece), 4), "bins": rows}


def by_length(labels: np.ndarray, predicted: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for lo, hi in zip(LENGTH_BUCKETS[:-1], LENGTH_BUCKETS[1:]):
        m = (lengths >= lo) & (lengths < hi)
        n = int(m.sum())
        if n:
            label = f"{int(lo)}-{int(hi) - 1}" if np.isfinite(hi) else f"{int(lo)}+"
            rows.append({"tokens": label, "count": n, "accuracy": round(float((predicted[m] == labels[m]).mean()), 4)})
    return rows


def evaluate(labels: np.ndarray, scores: np.ndarray, lengths: np.ndarray | None = None,
             threshold: float = 0.5) -> dict[str, Any]:
    labels = np.asarray(labels).astype(np.int8)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    predicted = (scores >= threshold).astype(np.int8)
    report: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        "auc": roc_auc(labels, scores),
        "log_loss": log_loss(labels, scores),
        "confusion": confusion(labels, predicted),
        "calibration": calibration(labels, scores),
    }
    if lengths is not None:
        report["accuracy_by_length"] = by_length(labels, predicted, np.asarray(lengths))
    return report


def plot_report(history: dict[str, list[float]], labels: np.ndarray, scores: np.ndarray, path: str) -> None:
    """Learning curves (loss and accuracy per epoch) and the ROC curve in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in zip(axes[:2], ("loss", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fpr, tpr = roc_curve(labels, np.asarray(scores).reshape(-1))
    axes[2].plot(fpr, tpr, label=f"AUC = {roc_auc(labels, scores):.4f}")
    axes[2].plot([0, 1], [0, 1], ":", color="grey")
    axes[2].set_xlabel("false positive rate")
    axes[2].set_ylabel("true positive rate")
    axes[2].set_title("ROC (test split)")
    axes[2].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
