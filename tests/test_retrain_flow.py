"""retrain-sentiment end to end on tiny real-format data under a real Prefect API."""

from __future__ import annotations

import json
import os

import pytest

from models.registry import ModelRegistry
from tests.cli_process import run_cli, train_tiny
from tests.test_run_pictures import assert_run_shows_pictures_tags_and_first_version


def test_train_cli_runs_the_flow_and_registers(tmp_path, tiny_tgz, prefect_api):
    registry = str(tmp_path / "registry")
    summary = train_tiny(registry, tiny_tgz, "--epochs", "3", "--learning-rate", "0.01")
    assert set(summary) >= {"version", "test_accuracy", "test_auc", "train_seconds"}
    assert summary["test_accuracy"] > 0.8, "the sentiment words are easy to learn"
    reg = ModelRegistry(registry)
    assert reg.champion() == summary["version"] and summary["promoted"]
    meta = reg.metadata(summary["version"])
    assert meta["hyperparameters"]["epochs"] == 3 and meta["hyperparameters"]["maxlen"] == 12
    assert meta["data"]["source"].startswith("tgz:") and len(meta["data"]["fingerprint"]) == 64
    assert meta["data"]["test_rows"] == 120 and meta["data"]["train_rows"] + meta["data"]["validation_rows"] == 120
    ev = meta["evaluation"]
    assert set(ev["confusion"]) == {"tn", "fp", "fn", "tp"} and sum(ev["confusion"].values()) == 120
    assert ev["calibration"]["bins"] and ev["accuracy_by_length"]
    assert len(ev["history"]["loss"]) == 3 and "val_loss" in ev["history"]
    assert "report.png" in meta["files"]
    # The int8 graph is stored exactly when its measured accuracy cost is within the bound.
    q = meta["int8"]
    assert q["test_rows"] == 120 and q["accuracy_float32"] == pytest.approx(ev["accuracy"], abs=1e-6)
    assert q["approved"] == (q["accuracy_drop"] <= q["max_accuracy_drop"]) == ("model.fast-int8.onnx" in meta["files"])
    assert reg.vocabulary(summary["version"])["words"], "the train vocabulary is saved with the model"

    # Prefect recorded the metrics table as an artifact of the run.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["test-metrics"])))
    assert arts and "accuracy" in str(arts[-1].data)
    assert_run_shows_pictures_tags_and_first_version(summary["version"])

    # Same seed, same data: the same model (reproducible), registered as a new version - which
    # predicts what the champion predicts on every review, so it does not replace it.
    again = train_tiny(registry, tiny_tgz, "--epochs", "3", "--learning-rate", "0.01", "--force")
    assert again["version"] != summary["version"]
    assert abs(again["test_accuracy"] - summary["test_accuracy"]) <= 0.005
    decisions = [r for r in reg.audit_log() if r["action"] == "gate"]
    assert len(decisions) == 2
    assert not again["promoted"] and reg.champion() == summary["version"] == again["champion"]
    assert decisions[1]["reason"].startswith("identical predictions on all 120 evaluation reviews")
    assert decisions[1]["comparison"]["accuracy_difference"] == 0


def test_train_bad_data_is_a_clear_error(tmp_path, prefect_api):
    code, _, err = run_cli("train", "--registry", str(tmp_path / "r"), "--data", str(tmp_path / "missing.npz"))
    assert code == 2
    assert "missing.npz" in err


def test_bad_hyperparameter_is_refused_before_training(tmp_path, prefect_api):
    code, _, err = run_cli("train", "--registry", str(tmp_path / "r"), "--padding", "sideways")
    assert code == 2
    assert "padding" in err


