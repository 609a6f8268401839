"""Drift profiles of review dumps: small mergeable histograms, and their comparison.

A :class:`DumpProfile` counts, on fixed bins, five features of the reviews a model scored
(only rows that were scored: rejected rows have no score and may hold invalid ids):

``length``
    Tokens per review, the start marker included (what ``to_matrix`` cuts to ``maxlen``);
    bins grow by 1.5x / 2x steps up to 8,192 and one open bin beyond, so 10-token stubs and
    2,000-token essays both get resolution.
``oov_share``
    Per review, the share of its tokens that are the out-of-vocabulary id 2.  A histogram of
    per-review shares rather than one pooled share: a Bernoulli share has almost no PSI
    (1% -> 2% OOV gives PSI 0.007), whereas the per-review histogram moves when a whole slice
    of reviews comes from another encoder or language.  The pooled share is kept as a summary.
    A model's *train* split has no OOV at all when its vocabulary is built from it, so the
    reference must be held-out data (the test split).  Per-review shares move with length
    (a 10-token review's share is a multiple of 10%): read the length row first.
``beyond_num_words``
    Per review, the share of tokens with id >= ``num_words``: words the dump knows but the
    model maps to OOV.  Absent when the model uses the full vocabulary (``num_words`` None).
``token_ids``
    Word tokens (ids >= 3) by frequency-rank octave: ids [3, 8), [8, 16), ... [2^19, 2^20),
    [2^20, inf).  Under Zipf's law each octave holds a similar share, so remapped or shuffled
    ids (a wrong vocabulary) shift mass to the top octaves even when lengths are unchanged.
``score``
    The model's scores, 10 bins over [0, 1] with ``np.histogram``'s conventions (the same
    counts as the scoring manifest's ``score_histogram``).

Profiles of units merge by adding counts, so a scoring run never reads its input or output
twice.  :func:`compare` scores each feature with PSI and Jensen-Shannon divergence against a
reference profile (the registered version's evaluation data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.preprocessing import OOV, as_list_array

FORMAT = 1  # bump when any bin edge changes: profiles of different formats are not comparable

LENGTH_EDGES = (0, 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
                2048, 3072, 4096, 8192)  # lower edges; the last bin is open
SHARE_UPPER = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # upper-inclusive: "0", "(0, 1%]", ...
TOKEN_EDGES = (3,) + tuple(2 ** k for k in range(3, 21))  # lower edges; the last bin is open
SCORE_BINS = 10

# PSI's rule of thumb: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major one; 0.2 is the
# common action level.  Sampling noise alone is far below it: PSI ~ (bins - 1) * (1/n_ref + 1/n_cur);
# measured on the IMDB test split, 30 random 500-review samples against the whole split gave a
# largest feature PSI of 0.03 (median) and 0.06 (worst); 200-review samples reached 0.18.
DRIFT_THRESHOLD = 0.2
MIN_ROWS = 500  # fewer scored rows on either side: too noisy to call drift either way
EPS = 1e-4  # proportion given to an empty bin in PSI, so a bin empty on one side costs a finite amount


def _lower_labels(edges: tuple[int, ...]) -> list[str]:
    return [f"{lo:,}-{hi - 1:,}" if hi - 1 > lo else f"{lo:,}"
            for lo, hi in pairwise(edges)] + [f"{edges[-1]:,}+"]


_SHARE_LABELS = ["0"] + [f"({lo:.0%}, {hi:.0%}]" for lo, hi in pairwise(SHARE_UPPER)]
FEATURES: dict[str, tuple[str, list[str]]] = {  # name -> (title, bin labels)
    "length": ("review length (tokens)", _lower_labels(LENGTH_EDGES)),
    "oov_share": ("OOV share per review (id 2)", _SHARE_LABELS),
    "beyond_num_words": ("share per review of ids >= num_words", _SHARE_LABELS),
    "token_ids": ("word token ids by rank octave", _lower_labels(TOKEN_EDGES)),
    "score": ("score", [f"{i / SCORE_BINS:.1f}-{(i + 1) / SCORE_BINS:.1f}" for i in range(SCORE_BINS)]),
}


def _zeros(feature: str) -> tuple[int, ...]:
    return (0,) * len(FEATURES[feature][1])


@dataclass(frozen=True)
class DumpProfile:
    num_words: int | None = None
    rows: int = 0
    tokens: int = 0
    oov_tokens: int = 0
    beyond_tokens: int = 0  # tokens with id >= num_words
    length: tuple[int, ...] = field(default_factory=lambda: _zeros("length"))
    oov_share: tuple[int, ...] = field(default_factory=lambda: _zeros("oov_share"))
    beyond_num_words: tuple[int, ...] | None = None  # None: full vocabulary, nothing to count
    token_ids: tuple[int, ...] = field(default_factory=lambda: _zeros("token_ids"))
    score: tuple[int, ...] = field(default_factory=lambda: _zeros("score"))

    @classmethod
    def empty(cls, num_words: int | None = None) -> DumpProfile:
        return cls(num_words=num_words, beyond_num_words=None if num_words is None else _zeros("beyond_num_words"))

    @classmethod
    def from_batch(cls, tokens: pa.Array | pa.ChunkedArray, scores: np.ndarray,
                   num_words: int | None = None) -> DumpProfile:
        """Profile of scored rows: ``tokens`` (a list array of ids) and their ``scores``, row for row."""
        arr = as_list_array(tokens)
        scores = np.asarray(scores).reshape(-1)
        if len(scores) != len(arr):
            raise ValueError(f"{len(arr)} token rows but {len(scores)} scores")
        offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        # A sliced array's offsets index its parent's values: take this slice's values only.
        values = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
        offsets -= offsets[0]
        lengths = np.diff(offsets)
        if values.null_count:
            values = pc.fill_null(values, OOV)  # to_matrix's reading of a null id
        v = values.to_numpy(zero_copy_only=False)
        if arr.null_count:
            # Values under a null row (allowed by Arrow) belong to no review: drop them.
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            v = v[np.repeat(valid, lengths)]
            lengths = np.where(valid, lengths, 0)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
        if v.dtype.kind == "f":
            v = v.astype(np.int64)  # scored rows hold integral floats only
        oov = _row_counts(v, offsets, lengths, lambda x, out: np.equal(x, OOV, out=out))
        beyond = beyond_rows = None
        if num_words is not None:
            beyond_rows = _row_counts(v, offsets, lengths, lambda x, out: np.greater_equal(x, num_words, out=out))
            beyond = _share_histogram(beyond_rows, lengths)
        return cls(
            num_words=num_words, rows=len(arr), tokens=int(lengths.sum()), oov_tokens=int(oov.sum()),
            beyond_tokens=0 if beyond_rows is None else int(beyond_rows.sum()),
            length=_ints(np.bincount(np.searchsorted(LENGTH_EDGES, lengths, side="right") - 1,
                                     minlength=len(LENGTH_EDGES))),
            oov_share=_share_histogram(oov, lengths), beyond_num_words=beyond,
            token_ids=_token_bands(v),
            score=_ints(np.histogram(scores, bins=SCORE_BINS, range=(0.0, 1.0))[0]),
        )

    def merge(self, other: DumpProfile) -> DumpProfile:
        if self.num_words != other.num_words:
            raise ValueError(f"cannot merge profiles for num_words {self.num_words} and {other.num_words}")

        def add(a: Any, b: Any) -> Any:  # a is None: beyond_num_words of a full-vocabulary model
            return None if a is None else tuple(map(sum, zip(a, b))) if isinstance(a, tuple) else a + b

        return DumpProfile(num_words=self.num_words, **{
            f.name: add(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.name != "num_words"})

    @classmethod
    def merge_all(cls, profiles: Iterable[DumpProfile], num_words: int | None = None) -> DumpProfile:
        """Sum of ``profiles``; ``num_words`` names the empty profile when there are none."""
        total = None
        for p in profiles:
            total = p if total is None else total.merge(p)
        return cls.empty(num_words) if total is None else total

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DumpProfile:
        if d.get("format") != FORMAT:
            raise ValueError(f"drift profile format {d.get('format')!r}, this code reads format {FORMAT}")
        kw = {f.name: d[f.name] for f in fields(cls)}
        for name, (_, labels) in FEATURES.items():
            if kw[name] is not None:
                if len(kw[name]) != len(labels):
                    raise ValueError(f"drift profile feature {name}: {len(kw[name])} bins, expected {len(labels)}")
                kw[name] = tuple(int(c) for c in kw[name])
        return cls(**kw)


def _ints(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(x) for x in a)


def _row_counts(v: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, test) -> np.ndarray:
    """Per row, how many of its values pass ``test``; one boolean pass, no per-token row index."""
    # A trailing False makes every start (even of empty trailing rows) a valid reduceat index.
    mask = np.zeros(len(v) + 1, dtype=bool)
    test(v, mask[:-1])
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.add.reduceat(mask, offsets[:-1], dtype=np.int64)
    counts[lengths == 0] = 0  # reduceat gives an empty row the value at its start
    return counts


def _share_histogram(counts: np.ndarray, lengths: np.ndarray) -> tuple[int, ...]:
    share = counts / np.maximum(lengths, 1)
    return _ints(np.bincount(np.searchsorted(SHARE_UPPER, share, side="left"), minlength=len(SHARE_UPPER)))


def _token_bands(v: np.ndarray) -> tuple[int, ...]:
    if len(v) == 0:
        return _zeros("token_ids")
    cap = TOKEN_EDGES[-1]
    if v.min() < 0 or v.max() > cap:
        v = np.clip(v, 0, cap)  # everything above the last edge lands in the open bin anyway
    per_id = np.cumsum(np.concatenate([[0], np.bincount(v)]))
    upper = np.minimum(np.array(TOKEN_EDGES[1:] + (cap + 1,)), len(per_id) - 1)
    lower = np.minimum(np.array(TOKEN_EDGES), len(per_id) - 1)
    return _ints(per_id[upper] - per_id[lower])


# --------------------------------------------------------------------------- comparison

def _shares(counts: Any) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum()


def psi(reference: Any, current: Any, eps: float = EPS) -> float:
    """Population stability index of two count vectors: sum (q - p) ln(q / p), shares floored at ``eps``."""
    p, q = np.maximum(_shares(reference), eps), np.maximum(_shares(current), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(reference: Any, current: Any) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint); needs no epsilon."""
    p, q = _shares(reference), _shares(current)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, (kl(p) + kl(q)) / 2)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    title: str
    psi: float | None
    js: float | None
    drifted: bool
    labels: list[str]
    reference: list[float]  # shares per bin
    current: list[float]
    summary: tuple[str, str] = ("", "")  # one figure per side, e.g. the mean length
    note: str = ""  # why psi is None or the flag was withheld


