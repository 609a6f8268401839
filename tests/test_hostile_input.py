"""Hostile input: every file is scored correctly or rejected with a clear reason - never a crash,
never a lost row (per file, rows in = scored + rejected; unreadable files named in the manifest).

Plus property-based tests of the two vectorised kernels every row goes through:
``models.preprocessing.to_matrix`` (against ``keras.utils.pad_sequences``) and
``models.scoring._token_reasons`` (against a row-by-row reference).
"""

from __future__ import annotations

import math
import os
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra import storage
from models import preprocessing, scoring
from models.preprocessing import Preprocessing, to_matrix
from models.scoring import (
    EMPTY_SEQ,
    NEGATIVE,
    NON_FINITE,
    NON_INTEGER,
    NULL_SEQ,
    NULL_TOKEN,
    OK,
    TOO_LARGE,
    _token_reasons,
    reason_labels,
)
from tests.parquet_damage import corrupt_second_row_group
from tests.tinymodel import (
    CONFIG,
    VOCAB,
    assert_readable_everywhere,
    read_output,
    tiny_model,
)

V = VOCAB.size  # 15: valid token ids are 0..14
REASON = dict(enumerate(reason_labels(V)))


def _expected_scores(token_lists: list[list[int]]) -> np.ndarray:
    """Keras' own answer: pad_sequences with the model's settings, then the Keras model."""
    from keras.utils import pad_sequences

    x = pad_sequences(token_lists, maxlen=CONFIG.maxlen, padding=CONFIG.padding, truncating=CONFIG.truncating)
    return tiny_model().predict(x, verbose=0).reshape(-1)


def _score(src: str, out: str, registry, **kw):
    from flows.score import score_reviews

    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_reject_fraction=1.0, **kw)
    loc = storage.resolve(out)
    manifest = storage.read_json(loc.join("_manifest.json"))
    for f in manifest["inputs"]:
        assert f["rows_in"] == f["rows_scored"] + f["rows_rejected"], f
    t = manifest["totals"]
    assert t["rows_in"] == t["rows_scored"] + t["rows_rejected"]
    assert storage.exists(loc.join("_SUCCESS"))
    assert_readable_everywhere(out)
    by_name = {f["uri"].rsplit("/", 1)[-1]: f for f in manifest["inputs"]}
    return summary, manifest, by_name


def _rejected(out: str) -> dict[tuple[str, int], str]:
    """(source file name, row) -> reason, for every rejected row."""
    loc = storage.resolve(out).join("_rejected")
    if not storage.list_files(loc):
        return {}
    import pyarrow.dataset as ds

    t = ds.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table()
    return {(s.rsplit("/", 1)[-1], r): why for s, r, why in zip(t.column("source").to_pylist(),
                                                                  t.column("row").to_pylist(),
                                                                  t.column("reason").to_pylist())}


def _scores_by_id(out: str) -> dict:
    t = read_output(out)
    return dict(zip(t.column("review_id").to_pylist(), t.column("score").to_pylist()))


# -- one corpus of bad files, one run ---------------------------------------------------------------