def test_every_hyperparameter_is_a_flow_parameter_and_a_cli_option():
    """TrainConfig is the one declaration: the flow's `overrides` schema and the CLI's options are
    generated from its fields, with the same types and choices, and nothing else declares them."""
    import dataclasses
    import inspect
    import typing

    from prefect.utilities.callables import parameter_schema

    from flows.cli import build_parser
    from flows.retrain import retrain_sentiment
    from models.presets import PRESETS, TrainConfig, TrainOverrides

    settings = {f.name for f in dataclasses.fields(TrainConfig)} - {"preset"}
    assert settings.isdisjoint(inspect.signature(retrain_sentiment.fn).parameters)
    schema = parameter_schema(retrain_sentiment).model_dump_for_openapi()
    assert schema["properties"]["preset"]["enum"] == list(PRESETS) == ["seed", "default", "deep"]
    declared = schema["definitions"]["TrainOverrides"]["properties"]
    assert set(declared) == set(TrainOverrides.model_fields) == settings
    assert declared["padding"]["anyOf"][0]["enum"] == ["pre", "post"]
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    assert settings <= set(options) and options["preset"].choices == list(PRESETS)
    hints = typing.get_type_hints(TrainConfig)
    for name in settings:
        field = dataclasses.fields(TrainConfig)[[f.name for f in dataclasses.fields(TrainConfig)].index(name)]
        assert field.metadata["help"] in options[name].help and declared[name]["description"] == field.metadata["help"]
        if typing.get_origin(hints[name]) is typing.Literal:
            assert tuple(options[name].choices) == typing.get_args(hints[name])


TINY = {"maxlen": 12, "embedding_dim": 8, "lstm_units": 4, "batch_size": 16, "epochs": 1}


def _nightly_parameters() -> dict:
    import yaml

    with open(os.path.join(os.path.dirname(__file__), "..", "prefect.yaml")) as f:
        doc = yaml.safe_load(f)
    return next(d for d in doc["deployments"] if d["name"] == "nightly")["parameters"]


def test_nightly_parameters_and_every_preset_fit_the_flows_parameter_schema():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from flows.retrain import retrain_sentiment
    from models.presets import PRESETS

    schema = parameter_schema(retrain_sentiment).model_dump_for_openapi()
    nightly = _nightly_parameters()
    assert nightly["preset"] == "default"
    validate(nightly, schema, raise_on_error=True)
    for preset in PRESETS:
        validate({**nightly, "preset": preset, "overrides": TINY}, schema, raise_on_error=True)
    for bad, field in [({"preset": "deeper"}, "preset"), ({"overrides": {"epochz": 1}}, "overrides"),
                       ({"overrides": {"padding": "sideways"}}, "overrides.padding"),
                       ({"overrides": {"maxlen": "long"}}, "overrides.maxlen")]:
        with pytest.raises(ValidationError) as err:
            validate({**nightly, **bad}, schema, raise_on_error=True)
        assert field in str(err.value)


def test_flow_refuses_unknown_or_mistyped_settings_before_it_runs(tmp_path, prefect_api):
    from prefect.exceptions import ParameterTypeError

    from flows.retrain import retrain_sentiment

    for bad in ({"preset": "deeper"}, {"overrides": {"epochz": 1}}, {"overrides": {"padding": "sideways"}}):
        with pytest.raises(ParameterTypeError):
            retrain_sentiment(registry=str(tmp_path / "r"), data=str(tmp_path / "missing.npz"), **bad)
    assert not (tmp_path / "r").exists()


def test_every_preset_runs_from_the_cli_parser_through_the_flow(tmp_path, tiny_tgz, prefect_api, capsys):
    """`reviews train --preset P` for every preset, deep included: parsed, passed to the flow in the
    shape the nightly deployment uses (checked against its schema), trained and registered."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    from flows.cli import build_parser, main
    from flows.cli_support import training_overrides
    from flows.retrain import retrain_sentiment
    from models.presets import PRESETS, get_preset

    schema = parameter_schema(retrain_sentiment).model_dump_for_openapi()
    registry = str(tmp_path / "registry")
    tiny_args = [a for k, v in TINY.items() for a in ("--" + k.replace("_", "-"), str(v))]
    for preset in PRESETS:
        argv = ["train", "--preset", preset, "--registry", registry, "--data", tiny_tgz, *tiny_args]
        args = build_parser().parse_args(argv)
        assert training_overrides(args) == TINY
        validate({"preset": args.preset, "overrides": training_overrides(args)}, schema, raise_on_error=True)
        capsys.readouterr()
        assert main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        meta = ModelRegistry(registry).metadata(summary["version"])
        assert meta["preset"] == preset
        assert meta["hyperparameters"] == get_preset(preset, **TINY).to_dict()
    assert [v["preset"] for v in ModelRegistry(registry).versions()] == list(PRESETS)
