"""Versioned model registry on any storage URI (local directory or ``s3://bucket/prefix``).

Layout under the registry root::

    versions/<version>/model.keras          Keras model (loaded with safe_mode=True only)
                      /preprocessing.json   maxlen, padding, truncating, num_words, skip_top, ...
                      /vocabulary.json      train-split vocabulary (absent for index-only data)
                      /model.fast.onnx      the gate-table graph (models.gate_graph), when the topology allows,
                      /gate_tables.bin      its gate tables (ONNX external data, shared with the int8 graph;
                                            versions registered before embed them in each graph)
                      /model.onnx           the plain tf2onnx export, only when there is no gate-table graph
                                            (models.onnx_export; versions registered before have both)
                      /probe.npy, /probe_scores.npy   probe batch and Keras' scores for it
                      /model.fast-int8.onnx, /probe_scores_int8.npy   int8 graph and its probe scores,
                                            only when its test-accuracy cost was within bound
                                            (models.quantization; "int8" in metadata.json says why not)
                      /metadata.json        written LAST: the commit marker, with file checksums
    champion.json                           the production version and the earlier champions (``history``,
                                            what rollbacks walk back through); one atomic write
    audit/<timestamp>-<action>.json         every champion change and gate decision

A version folder without ``metadata.json`` is an unfinished registration and is
invisible.  Files are checked against the checksums in ``metadata.json`` on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tempfile
from datetime import datetime, timezone
from typing import Any

import numpy as np

from infra import storage
from models.npy import npy_bytes
from models.onnx_export import FAST_FILE, PLAIN_FILE, inference_graphs
from models.onnx_graph import TABLES_FILE
from models.predictors import (
    KerasPredictor,
    OnnxPredictor,
    ParityError,
    Predictor,
    check_parity,
    gate_graph_rows,
    keras_reference,
    rows_per_batch,
)
from models.preprocessing import Preprocessing
from models.quantization import INT8_FILE, INT8_PROBE_SCORES, int8_refusal

CHAMPION = "champion"
PREDICTOR_KINDS = ("auto", "fast", "onnx", "keras", "int8")


class RegistryError(RuntimeError):
    """A registry operation failed; the message names the registry and version."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "pyarrow", "onnxruntime", "tf2onnx", "prefect"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _inference_copy(model):
    """The model without its optimizer state: Adam's two slots would triple the file.

    Not ``keras.models.clone_model``: it compiles the clone like the original, which builds a
    fresh Adam whose slots ``save`` then writes (``.keras`` ignores ``include_optimizer``).
    ``get_config`` holds no compile config, and ``from_config`` deserialises the layers in
    Keras' safe mode, so Lambda layers are refused here as on load.
    """
    copy = type(model).from_config(model.get_config())
    for target, source in zip(copy.weights, model.weights, strict=True):  # no NumPy copy of all the weights
        target.assign(source)
    return copy


def _safe_load(path: str, what: str):
    import keras

    import models.ngram_layers  # noqa: F401  (registers the n-gram branch's layers for deserialisation)

    try:
        # safe_mode refuses Lambda layers and any other deserialised Python code.
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError) as exc:  # Keras refuses unsafe configs with either
        raise RegistryError(f"{what} cannot be loaded with Keras safe_mode=True: {str(exc).splitlines()[0]}") from exc