@dataclass(frozen=True)
class DriftReport:
    threshold: float
    min_rows: int
    reference_rows: int
    current_rows: int
    features: tuple[FeatureDrift, ...]

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def verdict(self) -> str:
        if self.drifted:
            return "drift"
        if min(self.reference_rows, self.current_rows) < self.min_rows:
            return "too few rows"
        return "no drift"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "drifted": self.drifted, **asdict(self)}


def _summary(p: DumpProfile, feature: str) -> str:
    if feature == "length":
        return f"mean {p.tokens / p.rows:.1f}" if p.rows else "-"
    if feature in ("oov_share", "beyond_num_words"):
        n = p.oov_tokens if feature == "oov_share" else p.beyond_tokens
        return f"{n / p.tokens:.2%} of tokens" if p.tokens else "-"
    if feature == "score":
        return f"{sum(p.score[SCORE_BINS // 2:]) / p.rows:.1%} >= 0.5" if p.rows else "-"
    return ""


def compare(reference: DumpProfile, current: DumpProfile, threshold: float = DRIFT_THRESHOLD,
            min_rows: int = MIN_ROWS) -> DriftReport:
    """Each feature of ``current`` against ``reference``: PSI, JS divergence, drifted = PSI > threshold."""
    few = min(reference.rows, current.rows) < min_rows
    out = []
    for name, (title, labels) in FEATURES.items():
        ref, cur = getattr(reference, name), getattr(current, name)
        note = ""
        if name == "beyond_num_words" and reference.num_words != current.num_words:
            note = f"num_words differ ({reference.num_words} vs {current.num_words}): not comparable"
        elif ref is None or cur is None:
            note = "full vocabulary: no ids beyond num_words"
        elif not sum(ref) or not sum(cur):
            note = "no data"
        if note:
            out.append(FeatureDrift(name, title, None, None, False, labels, [], [], note=note))
            continue
        value = psi(ref, cur)
        out.append(FeatureDrift(
            name, title, value, js_divergence(ref, cur), value > threshold and not few, labels,
            _shares(ref).tolist(), _shares(cur).tolist(), (_summary(reference, name), _summary(current, name)),
            f"fewer than {min_rows} rows: not flagged" if few and value > threshold else ""))
    return DriftReport(threshold, min_rows, reference.rows, current.rows, tuple(out))


def _figure(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def drift_markdown(report: DriftReport, bar_width: int = 20) -> str:
    """A Prefect markdown artifact: the verdict, one row per feature, then each feature's bins as bars."""
    r = report
    lines = [f"## Drift report: **{r.verdict}**", "",
             f"PSI threshold {r.threshold}; reference {r.reference_rows:,} reviews, this dump {r.current_rows:,}.", "",
             "| feature | PSI | JS divergence | drifted | reference | this dump | note |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {f.title} | {_figure(f.psi)} | {_figure(f.js)} | {'**yes**' if f.drifted else 'no'} | "
              f"{f.summary[0]} | {f.summary[1]} | {f.note} |" for f in r.features]
    for f in (f for f in r.features if f.psi is not None):
        peak = max(f.reference + f.current) or 1.0
        lines += ["", f"### {f.title}{' (drifted)' if f.drifted else ''}", "",
                  "| bin | reference | this dump | reference | this dump |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {p:.1%} | {q:.1%} | {'░' * round(bar_width * p / peak)} | "
                  f"{'█' * round(bar_width * q / peak)} |"
                  for label, p, q in zip(f.labels, f.reference, f.current) if p or q]  # skip bins empty on both sides
    return "\n".join(lines)
