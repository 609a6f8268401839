"""Loading the IMDB data and turning it into training matrices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from infra.imdb import ImdbData, load_imdb
from models.preprocessing import Preprocessing, lengths, to_matrix
from models.presets import TrainConfig
from models.training import validation_split
from tasks.reporting import logger


@dataclass
class TrainingSet:
    preprocessing: Preprocessing
    fingerprint: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_lengths: np.ndarray


@task(name="load-imdb", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def load_data(data: str = "auto", cache_dir: str | None = None) -> ImdbData:
    imdb = load_imdb(data, cache_dir=cache_dir)
    s = imdb.summary()
    logger().info("IMDB data from %s: %s train / %s test reviews, vocabulary %s", imdb.source,
                  len(imdb.train_labels), len(imdb.test_labels), imdb.vocab_size)
    logger().debug("data summary: %s", s)
    return imdb


@task(name="prepare-matrices", cache_policy=NO_CACHE)
def prepare(imdb: ImdbData, config: TrainConfig) -> TrainingSet:
    prep = config.preprocessing(vocab_size=imdb.vocab_size)
    x = to_matrix(imdb.train_tokens, prep)
    y = np.asarray(imdb.train_labels, dtype=np.int8)
    split = validation_split(len(y), config.validation_split, config.seed)
    return TrainingSet(
        preprocessing=prep,
        fingerprint=imdb.fingerprint(prep.to_dict()),
        x_train=x[split.train],
        y_train=y[split.train],
        x_val=x[split.validation],
        y_val=y[split.validation],
        x_test=to_matrix(imdb.test_tokens, prep),
        y_test=np.asarray(imdb.test_labels, dtype=np.int8),
        # Length without the start marker: what a reader would call review length.
        test_lengths=np.maximum(lengths(imdb.test_tokens) - 1, 0),
    )