REVIEWS = [[1, 4, 5], [1, 6, 7, 8], [1, 3, 3, 3, 3, 3, 3, 3, 9], [1, 14, 2, 13]]
INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _write_corpus(src: str) -> dict[str, dict]:
    """Write the corpus; returns file name -> expectations."""
    os.makedirs(src)
    exp: dict[str, dict] = {}

    def put(name: str, table: pa.Table, **kw) -> str:
        path = os.path.join(src, name)
        pq.write_table(table, path, **kw)
        return path

    ids = lambda base, n: pa.array(range(base, base + n), pa.int64())  # noqa: E731

    # Reference reviews as list<int32>.
    put("00-reference.parquet", pa.table({"review_id": ids(0, 4), "tokens": pa.array(REVIEWS, pa.list_(pa.int32()))}))
    exp["00-reference.parquet"] = dict(rows=4, scored=4)

    # Every integer width and signedness; one out-of-range row each.
    for i, t in enumerate(INT_TYPES):
        # (uint64 ids >= 2**63 are their own test: test_uint64_token_ids_beyond_int64_max_are_rejected_per_row)
        bad = -1 if pa.types.is_signed_integer(t) else min(int(np.iinfo(t.to_pandas_dtype()).max), 2**40)
        rows = REVIEWS + [[1, 4, bad]]
        name = f"10-tokens-{t}.parquet"
        put(name, pa.table({"review_id": ids(100 * (i + 1), 5), "tokens": pa.array(rows, pa.list_(t))}))
        why = "negative token id" if bad == -1 else f"token id >= vocabulary size {V}"
        exp[name] = dict(rows=5, scored=4, reasons={4: why}, same_as_reference=100 * (i + 1))

    # large_list and fixed-size lists of int32.
    put("11-large-list.parquet", pa.table({"review_id": ids(1000, 4), "tokens": pa.array(REVIEWS, pa.large_list(pa.int32()))}))
    exp["11-large-list.parquet"] = dict(rows=4, scored=4, same_as_reference=1000)

    # Floats: integral values score like integers; NaN, inf, fractions and out-of-range are rejected.
    float_rows = [[1.0, 4.0, 5.0], [1.0, math.nan], [1.0, math.inf], [1.0, -math.inf], [1.0, 4.5], [1.0, -2.0],
                  [1.0, 1e30]]
    float_reasons = {1: REASON[NON_FINITE], 2: REASON[NON_FINITE], 3: REASON[NON_FINITE], 4: REASON[NON_INTEGER],
                     5: REASON[NEGATIVE], 6: REASON[TOO_LARGE]}
    for i, t in enumerate([pa.float32(), pa.float64()]):
        name = f"12-tokens-{t}.parquet"
        put(name, pa.table({"review_id": ids(2000 + 100 * i, 7), "tokens": pa.array(float_rows, pa.list_(t))}))
        exp[name] = dict(rows=7, scored=1, reasons=float_reasons)

    # Nulls and empties at every level.
    put("13-nulls.parquet", pa.table({
        "review_id": pa.array([3000, None, 3002, 3003, 3004], pa.int64()),
        "tokens": pa.array([[1, 4], [1, 4], None, [], [1, None, 4]], pa.list_(pa.int64()))}))
    exp["13-nulls.parquet"] = dict(rows=5, scored=1, reasons={1: REASON[1], 2: REASON[NULL_SEQ],
                                                              3: REASON[EMPTY_SEQ], 4: REASON[NULL_TOKEN]})

    # A 100,000-token review: scored, cut to the model's maxlen (post truncating: the first 6).
    long_review = [1] + [int(3 + i % (V - 3)) for i in range(99_999)]
    put("14-long-review.parquet", pa.table({"review_id": ids(4000, 2),
                                            "tokens": pa.array([long_review, [1, 4]], pa.list_(pa.int32()))}))
    exp["14-long-review.parquet"] = dict(rows=2, scored=2, expected={4000: long_review, 4001: [1, 4]})

    # Duplicated ids: both rows scored, both present.
    put("15-duplicate-ids.parquet", pa.table({"review_id": pa.array([5000, 5000, 5001], pa.int64()),
                                              "tokens": pa.array([[1, 4, 5], [1, 9, 9, 9], [1, 4]])}))
    exp["15-duplicate-ids.parquet"] = dict(rows=3, scored=3, duplicates={5000: 2})

    # Empty files: zero rows (one empty row group) and zero row groups.
    put("20-zero-rows.parquet", pa.table({"review_id": pa.array([], pa.int64()),
                                          "tokens": pa.array([], pa.list_(pa.int32()))}))
    exp["20-zero-rows.parquet"] = dict(rows=0, scored=0)
    schema = pa.schema([("review_id", pa.int64()), ("tokens", pa.list_(pa.int32()))])
    with pq.ParquetWriter(os.path.join(src, "21-zero-row-groups.parquet"), schema):
        pass
    assert pq.ParquetFile(os.path.join(src, "21-zero-row-groups.parquet")).metadata.num_row_groups == 0
    exp["21-zero-row-groups.parquet"] = dict(rows=0, scored=0)

    # Unreadable files: named, with the reason.
    good = put("30-truncated.parquet", pa.table({"review_id": ids(6000, 50), "tokens": pa.array(REVIEWS * 12 + REVIEWS[:2])}))
    data = open(good, "rb").read()
    open(good, "wb").write(data[: len(data) // 2])
    exp["30-truncated.parquet"] = dict(rows=0, scored=0, error="parquet")
    with open(os.path.join(src, "31-csv.parquet"), "w") as f:
        f.write("review_id,tokens\n1,\"[1, 4, 5]\"\n2,\"[1, 6]\"\n")
    exp["31-csv.parquet"] = dict(rows=0, scored=0, error="parquet")
    put("32-struct-tokens.parquet", pa.table({"review_id": ids(7000, 2),
                                              "tokens": pa.array([{"a": 1}, {"a": 4}], pa.struct([("a", pa.int32())]))}))
    # (a readable footer gives the rows of a file that cannot be scored: they count as rejected)
    exp["32-struct-tokens.parquet"] = dict(rows=2, scored=0, error="expected a list of integer token ids")
    put("33-nested-list-tokens.parquet", pa.table({"review_id": ids(7100, 2),
                                                   "tokens": pa.array([[[1, 4]], [[5]]], pa.list_(pa.list_(pa.int32())))}))
    exp["33-nested-list-tokens.parquet"] = dict(rows=2, scored=0, error="expected a list of integer token ids")
    put("34-list-of-struct-tokens.parquet", pa.table({
        "review_id": ids(7200, 1), "tokens": pa.array([[{"t": 1}]], pa.list_(pa.struct([("t", pa.int32())])))}))
    exp["34-list-of-struct-tokens.parquet"] = dict(rows=1, scored=0, error="expected a list of integer token ids")

    # A bad row group inside a good file (valid footer): that unit's rows are rejected, the rest scores.
    path = put("40-corrupt-row-group.parquet",
               pa.table({"review_id": ids(8000, 200), "tokens": pa.array([[1] + [int(x) for x in
                         np.random.default_rng(1).integers(3, V, 40)] for _ in range(200)], pa.list_(pa.int32()))}),
               row_group_size=100, compression="zstd")
    corrupt_second_row_group(path)
    exp["40-corrupt-row-group.parquet"] = dict(rows=200, scored=100, error="row groups 1-1")
    return exp


def test_hostile_token_corpus(tmp_path, registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    exp = _write_corpus(src)
    summary, manifest, files = _score(src, out, registry, max_rows_per_unit=100, batch_size=3,
                                      allow_failed_files=True)
    assert set(files) == set(exp), "every input file is accounted for in the manifest"
    rejected = _rejected(out)
    scored_table = read_output(out)  # one dataset: every part has the same schema
    assert scored_table.schema.field("review_id").type == pa.int64()
    scores = _scores_by_id(out)
    reference = [scores[i] for i in range(len(REVIEWS))]
    np.testing.assert_allclose(reference, _expected_scores(REVIEWS), atol=1e-5)

    for name, e in exp.items():
        f = files[name]
        assert f["rows_in"] == e["rows"], (name, f)
        assert f["rows_scored"] == e["scored"], (name, f)
        if "error" in e:
            assert f["error"] and name in f["error"] and e["error"] in f["error"].lower() + f["error"], (name, f)
        else:
            assert f["error"] is None, (name, f)
        for row, why in e.get("reasons", {}).items():
            assert rejected.get((name, row)) == why, (name, row, rejected.get((name, row)))
        if "same_as_reference" in e:
            base = e["same_as_reference"]
            np.testing.assert_allclose([scores[base + i] for i in range(len(REVIEWS))], reference, atol=1e-6,
                                       err_msg=name)
        for rid, tokens in e.get("expected", {}).items():
            np.testing.assert_allclose(scores[rid], _expected_scores([tokens])[0], atol=1e-5, err_msg=name)
    ids = scored_table.column("review_id").to_pylist()
    assert ids.count(5000) == 2 and ids.count(5001) == 1
    assert manifest["totals"]["duplicate_ids"] == 1
    # Row accounting over the whole corpus: scored rows + rejected rows == rows the footers know of
    # (the failed files' and the corrupt row group's rows are rejected, and counted as failed).
    known = sum(e["rows"] for e in exp.values())
    assert len(ids) + manifest["totals"]["rows_rejected"] == known == manifest["totals"]["rows_in"]
    assert manifest["totals"]["rows_failed"] == 2 + 2 + 1 + 100
    assert summary["files_failed"] == sum(1 for e in exp.values() if "error" in e)


def test_float16_tokens_are_scored_or_rejected_per_row(tmp_path, registry, prefect_api):
    """Half floats pass the schema check (they are floating point), so they must be validated per row."""
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"review_id": pa.array([1, 2], pa.int64()),
                             "tokens": pa.array([[1.0, 4.0], [1.0, math.nan]], pa.list_(pa.float16()))}),
                   src / "f16.parquet")
    out = str(tmp_path / "out")
    _, _, files = _score(str(src), out, registry)
    f = files["f16.parquet"]
    assert f["error"] is None, f["error"]
    assert f["rows_scored"] == 1 and f["rows_rejected"] == 1


