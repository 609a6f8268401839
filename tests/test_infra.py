"""Static checks of the container setup and the Prefect project file (no Docker engine needed):
infra/docker-compose.yml wires the services together consistently, infra/Dockerfile copies files
that exist and starts commands the project installs, and prefect.yaml's entrypoints are real flows
whose parameters match what the deployments pass."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
DOCKERFILE = INFRA / "Dockerfile"
PREFECT_YAML = REPO / "prefect.yaml"
POOL = "reviews"


def _interpolate(value: Any) -> Any:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` with an empty environment; ``$$`` is a literal ``$``."""
    if isinstance(value, str):
        value = re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def project_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _argv(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd or [])


def _console_scripts() -> set[str]:
    return {ep.name for ep in metadata.entry_points(group="console_scripts")}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# ---------------------------------------------------------------------------
# docker-compose.yml

def test_compose_has_every_service(services):
    expected = {"minio", "minio-init", "postgres", "prefect-server", "prefect-deploy", "worker", "dask-scheduler",
                "dask-worker-1", "dask-worker-2"}
    assert expected <= set(services), sorted(expected - set(services))
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        deps = svc.get("depends_on") or {}
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_project_services_build_from_infra_dockerfile(services):
    for name in ("worker", "prefect-server", "prefect-deploy", "dask-scheduler", "dask-worker-1", "dask-worker-2"):
        build = services[name]["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, f"{name}: build context {context}"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve()


def test_worker_wiring(services):
    env = _env(services["worker"])
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert env["REVIEWS_REGISTRY"] == "s3://reviews/registry"
    assert env["REVIEWS_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    assert env["REVIEWS_PROJECT_DIR"] == "/app"
    # The keys are MinIO's root credentials.
    minio = _env(services["minio"])
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] and env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] and env["AWS_SECRET_ACCESS_KEY"]
    # PREFECT_API_URL names the server service on the port it listens on.
    api = urlparse(env["PREFECT_API_URL"])
    assert api.hostname == "prefect-server" and api.path == "/api"
    server_argv = _argv(services["prefect-server"])
    assert server_argv[:3] == ["prefect", "server", "start"]
    assert server_argv[server_argv.index("--port") + 1] == str(api.port)
    assert server_argv[server_argv.index("--host") + 1] == "0.0.0.0"
    # The worker serves the pool the deployments use, once they are deployed and the bucket exists.
    argv = _argv(services["worker"])
    assert argv[:3] == ["prefect", "worker", "start"] and argv[argv.index("--pool") + 1] == POOL
    deps = services["worker"]["depends_on"]
    assert deps["prefect-deploy"]["condition"] == "service_completed_successfully"
    assert deps["minio-init"]["condition"] == "service_completed_successfully"


def test_bucket_creation_matches_the_registry(services):
    init = services["minio-init"]
    script = " ".join(init.get("entrypoint") or []) + " " + " ".join(_argv(init))
    assert re.search(r"mc mb\b.*\bminio/reviews\b", script), script
    alias = _env(init)["MC_HOST_minio"]
    minio = _env(services["minio"])
    assert alias == f"http://{minio['MINIO_ROOT_USER']}:{minio['MINIO_ROOT_PASSWORD']}@minio:9000"
    assert urlparse(_env(services["worker"])["REVIEWS_REGISTRY"]).netloc == "reviews"


