"""The ``reviews`` CLI's help texts and error reporting (kept out of ``flows/cli.py``,
which only wires arguments to flows).

A failing command ends on one line ``reviews: error: ...`` naming what the user passed.
Prefect still records every traceback in the flow run's logs (the API handler); only the
console copy drops it, unless ``reviews --debug``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os

# What each training override means; the presets' values are appended by train_help().
TRAIN_HELP = {
    "epochs": "training epochs (an upper bound when early stopping is on)",
    "batch_size": "training batch size",
    "maxlen": "tokens per review: longer reviews are cut, shorter ones padded with 0",
    "padding": "pad short reviews at the pre (start) or post (end) side",
    "truncating": "cut long reviews at the pre (start) or post (end) side",
    "num_words": "keep the N most frequent training words, the rest become out-of-vocabulary (none: all)",
    "skip_top": "also map the N most frequent words to out-of-vocabulary",
    "embedding_dim": "embedding width",
    "lstm_units": "units per LSTM layer (per direction when bidirectional)",
    "pooling": "last (the LSTM's final state) or max (global max over time)",
    "embedding_dropout": "spatial dropout rate after the embedding",
    "dropout": "dropout rate before the output layer",
    "learning_rate": "Adam's learning rate",
    "validation_split": "share of the training reviews held out for validation (0: none)",
    "early_stopping_patience": "stop after N epochs without improvement on the validation split (none: train "
                               "every epoch)",
    "lstm_layers": "stacked [Bi]LSTM layers",
    "bucket_width": "train on length-bucketed batches cut to a multiple of N tokens (needs --mask-zero; 0: the "
                    "padded matrix)",
    "learning_rate_decay": "epoch e (from 0) trains at learning_rate * decay**e",
    "ema_momentum": "Polyak averaging of the weights, taken over every epoch (0: off)",
    "early_stopping_monitor": "val_loss or val_accuracy: what early stopping and the kept epoch watch",
    "token_dropout": "training-only word dropout: this share of each review's words become out-of-vocabulary "
                     "each epoch (needs --bucket-width)",
    "seed": "random seed: the same preset and seed give the same model",
    "bidirectional": "Bidirectional LSTM layers",
    "mask_zero": "mask the padding (index 0), so scores do not depend on it",
}


def train_help(name: str, presets: tuple[str, ...] = ("seed", "default")) -> str:
    from models.presets import PRESETS

    def shown(value: object) -> str:
        return "none" if value is None else str(value)

    values = [shown(getattr(PRESETS[p], name)) for p in presets]
    if len(set(values)) == 1:
        uses = f"{' and '.join(presets)} use {values[0]}"
    else:
        uses = ", ".join(f"{p} uses {v}" for p, v in zip(presets, values))
    # '%' would be read as a format specifier by argparse.
    return f"{TRAIN_HELP[name]} (default: the preset's value; {uses})".replace("%", "%%")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help.  A None default means something different for
    each option, so its help text says what ("default: the preset's value"); so may any
    help that words its default itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or "").lower():
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse makes subparsers of the parent parser's class, so every subcommand,
    including ones added later, gets the HelpFormatter."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class _WithoutTraceback(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        # A copy: handlers share the record, and the API handler keeps the traceback.
        record = copy.copy(record)
        record.exc_info = record.exc_text = record.stack_info = None
        return self.inner.format(record)


def console_without_tracebacks() -> None:
    """Prefect's console handlers print log lines without their tracebacks."""
    import prefect.main  # noqa: F401  (sets Prefect's logging up, as running a flow would)
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in (None, "uvicorn"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))


def check_storage(*uris: str | None) -> None:
    """Refused credentials, a missing bucket or an unreachable endpoint fail here, within
    seconds, before Prefect starts a flow run (and, for train, before the training)."""
    from infra import storage

    for uri in uris:
        if uri:
            storage.exists(storage.resolve(uri))


def given_uris(args: argparse.Namespace) -> list[str]:
    """The locations the user passed (or defaulted to), which error lines name."""
    names = ("input", "output", "registry", "data", "cache_dir", "workdir")
    return [v for v in (getattr(args, n, None) for n in names) if isinstance(v, str)]


def storage_error_line(exc, given: list[str]) -> str:
    """A StorageError's message; when the store itself refused, naming the URI among ``given``
    that holds the location it failed on (``s3://b/out``, not ``s3://b/out/_claims/<id>.json``)."""
    if exc.uri is None or exc.reason is None:
        return str(exc)
    inside = [g for g in given if g and _holds(g, exc.uri)]
    return f"{max(inside, key=len) if inside else exc.uri}: {exc.reason}"


def _holds(given: str, uri: str) -> bool:
    from urllib.parse import urlparse

    # Compared as storage.resolve() spells locations; a glob holds what lies under its literal head.
    head = given
    for ch in "*?[":
        head = head.split(ch, 1)[0]
    if head != given:
        head = head.rsplit("/", 1)[0] if "/" in head else "."
    parsed = urlparse(head)
    if parsed.scheme in ("s3", "s3a"):
        base = f"s3://{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    else:
        base = os.path.abspath(os.path.expanduser(parsed.path if parsed.scheme == "file" else head))
    return uri == base or uri.startswith(base.rstrip("/") + "/")
