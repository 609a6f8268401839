"""Tiny models, the token dumps they score, and reading back what they scored.

:func:`build_tiny` is the one builder of the tests' tiny Keras networks (models/architecture.py's
topology, seeded); the shapes the tests use are named here:

- ``VOCAB``/``CONFIG`` (Embedding(15, 8) -> LSTM(4), maxlen 6): the model the scoring and reliability
  tests register (conftest.py's ``registry`` fixture, :func:`register_tiny`).  Registering it (Keras
  save + ONNX export + parity check) takes a second or two, so :func:`tiny_model` builds it once per
  process.
- ``LSTM_VOCAB``/``LSTM_CONFIG`` (vocabulary 30, embedding 5, 3 units) with weights scaled up
  (:func:`lstm_tiny`), so that gates saturate differently per token: any slip in gate order,
  masking or direction of the gate-table graphs shows far above their 1e-5 tolerance.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from infra import storage
from infra.dump_writer import dump_table, write_dump
from models.predictors import probe_batch
from models.presets import TrainConfig
from models.text import Vocabulary

WORDS = ["the", "a", "good", "bad", "movie", "great", "awful", "plot", "actor", "boring", "fun", "and"]
VOCAB = Vocabulary(words=tuple(WORDS))
CONFIG = TrainConfig(preset="seed", maxlen=6, padding="post", truncating="post", embedding_dim=8, lstm_units=4)

LSTM_VOCAB = 30
LSTM_CONFIG = TrainConfig(preset="seed", maxlen=6, embedding_dim=5, lstm_units=3)
# The default preset's topology (masked, bidirectional, stacked, max-pooled, pre-padded) at tiny size.
DEFAULT_LIKE = {"mask_zero": True, "bidirectional": True, "pooling": "max", "lstm_layers": 2, "padding": "pre"}
DEFAULT_LIKE_CONFIG = LSTM_CONFIG.with_overrides(maxlen=7, **DEFAULT_LIKE)

_models: dict[int, Any] = {}
_lock = threading.Lock()


def build_tiny(seed: int, *, config: TrainConfig = CONFIG, vocab_size: int = VOCAB.size, **overrides):
    """A new network of ``config`` (with ``overrides``) over ``vocab_size`` token ids, seeded."""
    import keras

    from models.architecture import build_model

    keras.utils.set_random_seed(seed)
    return build_model(config.with_overrides(**overrides), vocab_size)


def tiny_model(seed: int = 3):
    """The same ``CONFIG`` network for a seed, built once per process."""
    with _lock:
        if seed not in _models:
            _models[seed] = build_tiny(seed)
        return _models[seed]


def scaled(model, factor: float = 3.0):
    """``model`` with every weight multiplied by ``factor`` (in place)."""
    model.set_weights([w * factor for w in model.get_weights()])
    return model


def lstm_tiny(seed: int = 0, **overrides):
    """A new ``LSTM_CONFIG`` network (with ``overrides``), weights scaled so gates saturate."""
    return scaled(build_tiny(seed, config=LSTM_CONFIG, vocab_size=LSTM_VOCAB, **overrides))


def padded(n: int, maxlen: int, padding: str, seed: int = 0) -> np.ndarray:
    """Reviews of every length 0..maxlen (tokens 1..LSTM_VOCAB-1), padded one way."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, maxlen), np.int32)
    for i in range(n):
        length = i % (maxlen + 1) if i < maxlen + 1 else int(rng.integers(0, maxlen + 1))
        tokens = rng.integers(1, LSTM_VOCAB, size=length)
        if length:
            if padding == "pre":
                x[i, maxlen - length:] = tokens
            else:
                x[i, :length] = tokens
    return x


def parity_inputs(maxlen: int) -> np.ndarray:
    """Post-padded, pre-padded and mixed rows, plus an all-padding row."""
    return np.concatenate([padded(40, maxlen, "post", 1), padded(40, maxlen, "pre", 2),
                           probe_batch(LSTM_VOCAB, maxlen, n=40, seed=3), np.zeros((1, maxlen), np.int32)])


