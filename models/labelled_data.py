"""Labelled reviews beyond IMDB: judging rows, dropping duplicates, the train/holdout split.

Every row read ends up used, rejected (its own fault: a null or invalid field) or a
duplicate (valid, but its review is already in the data), with a reason, so for
every file and in total rows read = used + rejected + duplicates.  Duplicates are
found among the labelled rows (same ``review_id``; same normalised text, i.e. the
same words after the model's own :func:`~models.text.tokenize`) and against the
IMDB train split (same words as one of its reviews).  The first valid occurrence,
in input order (files in the order given, rows in file order), is kept; a rejected
row claims nothing, so a corrected copy of it later on is used.

A used row goes to the holdout when the sha256 of its id's string form, read as a
fraction of 2**64, is below ``holdout_share``: its side depends on nothing but its
id, so a review never moves between train and holdout as more rows arrive.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.labelled_inputs import LabelledDataError, LabelledFile
from models.imdb_dataset import ImdbData
from models.text import tokenize

NULL_ID, BAD_ID = "null review id", "invalid UTF-8 review id"
NULL_LABEL, BAD_LABEL = "null label", "label is not 0 or 1"
NULL_TEXT, BAD_TEXT, EMPTY_TEXT = "null text", "invalid UTF-8 text", "empty text (no words)"
DUPLICATE_ID, DUPLICATE_TEXT, IN_IMDB_TRAIN = "duplicate review_id", "duplicate text", "text in the IMDB train split"
REJECT_REASONS = (NULL_ID, BAD_ID, NULL_LABEL, BAD_LABEL, NULL_TEXT, BAD_TEXT, EMPTY_TEXT)
DUPLICATE_REASONS = (DUPLICATE_ID, DUPLICATE_TEXT, IN_IMDB_TRAIN)
SAMPLE_ROWS = 20  # rejected and duplicate rows kept as examples, each; the counts cover all of them


@dataclass
class FileAccount:
    uri: str
    size: int
    mtime: str | None
    rows_read: int = 0
    rows_used: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    rows_train: int = 0
    rows_holdout: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rejected and duplicate rows per reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def log_line(self) -> str:
        """The file's counts for the run log, with the reasons rows were not used."""
        why = f" ({_reasons_text(self.reasons)})" if self.reasons else ""
        return (f"labelled {self.uri}: {self.rows_read} rows read, {self.rows_used} used ({self.rows_train} train, "
                f"{self.rows_holdout} holdout), {self.rows_rejected} rejected, {self.rows_duplicate} duplicates{why}")


@dataclass
class LabelledSet:
    holdout_share: float
    files: list[FileAccount] = field(default_factory=list)
    train_texts: list[str] = field(default_factory=list)
    train_labels: list[int] = field(default_factory=list)
    holdout_texts: list[str] = field(default_factory=list)
    holdout_labels: list[int] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)
    rejected_sample: list[dict[str, Any]] = field(default_factory=list)
    duplicate_sample: list[dict[str, Any]] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        keys = ("rows_read", "rows_used", "rows_rejected", "rows_duplicate", "rows_train", "rows_holdout")
        return {k: sum(getattr(f, k) for f in self.files) for k in keys}

    def report(self) -> dict[str, Any]:
        """What a version's metadata records about its labelled data."""
        return {"holdout_share": self.holdout_share, "files": [f.to_dict() for f in self.files],
                "totals": self.totals(), "reasons": dict(sorted(self.reasons.items())),
                "rejected_sample": self.rejected_sample, "duplicate_sample": self.duplicate_sample}

    def table_rows(self) -> list[dict[str, Any]]:
        """Rows read, used, rejected and duplicate per file, then in total, with the reasons."""
        rows = [{"file": f.uri, **{k: v for k, v in f.to_dict().items() if k.startswith("rows_")},
                 "reasons": _reasons_text(f.reasons) or "-"} for f in self.files]
        rows.append({"file": "total", **self.totals(), "reasons": _reasons_text(self.reasons) or "-"})
        return rows

    def example_rows(self) -> list[dict[str, str]]:
        """The sampled rejected rows, then the duplicates, every value as text."""
        return [{k: str(v) for k, v in r.items()} for r in self.rejected_sample + self.duplicate_sample]


def _reasons_text(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))


