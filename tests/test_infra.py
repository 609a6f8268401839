"""The container setup and the Prefect project file, checked against what they refer to (no Docker
engine needed): commands parse with the installed CLIs, addresses name services on ports they
listen on, files the Dockerfile copies exist, the requirements step installs pinned versions, and
every prefect.yaml deployment - built the way ``prefect deploy`` builds it - names a real flow whose
parameter schema accepts what the deployment passes."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
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
# Where the S3 and Postgres servers of the stock images listen unless their command says otherwise.
STOCK_PORTS = {"minio/minio": {9000}, "postgres": {5432}}


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


def _project() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()))["services"]


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return _project()


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


def _commands(argv: list[str]) -> list[list[str]]:
    """The command lines ``argv`` runs: itself, or each ``&&`` part of an ``sh -c`` script."""
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        tokens = shlex.split(argv[2])
        parts: list[list[str]] = [[]]
        for token in tokens:
            if token == "&&":
                parts.append([])
            else:
                parts[-1].append(token)
        return parts
    return [argv]


def _parse(argv: list[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``argv`` parsed by the installed CLI it names, as it would be when run (nothing runs):
    (the subcommand path, its bound parameters).  An unknown subcommand or option raises."""
    program, args = argv[0], argv[1:]
    if program == "prefect":
        # Prefect's CLI (cyclopts): session options are parsed by the meta app, the rest by the app.
        from prefect.cli._app import _app, _normalize_command_names

        _, session, _ = _app.meta.parse_args(args, exit_on_error=False, print_error=False)
        tokens = _normalize_command_names(tuple(session.arguments.get("tokens", ())))
        path, _, _ = _app.parse_commands(tokens)
        _, bound, _ = _app.parse_args(tokens, exit_on_error=False, print_error=False)
        return path, dict(bound.arguments)
    if program == "dask":
        commands = {ep.name: ep for ep in metadata.entry_points(group="dask_cli")}
        ctx = commands[args[0]].load().make_context(f"dask {args[0]}", args[1:])
        return (args[0],), dict(ctx.params)
    if program == "reviews":
        from flows.cli import build_parser

        return tuple(args[:1]), vars(build_parser().parse_args(args))
    raise AssertionError(f"{argv}: not a command of the project's image")


