"""Labelled reviews beyond IMDB: real Parquet files (local and on the session's S3 server) through
the tasks' bodies - validation with reasons, reconciled counts, duplicates, the stable split, the
joint vocabulary - and the code version that decides a skip."""

from __future__ import annotations

import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.code_version import PROJECT_DIR, code_version
from infra.labelled_inputs import LabelledDataError
from models.imdb_dataset import load_imdb
from models.labelled_data import SAMPLE_ROWS, is_holdout
from models.presets import get_preset
from models.text import Vocabulary
from tasks.data import add_labelled, prepare
from tasks.lineage import snapshot_inputs
from tests.training_data import TRAIN_NEG, TRAIN_POS, write_labelled, write_tgz


@pytest.fixture
def imdb(tmp_path):
    return load_imdb(write_tgz(tmp_path / "imdb.tgz"))


def run(imdb, uris, share=0.2):
    inputs = snapshot_inputs.fn(imdb, uris, share)
    return inputs, add_labelled.fn(imdb, inputs)


def test_rows_are_validated_with_reasons_and_counts_reconcile(imdb, tmp_path):
    bad_utf8 = pa.array([b"a fine film", b"\xff\xfe bad", b"more fun"], pa.binary()).view(pa.string())
    a = write_labelled(tmp_path / "a.parquet",
                       [1, None, 3, 4, 5, 6, 7, 1, 9, 10],
                       [1, 1, None, 2, 0, 1, 0, 0, 1, 1],
                       ["loved every minute", "no id", "no label", "label two", None, "  !!! ",
                        "Great film, GREAT cast", "id 1 again", "great film great cast!", "A great film"])
    b = write_labelled(tmp_path / "b.parquet", ["x1", "x2", "x3"], [1, 0, 1], None, texts_array=bad_utf8)
    inputs, joint = run(imdb, [a, b])
    lab = joint.labelled
    by_file = {f.uri: f for f in lab.files}
    fa, fb = by_file[a], by_file[b]
    assert (fa.rows_read, fa.rows_used, fa.rows_rejected, fa.rows_duplicate) == (10, 2, 5, 3)
    assert (fb.rows_read, fb.rows_used, fb.rows_rejected, fb.rows_duplicate) == (3, 2, 1, 0)
    for f in lab.files:
        assert f.rows_read == f.rows_used + f.rows_rejected + f.rows_duplicate
        assert f.rows_used == f.rows_train + f.rows_holdout
    totals = lab.totals()
    assert totals["rows_read"] == 13 == totals["rows_used"] + totals["rows_rejected"] + totals["rows_duplicate"]
    assert dict(lab.reasons) == {"null review id": 1, "null label": 1, "label is not 0 or 1": 1, "null text": 1,
                                 "empty text (no words)": 1, "invalid UTF-8 text": 1, "duplicate review_id": 1,
                                 "duplicate text": 1, "text in the IMDB train split": 1}
    rejected = {(r["file"], r["row"]): r for r in lab.rejected_sample}
    assert rejected[(a, 1)]["reason"] == "null review id"
    assert rejected[(a, 3)] == {"file": a, "row": 3, "review_id": 4, "reason": "label is not 0 or 1", "value": 2}
    assert rejected[(b, 1)]["reason"] == "invalid UTF-8 text" and rejected[(b, 1)]["review_id"] == "x2"
    dups = {(r["file"], r["row"]): r for r in lab.duplicate_sample}
    assert dups[(a, 7)] == {"file": a, "row": 7, "review_id": 1, "reason": "duplicate review_id",
                            "first_file": a, "first_row": 0}
    # Case and punctuation do not make a different review; nor does it against IMDB's train split.
    assert dups[(a, 8)]["reason"] == "duplicate text" and dups[(a, 8)]["first_row"] == 6
    assert dups[(a, 9)]["reason"] == "text in the IMDB train split"
    # The version metadata's lineage carries the same counts, per file in the snapshot.
    meta = inputs.metadata(lab)
    files = {f["uri"]: f for f in meta["snapshot"]["labelled"]}
    assert files[a]["rows_rejected"] == 5 and files[a]["rows_duplicate"] == 3 and files[a]["size"] > 0
    assert files[b]["mtime"] and meta["labelled"]["reasons"]["null label"] == 1