def test_uint64_token_ids_beyond_int64_max_are_rejected_per_row(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"review_id": pa.array(range(5), pa.int64()),
                             "tokens": pa.array(REVIEWS + [[1, 2**63]], pa.list_(pa.uint64()))}), src / "u64.parquet")
    out = str(tmp_path / "out")
    _, _, files = _score(str(src), out, registry)
    f = files["u64.parquet"]
    assert f["error"] is None, f["error"]
    assert f["rows_scored"] == 4
    assert _rejected(out) == {("u64.parquet", 4): f"token id >= vocabulary size {V}"}


def test_dictionary_encoded_ids(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    rid = pa.array(["r-ä", "r-b", "r-ä", None]).dictionary_encode()
    pq.write_table(pa.table({"review_id": rid, "tokens": pa.array([[1, 4], [1, 5], [1, 6], [1, 7]])}),
                   src / "dict.parquet")
    assert pa.types.is_dictionary(pq.read_table(src / "dict.parquet").schema.field("review_id").type)
    out = str(tmp_path / "out")
    _, _, files = _score(str(src), out, registry)
    assert files["dict.parquet"]["rows_scored"] == 3 and files["dict.parquet"]["rows_rejected"] == 1
    got = read_output(out).column("review_id").cast(pa.string()).to_pylist()
    assert sorted(got) == ["r-b", "r-ä", "r-ä"]
    assert _rejected(out) == {("dict.parquet", 3): "null review id"}


def test_uint64_ids_beyond_int64_max(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    big = [2**63, 2**64 - 1, 2**63 + 12345, 0]
    pq.write_table(pa.table({"review_id": pa.array(big, pa.uint64()),
                             "tokens": pa.array([[1, 4], [1, 5], [1, V], [1, 6]])}), src / "u64.parquet")
    out = str(tmp_path / "out")
    _score(str(src), out, registry)
    t = read_output(out)
    assert t.schema.field("review_id").type == pa.uint64()
    assert sorted(t.column("review_id").to_pylist()) == sorted([2**63, 2**64 - 1, 0])
    rej = storage.resolve(out).join("_rejected")
    import pyarrow.dataset as ds

    r = ds.dataset(rej.path, format="parquet").to_table()
    assert r.column("review_id").to_pylist() == [2**63 + 12345]


TEXTS = [
    "A good movie 🎬 and great fun!",
    "bad\x00plot\x00awful",                      # NUL bytes
    "\u202egreat\u202c movie",                   # bidi override
    "\x1b[31mboring\x1b[0m actor",               # ANSI escapes
    "ｇｏｏｄ full-width",                       # full-width letters
    "the\u200bplot\u200d",                       # zero-width space / joiner
    "e\u0301 ñ ß İ ǅ",                           # combining marks, case-folding oddities
    "\t\n\r\x0b\x0c",                            # whitespace only: no words
    "",                                          # empty
    None,                                        # null
    "good " * 20_000,                            # 100,000 characters
]


def test_text_column_with_unicode_and_control_characters(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    ids = [f"ид-{i}-🎬" for i in range(len(TEXTS))]
    pq.write_table(pa.table({"review_id": ids, "text": pa.array(TEXTS, pa.string())}), src / "texts.parquet")
    out = str(tmp_path / "out")
    _, _, files = _score(str(src), out, registry, text_column="text")
    f = files["texts.parquet"]
    assert f["rows_in"] == len(TEXTS) and f["error"] is None
    scores = _scores_by_id(out)
    rejected = _rejected(out)
    for i, text in enumerate(TEXTS):
        if text is None:
            assert rejected[("texts.parquet", i)] == "null text"
            continue
        tokens = VOCAB.encode([text]).to_pylist()[0]
        if len(tokens) <= 1:  # only the start marker: nothing to read
            assert rejected[("texts.parquet", i)] == "empty text", (i, text)
            continue
        np.testing.assert_allclose(scores[ids[i]], _expected_scores([tokens])[0], atol=1e-5, err_msg=repr(text))


def test_text_column_with_invalid_utf8_never_crashes(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    # Parquet does not validate UTF-8; other writers can and do produce such files.
    texts = pa.array([b"good movie", b"\xff\xfe bad", b"fun\xc3"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"review_id": ["a", "b", "c"], "text": texts}), src / "bad-utf8.parquet")
    out = str(tmp_path / "out")
    _, _, files = _score(str(src), out, registry, text_column="text")
    f = files["bad-utf8.parquet"]
    assert f["rows_in"] == 3
    assert f["rows_scored"] == 1 and f["rows_rejected"] == 2
    rejected = pq.read_table(next((tmp_path / "out" / "_rejected").glob("*.parquet")))
    assert rejected.column("reason").to_pylist() == ["invalid UTF-8 text", "invalid UTF-8 text"]


def test_one_bad_row_in_a_million(tmp_path, registry, prefect_api):
    n, bad_row = 1_000_000, 654_321
    rng = np.random.default_rng(7)
    values = rng.integers(3, V, size=5 * n).astype(np.int32)
    values[::5] = 1
    values[5 * bad_row + 3] = 10**6  # the one bad token id
    tokens = pa.ListArray.from_arrays(pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32)), pa.array(values))
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"review_id": pa.array(np.arange(n) + 10**12, pa.int64()), "tokens": tokens}),
                   src / "million.parquet", row_group_size=100_000)
    out = str(tmp_path / "out")
    summary, manifest, files = _score(str(src), out, registry, max_rows_per_unit=250_000)
    assert summary["rows_in"] == n and summary["rows_scored"] == n - 1 and summary["rows_rejected"] == 1
    assert _rejected(out) == {("million.parquet", bad_row): f"token id >= vocabulary size {V}"}
    ids = read_output(out).column("review_id").to_numpy()
    assert len(ids) == n - 1 and len(np.unique(ids)) == n - 1
    assert 10**12 + bad_row not in set(ids.tolist())