class ModelRegistry:
    def __init__(self, uri: str | storage.Location):
        self.root = storage.resolve(uri)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.root.uri!r})"

    # ---- paths ---------------------------------------------------------------
    def _version_dir(self, version: str) -> storage.Location:
        if not version or "/" in version or version.startswith("."):
            raise RegistryError(f"{self.root.uri}: invalid version name {version!r}")
        return self.root.join("versions", version)

    # ---- registration --------------------------------------------------------
    def register(
        self,
        model,
        preprocessing: Preprocessing,
        vocabulary: dict[str, Any] | None,
        metadata: dict[str, Any],
        probe: np.ndarray,
        extra_files: dict[str, bytes] | None = None,
    ) -> str:
        """Save a trained model as a new immutable version; returns its name.

        The ONNX export must reproduce Keras on ``probe`` within 1e-5, else nothing is committed
        (models.onnx_export); the int8 graph's gate tables in ``extra_files`` are the float32 graph's
        too, stored once.  The first version of an empty registry becomes champion.
        """
        # Microseconds keep names in registration order; the suffix keeps concurrent ones apart.
        version = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S%f-") + secrets.token_hex(3)
        vdir = self._version_dir(version)
        reference = keras_reference(model, probe)
        with tempfile.TemporaryDirectory(prefix="reviews-register-") as tmp:
            keras_path = os.path.join(tmp, "model.keras")
            try:
                copy = _inference_copy(model)
            except ValueError as exc:  # cloning deserialises too, and refuses Lambda layers
                raise RegistryError(f"{self.root.uri}: the model to register cannot be loaded with Keras "
                                    f"safe_mode=True: {str(exc).splitlines()[0]}") from exc
            copy.save(keras_path)
            del copy  # its weights (the embedding: 106 MB at seed size) are not needed any more
            _safe_load(keras_path, f"{self.root.uri}: the model to register")
            with open(keras_path, "rb") as f:
                keras_bytes = f.read()
        extra = dict(extra_files or {})
        try:
            graphs, export = inference_graphs(model, probe, reference, tables=extra.get(TABLES_FILE))
        except ParityError as exc:
            raise RegistryError(f"{self.root.uri}: registration refused: {exc}") from exc
        if TABLES_FILE in extra and graphs.get(TABLES_FILE) is not extra[TABLES_FILE]:
            raise RegistryError(f"{self.root.uri}: registration refused: the given {TABLES_FILE} (the int8 graph's) "
                                f"does not serve this model's float32 graph ({export['fast']})")
        files: dict[str, bytes] = {
            "model.keras": keras_bytes,
            **graphs,
            "preprocessing.json": storage.json_bytes(preprocessing.to_dict()),
            "probe.npy": npy_bytes(np.ascontiguousarray(probe, dtype=np.int32)),
            "probe_scores.npy": npy_bytes(reference),
        }
        if vocabulary is not None:
            files["vocabulary.json"] = storage.json_bytes(vocabulary)
        files.update(extra)
        for name, data in files.items():
            storage.atomic_write(vdir.join(name), data)
        meta = dict(metadata)
        meta.update(
            version=version,
            created_at=_now(),
            preprocessing=preprocessing.to_dict(),
            export=export,
            libraries=library_versions(),
            files={name: _sha256(data) for name, data in files.items()},
        )
        storage.write_json(vdir.join("metadata.json"), meta)  # the commit point
        if self.champion() is None:
            self.promote(version, reason="first registered version", actor="registry")
        return version

    # ---- reading -------------------------------------------------------------
    def versions(self) -> list[dict[str, Any]]:
        """Metadata of every committed version, oldest first."""
        out = []
        for name in storage.list_dirs(self.root.join("versions")):
            meta_loc = self._version_dir(name).join("metadata.json")
            if storage.exists(meta_loc):
                out.append(storage.read_json(meta_loc))
        return sorted(out, key=lambda m: m["version"])

    def metadata(self, version: str) -> dict[str, Any]:
        loc = self._version_dir(version).join("metadata.json")
        try:
            return storage.read_json(loc)
        except FileNotFoundError:
            raise RegistryError(f"{self.root.uri}: no model version {version!r}") from None

    def champion(self) -> str | None:
        loc = self.root.join("champion.json")
        if not storage.exists(loc):
            return None
        return storage.read_json(loc)["version"]

    def resolve(self, ref: str = CHAMPION) -> str:
        """``champion``, ``latest`` or an exact version -> an exact, committed version."""
        if ref == CHAMPION:
            version = self.champion()
            if version is None:
                raise RegistryError(f"{self.root.uri}: the registry has no champion yet (train a model first)")
            return version
        if ref == "latest":
            versions = self.versions()
            if not versions:
                raise RegistryError(f"{self.root.uri}: the registry is empty")
            return versions[-1]["version"]
        self.metadata(ref)
        return ref

    def read_file(self, version: str, name: str, meta: dict[str, Any] | None = None) -> bytes:
        """A version's file, refused unless it matches the checksum recorded at registration."""
        meta = meta or self.metadata(version)
        expected = meta.get("files", {}).get(name)
        if expected is None:
            raise RegistryError(f"{self.root.uri}: version {version} has no file {name!r}")
        data = storage.read_bytes(self._version_dir(version).join(name))
        if _sha256(data) != expected:
            raise RegistryError(
                f"{self.root.uri}: {version}/{name} does not match the checksum recorded at registration; "
                "refusing to load it")
        return data

    def preprocessing(self, version: str) -> Preprocessing:
        return Preprocessing.from_dict(json.loads(self.read_file(version, "preprocessing.json")))

    def vocabulary(self, version: str) -> dict[str, Any] | None:
        meta = self.metadata(version)
        if "vocabulary.json" not in meta.get("files", {}):
            return None
        return json.loads(self.read_file(version, "vocabulary.json", meta))

    def _read_npy(self, version: str, name: str, meta: dict[str, Any]) -> np.ndarray:
        return np.load(io.BytesIO(self.read_file(version, name, meta)), allow_pickle=False)

    def probe(self, version: str) -> tuple[np.ndarray, np.ndarray]:
        meta = self.metadata(version)
        return self._read_npy(version, "probe.npy", meta), self._read_npy(version, "probe_scores.npy", meta)

    def load_keras(self, version: str):
        data = self.read_file(version, "model.keras")
        with tempfile.TemporaryDirectory(prefix="reviews-load-") as tmp:
            path = os.path.join(tmp, "model.keras")
            with open(path, "wb") as f:
                f.write(data)
            return _safe_load(path, f"{self.root.uri}: {version}/model.keras")

    def load_predictor(self, version: str, kind: str = "auto") -> Predictor:
        """A parity-checked predictor for ``version``.

        ``auto``: the gate-table ONNX graph when the version has one, else the plain ONNX
        export, else Keras.  Every predictor is checked against Keras' probe scores - except
        ``int8`` (approximate; only for versions that have an approved one, never chosen by
        ``auto``), which must reproduce its own probe scores from registration.  ``onnx``: the
        plain export, which only versions without a gate-table graph (or registered before
        models.onnx_export) have.
        """
        if kind not in PREDICTOR_KINDS:
            raise RegistryError(f"unknown predictor kind {kind!r}")
        probe, reference = self.probe(version)
        meta = self.metadata(version)
        batch = rows_per_batch(int(probe.shape[1]))
        # The gate-table graphs run step by step: their batches are sized to the cache.
        units = meta.get("hyperparameters", {}).get("lstm_units")
        step_batch = gate_graph_rows(int(probe.shape[1]), units) if units else batch
        files = meta.get("files", {})
        # Graphs registered with shared gate tables reference them as external data; older ones embed theirs.
        tables = {TABLES_FILE: self.read_file(version, TABLES_FILE, meta)} if (
            TABLES_FILE in files and kind in ("auto", "fast", "int8")) else None
        predictor: Predictor
        if kind == "int8":
            from models.fast_predictors import Int8LstmPredictor

            if INT8_FILE not in meta.get("files", {}):
                why = meta.get("int8", {}).get("reason", "registered before int8 export existed")
                raise RegistryError(f"{self.root.uri}: version {version} has no approved int8 predictor ({why})")
            refusal = int8_refusal(meta.get("int8", {}))
            if refusal:
                raise RegistryError(f"{self.root.uri}: version {version} refused for predictor=int8: {refusal}")
            predictor = Int8LstmPredictor(self.read_file(version, INT8_FILE, meta), batch_size=step_batch,
                                          external_data=tables)
            reference = self._read_npy(version, INT8_PROBE_SCORES, meta)
        elif kind in ("auto", "fast") and FAST_FILE in files:
            from models.fast_predictors import FastLstmPredictor

            predictor = FastLstmPredictor(self.read_file(version, FAST_FILE, meta), batch_size=step_batch,
                                          external_data=tables)
        elif kind == "fast":
            raise RegistryError(f"{self.root.uri}: version {version} has no fast predictor "
                                f"({meta.get('export', {}).get('fast')})")
        elif kind == "onnx" and PLAIN_FILE not in files:
            raise RegistryError(f"{self.root.uri}: version {version} has no plain ONNX graph ({PLAIN_FILE}: "
                                f"{meta.get('export', {}).get('plain')}); score it with predictor=auto or fast "
                                "(the gate-table graph, within 1e-5 of Keras), or keras")
        elif kind in ("auto", "onnx"):
            try:
                predictor = OnnxPredictor(self.read_file(version, PLAIN_FILE, meta), batch_size=batch)
            except ImportError:
                if kind == "onnx":
                    raise
                predictor = KerasPredictor(self.load_keras(version))
        else:
            predictor = KerasPredictor(self.load_keras(version))
        try:
            check_parity(predictor, probe, reference,
                         against="its own scores at registration" if kind == "int8" else "Keras")
        except ParityError as exc:
            raise RegistryError(f"{self.root.uri}: version {version}: {exc}") from exc
        return predictor

    # ---- champion ------------------------------------------------------------
    def _champion_record(self) -> dict[str, Any] | None:
        loc = self.root.join("champion.json")
        return storage.read_json(loc) if storage.exists(loc) else None

    @staticmethod
    def _history(record: dict[str, Any] | None) -> list[str]:
        """Earlier champions, oldest first. Registries from before ``history`` know one: ``previous``."""
        if record is None:
            return []
        if "history" in record:
            return list(record["history"])
        return [record["previous"]] if record.get("previous") else []

    def champion_history(self) -> list[str]:
        """The champions before the current one, oldest first: what rollbacks walk back through."""
        return self._history(self._champion_record())

    def promote(self, version: str, reason: str, actor: str = "user", decision: dict | None = None) -> None:
        self.metadata(version)  # must exist and be committed
        current = self._champion_record()
        history = self._history(current)
        previous = current["version"] if current else None
        if previous is not None and previous != version:  # re-promoting the champion adds no step back
            history.append(previous)
        record = {"version": version, "previous": history[-1] if history else None, "history": history,
                  "reason": reason, "actor": actor, "updated_at": _now()}
        self.audit("promote", {**record, **({"decision": decision} if decision else {})})
        storage.write_json(self.root.join("champion.json"), record)

    def rollback(self, reason: str = "rollback", actor: str = "user") -> str:
        """Make the champion before the current one champion again; each rollback goes one further back.

        The earlier champions are a stack in ``champion.json`` (``history``): a rollback pops it,
        a promote pushes onto it, so two rollbacks never toggle between two versions.
        """
        current = self._champion_record()
        if current is None:
            raise RegistryError(f"{self.root.uri}: no champion to roll back from")
        history = self._history(current)
        if not history:
            raise RegistryError(f"{self.root.uri}: champion {current['version']} is the first on record; "
                                "there is no earlier champion to roll back to")
        target = history.pop()
        self.metadata(target)  # must still exist and be committed
        record = {"version": target, "previous": history[-1] if history else None, "history": history,
                  "rolled_back_from": current["version"], "reason": reason, "actor": actor, "updated_at": _now()}
        self.audit("rollback", record)
        storage.write_json(self.root.join("champion.json"), record)
        return target

    def audit(self, action: str, record: dict[str, Any]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        storage.write_json(self.root.join("audit", f"{stamp}-{secrets.token_hex(2)}-{action}.json"),
                           {"action": action, **record})

    def audit_log(self) -> list[dict[str, Any]]:
        return [storage.read_json(storage.Location(self.root.fs, f.path, f.path))
                for f in storage.list_files(self.root.join("audit"))]
