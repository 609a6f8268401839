"""Drift reports of scoring runs (issue 19): the reference a version stores at registration, the
profile every unit keeps in its part, the manifest's drift section, fail_on_drift, the events a
run and the promotion gate emit, and ``reviews report``.

Real Parquet dumps scored by the real flow under the Prefect test harness; the tiny model is
registered through the retrain's own evaluate and register tasks, so its reference profile comes
from the registration path.  Reviews are drawn Zipf-like over the tiny vocabulary (word id 3 the
most frequent), so that remapping the ids moves mass between the id octaves as a wrong
vocabulary would.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from flows.score import score_reviews
from infra import storage
from infra.dump_writer import dump_table, write_dump
from models.dump_profile import DRIFT_THRESHOLD, DumpProfile
from models.output_dataset import OutputDataset
from models.run_drift import merged_profile
from tests.cli_process import run_cli
from tests.events_api import read_events
from tests.pictures import PNG_MAGIC, inline_pngs
from tests.tinymodel import CONFIG, VOCAB, manifest, tiny_model

WORD_IDS = np.arange(3, VOCAB.size - 1)  # the tiny vocabulary's words: ids 3..14
ZIPF = 1 / np.arange(1, len(WORD_IDS) + 1)
ZIPF /= ZIPF.sum()
REFERENCE_ROWS = 2000


def reviews(n: int, seed: int, oov: float = 0.02) -> pa.ListArray:
    """Log-normal lengths (median 30, start marker first), Zipf word ids, some OOV ids."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(30), 0.5, n).astype(np.int64), 2, 400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.choice(WORD_IDS, size=int(offsets[-1]), p=ZIPF)
    values[rng.random(int(offsets[-1])) < oov] = 2
    values[offsets[:-1]] = 1
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32)))


def cut(tokens: pa.ListArray, keep: int) -> pa.ListArray:
    """Every review cut to its first ``keep`` tokens (a producer truncating its export)."""
    return pa.array([t[:keep] for t in tokens.to_pylist()], pa.list_(pa.int32()))


def reversed_ids(tokens: pa.ListArray) -> pa.ListArray:
    """Word ids mapped to the reverse rank order (a dump encoded with another vocabulary)."""
    values = tokens.values.to_numpy()
    remapped = np.where(values >= 3, WORD_IDS[0] + WORD_IDS[-1] - values, values).astype(np.int32)
    return pa.ListArray.from_arrays(tokens.offsets, pa.array(remapped))


def write(uri: str, tokens: pa.ListArray, first_id: int = 1) -> None:
    write_dump(dump_table(np.arange(first_id, first_id + len(tokens)), tokens), uri, rows_per_file=600,
               row_group_size=150)


def register_with_reference(uri: str, tokens: pa.ListArray) -> str:
    """The tiny model registered by the retrain's own evaluate + register tasks, ``tokens`` as its
    test split: the version's drift reference is computed on the registration path."""
    from models.imdb_dataset import ImdbData
    from models.preprocessing import lengths, to_matrix
    from models.training import FitResult
    from tasks.data import TrainingSet
    from tasks.registry import register
    from tasks.training import evaluate

    prep = CONFIG.preprocessing(vocab_size=VOCAB.size)
    x = to_matrix(tokens, prep)
    y = (np.arange(len(tokens)) % 2).astype(np.int8)
    result = FitResult(model=tiny_model(), history={"loss": [0.69], "accuracy": [0.5], "val_loss": [0.69],
                                                    "val_accuracy": [0.5]},
                       train_seconds=0.1, epoch_seconds=[0.1], epochs_run=1, best_epoch=1)
    ts = TrainingSet(preprocessing=prep, fingerprint="f" * 64, x_train=x[:64], y_train=y[:64], x_val=x[:8],
                     y_val=y[:8], x_test=x, y_test=y, test_lengths=lengths(tokens) - 1, test_tokens=tokens)
    report = evaluate.fn(result, ts)
    imdb = ImdbData(train_tokens=tokens[:64], train_labels=y[:64], test_tokens=tokens, test_labels=y,
                    vocabulary=VOCAB, vocab_size=VOCAB.size, source="test")
    return register.fn(uri, result, ts, CONFIG, report, imdb)


@pytest.fixture(scope="module")
def drift_registry(tmp_path_factory) -> dict[str, Any]:
    uri = str(tmp_path_factory.mktemp("drift-registry"))
    tokens = reviews(REFERENCE_ROWS, seed=1)
    return {"uri": uri, "version": register_with_reference(uri, tokens), "tokens": tokens}


def score(src: str, out: str, registry: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=300, batch_size=200,
                         **kw)


def feature(drift: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in drift["features"] if f["feature"] == name)


# --------------------------------------------------------------------------- the reference

