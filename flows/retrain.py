"""``retrain-sentiment``: load data -> train (with validation) -> evaluate on test -> register."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from infra.settings import default_data, default_registry
from models.presets import PresetName, TrainOverrides, get_preset, overrides_dict
from tasks.data import add_labelled, load_data, prepare
from tasks.lineage import skip_if_unchanged, snapshot_inputs
from tasks.registry import gate, register
from tasks.reporting import rename_run
from tasks.retention import prune_registry
from tasks.training import evaluate, train


@flow(name="retrain-sentiment", log_prints=True, validate_parameters=True, flow_run_name="retrain-{preset}")
def retrain_sentiment(
    preset: PresetName = "seed",
    overrides: TrainOverrides | None = None,
    registry: str | None = None,
    data: str | None = None,
    cache_dir: str | None = None,
    min_improvement: float = 0.0,
    labelled: list[str] | None = None,
    holdout_share: float = 0.2,
    force: bool = False,
    keep_versions: Annotated[int, Field(ge=1)] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register a model; promote it if it passes the gate.

    Args:
        preset: named training settings (models/presets.py)
        overrides: training settings that replace the preset's (left out: the preset's value)
        registry: model registry URI (default $REVIEWS_REGISTRY)
        data: IMDB data source (default $REVIEWS_DATA)
        cache_dir: IMDB data cache (default $REVIEWS_DATA_DIR)
        min_improvement: accuracy gain over the champion, on the shared evaluation set, that the
            challenger must exceed to be promoted (README: gated promotion)
        labelled: labelled Parquet files, prefixes or globs (local or s3://; columns review_id,
            label, text) added to the IMDB train split, split into train and holdout by id
        holdout_share: share of the labelled reviews held out (by a stable hash of review_id)
        force: train even when the data snapshot, config and code equal the latest version's
        keep_versions: after the gate, prune the registry to this many newest versions plus the
            champion and its rollback history (models/retention.py); None keeps everything
    """
    config = get_preset(preset, **overrides_dict(overrides))
    registry_uri = registry or default_registry()
    imdb = load_data(data or default_data(), cache_dir)
    inputs = snapshot_inputs(imdb, labelled or [], holdout_share)
    skipped = skip_if_unchanged(registry_uri, inputs, config, force)
    if skipped is not None:
        rename_run(f"retrain-{config.preset}-skipped", only_if_named=f"retrain-{preset}")
        return skipped
    joint = add_labelled(imdb, inputs)
    imdb = joint.imdb  # IMDB train + labelled train under one vocabulary; test encoded with it
    ts = prepare(imdb, config, joint.holdout_tokens, joint.holdout_labels)
    result = train(ts, config)
    report = evaluate(result, ts)
    version = register(registry_uri, result, ts, config, report, imdb,
                       lineage=inputs.metadata(joint.labelled))
    decision = gate(registry_uri, version, imdb, ts, min_improvement)
    if keep_versions is not None:
        prune_registry(registry_uri, keep_versions)
    rename_run(f"retrain-{config.preset}-{version}-{'promoted' if decision['promote'] else 'rejected'}",
               only_if_named=f"retrain-{preset}")
    return {
        "skipped": False,
        "version": version,
        "promoted": decision["promote"],
        "champion": version if decision["promote"] else decision["champion"],
        "test_accuracy": round(report["accuracy"], 4),
        "test_auc": round(report["auc"], 4),
        "train_seconds": report["train_seconds"],
    }