# -- odd file and key names -------------------------------------------------------------------------------

ODD_NAMES = ["a b.parquet", "naïve ☂ ünï.parquet", "x..y.parquet", "sub dir/deep..er/z.parquet",
             "ünï/tab\tname.parquet", "dots../end.parquet", "100% #1 &more.parquet", "quote'n\"q.parquet"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_odd_file_and_key_names(where, tmp_path, registry, prefect_api, request):
    if where == "local":
        src, out = str(tmp_path / "in put"), str(tmp_path / "out put ☂")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        src, out = f"{bucket}/dumps/in put", f"{bucket}/scores/out put ☂"
    base = storage.resolve(src)
    expected = {}
    for i, name in enumerate(ODD_NAMES):
        ids = pa.array([10 * i, 10 * i + 1], pa.int64())
        loc = base.join(name)
        storage.atomic_write(loc, lambda f, ids=ids: pq.write_table(
            pa.table({"review_id": ids, "tokens": pa.array([[1, 4], [1, 5]])}), f))
        expected[name] = ids.to_pylist()
    if where == "s3":
        # An empty path segment ("//") only exists on object stores: written with boto3 directly.
        import io

        buf = io.BytesIO()
        pq.write_table(pa.table({"review_id": pa.array([900, 901], pa.int64()), "tokens": [[1, 4], [1, 5]]}), buf)
        client = request.getfixturevalue("s3_client")
        client.put_object(Bucket=base.path.split("/", 1)[0], Key="dumps/in put/double//slash.parquet",
                          Body=buf.getvalue())
        expected["double//slash.parquet"] = [900, 901]
    _, manifest, _ = _score(src, out, registry)
    scored = set(read_output(out).column("review_id").to_pylist())
    for name, ids in expected.items():
        entry = [f for f in manifest["inputs"] if f["uri"].endswith(name.rsplit("/", 1)[-1])]
        assert entry, f"{name!r} is not in the manifest: silently skipped"
        f = entry[0]
        if f["error"]:  # rejected as a whole: the reason names the file
            assert name.rsplit("/", 1)[-1] in f["error"], f
        else:
            assert set(ids) <= scored, (name, f)
    assert len(manifest["inputs"]) == len(expected)


# -- properties of the vectorised kernels -----------------------------------------------------------------

_rows = st.lists(st.one_of(st.none(), st.lists(st.one_of(st.integers(-5, 70), st.none()), max_size=15)),
                 max_size=25)


@st.composite
def _preprocessings(draw):
    vocab_size = draw(st.sampled_from([0, 5, 20, 60]))
    num_words = draw(st.one_of(st.none(), st.integers(3, 80)))
    return Preprocessing(maxlen=draw(st.integers(1, 12)), padding=draw(st.sampled_from(["pre", "post"])),
                         truncating=draw(st.sampled_from(["pre", "post"])), num_words=num_words,
                         skip_top=draw(st.integers(0, 6)), vocab_size=vocab_size)


def _reference_matrix(rows, prep: Preprocessing) -> np.ndarray:
    """Keras ``imdb.load_data`` OOV rule, then ``keras.utils.pad_sequences``."""
    from keras.utils import pad_sequences

    upper = prep.input_dim or None

    def m(v):
        v = prep.oov_char if v is None else v
        if upper is None and prep.skip_top == 0:
            return v
        return v if v >= prep.skip_top and (upper is None or v < upper) else prep.oov_char

    seqs = [[] if r is None else [m(v) for v in r] for r in rows]
    if not seqs:
        return np.zeros((0, prep.maxlen), dtype=np.int32)
    return pad_sequences(seqs, maxlen=prep.maxlen, padding=prep.padding, truncating=prep.truncating,
                         value=0, dtype="int32")


def _as_arrow(rows, kind: str, lead: int, value_type: pa.DataType):
    """``rows`` as a list array of the given kind: plain, sliced out of a bigger array, chunked, large_list."""
    list_type = pa.large_list(value_type) if kind == "large" else pa.list_(value_type)
    if kind == "sliced":
        filler = [[1, 2, 3]] * lead
        return pa.array(filler + rows + filler, list_type).slice(lead, len(rows))
    arr = pa.array(rows, list_type)
    if kind == "chunked":
        cut = min(lead, len(rows))
        return pa.chunked_array([arr.slice(0, cut), arr.slice(cut)], list_type)
    return arr


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, prep=_preprocessings(), kind=st.sampled_from(["plain", "sliced", "chunked", "large"]),
       lead=st.integers(0, 4), value_type=st.sampled_from([pa.int32(), pa.int64(), pa.int16()]),
       chunk_rows=st.sampled_from([None, 1, 3]))