def test_registration_stores_the_reference_profile(drift_registry):
    from models.registry import ModelRegistry

    meta = ModelRegistry(drift_registry["uri"]).metadata(drift_registry["version"])
    ref = DumpProfile.from_dict(meta["drift_reference"])
    assert ref.rows == REFERENCE_ROWS and ref.num_words == CONFIG.num_words
    # Uncut: the reference counts the reviews' real lengths, not the model's maxlen of 6.
    assert ref.tokens == int(np.diff(drift_registry["tokens"].offsets.to_numpy()).sum()) > 6 * REFERENCE_ROWS
    assert sum(ref.score) == REFERENCE_ROWS
    assert "drift_reference" not in meta["evaluation"], "stored once, not in the evaluation report too"


# --------------------------------------------------------------------------- verdicts

def test_a_dump_drawn_like_the_reference_has_no_drift(tmp_path, drift_registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, reviews(1200, seed=2))
    score(src, out, drift_registry)
    m = manifest(out)
    d = m["drift"]
    assert (d["verdict"], d["drifted"]) == ("no drift", [])
    assert d["current_rows"] == 1200 and d["reference_rows"] == REFERENCE_ROWS
    assert d["reference_version"] == drift_registry["version"] and d["threshold"] == DRIFT_THRESHOLD
    assert all(f["psi"] < 0.05 for f in d["features"] if f["psi"] is not None), d["features"]
    assert storage.exists(storage.resolve(out).join("_SUCCESS"))
    # The merged profile's score counts are the histogram a re-read of the output gives.
    assert m["score_histogram"]["counts"] == OutputDataset(out).histogram()
    assert DumpProfile.from_dict(d["profile"]).rows == 1200
    assert all("profile" not in u for u in m["units"]), "per-unit profiles stay in the parts"

    # reviews.dump.scored reached the API, with the counts and the verdict.
    (event,) = read_events("reviews.dump.scored", f"reviews.output.{m['output']}")
    p = event["payload"]
    assert p["complete"] is True and p["model_version"] == drift_registry["version"]
    assert (p["rows_in"], p["rows_scored"], p["rows_rejected"]) == (1200, 1200, 0)
    assert p["drift"]["verdict"] == "no drift" and p["drift"]["drifted"] == []
    assert set(p["drift"]["psi"]) >= {"length", "token_ids", "score"}
    assert event["resource"]["prefect.resource.name"] == m["output"]
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
    assert roles["model"] == f"reviews.model.{drift_registry['version']}"
    assert roles["flow-run"].startswith("prefect.flow-run."), "the run that scored it"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-report"])))
        summaries = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["scoring-summary"])))
    assert any("Drift report: **no drift**" in str(a.data) for a in arts)
    # The run's page shows the score histogram and the profile beside the reference as a picture.
    (summary,) = [a for a in summaries if str(a.flow_run_id) == roles["flow-run"].removeprefix("prefect.flow-run.")]
    (png,) = inline_pngs(str(summary.data))
    assert png.startswith(PNG_MAGIC) and len(png) < 150_000


def test_reviews_cut_to_ten_tokens_drift_in_length(tmp_path, drift_registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, cut(reviews(1200, seed=2), 10))
    score(src, out, drift_registry)
    d = manifest(out)["drift"]
    assert d["verdict"] == "drift" and "length" in d["drifted"], d
    assert feature(d, "length")["psi"] > 1.0
    assert "token_ids" not in d["drifted"]
    assert storage.exists(storage.resolve(out).join("_SUCCESS")), "reported, not failed, by default"


def test_remapped_token_ids_drift_in_token_ids(tmp_path, drift_registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, reversed_ids(reviews(1200, seed=2)))
    score(src, out, drift_registry)
    d = manifest(out)["drift"]
    assert "token_ids" in d["drifted"] and feature(d, "token_ids")["psi"] > DRIFT_THRESHOLD, d
    assert "length" not in d["drifted"] and "oov_share" not in d["drifted"]


def test_fail_on_drift_fails_after_the_manifest_without_success(tmp_path, drift_registry, prefect_api):
    from models.run_drift import DriftFailure

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, cut(reviews(1200, seed=2), 10))
    with pytest.raises(DriftFailure, match=r"drift against model .*length \(PSI .*no _SUCCESS"):
        score(src, out, drift_registry, fail_on_drift=True)
    loc = storage.resolve(out)
    assert not storage.exists(loc.join("_SUCCESS"))
    m = manifest(out)
    assert m["drift"]["verdict"] == "drift" and m["drift"]["fail_on_drift"] is True
    assert m["totals"]["rows_scored"] == 1200, "every row scored; only the acceptance is refused"
    (event,) = read_events("reviews.dump.scored", f"reviews.output.{m['output']}")
    assert event["payload"]["complete"] is False and "length" in event["payload"]["drift"]["drifted"]

    # A higher threshold accepts the dump: the re-run scores nothing again (profiles from the parts).
    score(src, out, drift_registry, fail_on_drift=True, drift_threshold=1000.0)
    m = manifest(out)
    assert storage.exists(loc.join("_SUCCESS"))
    assert m["totals"]["units_skipped"] == m["totals"]["units"] and m["drift"]["verdict"] == "no drift"