def test_labels_of_every_numeric_type_and_the_sample_bound(imdb, tmp_path):
    n = SAMPLE_ROWS + 15
    floats = write_labelled(tmp_path / "f.parquet", list(range(n + 3)), [None] * n + [1.0, 0.0, float("nan")],
                            [f"review number w{i}" for i in range(n + 3)], label_type=pa.float32())
    bools = write_labelled(tmp_path / "b.parquet", [100, 101], [True, False], ["yes w100", "no w101"],
                           label_type=pa.bool_())
    _, joint = run(imdb, [floats, bools])
    lab = joint.labelled
    assert lab.reasons["null label"] == n and lab.reasons["label is not 0 or 1"] == 1
    assert len(lab.rejected_sample) == SAMPLE_ROWS, "the sample is bounded, the counts are not"
    assert lab.totals()["rows_used"] == 4
    assert sorted(lab.train_labels + lab.holdout_labels) == [0, 0, 1, 1]


def test_a_bad_file_is_a_clear_error_naming_it(imdb, tmp_path):
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"review_id": [1], "label": [1]}), no_text)
    with pytest.raises(LabelledDataError, match=r"no_text\.parquet: missing column\(s\) 'text'"):
        run(imdb, [str(no_text)])
    text_labels = tmp_path / "str_label.parquet"
    pq.write_table(pa.table({"review_id": [1], "label": ["pos"], "text": ["fine"]}), text_labels)
    with pytest.raises(LabelledDataError, match=r"str_label\.parquet: column 'label' has type string"):
        run(imdb, [str(text_labels)])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.parquet").write_text("review_id,label,text\n1,1,csv\n")
    with pytest.raises(LabelledDataError, match=r"x\.parquet: not a readable Parquet file"):
        run(imdb, [str(tmp_path / "junk")])
    with pytest.raises(LabelledDataError, match="nothing-here"):
        run(imdb, [str(tmp_path / "nothing-here" / "*.parquet")])


def test_the_holdout_split_is_stable_when_more_rows_arrive(imdb, tmp_path):
    first = write_labelled(tmp_path / "d" / "0.parquet", list(range(300)), [i % 2 for i in range(300)],
                           [f"night one review w{i}" for i in range(300)])
    _, before = run(imdb, [str(tmp_path / "d")])
    side = {t: "holdout" for t in before.labelled.holdout_texts} | {t: "train" for t in before.labelled.train_texts}
    assert 0.1 < len(before.labelled.holdout_texts) / 300 < 0.3
    # Next night: more rows, in a file that sorts first, so the old rows move down in input order.
    write_labelled(tmp_path / "d" / "0-new.parquet", list(range(300, 700)), [1] * 400,
                   [f"night two review w{i}" for i in range(300, 700)])
    _, after = run(imdb, [str(tmp_path / "d")])
    later = {t: "holdout" for t in after.labelled.holdout_texts} | {t: "train" for t in after.labelled.train_texts}
    assert all(later[t] == s for t, s in side.items()), "no old review changed sides"
    assert len(later) == 700 and [f.uri for f in after.labelled.files][1] == first
    assert is_holdout(7, 0.2) == is_holdout("7", 0.2), "the id's string form decides"
    assert not any(is_holdout(i, 0.0) for i in range(100))


