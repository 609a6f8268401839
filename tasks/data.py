"""Loading the IMDB data (plus any labelled reviews) and turning it into training matrices."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from infra import storage
from infra.labelled_inputs import read_labelled
from models.data_snapshot import RunInputs
from models.imdb_dataset import ImdbData, load_imdb
from models.joint_vocabulary import JointData, join_labelled
from models.labelled_data import LabelledSet, judge_labelled
from models.preprocessing import Preprocessing, lengths, to_matrix
from models.presets import TrainConfig
from models.training import validation_split
from tasks.lazy_task import task
from tasks.reporting import logger, table


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
    # The labelled holdout (empty without labelled data): never trained on, never in the vocabulary.
    x_holdout: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))
    y_holdout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    holdout_tokens: pa.ListArray = field(default_factory=lambda: pa.array([], pa.list_(pa.int32())))  # uncut
    # The test reviews uncut (x_test is cut to maxlen): the version's drift reference counts their
    # real lengths, as a scoring run counts a dump's.  Empty: no reference is stored.
    test_tokens: pa.ListArray = field(default_factory=lambda: pa.array([], pa.list_(pa.int32())))


@task(name="load-imdb", retries=1, retry_delay_seconds=5)
def load_data(data: str = "auto", cache_dir: str | None = None) -> ImdbData:
    imdb = load_imdb(data, cache_dir=cache_dir)
    s = imdb.summary()
    logger().info("IMDB data from %s: %s train / %s test reviews, vocabulary %s", imdb.source,
                  len(imdb.train_labels), len(imdb.test_labels), imdb.vocab_size)
    logger().debug("data summary: %s", s)
    return imdb


@task(name="add-labelled-data", retries=2, retry_delay_seconds=[2, 10],
      retry_on=storage.is_transient)
def add_labelled(imdb: ImdbData, inputs: RunInputs) -> JointData:
    """Read, validate, deduplicate and split the run's labelled files, then join their train rows
    to IMDB's under one vocabulary.  Every row not used is reported with its reason."""
    labelled = LabelledSet(inputs.holdout_share)
    if inputs.files:
        labelled = judge_labelled(((f, read_labelled(f)) for f in inputs.files), imdb, inputs.holdout_share)
        log = logger()
        for f in labelled.files:
            (log.warning if f.rows_rejected else log.info)("%s", f.log_line())
        table("labelled-data", labelled.table_rows(), "Labelled rows per file: read = used + rejected + duplicates")
        if examples := labelled.example_rows():
            table("labelled-rejected", examples,
                  "Examples of labelled rows not used (file, row, reason); the counts are in labelled-data")
    return join_labelled(imdb, labelled)


@task(name="prepare-matrices")
def prepare(imdb: ImdbData, config: TrainConfig,
            holdout_tokens: pa.Array | None = None,
            holdout_labels: np.ndarray | None = None) -> TrainingSet:
    prep = config.preprocessing(vocab_size=imdb.vocab_size)
    if holdout_tokens is None:
        holdout_tokens, holdout_labels = pa.array([], pa.list_(pa.int32())), np.zeros(0, dtype=np.int8)
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
        x_holdout=to_matrix(holdout_tokens, prep),
        y_holdout=np.asarray(holdout_labels, dtype=np.int8),
        holdout_tokens=holdout_tokens,
        test_tokens=imdb.test_tokens,
    )
