"""Gated promotion on one evaluation set: better challenger promoted, identical kept, worse rejected,
parity failure rejected; rollback."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pytest

from models.evaluation_set import REENCODED, SAME_VOCABULARY
from models.imdb_dataset import ImdbData
from models.predictors import probe_batch
from models.preprocessing import to_matrix
from models.presets import TrainConfig
from models.promotion import decide, decision_markdown
from models.registry import ModelRegistry, RegistryError
from models.text import Vocabulary
from models.training import fit
from tasks.data import prepare
from tasks.registry import gate
from tests.tinymodel import register_tiny
from tests.training_data import BAD, FILLER, GOOD

SHORT = TrainConfig(preset="seed", maxlen=8, embedding_dim=8, lstm_units=4, batch_size=16, seed=3)
# The challenger's preprocessing differs from the champion's: both must still see the same reviews.
LONG = SHORT.with_overrides(maxlen=16, padding="pre", truncating="pre", epochs=4, learning_rate=0.02)


def _texts(rng, n: int) -> tuple[list[str], np.ndarray]:
    y = np.arange(n) % 2
    return [" ".join(rng.choice(FILLER + (GOOD if label else BAD), size=rng.integers(4, 14))) for label in y], y


@pytest.fixture(scope="module")
def gate_models():
    """Real IMDB-format data, and real tiny models: one fitted on 12 reviews for 1 epoch (weak),
    one on all 240 for 4 epochs (strong)."""
    rng = np.random.default_rng(5)
    train_texts, y_train = _texts(rng, 240)
    test_texts, y_test = _texts(rng, 160)
    vocab, train_tokens = Vocabulary.build_encoded(train_texts)
    imdb = ImdbData(train_tokens, y_train.astype(np.int8), vocab.encode(test_texts), y_test.astype(np.int8),
                    vocab, vocab.size, "gate-test")
    short, long = SHORT.preprocessing(vocab.size), LONG.preprocessing(vocab.size)
    weak = fit(SHORT, vocab.size, to_matrix(train_tokens, short)[:12], y_train[:12]).model
    strong = fit(LONG, vocab.size, to_matrix(train_tokens, long), y_train).model
    return {"imdb": imdb, "vocab": vocab, "weak": (weak, short), "strong": (strong, long),
            "ts": prepare.fn(imdb, SHORT)}  # a TrainingSet without labelled data: an empty holdout


def _register_model(registry: ModelRegistry, model, prep, vocab: Vocabulary) -> str:
    return registry.register(model, prep, vocab.to_json(), {"preset": "seed"},
                             probe_batch(prep.input_dim, prep.maxlen, n=32))


def _permuted(model, vocab: Vocabulary) -> tuple[object, Vocabulary]:
    """The same network for another vocabulary: words in another order, embedding rows to match."""
    import keras

    perm = np.random.default_rng(0).permutation(len(vocab.words))
    other = Vocabulary(tuple(vocab.words[i] for i in perm))
    twin = keras.models.clone_model(model)
    weights = model.get_weights()
    first = vocab.index_from + 1
    assert weights[0].shape[0] == vocab.size
    weights[0] = np.concatenate([weights[0][:first], weights[0][first:][perm]])
    twin.set_weights(weights)
    return twin, other


def test_decide_rules():
    def comparison(champ_acc, chall_acc, p, ci=(-0.01, 0.01), auc_ci=(-0.01, 0.01), identical=False):
        return {"n": 1000, "champion_accuracy": champ_acc, "challenger_accuracy": chall_acc,
                "accuracy_difference": chall_acc - champ_acc, "accuracy_difference_ci95": list(ci),
                "champion_auc": 0.9, "challenger_auc": 0.9 + auc_ci[0] / 2, "auc_difference_ci95": list(auc_ci),
                "mcnemar_p_value": p, "identical_predictions": identical,
                # 1,000 reviews: 100 discordant pairs, split to give the accuracy difference.
                "only_champion_correct": 50 - round((chall_acc - champ_acc) * 500),
                "only_challenger_correct": 50 + round((chall_acc - champ_acc) * 500)}

    better = comparison(0.80, 0.81, 0.03, (0.002, 0.018))
    assert decide("b", "a", True, comparison=better)["promote"]
    d = decide("b", "a", True, comparison=better, min_improvement=0.01)
    assert not d["promote"] and "min_improvement 0.01" in d["reason"], "0.01 gained is not more than 0.01"
    assert decide("b", "a", True, comparison=better, min_improvement=0.005)["promote"]
    same = comparison(0.80, 0.80, 1.0, (0, 0), (0, 0), identical=True)
    d = decide("b", "a", True, comparison=same)
    assert not d["promote"] and "identical predictions on all 1000" in d["reason"] and "kept" in d["reason"]
    assert not decide("b", "a", True, comparison=same, min_improvement=-0.05)["promote"], "never churns"
    tie = comparison(0.80, 0.80, 1.0)  # as accurate, other mistakes: keeps the champion by default
    assert not decide("b", "a", True, comparison=tie)["promote"]
    assert decide("b", "a", True, comparison=tie, min_improvement=-0.01)["promote"]
    worse = comparison(0.80, 0.78, 0.001, (-0.03, -0.01))
    d = decide("b", "a", True, comparison=worse, min_improvement=-0.05)
    assert not d["promote"] and d["reason"].startswith("significantly less accurate"), "tolerance or not"
    slightly_worse = comparison(0.80, 0.798, 0.6, (-0.008, 0.004))
    assert decide("b", "a", True, comparison=slightly_worse, min_improvement=-0.005)["promote"]
    lower_auc = comparison(0.80, 0.81, 0.04, (0.001, 0.02), auc_ci=(-0.03, -0.01))
    d = decide("b", "a", True, comparison=lower_auc)
    assert not d["promote"] and "AUC significantly lower" in d["reason"]
    d = decide("b", "a", False, "max |delta| = 0.1", comparison=better)
    assert not d["promote"] and "parity" in d["reason"]
    assert decide("b", None, True)["reason"] == "no champion yet"
    d = decide("b", "a", True, champion_error="checksum mismatch")
    assert not d["promote"] and "could not be scored (checksum mismatch)" in d["reason"]


def test_gate_task_scores_both_versions_on_one_evaluation_set(tmp_path, gate_models):
    imdb, vocab, ts = gate_models["imdb"], gate_models["vocab"], gate_models["ts"]
    registry = ModelRegistry(str(tmp_path))
    v1 = _register_model(registry, *gate_models["weak"], vocab)
    first = gate.fn(str(tmp_path), v1, imdb, ts)
    assert first["promote"] and first["reason"].startswith("already champion") and registry.champion() == v1
    assert first["comparison"] is None, "nothing to compare the first version with"

    # Trained on more data (and with other preprocessing): better on the same reviews, promoted -
    # unless it must beat the champion by more than it does.
    v2 = _register_model(registry, *gate_models["strong"], vocab)
    strict = gate.fn(str(tmp_path), v2, imdb, ts, min_improvement=0.99)
    assert not strict["promote"] and "min_improvement 0.99" in strict["reason"] and registry.champion() == v1
    promoted = gate.fn(str(tmp_path), v2, imdb, ts)
    assert promoted["promote"] and promoted["reason"].startswith("more accurate") and registry.champion() == v2
    c = promoted["comparison"]

    def accuracy(version: str, tokens=imdb.test_tokens, labels=imdb.test_labels) -> float:
        x = to_matrix(tokens, registry.preprocessing(version))
        return float(((registry.load_predictor(version).predict(x) >= 0.5) == labels).mean())

    assert c["n"] == 160 and promoted["evaluation"]["parts"] == {"imdb_test": 160}
    assert c["champion_accuracy"] == accuracy(v1) and c["challenger_accuracy"] == accuracy(v2)
    assert c["challenger_accuracy"] >= 0.9 and c["accuracy_difference_ci95"][0] > 0 and c["mcnemar_p_value"] < 0.05

    # The same model again: identical predictions, the champion stays.
    v3 = _register_model(registry, *gate_models["strong"], vocab)
    same = gate.fn(str(tmp_path), v3, imdb, ts)
    assert not same["promote"] and "identical predictions on all 160" in same["reason"] and registry.champion() == v2
    assert same["comparison"]["accuracy_difference"] == 0 and same["comparison"]["mcnemar_p_value"] == 1.0

    # The same network for another vocabulary: identical only if the reviews are re-encoded for it.
    twin, other_vocab = _permuted(gate_models["strong"][0], vocab)
    v4 = _register_model(registry, twin, gate_models["strong"][1], other_vocab)
    renamed = gate.fn(str(tmp_path), v4, imdb, ts)
    assert renamed["evaluation"]["challenger_input"] == REENCODED
    assert renamed["evaluation"]["champion_input"] == SAME_VOCABULARY
    assert "identical predictions" in renamed["reason"] and registry.champion() == v2

    # Clearly worse: rejected, here on the test split plus a labelled holdout.
    # x_holdout cut to 1 token: the gate must read the uncut holdout tokens, with each version's maxlen.
    holdout = prepare.fn(imdb, SHORT.with_overrides(maxlen=1), imdb.train_tokens[:40], imdb.train_labels[:40])
    v5 = _register_model(registry, *gate_models["weak"], vocab)
    rejected = gate.fn(str(tmp_path), v5, imdb, holdout)
    assert not rejected["promote"] and rejected["reason"].startswith("significantly less accurate")
    assert rejected["comparison"]["n"] == 200 and rejected["evaluation"]["parts"] == {"imdb_test": 160, "holdout": 40}
    both = pa.concat_arrays([imdb.test_tokens, imdb.train_tokens[:40]])
    labels = np.concatenate([imdb.test_labels, imdb.train_labels[:40]])
    assert rejected["comparison"]["champion_accuracy"] == accuracy(v2, both, labels)
    assert registry.champion() == v2

    # A challenger whose export no longer matches Keras (here: probe scores tampered) is rejected.
    v6 = _register_model(registry, *gate_models["strong"], vocab)
    probe_scores = tmp_path / "versions" / v6 / "probe_scores.npy"
    buf = io.BytesIO()
    np.save(buf, np.load(probe_scores) + 0.01)
    probe_scores.write_bytes(buf.getvalue())
    meta_path = tmp_path / "versions" / v6 / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["probe_scores.npy"] = hashlib.sha256(buf.getvalue()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    parity = gate.fn(str(tmp_path), v6, imdb, ts)
    assert not parity["promote"] and "parity" in parity["reason"] and registry.champion() == v2

    decisions = [r for r in registry.audit_log() if r["action"] == "gate"]
    assert [d["challenger"] for d in decisions] == [v1, v2, v2, v3, v4, v5, v6]
    assert [d["promote"] for d in decisions] == [True, False, True, False, False, False, False]
    audited = decisions[2]["comparison"]
    assert audited["n"] == 160 and len(audited["accuracy_difference_ci95"]) == 2 and "mcnemar_p_value" in audited
    markdown = decision_markdown(promoted)
    assert "McNemar exact p" in markdown and "95% bootstrap CI" in markdown
    assert f"{c['challenger_accuracy']:.4f}" in markdown and f"{c['champion_accuracy']:.4f}" in markdown

    # Rollback restores the previous champion, with an audit record.
    assert registry.rollback() == v1
    assert registry.champion() == v1
    assert registry.audit_log()[-1]["reason"] == "rollback"


def test_rollback_without_history_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="no champion"):
        ModelRegistry(str(tmp_path)).rollback()


def _actions(registry: ModelRegistry) -> list[tuple[str, str, str | None]]:
    return [(r["action"], r["version"], r.get("rolled_back_from")) for r in registry.audit_log()
            if r["action"] in ("promote", "rollback")]


def test_rollbacks_walk_back_through_champions(tmp_path):
    registry = ModelRegistry(str(tmp_path))
    v1, v2, v3 = (register_tiny(str(tmp_path)) for _ in range(3))  # v1: champion on registration
    registry.promote(v2, reason="better")
    registry.promote(v3, reason="better still")
    assert registry.champion_history() == [v1, v2]

    # Two rollbacks go two champions back (the old `previous` field made the second one return to v3).
    assert registry.rollback(reason="v3 misbehaves") == v2 and registry.champion() == v2
    assert registry.rollback(reason="v2 too") == v1 and registry.champion() == v1
    with pytest.raises(RegistryError, match="first on record"):
        registry.rollback()
    assert registry.champion() == v1

    # A promote after rollbacks pushes onto what is left of the history.
    registry.promote(v3, reason="fixed")
    registry.promote(v3, reason="promoted again")  # the champion itself: no extra step back
    assert registry.champion_history() == [v1]
    assert registry.rollback() == v1
    assert _actions(registry) == [("promote", v1, None), ("promote", v2, None), ("promote", v3, None),
                                  ("rollback", v2, v3), ("rollback", v1, v2), ("promote", v3, None),
                                  ("promote", v3, None), ("rollback", v1, v3)]
    rollbacks = [r for r in registry.audit_log() if r["action"] == "rollback"]
    assert [r["reason"] for r in rollbacks] == ["v3 misbehaves", "v2 too", "rollback"]
    assert all(r["actor"] == "user" and r["updated_at"] for r in rollbacks)


def test_registry_from_before_history_rolls_back_once(tmp_path):
    registry = ModelRegistry(str(tmp_path))
    v1, v2 = register_tiny(str(tmp_path)), register_tiny(str(tmp_path))
    # champion.json as promote wrote it before champion history existed.
    (tmp_path / "champion.json").write_text(json.dumps({
        "version": v2, "previous": v1, "reason": "old", "actor": "user", "updated_at": "2026-01-01T00:00:00+00:00"}))
    assert registry.rollback() == v1 and registry.champion() == v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback()


def test_cli_rollback_twice_goes_two_back_and_is_audited(tmp_path, capsys):
    from flows.cli import main

    registry = ModelRegistry(str(tmp_path))
    v1, v2, v3 = (register_tiny(str(tmp_path)) for _ in range(3))
    for v in (v2, v3):
        assert main(["models", "promote", v, "--registry", str(tmp_path)]) == 0
    capsys.readouterr()
    champions = []
    for _ in range(2):
        assert main(["models", "rollback", "--registry", str(tmp_path), "--reason", "bad scores"]) == 0
        champions.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["champion"])
    assert champions == [v2, v1] and registry.champion() == v1
    assert main(["models", "rollback", "--registry", str(tmp_path)]) == 2
    assert "reviews: error:" in capsys.readouterr().err and registry.champion() == v1
    rollbacks = [r for r in registry.audit_log() if r["action"] == "rollback"]
    assert [(r["version"], r["rolled_back_from"], r["actor"], r["reason"]) for r in rollbacks] == [
        (v2, v3, "cli", "bad scores"), (v1, v2, "cli", "bad scores")]
