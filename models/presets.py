"""Named training settings.  ``seed`` is the Keras tutorial's setting and must stay
exactly as it is; ``default`` is the better setting we ship."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, Optional, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from models.preprocessing import Preprocessing


def _setting(default: Any, help: str) -> Any:
    # The one place a training setting is described: the CLI options and the flow's parameter
    # schema (TrainOverrides below) are generated from these fields.
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "seed"
    # preprocessing
    maxlen: int = _setting(50, "tokens per review: longer reviews are cut, shorter ones padded with 0")
    padding: Literal["pre", "post"] = _setting("post", "pad short reviews at the pre (start) or post (end) side")
    truncating: Literal["pre", "post"] = _setting("post", "cut long reviews at the pre (start) or post (end) side")
    num_words: int | None = _setting(None, "keep the N most frequent training words, the rest become "
                                           "out-of-vocabulary (none: all)")
    skip_top: int = _setting(0, "also map the N most frequent words to out-of-vocabulary")
    # architecture: Embedding(vocab, embedding_dim) -> lstm_layers x [Bi]LSTM(lstm_units) -> [pool]
    #               -> Dense(1, sigmoid)
    embedding_dim: int = _setting(300, "embedding width")
    lstm_units: int = _setting(128, "units per LSTM layer (per direction when bidirectional)")
    bidirectional: bool = _setting(False, "Bidirectional LSTM layers")
    pooling: Literal["last", "max"] = _setting("last", "last (the LSTM's final state) or max (global max over time)")
    embedding_dropout: float = _setting(0.0, "spatial dropout rate after the embedding")
    dropout: float = _setting(0.0, "dropout rate before the output layer")
    # Nothing changes at inference.
    token_dropout: float = _setting(0.0, "training-only word dropout: this share of each review's words become "
                                         "out-of-vocabulary each epoch (needs bucket_width)")
    lstm_layers: int = _setting(1, "stacked [Bi]LSTM layers")
    mask_zero: bool = _setting(False, "mask the padding (index 0), so scores do not depend on it")
    bucket_width: int = _setting(0, "train on length-bucketed batches cut to a multiple of N tokens (needs "
                                    "mask_zero; 0: the padded matrix)")
    # The n-gram bag branch beside the LSTM (models/ngram_layers.py), concatenated before the output.
    ngram_buckets: int = _setting(0, "hash buckets of the n-gram bag branch beside the LSTM (0: no branch)")
    ngram_order: int = _setting(2, "the bag holds the word n-grams of orders 1..N (at most 3)")
    ngram_dim: int = _setting(16, "width of the n-gram bag's embedding")
    # Trained jointly, the LSTM overfits in 1-2 epochs while the bag needs ~5 at a far larger
    # step: apart, each trains to its own best epoch on validation (models/training.py).
    ngram_epochs: int = _setting(0, "train the n-gram bag apart first, for at most N epochs, then the LSTM alone, "
                                    "and serve them as one network mixing their logits by the validation split's weight "
                                    "(0: train them jointly)")
    ngram_batch_size: int = _setting(256, "batch size of the n-gram bag trained apart")
    ngram_learning_rate: float = _setting(1e-2, "Adam's learning rate for the n-gram bag trained apart")
    # NB scaling is what lifts a linear bag from ~0.90 to ~0.91 on IMDB (bench/README.md, "Issue #17").
    ngram_weighting: Literal["mean", "nb"] = _setting(
        "mean", "mean: the mean of learned ngram_dim-wide rows over the review's n-grams (fastText); nb: NBSVM's "
                "linear model, each bucket weighs its naive-Bayes log-count ratio on the training split by a learned "
                "factor under an L2 penalty, summed over the n-grams (needs ngram_dim 1 and ngram_epochs)")
    ngram_distinct: bool = _setting(False, "the bag counts each distinct n-gram of a review once (binarised "
                                           "features), not every occurrence")
    ngram_c: float = _setting(0.3, "inverse L2 strength of the nb bag's factors, as liblinear's C: the penalty is "
                                   "|factors|^2 / (2 C n) for n training reviews")
    # optimisation
    epochs: int = _setting(1, "training epochs (an upper bound when early stopping is on)")
    batch_size: int = _setting(100, "training batch size")
    learning_rate: float = _setting(1e-3, "Adam's learning rate")
    learning_rate_decay: float = _setting(1.0, "epoch e (from 0) trains at learning_rate * decay**e")
    # The model takes the average over at the end of every epoch, before validation.
    ema_momentum: float = _setting(0.0, "Polyak averaging of the weights, taken over every epoch (0: off)")
    validation_split: float = _setting(0.1, "share of the training reviews held out for validation (0: none)")
    early_stopping_patience: int | None = _setting(None, "stop after N epochs without improvement on the validation "
                                                         "split (none: train every epoch)")
    # Also picks the epoch whose weights are kept.
    early_stopping_monitor: Literal["val_loss", "val_accuracy"] = _setting(
        "val_loss", "val_loss or val_accuracy: what early stopping and the kept epoch watch")
    seed: int = _setting(42, "random seed: the same preset and seed give the same model")

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {self.validation_split}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.pooling not in ("last", "max"):
            raise ValueError(f"pooling must be 'last' or 'max', got {self.pooling!r}")
        if self.early_stopping_monitor not in ("val_loss", "val_accuracy"):
            raise ValueError(f"early_stopping_monitor must be 'val_loss' or 'val_accuracy', "
                             f"got {self.early_stopping_monitor!r}")
        if self.ngram_buckets and (self.ngram_buckets < 2 or not 1 <= self.ngram_order <= 3 or self.ngram_dim < 1):
            raise ValueError(f"the n-gram bag needs ngram_buckets >= 2, ngram_order in 1..3 and ngram_dim >= 1, got "
                             f"{self.ngram_buckets}, {self.ngram_order}, {self.ngram_dim}")
        if self.ngram_epochs and not self.ngram_buckets:
            raise ValueError("ngram_epochs needs ngram_buckets (the bag to train apart)")
        if self.ngram_weighting not in ("mean", "nb"):
            raise ValueError(f"ngram_weighting must be 'mean' or 'nb', got {self.ngram_weighting!r}")
        if self.ngram_weighting == "nb" and self.ngram_buckets and (self.ngram_dim != 1 or not self.ngram_epochs):
            # The ratios come from the training split before the bag trains, one per bucket.
            raise ValueError(f"ngram_weighting 'nb' needs ngram_dim 1 and ngram_epochs >= 1 (trained apart), got "
                             f"{self.ngram_dim} and {self.ngram_epochs}")
        if self.ngram_c <= 0:
            raise ValueError(f"ngram_c must be > 0, got {self.ngram_c}")
        if self.ngram_epochs < 0 or self.ngram_batch_size < 1 or self.ngram_learning_rate <= 0:
            raise ValueError(f"ngram_epochs must be >= 0, ngram_batch_size >= 1 and ngram_learning_rate > 0, got "
                             f"{self.ngram_epochs}, {self.ngram_batch_size}, {self.ngram_learning_rate}")
        if self.lstm_layers < 1:
            raise ValueError(f"lstm_layers must be >= 1, got {self.lstm_layers}")
        if self.bucket_width < 0:
            raise ValueError(f"bucket_width must be >= 0, got {self.bucket_width}")
        if self.token_dropout and not self.bucket_width:
            raise ValueError("token_dropout needs bucket_width (it is applied in the bucketed training pipeline)")
        if self.bucket_width and not self.mask_zero:
            # Without the mask a review's score depends on its padding: training on cut
            # batches and serving the maxlen matrix would disagree.
            raise ValueError("bucket_width needs mask_zero=True")
        if not 0.0 < self.learning_rate_decay <= 1.0:
            raise ValueError(f"learning_rate_decay must be in (0, 1], got {self.learning_rate_decay}")
        for name in ("embedding_dropout", "dropout", "token_dropout", "ema_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        # Fail on bad preprocessing values here, before any data is loaded.
        self.preprocessing(vocab_size=0)

    def preprocessing(self, vocab_size: int) -> Preprocessing:
        return Preprocessing(
            maxlen=self.maxlen,
            padding=self.padding,
            truncating=self.truncating,
            num_words=self.num_words,
            skip_top=self.skip_top,
            vocab_size=vocab_size,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **overrides: Any) -> "TrainConfig":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, TrainConfig] = {
    # The tutorial: maxlen 50, post padding/truncating, full vocabulary, 1 epoch, batch 100, Adam.
    "seed": TrainConfig(preset="seed"),
    "default": TrainConfig(
        preset="default",
        maxlen=500,
        padding="pre",
        truncating="pre",
        num_words=20000,
        embedding_dim=128,
        lstm_units=64,
        bidirectional=True,
        pooling="max",
        embedding_dropout=0.3,
        dropout=0.3,
        lstm_layers=1,
        mask_zero=True,
        bucket_width=16,
        epochs=3,
        batch_size=32,
        learning_rate=1e-3,
        learning_rate_decay=0.3,
        validation_split=0.1,
        early_stopping_patience=1,
        # An NBSVM-like bag of hashed, distinct uni+bigrams trained apart, its logit mixed with the
        # BiLSTM's by a weight chosen on validation (bench/README.md, "Issue #17").
        ngram_buckets=1 << 20,
        ngram_order=2,
        ngram_dim=1,
        ngram_weighting="nb",
        ngram_distinct=True,
        ngram_c=0.3,
        ngram_epochs=8,
        ngram_batch_size=256,
        ngram_learning_rate=1e-2,
    ),
}


# The best BiLSTM alone (test 0.8937 against 0.8866 for default's BiLSTM): two BiLSTM layers, chosen
# on the validation split (bench/README.md, bench/accuracy.py), then trained on all 25,000 training
# reviews for the 2 epochs that validation picked.  No validation split, so no early stopping, no
# validation curves and nothing to weigh a bag against: no n-gram bag.
PRESETS["deep"] = replace(PRESETS["default"], preset="deep", lstm_layers=2, epochs=2, validation_split=0.0,
                          early_stopping_patience=None,
                          **{f.name: f.default for f in fields(TrainConfig) if f.name.startswith("ngram_")})


# A preset name, as the flow's parameter schema and the CLI's choices offer it.
PresetName = Literal[tuple(PRESETS)]  # type: ignore[valid-type]


def _overrides_model() -> type[BaseModel]:
    hints = get_type_hints(TrainConfig)
    settings = {f.name: (Optional[hints[f.name]], Field(None, description=f.metadata["help"]))
                for f in fields(TrainConfig) if f.name != "preset"}
    return create_model("TrainOverrides", __config__=ConfigDict(extra="forbid"),
                        __doc__="Training settings that replace the preset's; left out (null): the preset's value.",
                        **settings)


# Generated from TrainConfig, so a new setting is a flow parameter (with Prefect's schema and
# validation) and a CLI option without being declared again.
TrainOverrides = _overrides_model()


def overrides_dict(overrides: BaseModel | dict[str, Any] | None) -> dict[str, Any]:
    """The settings an override object actually sets."""
    if overrides is None:
        return {}
    if isinstance(overrides, BaseModel):
        return overrides.model_dump(exclude_none=True)
    return {k: v for k, v in TrainOverrides.model_validate(overrides).model_dump().items() if v is not None}


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.with_overrides(**overrides)