def float_labelled(model, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Inputs for a ``maxlen=7`` ``LSTM_VOCAB`` model, labelled with what its float32 gate-table graph
    predicts: labels it gets all right (accuracy 1.0), so any accuracy an int8 graph loses shows."""
    from models.fast_predictors import FastLstmPredictor
    from models.gate_graph import build_fast_onnx

    x = np.concatenate([parity_inputs(7), probe_batch(LSTM_VOCAB, 7, n=n, seed=9)])
    y = (FastLstmPredictor(build_fast_onnx(model)).predict(x) >= 0.5).astype(np.int8)
    return x, y


def register_tiny(registry_uri: str, seed: int = 3) -> str:
    """Register the tiny model in ``registry_uri``; returns the new version."""
    from models.registry import ModelRegistry

    prep = CONFIG.preprocessing(vocab_size=VOCAB.size)
    return ModelRegistry(registry_uri).register(tiny_model(seed), prep, VOCAB.to_json(), {"preset": "seed"},
                                                probe_batch(VOCAB.size, CONFIG.maxlen, n=32))


def random_tokens(rng: np.random.Generator, n: int, vocab: int = VOCAB.size, max_len: int = 12) -> pa.Array:
    lengths = rng.integers(1, max_len, size=n)
    values = rng.integers(3, vocab, size=int(lengths.sum())).astype(np.int32)
    values[np.cumsum(lengths) - lengths] = 1  # start marker, as the Keras scheme has it
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def make_dump(uri: str, n: int = 700, files_rows: int = 250, rg: int = 60, seed: int = 0,
              first_id: int = 1000) -> pa.Table:
    rng = np.random.default_rng(seed)
    table = dump_table(np.arange(first_id, first_id + n), random_tokens(rng, n))
    write_dump(table, uri, rows_per_file=files_rows, row_group_size=rg)
    return table


def read_output(uri: str, check_readers: bool = True) -> pa.Table:
    """All scored parts under ``uri`` as one table (pyarrow skips ``_``/``.`` prefixed paths).

    ``check_readers``: first assert that pyarrow.dataset and DuckDB both read the parts and the
    ``_rejected/`` parts as one dataset each (see :func:`assert_readable_everywhere`).
    """
    if check_readers:
        assert_readable_everywhere(uri)
    loc = storage.resolve(uri)
    return ds.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table()


def assert_readable_everywhere(uri: str) -> dict[str, int]:
    """The output's parts, and its ``_rejected/`` parts, each read as one dataset by pyarrow.dataset
    and by DuckDB, with the same columns and the same ids.  Returns rows per dataset.

    S3 outputs are copied to a local directory for DuckDB (its S3 support is a downloadable
    extension); the files it reads are the same bytes.
    """
    import collections
    import tempfile

    import duckdb

    loc = storage.resolve(uri)
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("", "_rejected"):
            where = loc.join(sub) if sub else loc
            parts = [i for i in storage.list_files(where, recursive=False)
                     if i.base_name.startswith("part-") and i.base_name.endswith(".parquet")]
            if not parts:
                continue
            # Both readers take the first file's schema and cast the rest, so whether a mixed output
            # reads depends on which part sorts first: one dataset means one schema in every part.
            schemas = {i.base_name: pq.read_schema(loc.fs.open_input_file(i.path)).remove_metadata()
                       for i in parts}
            first = next(iter(schemas.values()))
            odd = {n: str(s) for n, s in schemas.items() if not s.equals(first)}
            assert not odd, f"{uri}/{sub}: parts differ in schema from {first}: {odd}"
            t = ds.dataset(where.path, filesystem=loc.fs, format="parquet").to_table()
            if loc.is_local:
                paths = [i.path for i in parts]
            else:
                paths = []
                for i in parts:
                    local = os.path.join(tmp, f"{sub or 'scored'}-{i.base_name}")
                    with loc.fs.open_input_stream(i.path) as src, open(local, "wb") as dst:
                        dst.write(src.read())
                    paths.append(local)
            with duckdb.connect() as con:
                cur = con.execute("SELECT * FROM read_parquet(?)", [paths])
                names = [d[0] for d in cur.description]
                rows = cur.fetchall()
            assert names == t.column_names, (uri, sub, names, t.column_names)
            ids = t.column("review_id").cast(_plain(t.schema.field("review_id").type)).to_pylist()
            duck_ids = [r[names.index("review_id")] for r in rows]
            assert collections.Counter(duck_ids) == collections.Counter(ids), (uri, sub)
            found[sub or "scored"] = t.num_rows
    return found


def _plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def part_versions(uri: str) -> dict[str, str | None]:
    """part name -> model version in its footer metadata, for every committed part."""
    from infra.part_writer import part_metadata

    out = storage.resolve(uri)
    found = {}
    for info in storage.list_files(out, recursive=False):
        if info.base_name.startswith("part-"):
            meta = part_metadata(storage.Location(out.fs, info.path, info.path))
            found[info.base_name] = None if meta is None else meta.get("model_version")
    return found


def manifest(uri: str) -> dict[str, Any]:
    return storage.read_json(storage.resolve(uri).join("_manifest.json"))


def assert_exactly_once(out_uri: str, expected_ids: list, version: str | None = None) -> pa.Table:
    """The output holds every expected id exactly once, from one model version; manifest reconciles."""
    t = read_output(out_uri)
    ids = t.column("review_id").to_pylist()
    assert len(ids) == len(set(ids)), f"duplicate ids in {out_uri}"
    assert sorted(ids) == sorted(expected_ids), f"ids in {out_uri} differ from the input's"
    versions = set(t.column("model_version").cast(pa.string()).to_pylist())
    assert len(versions) <= 1, f"mixed model versions in {out_uri}: {versions}"
    if version is not None:
        assert versions == {version}
    loc = storage.resolve(out_uri)
    assert storage.exists(loc.join("_SUCCESS")), "no _SUCCESS marker"
    m = manifest(out_uri)
    for f in m["inputs"]:
        assert f["rows_in"] == f["rows_scored"] + f["rows_rejected"], f
    tot = m["totals"]
    assert tot["rows_in"] == tot["rows_scored"] + tot["rows_rejected"] == len(expected_ids)
    assert tot["rows_scored"] == len(ids)
    if version is not None:
        assert m["model"]["version"] == version
    return t