def is_holdout(review_id: Any, share: float) -> bool:
    digest = hashlib.sha256(str(review_id).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < share * 2.0 ** 64


def _strings(arr: pa.Array) -> tuple[list[Any], np.ndarray]:
    """Python values of a column, and which rows hold invalid UTF-8 (Parquet does not check it)."""
    bad = np.zeros(len(arr), dtype=bool)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr.to_pylist(), bad
    try:
        return arr.to_pylist(), bad
    except UnicodeDecodeError:
        out: list[Any] = []
        for i, raw in enumerate(arr.cast(pa.binary() if pa.types.is_string(arr.type) else pa.large_binary())
                                .to_pylist()):
            try:
                out.append(None if raw is None else raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
                bad[i] = True
        return out, bad


def _valid_label(label: pa.Array) -> np.ndarray:
    if pa.types.is_boolean(label.type):
        return np.ones(len(label), dtype=bool)
    # Unsafe cast: a huge integer turns into a huge float, still not 0 or 1; NaN is in no set.
    as_float = pc.cast(label, pa.float64(), safe=False)
    return pc.fill_null(pc.is_in(as_float, value_set=pa.array([0.0, 1.0])), False).to_numpy(zero_copy_only=False)


def _key(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def imdb_train_keys(imdb: ImdbData) -> set[bytes]:
    """One key per IMDB train review: its word indices without the start marker."""
    tokens = imdb.train_tokens.combine_chunks() if isinstance(imdb.train_tokens, pa.ChunkedArray) \
        else imdb.train_tokens
    offsets = tokens.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = tokens.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return {_key(values[a + 1:b].tobytes()) for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())}


class _Judge:
    """Accumulates one run's labelled rows over its files, in order."""

    def __init__(self, imdb: ImdbData, holdout_share: float):
        if imdb.vocabulary is None:
            raise LabelledDataError(f"the IMDB source {imdb.source} has no words (vocabulary), so labelled "
                                    "text cannot join it; use npm, aclImdb/ or an imdb.npz with "
                                    "imdb_word_index.json beside it")
        if not 0.0 <= holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), got {holdout_share}")
        self.out = LabelledSet(holdout_share)
        self._index = imdb.vocabulary.word_index()
        self._imdb = imdb_train_keys(imdb)
        self._ids: dict[str, tuple[str, int]] = {}
        self._texts: dict[bytes, tuple[str, int]] = {}

    def _reject(self, acc: FileAccount, row: int, review_id: Any, reason: str, detail: Any = None) -> None:
        acc.rows_rejected += 1
        acc.reasons[reason] = acc.reasons.get(reason, 0) + 1
        self.out.reasons[reason] += 1
        if len(self.out.rejected_sample) < SAMPLE_ROWS:
            self.out.rejected_sample.append({"file": acc.uri, "row": row, "review_id": review_id, "reason": reason,
                                             **({"value": detail} if detail is not None else {})})

    def _duplicate(self, acc: FileAccount, row: int, review_id: Any, reason: str,
                   first: tuple[str, int] | None) -> None:
        acc.rows_duplicate += 1
        acc.reasons[reason] = acc.reasons.get(reason, 0) + 1
        self.out.reasons[reason] += 1
        if len(self.out.duplicate_sample) < SAMPLE_ROWS:
            where = {"first_file": first[0], "first_row": first[1]} if first else {}
            self.out.duplicate_sample.append({"file": acc.uri, "row": row, "review_id": review_id,
                                              "reason": reason, **where})

    def add(self, f: LabelledFile, table: pa.Table) -> None:
        acc = FileAccount(f.uri, f.size, f.mtime, rows_read=table.num_rows)
        self.out.files.append(acc)
        ids_col, label_col, text_col = (table.column(c).combine_chunks() for c in ("review_id", "label", "text"))
        ids, bad_ids = _strings(ids_col)
        texts, bad_texts = _strings(text_col)
        labels = label_col.to_pylist()
        label_ok = _valid_label(label_col)
        for row in range(table.num_rows):
            rid, text, label = ids[row], texts[row], labels[row]
            if bad_ids[row]:
                self._reject(acc, row, None, BAD_ID)
            elif rid is None:
                self._reject(acc, row, None, NULL_ID)
            elif label is None:
                self._reject(acc, row, rid, NULL_LABEL)
            elif not label_ok[row]:
                self._reject(acc, row, rid, BAD_LABEL, label)
            elif bad_texts[row]:
                self._reject(acc, row, rid, BAD_TEXT)
            elif text is None:
                self._reject(acc, row, rid, NULL_TEXT)
            elif not (words := tokenize(text)):
                self._reject(acc, row, rid, EMPTY_TEXT)
            else:
                self._judge_valid(acc, row, rid, int(label), text, words)

    def _judge_valid(self, acc: FileAccount, row: int, rid: Any, label: int, text: str, words: list[str]) -> None:
        id_key = str(rid)
        text_key = _key(" ".join(words).encode("utf-8", "surrogatepass"))
        if id_key in self._ids:
            return self._duplicate(acc, row, rid, DUPLICATE_ID, self._ids[id_key])
        if text_key in self._texts:
            return self._duplicate(acc, row, rid, DUPLICATE_TEXT, self._texts[text_key])
        ids = [self._index.get(w) for w in words]
        # A word the IMDB vocabulary lacks cannot be in an IMDB train review.
        if None not in ids and _key(np.asarray(ids, dtype=np.int32).tobytes()) in self._imdb:
            return self._duplicate(acc, row, rid, IN_IMDB_TRAIN, None)
        self._ids[id_key] = self._texts[text_key] = (acc.uri, row)
        acc.rows_used += 1
        if is_holdout(rid, self.out.holdout_share):
            acc.rows_holdout += 1
            self.out.holdout_texts.append(text)
            self.out.holdout_labels.append(label)
        else:
            acc.rows_train += 1
            self.out.train_texts.append(text)
            self.out.train_labels.append(label)


def judge_labelled(tables: Iterable[tuple[LabelledFile, pa.Table]], imdb: ImdbData,
                   holdout_share: float) -> LabelledSet:
    """Validate, deduplicate and split the labelled files' rows (``tables`` in input order)."""
    judge = _Judge(imdb, holdout_share)
    for f, table in tables:
        judge.add(f, table)
    return judge.out