def test_resumed_run_keeps_the_profiles_of_committed_units(tmp_path, drift_registry, prefect_api):
    from models.registry import ModelRegistry
    from models.scoring import ScoringSpec
    from tasks.scoring import plan_scoring, score_unit

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, reviews(1200, seed=4))
    reg = ModelRegistry(drift_registry["uri"])
    spec = ScoringSpec(preprocessing=reg.preprocessing(drift_registry["version"]),
                       model_version=drift_registry["version"])
    plan = plan_scoring.fn(src, out, spec, 300, False)
    for unit in plan["units"][:2]:  # a run that died after committing two units
        score_unit.fn(unit, out, spec, drift_registry["uri"])
    score(src, out, drift_registry)
    resumed = manifest(out)
    assert resumed["totals"]["units_skipped"] == 2
    score(src, out, drift_registry, overwrite=True)
    fresh = manifest(out)
    assert fresh["totals"]["units_skipped"] == 0
    assert resumed["drift"]["profile"] == fresh["drift"]["profile"]
    assert DumpProfile.from_dict(resumed["drift"]["profile"]).rows == 1200
    assert resumed["score_histogram"] == fresh["score_histogram"]


def test_a_version_without_reference_reports_unavailable_and_never_fails(tmp_path, registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write(src, cut(reviews(600, seed=5), 10))
    score_reviews(input=src, output=out, registry=registry["uri"], fail_on_drift=True)
    d = manifest(out)["drift"]
    assert d["verdict"] == "unavailable" and d["drifted"] == [] and "no reference profile" in d["reason"]
    assert d["current_rows"] == 600
    assert storage.exists(storage.resolve(out).join("_SUCCESS"))


def test_parts_without_a_profile_make_the_merge_unavailable():
    """Parts committed by code older than profiles: drift cannot be judged, and the manifest's
    histogram is then read from the output as before."""
    p = DumpProfile.from_batch(reviews(10, seed=0), np.full(10, 0.3, np.float32)).to_dict()
    merged, _ = merged_profile([{"unit_id": "a", "profile": p}, {"unit_id": "b", "profile": p}], None)
    assert merged.rows == 20
    merged, why = merged_profile([{"unit_id": "a", "profile": p}, {"unit_id": "b", "profile": None}], None)
    assert merged is None and "unit b" in why


# --------------------------------------------------------------------------- reviews report

def test_reviews_report_prints_a_finished_and_a_failed_run(tmp_path, drift_registry, prefect_api, capsys):
    import io

    from flows.cli import main
    from flows.cli_report import print_report, report
    from models.run_drift import DriftFailure

    done, failed = str(tmp_path / "done"), str(tmp_path / "failed")
    write(str(tmp_path / "in"), reviews(1200, seed=2))
    write(str(tmp_path / "cut"), cut(reviews(1200, seed=2), 10))
    score(str(tmp_path / "in"), done, drift_registry)
    with pytest.raises(DriftFailure):
        score(str(tmp_path / "cut"), failed, drift_registry, fail_on_drift=True)

    # The command as a process, its output piped (not a terminal): plain text, no colour, no boxes.
    code, text, err = run_cli("report", done)
    assert code == 0, err
    assert "\x1b[" not in text and "│" not in text
    for expected in ("complete (_SUCCESS written)", drift_registry["version"], "rows scored", "1,200",
                     "Score histogram", "verdict: no drift", "units seconds"):
        assert expected in text, (expected, text)
    length_row = next(line for line in text.splitlines() if line.startswith("length "))
    assert " no " in length_row

    assert main(["report", failed]) == 0
    text = capsys.readouterr().out
    assert "NOT complete: no _SUCCESS" in text and "verdict: drift (length" in text
    assert "fail_on_drift on" in text
    length_row = next(line for line in text.splitlines() if line.startswith("length "))
    assert "YES" in length_row

    assert main(["report", failed, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["complete"] is False and s["model"]["version"] == drift_registry["version"]
    assert s["totals"]["rows_scored"] == 1200 and sum(s["score_histogram"]["counts"]) == 1200
    assert s["drift"]["verdict"] == "drift" and "length" in s["drift"]["drifted"]
    assert {f["feature"] for f in s["drift"]["features"]} >= {"length", "oov_share", "token_ids", "score"}
    assert "profile" not in s["drift"] and "labels" not in s["drift"]["features"][0]

    # On a terminal: rich tables.
    buf = io.StringIO()
    print_report(report(done), file=buf, terminal=True)
    assert "│" in buf.getvalue() and "verdict: no drift" in buf.getvalue()

    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "has no _manifest.json" in capsys.readouterr().err