def test_the_vocabulary_has_labelled_train_words_but_no_holdout_words(imdb, tmp_path):
    ids = list(range(60))
    texts = [f"great plot uniqueword{i}" for i in ids]
    uri = write_labelled(tmp_path / "l.parquet", ids, [1] * 60, texts)
    _, joint = run(imdb, [uri])
    lab = joint.labelled
    assert lab.holdout_texts and lab.train_texts
    words = set(joint.imdb.vocabulary.words)
    assert {t.split()[-1] for t in lab.train_texts} <= words
    assert not {t.split()[-1] for t in lab.holdout_texts} & words
    assert "superb" not in words, "IMDB test words stay out too"
    # Exactly the vocabulary (and encoding) of building from IMDB train text + labelled train text.
    reference, tokens = Vocabulary.build_encoded(TRAIN_NEG + TRAIN_POS + lab.train_texts)
    assert joint.imdb.vocabulary == reference
    assert joint.imdb.train_tokens.to_pylist() == tokens.to_pylist()
    assert joint.imdb.test_tokens.to_pylist() == reference.encode(["Bad, bad, bad.", "Dull and dreary film.",
                                                                  "The worst.", "Great!", "A superb film.",
                                                                  "Loved the plot."]).to_pylist()
    config = get_preset("seed", maxlen=6, validation_split=0.0)
    ts = prepare.fn(joint.imdb, config, joint.holdout_tokens, joint.holdout_labels)
    assert ts.x_holdout.shape == (len(lab.holdout_texts), 6) and len(ts.y_holdout) == len(lab.holdout_texts)
    assert len(ts.y_train) == 6 + len(lab.train_texts) and len(ts.y_test) == 6
    oov = reference.oov_char
    assert all(row[-1] == oov for row in joint.holdout_tokens.to_pylist()), "holdout-only words are OOV"


def test_without_labelled_data_everything_is_as_before(imdb):
    inputs, joint = run(imdb, [])
    assert joint.imdb is imdb and inputs.snapshot["labelled"] == []
    ts = prepare.fn(joint.imdb, get_preset("seed", maxlen=6), joint.holdout_tokens, joint.holdout_labels)
    assert ts.x_holdout.shape == (0, 6) and ts.y_holdout.shape == (0,)
    assert ts.fingerprint == prepare.fn(imdb, get_preset("seed", maxlen=6)).fingerprint


def test_labelled_data_on_s3_prefix_and_glob(imdb, s3_bucket):
    a = write_labelled(f"{s3_bucket}/labelled/2026-01/a.parquet", [1, 2, 3], [1, 0, None],
                       ["s3 review one", "s3 review two", "no label"])
    b = write_labelled(f"{s3_bucket}/labelled/2026-02/b.parquet", ["b1", "b2"], [1, 1],
                       ["s3 review one", "fresh s3 words"])
    inputs, joint = run(imdb, [f"{s3_bucket}/labelled/2026-01", f"{s3_bucket}/labelled/*/*.parquet"])
    assert [f["uri"] for f in inputs.snapshot["labelled"]] == [a, b], "a file two URIs match is read once"
    assert all(f["size"] > 0 and f["mtime"] for f in inputs.snapshot["labelled"])
    files = {f.uri: f for f in joint.labelled.files}
    assert (files[a].rows_used, files[a].rows_rejected) == (2, 1)
    assert (files[b].rows_used, files[b].rows_duplicate) == (1, 1)
    assert joint.labelled.duplicate_sample[0]["first_file"] == a
    again = snapshot_inputs.fn(imdb, [f"{s3_bucket}/labelled"], 0.2)
    assert again.snapshot["fingerprint"] == inputs.snapshot["fingerprint"]
    assert snapshot_inputs.fn(imdb, [f"{s3_bucket}/labelled"], 0.3).snapshot["fingerprint"] != \
        inputs.snapshot["fingerprint"], "the holdout share decides what trains: part of the snapshot"


def test_code_version_follows_the_source_files(tmp_path):
    for d in ("flows", "tasks", "models", "infra"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "m.py").write_text(f"X = '{d}'\n")
    (tmp_path / "models" / "__pycache__").mkdir()
    (tmp_path / "models" / "__pycache__" / "m.cpython.pyc").write_bytes(b"cache")
    (tmp_path / "bench.py").write_text("outside the source folders\n")
    first = code_version(str(tmp_path))
    assert first["source_files"] == 4 and first["git_commit"] is None
    (tmp_path / "bench.py").write_text("changed\n")
    (tmp_path / "models" / "__pycache__" / "m.cpython.pyc").write_bytes(b"other cache")
    assert code_version(str(tmp_path))["key"] == first["key"]
    (tmp_path / "models" / "m.py").write_text("X = 'changed'\n")
    assert code_version(str(tmp_path))["key"] != first["key"]
    here = code_version(PROJECT_DIR)
    head = subprocess.run(["git", "-C", PROJECT_DIR, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert here["git_commit"] == head.stdout.strip() and isinstance(here["git_dirty"], bool)
    assert here["source_files"] > 20 and here["key"].startswith(here["package_version"] or "unversioned")
