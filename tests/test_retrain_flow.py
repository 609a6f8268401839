"""retrain-sentiment end to end on tiny real-format data under a real Prefect API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.registry import ModelRegistry
from tests.test_imdb_sources import write_tgz

GOOD = ["great", "wonderful", "superb", "loved", "fun"]
BAD = ["awful", "boring", "terrible", "hated", "dull"]
FILLER = ["the", "film", "plot", "actor", "was", "and", "a", "story"]


def _reviews(rng, words, n):
    return [" ".join(rng.choice(FILLER + words, size=rng.integers(5, 15))) + "<br />" for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_tgz(tmp_path_factory):
    rng = np.random.default_rng(0)
    blocks = [(_reviews(rng, BAD, 60), 0), (_reviews(rng, BAD, 60), 0), (_reviews(rng, GOOD, 60), 1),
              (_reviews(rng, GOOD, 60), 1)]
    items = [{"t": t, "s": s} for texts, s in blocks for t in texts]
    return write_tgz(tmp_path_factory.mktemp("data") / "tiny.tgz", reviews=items)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """The installed `reviews` command in its own process, as a user runs it.

    It talks to the session's Prefect API when there is one (faster than an
    ephemeral server) and inherits the S3 settings from the environment.
    """
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    exe = os.path.join(os.path.dirname(sys.executable), "reviews")
    r = subprocess.run([exe, *argv], env=env, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


def _train(registry, tgz, *extra):
    code, out, err = run_cli("train", "--preset", "seed", "--registry", registry, "--data", tgz, "--maxlen", "12",
                             "--embedding-dim", "8", "--lstm-units", "8", "--batch-size", "16", *extra)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_train_cli_runs_the_flow_and_registers(tmp_path, tiny_tgz, prefect_api):
    registry = str(tmp_path / "registry")
    summary = _train(registry, tiny_tgz, "--epochs", "3", "--learning-rate", "0.01")
    assert set(summary) >= {"version", "test_accuracy", "test_auc", "train_seconds"}
    assert summary["test_accuracy"] > 0.8, "the sentiment words are easy to learn"
    reg = ModelRegistry(registry)
    assert reg.champion() == summary["version"] and summary["promoted"]
    meta = reg.metadata(summary["version"])
    assert meta["hyperparameters"]["epochs"] == 3 and meta["hyperparameters"]["maxlen"] == 12
    assert meta["data"]["source"].startswith("tgz:") and len(meta["data"]["fingerprint"]) == 64
    assert meta["data"]["test_rows"] == 120 and meta["data"]["train_rows"] + meta["data"]["validation_rows"] == 120
    ev = meta["evaluation"]
    assert set(ev["confusion"]) == {"tn", "fp", "fn", "tp"} and sum(ev["confusion"].values()) == 120
    assert ev["calibration"]["bins"] and ev["accuracy_by_length"]
    assert len(ev["history"]["loss"]) == 3 and "val_loss" in ev["history"]
    assert "report.png" in meta["files"]
    # The int8 graph is stored exactly when its measured accuracy cost is within the bound.
    q = meta["int8"]
    assert q["test_rows"] == 120 and q["accuracy_float32"] == pytest.approx(ev["accuracy"], abs=1e-6)
    assert q["approved"] == (q["accuracy_drop"] <= q["max_accuracy_drop"]) == ("model.fast-int8.onnx" in meta["files"])
    assert reg.vocabulary(summary["version"])["words"], "the train vocabulary is saved with the model"

    # Prefect recorded the metrics table as an artifact of the run.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["test-metrics"])))
    assert arts and "accuracy" in str(arts[-1].data)

    # Same seed, same data: the same model (reproducible), registered as a new version.
    again = _train(registry, tiny_tgz, "--epochs", "3", "--learning-rate", "0.01")
    assert again["version"] != summary["version"]
    assert abs(again["test_accuracy"] - summary["test_accuracy"]) <= 0.005
    decisions = [r for r in reg.audit_log() if r["action"] == "gate"]
    assert len(decisions) == 2


def test_train_bad_data_is_a_clear_error(tmp_path, prefect_api):
    code, _, err = run_cli("train", "--registry", str(tmp_path / "r"), "--data", str(tmp_path / "missing.npz"))
    assert code == 2
    assert "missing.npz" in err


def test_bad_hyperparameter_is_refused_before_training(tmp_path, prefect_api):
    code, _, err = run_cli("train", "--registry", str(tmp_path / "r"), "--padding", "sideways")
    assert code == 2
    assert "padding" in err


def test_every_hyperparameter_is_a_flow_parameter_and_a_cli_option():
    import dataclasses
    import inspect

    from flows.cli import build_parser
    from flows.retrain import retrain_sentiment
    from models.presets import TrainConfig

    settings = {f.name for f in dataclasses.fields(TrainConfig)} - {"preset"}
    assert settings <= set(inspect.signature(retrain_sentiment.fn).parameters)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest for a in train._actions}
    assert settings <= options
