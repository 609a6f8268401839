"""The evaluation report's metrics agree with scikit-learn's (a test-only reference).

``models/evaluation.py`` computes AUC, log loss, the confusion matrix and calibration itself
(the training image carries no scikit-learn); these tests pin each one to an independent,
widely used implementation on scores with ties, extremes and unbalanced labels.
"""

from __future__ import annotations

import numpy as np
import pytest

from models import evaluation

sklearn_metrics = pytest.importorskip("sklearn.metrics")
calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve


def _cases():
    rng = np.random.default_rng(7)
    n = 5000
    labels = rng.integers(0, 2, n)
    noisy = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, n), 0, 1)
    yield "continuous", labels, noisy
    # Scores rounded to two decimals: many ties, where rank-based AUC is easy to get wrong.
    yield "ties", labels, np.round(noisy, 2)
    # Exactly 0 and 1 scores: log loss must clip them the way the reference does.
    yield "extremes", labels, np.where(rng.random(n) < 0.1, labels.astype(float), noisy)
    unbalanced = (rng.random(n) < 0.07).astype(int)
    yield "unbalanced", unbalanced, np.clip(unbalanced * 0.2 + rng.beta(2, 5, n), 0, 1)


CASES = list(_cases())


@pytest.mark.parametrize("name,labels,scores", CASES, ids=[c[0] for c in CASES])
def test_auc_equals_sklearn(name, labels, scores):
    assert evaluation.roc_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores),
                                                                abs=1e-12)


@pytest.mark.parametrize("name,labels,scores", CASES, ids=[c[0] for c in CASES])
def test_log_loss_equals_sklearn(name, labels, scores):
    eps = 1e-7
    reference = sklearn_metrics.log_loss(labels, np.clip(scores, eps, 1 - eps), labels=[0, 1])
    assert evaluation.log_loss(labels, scores, eps=eps) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("name,labels,scores", CASES, ids=[c[0] for c in CASES])
def test_confusion_and_accuracy_equal_sklearn(name, labels, scores):
    report = evaluation.evaluate(labels, scores)
    predicted = (scores.astype(np.float32) >= 0.5).astype(int)
    tn, fp, fn, tp = sklearn_metrics.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    assert report["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted), abs=1e-12)


# scikit-learn puts a score exactly on an interior edge (0.1, 0.2, ...) into the bin below;
# ours are [lo, hi) as their labels say (see test_calibration_bins_are_closed_below), so the
# comparison uses the cases where no score sits on an edge.
OFF_EDGE = [c for c in CASES if not np.isin(np.round(c[2], 12), np.round(np.linspace(0.1, 0.9, 9), 12)).any()]


@pytest.mark.parametrize("name,labels,scores", OFF_EDGE, ids=[c[0] for c in OFF_EDGE])
def test_calibration_bins_equal_sklearn(name, labels, scores):
    ours = evaluation.calibration(labels, scores)
    frac_pos, mean_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    assert [b["fraction_positive"] for b in ours["bins"]] == pytest.approx(np.round(frac_pos, 4).tolist(), abs=1e-4)
    assert [b["mean_score"] for b in ours["bins"]] == pytest.approx(np.round(mean_pred, 4).tolist(), abs=1e-4)
    counts = np.array([b["count"] for b in ours["bins"]])
    ece = float(np.sum(counts / len(scores) * np.abs(mean_pred - frac_pos)))
    assert ours["expected_calibration_error"] == pytest.approx(ece, abs=1e-4)


def test_roc_curve_points_lie_on_sklearns_curve():
    _, labels, scores = CASES[0]
    fpr, tpr = evaluation.roc_curve(labels, scores)
    ref_fpr, ref_tpr, _ = sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False)
    # Every (fpr, tpr) we plot is a point of the exact curve (thresholds at data quantiles).
    for f, t in zip(fpr[1:-1], tpr[1:-1]):
        assert np.any(np.isclose(ref_fpr, f, atol=1e-12) & np.isclose(ref_tpr, t, atol=1e-12)), (f, t)
    # And the area under our plotted points is close to the exact AUC.
    assert np.trapezoid(tpr, fpr) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=2e-3)


def test_calibration_bins_are_closed_below():
    bins = evaluation.calibration(np.array([0, 1, 1]), np.array([0.1, 0.2, 1.0]))["bins"]
    assert [(b["bin"], b["count"]) for b in bins] == [("0.1-0.2", 1), ("0.2-0.3", 1), ("0.9-1.0", 1)]