def test_to_matrix_equals_keras_pad_sequences(rows, prep, kind, lead, value_type, chunk_rows):
    # chunk_rows: to_matrix fills long batches a few rows at a time; make that happen on small ones.
    tokens = preprocessing.MATRIX_CHUNK_TOKENS if chunk_rows is None else chunk_rows * prep.maxlen
    with mock.patch.object(preprocessing, "MATRIX_CHUNK_TOKENS", tokens):
        got = to_matrix(_as_arrow(rows, kind, lead, value_type), prep)
    want = _reference_matrix(rows, prep)
    assert got.dtype == np.int32 and got.shape == (len(rows), prep.maxlen)
    np.testing.assert_array_equal(got, want)


def test_to_matrix_maps_ids_beyond_int32_to_oov():
    prep = Preprocessing(maxlen=3, num_words=10)
    got = to_matrix(pa.array([[2**32 + 5, -(2**32) + 7, 4]], pa.list_(pa.int64())), prep)
    np.testing.assert_array_equal(got, [[prep.oov_char, prep.oov_char, 4]])


def _reference_reason(row, vocab_size: int, floating: bool) -> int:
    if row is None:
        return NULL_SEQ
    if len(row) == 0:
        return EMPTY_SEQ
    if any(v is None for v in row):
        return NULL_TOKEN
    if floating and any(not math.isfinite(v) for v in row):
        return NON_FINITE
    if floating and any(v != math.floor(v) for v in row):
        return NON_INTEGER
    if any(v < 0 for v in row):
        return NEGATIVE
    if any(v >= vocab_size for v in row):
        return TOO_LARGE
    return OK


