"""A scoring run's dump profile as one picture: its score histogram, review lengths and token ids,
each beside the model version's reference profile (its evaluation data).

A person looking at a run wants to see at a glance whether tonight's scores and inputs look like
what the model was evaluated on; the drift-report table gives the numbers.  Shares, not counts,
so a 1,000-row dump and a 12,500-row reference sit on one axis.  Matplotlib is imported only when
a picture is drawn (tracked runs), never on the untracked CLI's path.
"""

from __future__ import annotations

import io

import numpy as np

from models.dump_profile import FEATURES, DumpProfile

PANELS = ("score", "length", "token_ids")


def _shares(counts: tuple[int, ...]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return c / c.sum() if c.sum() else c


def profile_png(current: DumpProfile, reference: DumpProfile | None = None, dpi: int = 70) -> bytes:
    """PNG bytes: one bar panel per feature in :data:`PANELS`, this dump against ``reference``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    for ax, feature in zip(axes, PANELS):
        title, labels = FEATURES[feature]
        x = np.arange(len(labels))
        width = 0.42 if reference is not None else 0.8
        ax.bar(x - (width / 2 if reference is not None else 0), _shares(getattr(current, feature)), width,
               label=f"this dump ({current.rows:,})")
        if reference is not None:
            ax.bar(x + width / 2, _shares(getattr(reference, feature)), width, alpha=0.7,
                   label=f"model's evaluation data ({reference.rows:,})")
        ax.set_title(title)
        ax.set_ylabel("share of reviews" if feature != "token_ids" else "share of tokens")
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
