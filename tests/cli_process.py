"""Running the ``reviews`` CLI as a real process, the way a user or a scheduler runs it.

The processes see os.environ (the session S3 server's AWS_* included) and, inside the
``prefect_api`` fixture, the Prefect test harness' API.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def prefect_api_url() -> str | None:
    """The API URL of the running Prefect test harness (inside the ``prefect_api`` fixture)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def subprocess_env(**extra: str) -> dict[str, str]:
    """os.environ (AWS_* of the session S3 server included) + the harness' Prefect API URL."""
    env = dict(os.environ)
    url = prefect_api_url()
    if url:
        env["PREFECT_API_URL"] = url
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def reviews_cli() -> list[str]:
    exe = Path(sys.executable).parent / "reviews"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "flows.cli"]


def start_score(input_uri: str, output_uri: str, registry: str, *args: str, env: dict[str, str] | None = None,
                log: Path | None = None) -> subprocess.Popen:
    """``reviews score INPUT OUTPUT --registry R ARGS...`` as a real process (own session, for kill -9)."""
    with open(log, "wb") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(reviews_cli() + ["score", input_uri, output_uri, "--registry", registry, *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env or subprocess_env(), cwd=str(REPO), start_new_session=True)


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``reviews ARGV...`` to the end: (exit code, stdout, stderr)."""
    r = subprocess.run(reviews_cli() + list(argv), env=subprocess_env(), capture_output=True, text=True,
                       timeout=600, check=False)
    return r.returncode, r.stdout, r.stderr


def train_tiny(registry: str, tgz: str, *extra: str) -> dict[str, Any]:
    """``reviews train`` of a tiny seed-preset model on ``tgz`` into ``registry``; its JSON summary."""
    code, out, err = run_cli("train", "--preset", "seed", "--registry", registry, "--data", tgz, "--maxlen", "12",
                             "--embedding-dim", "8", "--lstm-units", "8", "--batch-size", "16", *extra)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])