_INT_TOKEN_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


@st.composite
def _token_rows(draw):
    t = draw(st.sampled_from(_INT_TOKEN_TYPES + [pa.float32(), pa.float64()]))
    if pa.types.is_floating(t):
        value = st.one_of(st.floats(-10, 80, width=32 if t == pa.float32() else 64),
                          st.integers(-5, 80).map(float), st.sampled_from([math.nan, math.inf, -math.inf]))
    else:
        info = np.iinfo(t.to_pandas_dtype())
        top = min(int(info.max), 2**63 - 1)  # uint64 beyond int64: see the xfail test below
        value = st.one_of(st.integers(max(int(info.min), -10), min(top, 80)),
                          st.sampled_from([int(info.min), top]))
    rows = draw(st.lists(st.one_of(st.none(), st.lists(st.one_of(value, st.none()), max_size=8)), max_size=30))
    return t, rows


@settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", 200)), deadline=None)
@given(data=_token_rows(), vocab_size=st.integers(1, 60), kind=st.sampled_from(["plain", "sliced", "chunked",
                                                                                   "large"]),
       lead=st.integers(0, 4), chunk_rows=st.sampled_from([None, 1, 4]))
def test_token_reasons_one_code_per_row_and_never_ok_out_of_range(data, vocab_size, kind, lead, chunk_rows):
    value_type, rows = data
    arr = _as_arrow(rows, kind, lead, value_type)
    # chunk_rows: long batches are judged a few rows at a time; make that happen on small ones.
    with mock.patch.object(scoring, "VALIDATE_ROWS", chunk_rows or scoring.VALIDATE_ROWS):
        codes = _token_reasons(arr, vocab_size)
    assert codes.shape == (len(rows),), "exactly one reason code per row"
    assert set(codes.tolist()) <= set(range(len(reason_labels(vocab_size))))
    floating = pa.types.is_floating(value_type)
    for row, code in zip(rows, codes.tolist()):
        assert code == _reference_reason(row, vocab_size, floating), (row, REASON.get(code), vocab_size)
        if row and any(v is not None and (v < 0 or v >= vocab_size) for v in row):
            assert code != OK


def test_token_reasons_with_null_slots_over_values():
    # A valid Arrow array (e.g. from IPC or another library): slot 1 is null but its offsets span 2 values.
    arr = pa.ListArray.from_arrays(pa.array([0, 2, 4, 5], pa.int32()), pa.array([1, 2, 99, 98, 3], pa.int64()),
                                   mask=pa.array([False, True, False]))
    assert _token_reasons(arr, 10).tolist() == [OK, NULL_SEQ, OK]
    # Slices keep their own rows' verdicts (offsets of a slice do not start at 0).
    assert _token_reasons(arr.slice(1, 2), 10).tolist() == [NULL_SEQ, OK]
    assert _token_reasons(arr.slice(2, 1), 10).tolist() == [OK]
    assert _token_reasons(arr.slice(0, 0), 10).tolist() == []
