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
import sys


def train_help(name: str) -> str:
    """A training setting's help (models/presets.py) with every preset's value."""
    from models.presets import PRESETS, TrainConfig

    def shown(value: object) -> str:
        return "none" if value is None else str(value)

    help_text = TrainConfig.__dataclass_fields__[name].metadata["help"]
    presets = tuple(PRESETS)
    values = [shown(getattr(PRESETS[p], name)) for p in presets]
    if len(set(values)) == 1:
        uses = f"{', '.join(presets[:-1])} and {presets[-1]} use {values[0]}" if len(presets) > 1 else \
            f"{presets[0]} uses {values[0]}"
    else:
        uses = ", ".join(f"{p} uses {v}" for p, v in zip(presets, values))
    # '%' would be read as a format specifier by argparse.
    return f"{help_text} (default: the preset's value; {uses})".replace("%", "%%")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig setting: its type, choices and help come from the field."""
    from dataclasses import fields
    from typing import Literal, get_args, get_origin, get_type_hints

    from models.presets import TrainConfig

    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        typ = hints[f.name]
        if get_origin(typ) is not Literal:  # int | None -> int: None is what "not given" means here
            typ = next(t for t in get_args(typ) or (typ,) if t is not type(None))
        kwargs: dict = {"default": None, "dest": f.name, "help": train_help(f.name)}
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(typ) is Literal:
            kwargs["choices"] = get_args(typ)
        else:
            kwargs["type"] = typ
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def training_overrides(args: argparse.Namespace) -> dict:
    """The training settings given on the command line (the flow's ``overrides``)."""
    from dataclasses import fields

    from models.presets import TrainConfig

    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if f.name != "preset" and getattr(args, f.name, None) is not None}


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


def untracked_console(debug: bool = False) -> None:
    """The ``reviews`` logger's lines on stderr, as Prefect's console shows them, for a run
    that never loads Prefect (whose logging set-up would otherwise print them)."""
    log = logging.getLogger("reviews")
    log.setLevel(logging.INFO)
    if logging.getLogger().handlers or any(isinstance(h, _UntrackedConsole) for h in log.handlers):
        return  # Prefect's handlers, a test's capture, or a call before this one: they already show them
    handler = _UntrackedConsole()
    fmt = logging.Formatter("%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S")
    handler.setFormatter(fmt if debug else _WithoutTraceback(fmt))
    log.addHandler(handler)


class _UntrackedConsole(logging.StreamHandler):
    pass


def prefect_parameter_errors() -> tuple[type[Exception], ...]:
    """Prefect's refusal of a flow's parameters, if Prefect was loaded (else none was raised)."""
    if "prefect.exceptions" not in sys.modules:
        return ()
    from prefect.exceptions import ParameterTypeError

    return (ParameterTypeError,)


def api_configured() -> bool:
    """Whether Prefect has an API to record runs in: ``PREFECT_API_URL`` from the environment,
    a ``.env``/``prefect.toml`` or the active profile (``prefect profile use``, ``prefect config set``).

    Prefect's settings answer, unless nothing here can name an API (:func:`_may_name_an_api`):
    then the answer is no without importing Prefect (about 1 s, the untracked run's largest cost)."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    if not _may_name_an_api():
        return False
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


# Prefect's own profiles with no API (prefect/settings/profiles.toml); any other may have one.
_PROFILES_WITHOUT_API = ("ephemeral", "test")


def _may_name_an_api() -> bool:
    """False only when no source of Prefect's settings can hold an API URL: no ``.env``,
    ``prefect.toml`` or ``[tool.prefect]`` here that mentions one, and an active profile that is
    one of Prefect's own without an API and sets none in the profiles file."""
    import tomllib

    cwd_files = {name: _text(name) for name in (".env", "prefect.toml", "pyproject.toml")}
    if ("API_URL" in cwd_files[".env"].upper() or cwd_files["prefect.toml"]
            or "tool.prefect" in cwd_files["pyproject.toml"]):
        return True
    home = os.path.expanduser(os.environ.get("PREFECT_HOME") or "~/.prefect")
    path = os.path.expanduser(os.environ.get("PREFECT_PROFILES_PATH") or os.path.join(home, "profiles.toml"))
    try:
        profiles = tomllib.loads(_text(path))
    except tomllib.TOMLDecodeError:
        return True  # Prefect will say what it makes of it
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = profiles.get("profiles", {}).get(active, {})
    return active not in _PROFILES_WITHOUT_API or any("API_URL" in key.upper() for key in settings)


def _text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


UNTRACKED_NOTE = ("reviews: untracked run: no Prefect API is configured, so nothing is recorded in Prefect "
                  "(outputs, _manifest.json and _SUCCESS are the same); to track runs, set PREFECT_API_URL (or "
                  "use a Prefect profile with an API URL), or run `reviews score --track` (it starts a temporary "
                  "Prefect server first)")


def flow_arguments(flow, args: argparse.Namespace) -> dict:
    """The flow's parameters from the parsed options of the same names: the flow's signature is
    the one list of them (tests/test_cli.py checks that every parameter has its option)."""
    import inspect

    fn = getattr(flow, "fn", flow)  # the flow, or the function it runs
    return {name: getattr(args, name) for name in inspect.signature(fn).parameters if hasattr(args, name)}


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
