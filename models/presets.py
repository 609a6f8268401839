"""Named training settings.  ``seed`` is the Keras tutorial's setting and must stay
exactly as it is; ``default`` is the better setting we ship."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from models.preprocessing import Preprocessing


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "seed"
    # preprocessing
    maxlen: int = 50
    padding: str = "post"
    truncating: str = "post"
    num_words: int | None = None
    skip_top: int = 0
    # architecture: Embedding(vocab, embedding_dim) -> lstm_layers x [Bi]LSTM(lstm_units) -> [pool]
    #               -> Dense(1, sigmoid)
    embedding_dim: int = 300
    lstm_units: int = 128
    bidirectional: bool = False
    pooling: str = "last"  # "last" (LSTM's final state) | "max" (global max over time)
    embedding_dropout: float = 0.0
    dropout: float = 0.0
    # Word dropout (training only, needs bucket_width): every epoch a fresh random share of each
    # review's words is replaced by the out-of-vocabulary index.  Nothing changes at inference.
    token_dropout: float = 0.0
    lstm_layers: int = 1
    mask_zero: bool = False  # mask padding (index 0): LSTMs skip it exactly
    # Length bucketing (needs mask_zero): batches of similar-length reviews, each cut to its
    # longest review rounded up to a multiple of bucket_width.  0: feed the padded matrix.
    bucket_width: int = 0
    # optimisation
    epochs: int = 1
    batch_size: int = 100
    learning_rate: float = 1e-3
    learning_rate_decay: float = 1.0  # epoch e (from 0) trains at learning_rate * learning_rate_decay**e
    # > 0: Polyak averaging - the optimizer keeps an exponential moving average of the weights
    # and the model takes it over at the end of every epoch, before validation (0: off).
    ema_momentum: float = 0.0
    validation_split: float = 0.1
    early_stopping_patience: int | None = None  # None: train all epochs
    # What early stopping (and the choice of the epoch whose weights are kept) watches on the
    # validation split: "val_loss" (lower is better) or "val_accuracy" (higher is better).
    early_stopping_monitor: str = "val_loss"
    seed: int = 42

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
    ),
}


# The most accurate recipe found so far (test 0.8937 against default's 0.8866): default with two
# BiLSTM layers, chosen on the validation split (bench/README.md, bench/accuracy.py), then trained
# on all 25,000 training reviews for the 2 epochs that validation picked.  No validation split, so
# no early stopping and no validation curves; about 2x default's train and scoring time.
PRESETS["deep"] = replace(PRESETS["default"], preset="deep", lstm_layers=2, epochs=2, validation_split=0.0,
                          early_stopping_patience=None)


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return base.with_overrides(**overrides)