def _project_image_commands(services: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Service -> the command lines it runs, for the services built from infra/Dockerfile."""
    return {name: _commands(_argv(svc)) for name, svc in services.items() if svc.get("build")}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile(word: str) -> list[str]:
    return [rest for w, rest in _dockerfile_instructions() if w == word]


def _dockerfile_env() -> dict[str, str]:
    return dict(pair.split("=", 1) for rest in _dockerfile("ENV") for pair in shlex.split(rest))


def _dockerfile_cmd() -> list[str]:
    return json.loads(_dockerfile("CMD")[-1])


def _listening_ports(service: dict[str, Any]) -> set[int]:
    """The ports the service's processes listen on, from its command (or its image's defaults)."""
    argv = _argv(service)
    if service.get("build"):
        ports = set()
        for command in _commands(argv):
            path, params = _parse(command)
            if path in (("server", "start"), ("scheduler",)):
                ports.add(int(params["port"]))
            for option in ("dashboard_address", "console_address"):
                if params.get(option):
                    ports.add(int(str(params[option]).rsplit(":", 1)[1]))
        return ports
    image = service["image"].split(":")[0]
    ports = set(STOCK_PORTS.get(image, ()))
    for option in ("--address", "--console-address"):  # minio's own flags
        if option in argv:
            if option == "--address":
                ports.clear()
            ports.add(int(argv[argv.index(option) + 1].rsplit(":", 1)[1]))
    return ports


# ---------------------------------------------------------------------------
# docker-compose.yml


def test_compose_references_resolve(services):
    volumes = set(yaml.safe_load(COMPOSE.read_text()).get("volumes") or {})
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = how.get("condition", "service_started")
            # Compose refuses to start a stack whose healthy-condition target has no healthcheck,
            # and waits forever for a restarting service to complete.
            if condition == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{name} waits for {dep} to end: it restarts"
        for volume in svc.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        if svc.get("build"):
            # The Dockerfile's COPY sources are checked against the repository root below.
            context = (COMPOSE.parent / svc["build"]["context"]).resolve()
            assert context == REPO, f"{name}: build context {context}"
            assert (context / svc["build"]["dockerfile"]).resolve() == DOCKERFILE.resolve()


def test_project_image_commands_parse_with_the_installed_clis(services):
    scripts = {ep.name: ep for ep in metadata.entry_points(group="console_scripts")}
    assert callable(scripts["reviews"].load()), "the project's own command is installed"
    commands = _project_image_commands(services)
    commands["Dockerfile CMD"] = [_dockerfile_cmd()]
    for name, lines in commands.items():
        for argv in lines:
            assert argv[0] in scripts, f"{name}: {argv[0]} is not a console script of the installed project"
            _parse(argv)  # raises on an unknown subcommand or option
    # The parsing refuses what the installed CLIs do not know.
    import click
    import cyclopts

    for wrong, error in [(["prefect", "worker", "start", "--pol", "reviews"], cyclopts.CycloptsError),
                         (["prefect", "sever", "start"], cyclopts.CycloptsError),
                         (["dask", "worker", "--nthread", "2"], click.UsageError)]:
        with pytest.raises(error):
            _parse(wrong)


def test_addresses_name_services_on_ports_they_listen_on(services):
    """Every ``scheme://[user:password@]service:port`` in a service's environment or command, and every
    published port, reaches a port the named service's process listens on."""
    listening = {name: _listening_ports(svc) for name, svc in services.items()}
    seen = 0
    for name, svc in services.items():
        values = list(_env(svc).values()) + [a for line in _commands(_argv(svc)) for a in line]
        for value in values:
            for url in re.findall(r"\b[a-z][a-z0-9+]*://\S+", value):
                parsed = urlparse(url)
                if parsed.hostname in services:
                    seen += 1
                    assert parsed.port in listening[parsed.hostname], \
                        f"{name}: {url} - {parsed.hostname} listens on {sorted(listening[parsed.hostname])}"
        for mapping in svc.get("ports") or []:
            container_port = int(str(mapping).rsplit(":", 1)[1])
            assert container_port in listening[name], f"{name} publishes {mapping}: nothing listens on {container_port}"
    assert seen >= 5, "the S3, Prefect API, Dask and Postgres addresses were all found"