def test_prefect_server_uses_postgres(services):
    url = urlparse(_env(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"])
    pg = _env(services["postgres"])
    assert url.scheme == "postgresql+asyncpg"
    assert (url.hostname, url.port, url.path.lstrip("/")) == ("postgres", 5432, pg["POSTGRES_DB"])
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "asyncpg" in {d.metadata["Name"].lower() for d in metadata.distributions()}


def test_dask_cluster_wiring(services):
    address = urlparse(_env(services["worker"])["REVIEWS_DASK_ADDRESS"])
    sched = _argv(services["dask-scheduler"])
    assert sched[:2] == ["dask", "scheduler"] and sched[sched.index("--port") + 1] == str(address.port)
    for name in ("dask-worker-1", "dask-worker-2"):
        argv = _argv(services[name])
        assert argv[:2] == ["dask", "worker"] and argv[2] == f"tcp://dask-scheduler:{address.port}"
        # Dask workers run flow tasks: they need S3 and the Prefect API like the worker.
        assert _env(services[name])["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
        assert "PREFECT_API_URL" in _env(services[name])


def test_service_commands_exist_in_the_project(services, pyproject):
    scripts = _console_scripts()
    assert pyproject["project"]["scripts"]["reviews"] == "flows.cli:main"
    assert "reviews" in scripts
    for name, svc in services.items():
        if svc.get("build"):
            argv = _argv(svc)
            exe = argv[0] if argv[0] != "sh" else shlex.split(argv[2])[0]
            assert exe in scripts, f"{name}: {exe} is not a console script of the installed project"


# ---------------------------------------------------------------------------
# Dockerfile

def test_dockerfile_base_copies_and_command(pyproject):
    ins = _dockerfile_instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    assert pyproject["project"]["requires-python"] == ">=3.11"
    copies = [shlex.split(rest) for word, rest in ins if word == "COPY"]
    assert copies
    copied = set()
    for args in copies:
        assert not any(a.startswith("--from") for a in args)
        for src in args[:-1]:
            assert (REPO / src).exists(), f"COPY {src}: no such file in the build context"
            copied.add(src.rstrip("/"))
    # Everything the package build and the deployments need is in the image.
    for needed in ["pyproject.toml", "constraints.txt", "README.md", "prefect.yaml",
                   *pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]:
        assert needed.rstrip("*") in copied, f"{needed} is not copied"
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "-c constraints.txt" in runs and "-e ." in runs
    workdir = [rest for word, rest in ins if word == "WORKDIR"][-1]
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert f"REVIEWS_PROJECT_DIR={workdir}" in env
    cmd = json.loads([rest for word, rest in ins if word == "CMD"][-1])
    assert cmd[:3] == ["prefect", "worker", "start"] and cmd[cmd.index("--pool") + 1] == POOL
    assert cmd[0] in _console_scripts()


# ---------------------------------------------------------------------------
# prefect.yaml

def test_prefect_yaml_is_valid_for_prefect(project_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(project_yaml)
    assert {d.name for d in model.deployments} == {"score-reviews", "nightly"}
    [pull] = project_yaml["pull"]
    assert pull == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $REVIEWS_PROJECT_DIR }}"}}
    for d in project_yaml["deployments"]:
        assert d["work_pool"]["name"] == POOL
        assert d["enforce_parameter_schema"] is True
        assert d["tags"]


def test_nightly_schedule_and_concurrency(project_yaml):
    nightly = next(d for d in project_yaml["deployments"] if d["name"] == "nightly")
    steps = {next(iter(s.values()))["id"]: next(iter(s.values()))["script"] for s in nightly["build"]}
    [schedule] = nightly["schedules"]
    assert schedule["cron"] == "{{ nightly-cron.stdout }}" and schedule["timezone"] == "{{ nightly-timezone.stdout }}"
    assert steps["nightly-cron"] == 'echo "${REVIEWS_NIGHTLY_CRON:-0 3 * * *}"'
    assert steps["nightly-timezone"] == 'echo "${REVIEWS_NIGHTLY_TIMEZONE:-UTC}"'
    assert nightly["concurrency_limit"]["limit"] == 1


@pytest.mark.parametrize("name, flow_name", [("score-reviews", "score-reviews"), ("nightly", "retrain-sentiment")])
def test_entrypoints_are_flows_taking_the_deployment_parameters(project_yaml, name, flow_name):
    from prefect.flows import load_flow_from_entrypoint

    d = next(d for d in project_yaml["deployments"] if d["name"] == name)
    path, func = d["entrypoint"].split(":")
    assert (REPO / path).is_file()
    assert re.search(rf"^def {func}\(", (REPO / path).read_text(), re.M)
    flow = load_flow_from_entrypoint(str(REPO / d["entrypoint"]))
    assert flow.name == flow_name and flow.fn.__name__ == func
    sig = inspect.signature(flow.fn)
    unknown = set(d.get("parameters") or {}) - set(sig.parameters)
    assert not unknown, f"{name} passes parameters the flow does not take: {unknown}"
    required = {p for p, v in sig.parameters.items() if v.default is inspect.Parameter.empty}
    assert not required & set(d.get("parameters") or {}), "required parameters must not get deployment defaults"
    if name == "score-reviews":
        assert required == {"input", "output"}
    # The deployment's values validate against the flow's own parameter types.
    flow.validate_parameters(dict(d.get("parameters") or {}, **{p: "x" for p in required}))
