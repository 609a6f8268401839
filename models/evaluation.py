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


def _learning_curve(ax, key: str, history: dict[str, list[float]], steps: dict[str, list[float]] | None,
                    steps_per_epoch: int) -> None:
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    if steps and key in steps and steps_per_epoch:
        # Training every few batches, validation once per epoch at the epoch's last step.
        ax.plot(steps["step"], steps[key], "-", label=f"train {key} (running mean in epoch)")
        x_val, ax_label = epochs * steps_per_epoch, "training step (batch)"
        for e in epochs[:-1]:
            ax.axvline(e * steps_per_epoch, color="grey", lw=0.5, alpha=0.5)
    else:
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"train {key}")
        x_val, ax_label = epochs, "epoch"
    if f"val_{key}" in history:
        ax.plot(x_val, history[f"val_{key}"], "s", ms=7, label=f"validation {key} (end of epoch)")
    ax.set_xlabel(ax_label)
    ax.set_title(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_report(history: dict[str, list[float]], labels: np.ndarray, scores: np.ndarray, path: str,
                steps: dict[str, list[float]] | None = None, steps_per_epoch: int = 0, dpi: int = 70) -> None:
    """Learning curves (over training steps when ``steps`` is given, else per epoch), the ROC curve
    and the test scores' histogram by label in one PNG.  The low ``dpi`` keeps it small enough to
    inline into a Prefect artifact (tasks/reporting.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    # Two by two, so the picture stays legible at the width an artifact page gives it.
    fig, grid = plt.subplots(2, 2, figsize=(11, 7.5))
    axes = grid.reshape(-1)
    for ax, key in zip(axes[:2], ("loss", "accuracy")):
        _learning_curve(ax, key, history, steps, steps_per_epoch)
    fpr, tpr = roc_curve(labels, scores)
    axes[2].plot(fpr, tpr, label=f"AUC = {roc_auc(labels, scores):.4f}")
    axes[2].plot([0, 1], [0, 1], ":", color="grey")
    axes[2].set_xlabel("false positive rate")
    axes[2].set_ylabel("true positive rate")
    axes[2].set_title("ROC (test split)")
    axes[2].legend(loc="lower right")
    bins = np.linspace(0, 1, 26)
    axes[3].hist(scores[~labels], bins=bins, alpha=0.6, label=f"negative ({int((~labels).sum())})")
    axes[3].hist(scores[labels], bins=bins, alpha=0.6, label=f"positive ({int(labels.sum())})")
    axes[3].set_xlabel("score")
    axes[3].set_ylabel("reviews")
    axes[3].set_title("Test scores by true label")
    axes[3].legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