def test_worker_wiring(services, project):
    env = _env(services["worker"])
    # The keys are MinIO's root credentials.
    minio = _env(services["minio"])
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] and env["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] and env["AWS_SECRET_ACCESS_KEY"]
    # PREFECT_API_URL names the server service, which listens for other containers (not on loopback).
    api = urlparse(env["PREFECT_API_URL"])
    (server,) = [n for n, lines in _project_image_commands(services).items()
                 if any(_parse(a)[0] == ("server", "start") for a in lines)]
    _, server_params = _parse(_argv(services[server]))
    assert api.hostname == server and api.path == "/api" and server_params["host"] == "0.0.0.0"
    # The worker serves the pool every deployment runs on, of the type the deploy service creates.
    _, worker = _parse(_argv(services["worker"]))
    created = [_parse(a)[1] for lines in _project_image_commands(services).values() for a in lines
               if _parse(a)[0] == ("work-pool", "create")]
    served = (worker["work_pool_name"], worker["worker_type"])
    assert [(c["name"], c["type"]) for c in created] == [served], f"the worker serves {served}, {created} is created"
    assert {d["work_pool"]["name"] for d in project["deployments"]} == {served[0]}
    _, image_default = _parse(_dockerfile_cmd())
    assert (image_default["work_pool_name"], image_default["worker_type"]) == served, "the image's own CMD"
    from prefect.workers.base import BaseWorker

    assert BaseWorker.get_worker_class_from_type(worker["worker_type"]) is not None
    # It starts once the deployments exist and the registry's bucket does.
    deploys = {n for n, lines in _project_image_commands(services).items()
               if any(_parse(a)[0] == ("deploy",) for a in lines)}
    bucket = urlparse(env["REVIEWS_REGISTRY"]).netloc
    makes_bucket = {n for n, svc in services.items()
                    if re.search(rf"mc mb\b.*\bminio/{bucket}\b", " ".join(svc.get("entrypoint") or _argv(svc)))}
    deps = services["worker"]["depends_on"]
    assert deploys and makes_bucket, f"deploys: {deploys}, creates bucket {bucket}: {makes_bucket}"
    for dep in deploys | makes_bucket:
        assert deps[dep]["condition"] == "service_completed_successfully", dep


def test_bucket_creation_matches_the_registry(services):
    init = services["minio-init"]
    script = " ".join(init.get("entrypoint") or []) + " " + " ".join(_argv(init))
    bucket = urlparse(_env(services["worker"])["REVIEWS_REGISTRY"]).netloc
    assert re.search(rf"mc mb\b.*\bminio/{bucket}\b", script), script
    alias = urlparse(_env(init)["MC_HOST_minio"])
    minio = _env(services["minio"])
    assert (alias.username, alias.password) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert alias.hostname == "minio"


def test_bootstrap_gives_the_first_up_a_champion_and_a_scored_demo(services):
    """One one-shot service runs the idempotent quickstart into the stack's own bucket, once S3 and
    the bucket are there; every service that scores or serves with the champion waits for it."""
    bootstraps = {n: _parse(a)[1] for n, lines in _project_image_commands(services).items() for a in lines
                  if a[0] == "reviews" and _parse(a)[0] == ("quickstart",)}
    assert len(bootstraps) == 1, bootstraps
    [(name, params)] = bootstraps.items()
    svc = services[name]
    assert params["skip_existing"], "a second `up` must not train and score again"
    assert svc.get("restart", "no") == "no"
    env = _env(svc)
    assert params["registry"] == env["REVIEWS_REGISTRY"] == _env(services["worker"])["REVIEWS_REGISTRY"]
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"):
        assert env.get(key) == _env(services["worker"])[key], key
    # Dump and scores in the registry's bucket, laid out as score-new-dumps reads them: the same
    # partition name under an input root and an output root that the flow accepts as a pair.
    bucket = urlparse(params["registry"]).netloc
    dump, output = urlparse(params["dump"]), urlparse(params["output"])
    assert (dump.scheme, dump.netloc, output.scheme, output.netloc) == ("s3", bucket, "s3", bucket)
    assert dump.path.rsplit("/", 1)[1] == output.path.rsplit("/", 1)[1]
    from models.dump_discovery import check_roots

    check_roots(params["dump"].rsplit("/", 1)[0], params["output"].rsplit("/", 1)[0])
    # It starts once S3 is up and the bucket made, and (its flows are tracked) the Prefect API answers.
    makes_bucket = {n for n, s in services.items()
                    if re.search(rf"mc mb\b.*\bminio/{bucket}\b", " ".join(s.get("entrypoint") or _argv(s)))}
    deps = svc["depends_on"]
    assert makes_bucket and all(deps[d]["condition"] == "service_completed_successfully" for d in makes_bucket)
    assert deps["minio"]["condition"] == "service_healthy"
    server = urlparse(env["PREFECT_API_URL"]).hostname
    assert deps[server]["condition"] == "service_healthy"
    # Who needs a champion: Prefect workers (they run the score deployments) and `reviews serve|score`.
    needing = {n for n, lines in _project_image_commands(services).items() for a in lines
               if _parse(a)[0] in (("worker", "start"), ("serve",), ("score",))}
    assert "worker" in needing
    for n in needing:
        assert (services[n].get("depends_on") or {}).get(name, {}).get("condition") \
            == "service_completed_successfully", f"{n} starts before {name} has made a champion"


def test_prefect_server_uses_postgres(services):
    url = urlparse(_env(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"])
    pg = _env(services["postgres"])
    assert url.scheme == "postgresql+asyncpg"
    assert (url.hostname, url.path.lstrip("/")) == ("postgres", pg["POSTGRES_DB"])
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "asyncpg" in {d.metadata["Name"].lower() for d in metadata.distributions()}
    # The server's healthcheck asks the port the server listens on, in code that compiles.
    test = services["prefect-server"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")
    port = urlparse(re.search(r"http://[^'\"]+", test[3]).group(0)).port
    assert port in _listening_ports(services["prefect-server"])


def test_dask_cluster_wiring(services):
    address = _env(services["worker"])["REVIEWS_DASK_ADDRESS"]
    _, scheduler = _parse(_argv(services["dask-scheduler"]))
    assert urlparse(address).port == int(scheduler["port"])
    workers = [n for n, lines in _project_image_commands(services).items()
               if any(a[0] == "dask" and _parse(a)[0] == ("worker",) for a in lines)]
    assert len(workers) >= 2
    for name in workers:
        _, params = _parse(_argv(services[name]))
        assert params["scheduler"] == address
        # Dask workers run flow tasks: they need S3 and the Prefect API like the worker.
        for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PREFECT_API_URL"):
            assert _env(services[name]).get(key) == _env(services["worker"])[key], (name, key)


def test_project_settings_in_the_environment_are_read_by_the_code(services):
    """A misspelt REVIEWS_* variable would be silently ignored."""
    set_names = {k for svc in services.values() for k in _env(svc) if k.startswith("REVIEWS_")}
    set_names |= {k for k in _dockerfile_env() if k.startswith("REVIEWS_")}
    code = "\n".join(p.read_text() for pkg in ("flows", "tasks", "models", "infra") for p in (REPO / pkg).rglob("*.py"))
    # prefect.yaml reads variables in templates and build-step scripts (not in its comments).
    code += "\n".join(line for line in PREFECT_YAML.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert set_names
    for name in sorted(set_names):
        assert re.search(rf"\b{name}\b", code), f"{name} is set for the containers but nothing reads it"


# ---------------------------------------------------------------------------
# Dockerfile


def test_dockerfile_copies_what_the_build_and_the_deployments_need(pyproject, project):
    copied = set()
    for rest in _dockerfile("COPY"):
        args = shlex.split(rest)
        assert not any(a.startswith("--from") for a in args)
        for src in args[:-1]:
            assert (REPO / src).exists(), f"COPY {src}: no such file in the build context"
            copied.add(src.rstrip("/"))
    needed = ["pyproject.toml", "constraints.txt", pyproject["project"]["readme"], PREFECT_YAML.name,
              *(p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"])]
    needed += [d["entrypoint"].split(":")[0] for d in project["deployments"]]
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} is not copied into the image"


def test_dockerfile_requirements_step_installs_pinned_project_dependencies(tmp_path, pyproject):
    """The RUN step that turns pyproject's dependencies into a requirements file really does, and
    every dependency it installs on the image's platform is pinned by constraints.txt."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    (run,) = [rest for rest in _dockerfile("RUN") if "tomllib" in rest]
    parts = _commands(["sh", "-c", run])
    python = next(p for p in parts if p[:2] == ["python", "-c"])
    pip = next(p for p in parts if p[:2] == ["pip", "install"])
    written = pip[pip.index("-r") + 1]
    assert pip[pip.index("-c") + 1] == "constraints.txt"
    assert written in python[2], "pip installs the file the snippet writes"
    (tmp_path / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    out = tmp_path / "requirements.txt"
    subprocess.run([sys.executable, "-c", python[2].replace(written, str(out))], cwd=tmp_path, check=True)
    dependencies = pyproject["project"]["dependencies"]
    assert out.read_text().splitlines() == dependencies
    # The project itself is then installed from the copied sources, under the same pins.
    installs = [p for rest in _dockerfile("RUN") for p in _commands(["sh", "-c", rest]) if p[:2] == ["pip", "install"]]
    assert any(p[p.index("-c") + 1] == "constraints.txt" and p[-1] == "." for p in installs if "-c" in p), installs

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name.strip().lower())] = Version(version.strip())
    image_python = re.match(r"python:(\d+\.\d+)", _dockerfile("FROM")[0]).group(1)
    image = {"platform_machine": "x86_64", "sys_platform": "linux", "platform_system": "Linux",
             "python_version": image_python}
    for dep in map(Requirement, dependencies):
        if dep.marker and not dep.marker.evaluate(image):
            continue
        name = re.sub(r"[-_.]+", "-", dep.name.lower())
        assert name in pins, f"{dep} is not pinned in constraints.txt"
        assert dep.specifier.contains(pins[name], prereleases=True), f"constraints.txt pins {name}=={pins[name]}: {dep}"


def test_dockerfile_python_and_project_dir(pyproject):
    from packaging.specifiers import SpecifierSet

    image_python = re.match(r"python:(\d+\.\d+)", _dockerfile("FROM")[0]).group(1)
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(image_python)
    assert image_python == f"{sys.version_info.major}.{sys.version_info.minor}", \
        "the image runs the Python these tests run on"
    workdir = _dockerfile("WORKDIR")[-1]
    assert _dockerfile_env()["REVIEWS_PROJECT_DIR"] == workdir


# ---------------------------------------------------------------------------
# prefect.yaml


def test_prefect_yaml_is_valid_for_prefect(project):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(project)
    names = [d.name for d in model.deployments]
    assert len(names) == len(set(names)), names
    # A run with a missing or mistyped parameter is refused when it is created, not half-run.
    unchecked = [d["name"] for d in project["deployments"] if d.get("enforce_parameter_schema") is not True]
    assert not unchecked, f"runs of {unchecked} are not checked against the flow's parameter schema"


def test_pull_step_changes_into_the_project_on_the_worker(project, services, monkeypatch):
    """The pull step's directory comes from a variable the image and the worker set to the image's
    project directory, and the deployments' entrypoints are files below it."""
    from prefect.utilities.templating import apply_values

    [step] = project["pull"]
    [(name, inputs)] = step.items()
    assert name == "prefect.deployments.steps.set_working_directory"
    [variable] = re.findall(r"\{\{\s*\$(\w+)\s*\}\}", inputs["directory"])
    workdir = _dockerfile("WORKDIR")[-1]
    assert _dockerfile_env()[variable] == workdir == _env(services["worker"])[variable]
    monkeypatch.setenv(variable, str(REPO))
    assert apply_values(inputs, {})["directory"] == str(REPO)
    for d in project["deployments"]:
        assert (REPO / d["entrypoint"].split(":")[0]).is_file(), d["entrypoint"]


def _deploy_time(project: dict[str, Any], deployment: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    """``deployment`` as ``prefect deploy`` makes it: environment placeholders applied, its build
    steps run by Prefect's step runner, the deployment templated with their outputs; and its schedules."""
    from prefect.cli.deploy._schedules import _construct_schedules
    from prefect.deployments.steps.core import run_steps
    from prefect.utilities.templating import apply_values

    deployment = apply_values(deployment, os.environ, remove_notset=False)
    steps = deployment.get("build", project.get("build")) or []
    outputs = asyncio.run(run_steps(steps, {}, print_function=lambda *a, **k: None))
    schedules = _construct_schedules(deployment, outputs, console=None, is_interactive=lambda: False) or []
    return apply_values(deployment, outputs, skip_prefixes=["ctx."]), schedules


def _flow(entrypoint: str):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(REPO / entrypoint))


@pytest.mark.parametrize("name", [d["name"] for d in _project()["deployments"]])
def test_deployment_builds_into_a_real_flow_taking_its_parameters(project, name, prefect_api, monkeypatch):
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    monkeypatch.chdir(REPO)  # `prefect deploy` runs from the repository root
    d, schedules = _deploy_time(project, next(d for d in project["deployments"] if d["name"] == name))
    assert "{{" not in json.dumps({k: v for k, v in d.items() if k not in ("pull", "build")}), \
        f"{name}: a template is left unresolved"
    assert d["version"], "the version resolves to the deployed commit"
    for s in schedules:
        assert s["schedule"].cron and s["schedule"].timezone  # CronSchedule validated both

    path, func = d["entrypoint"].split(":")
    flow = _flow(d["entrypoint"])
    assert flow.fn.__name__ == func and Path(inspect.getsourcefile(flow.fn)).resolve() == (REPO / path).resolve()
    sig = inspect.signature(flow.fn)
    params = dict(d.get("parameters") or {})
    unknown = set(params) - set(sig.parameters)
    assert not unknown, f"{name} passes parameters the flow does not take: {unknown}"
    required = {p for p, v in sig.parameters.items() if v.default is inspect.Parameter.empty}
    if name == "score-reviews":
        # Every scoring run must name its input and output: no deployment default for either.
        assert required == {"input", "output"} and not required & set(params)
    # What the server checks when the deployment is created with enforce_parameter_schema...
    validate(params, parameter_schema(flow).model_dump_for_openapi(), raise_on_error=True, ignore_required=True)
    # ...and what the flow checks when a run starts.
    flow.validate_parameters(dict(params, **{p: "x" for p in required if p not in params}))


def test_nightly_schedule_follows_the_deploy_time_environment(project, prefect_api, monkeypatch):
    """The schedule's documented defaults are the real ones, and the variables replace them."""
    monkeypatch.chdir(REPO)
    nightly = next(d for d in project["deployments"] if d["name"] == "nightly")
    header = PREFECT_YAML.read_text()
    cron_default = re.search(r'REVIEWS_NIGHTLY_CRON .*default "([^"]+)"', header).group(1)
    tz_default = re.search(r"REVIEWS_NIGHTLY_TIMEZONE .*default (\S+)", header).group(1)
    for env, expected in [({}, (cron_default, tz_default)),
                          ({"REVIEWS_NIGHTLY_CRON": "30 4 * * 1-5", "REVIEWS_NIGHTLY_TIMEZONE": "Europe/Berlin"},
                           ("30 4 * * 1-5", "Europe/Berlin"))]:
        for var in ("REVIEWS_NIGHTLY_CRON", "REVIEWS_NIGHTLY_TIMEZONE"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        _, schedules = _deploy_time(project, nightly)
        assert [(s["schedule"].cron, s["schedule"].timezone) for s in schedules] == [expected]
    # Two retrains never overlap.
    assert nightly["concurrency_limit"]["limit"] == 1


def test_documented_deployment_names_exist(project):
    """``flow/deployment`` names in the docs' commands, and deployment parameters that name one,
    are real: a renamed flow or deployment leaves none of them behind."""
    flows = {d["name"]: _flow(d["entrypoint"]).name for d in project["deployments"]}
    real = {f"{flow}/{deployment}" for deployment, flow in flows.items()}
    found = []
    for doc in (PREFECT_YAML, COMPOSE, REPO / "README.md"):
        found += [(doc.name, m) for m in re.findall(
            r"prefect deployment (?:run|schedule \S+)\s+'?([\w-]+/[\w-]+)", doc.read_text())]
    for d in project["deployments"]:
        found += [(d["name"], v) for v in (d.get("parameters") or {}).values()
                  if isinstance(v, str) and v.split("/")[0] in flows.values()]
    assert found
    for where, ref in found:
        assert ref in real, f"{where}: {ref} is not one of {sorted(real)}"


def test_serve_declares_what_prefect_yaml_declares(project, prefect_api, monkeypatch):
    """`reviews serve` and `prefect deploy` give the same deployments: parameters, tags, schedules,
    concurrency and triggers, with the same environment defaults."""
    from flows.serve import deployments

    monkeypatch.chdir(REPO)
    for var in ("REVIEWS_NIGHTLY_CRON", "REVIEWS_NIGHTLY_TIMEZONE", "REVIEWS_DUMPS_ROOT", "REVIEWS_SCORES_ROOT",
                "REVIEWS_DISCOVERY_CRON"):
        monkeypatch.delenv(var, raising=False)
    served = {d.name: d for d in deployments()}
    assert set(served) == {d["name"] for d in project["deployments"]}
    for declared in project["deployments"]:
        d, schedules = _deploy_time(project, declared)
        s = served[d["name"]]
        flow = _flow(d["entrypoint"])
        assert s.flow_name == flow.name, d["name"]
        # prefect.yaml spells some flow defaults out: compare what a run of each would get.
        defaults = {k: v.default for k, v in inspect.signature(flow.fn).parameters.items()
                    if v.default is not inspect.Parameter.empty}
        assert {**defaults, **(s.parameters or {})} == {**defaults, **(d.get("parameters") or {})}, d["name"]
        assert set(s.tags) == set(d.get("tags") or []), d["name"]
        assert [(x.schedule.cron, x.schedule.timezone) for x in s.schedules or []] == \
            [(x["schedule"].cron, x["schedule"].timezone) for x in schedules if x.get("active", True)], d["name"]
        limit = d.get("concurrency_limit")
        if isinstance(limit, dict):
            assert (s.concurrency_limit, s.concurrency_options.collision_strategy.value) == \
                (limit["limit"], limit["collision_strategy"]), d["name"]
        else:
            assert s.concurrency_limit == limit, d["name"]
        triggers = [t for t in d.get("triggers") or [] if t.get("enabled", True)]
        assert len(s.triggers or []) == len(triggers), d["name"]
        for got, want in zip(s.triggers or [], triggers):
            assert set(got.expect) == set(want["expect"]) and got.parameters == want.get("parameters")
            assert got.match.root == want["match"]


def test_a_prefect_home_in_a_missing_directory_is_created_before_prefect_starts(tmp_path):
    home = tmp_path / "not" / "yet" / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home)}
    subprocess.run([sys.executable, "-c", "import infra.prefect_defaults"], cwd=REPO, env=env, check=True)
    assert home.is_dir()
