"""A killed ``reviews score`` leaves nothing running: its temporary Prefect server dies with it.

Real processes: the CLI with no PREFECT_API_URL (so Prefect starts its own temporary server
as a child), kill -9 of the CLI alone, then /proc is searched for anything of its session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from infra.prefect_server_lifetime import PopenDyingWithParent, tie_to_this_process
from tests.cli_process import start_score, subprocess_env
from tests.faultproxy import wait_for
from tests.tinymodel import make_dump, register_tiny

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive_in_session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: orphans keep their session when reparented."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[0] != "Z" and int(st[3]) == sid:
                found.append(int(name))
    return found


def _children(pid: int) -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()
            and (st := _stat(int(name))) is not None and int(st[1]) == pid]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_killed_cli_takes_its_prefect_server_with_it(tmp_path):
    registry = str(tmp_path / "registry")
    register_tiny(registry)
    src = str(tmp_path / "in")
    make_dump(src, n=2_000, files_rows=1_000, rg=100)
    env = subprocess_env(PREFECT_HOME=str(tmp_path / "prefect-home"))  # its own database, not ~/.prefect
    env.pop("PREFECT_API_URL", None)  # so that Prefect starts its temporary server as a child
    log = tmp_path / "run.log"
    # --track: with no API, only a tracked run starts that server (an untracked one starts none).
    p = start_score(src, str(tmp_path / "out"), registry, "--max-rows-per-unit", "100", "--track", env=env, log=log)
    try:
        def servers() -> list[int]:
            return [c for c in _children(p.pid) if "uvicorn" in _cmdline(c)]

        assert wait_for(lambda: servers() or p.poll() is not None, timeout=120, interval=0.1)
        assert servers() and p.poll() is None, f"no temporary server while the CLI ran\n{log.read_text()[-3000:]}"
        os.kill(p.pid, signal.SIGKILL)  # the CLI alone: its children must go by themselves
        p.wait(10)
        assert wait_for(lambda: not _alive_in_session(p.pid), timeout=5, interval=0.1), (
            "still running after the CLI was killed: "
            + "; ".join(f"{pid}: {_cmdline(pid)}" for pid in _alive_in_session(p.pid)))
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)


def test_the_tie_applies_to_the_installed_prefect():
    """Fails when a Prefect upgrade changes how the temporary server is started (see the module)."""
    import warnings

    from prefect.server.api import server as server_module

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tie_to_this_process()
    assert server_module.subprocess.Popen is PopenDyingWithParent
    assert server_module.subprocess.TimeoutExpired is subprocess.TimeoutExpired  # what stop() catches


def test_child_is_armed_and_outlives_the_thread_that_started_it():
    # PR_GET_PDEATHSIG (2) as the child itself sees it.
    probe = ("import ctypes, signal; v = ctypes.c_int(); "
             "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)")
    armed = PopenDyingWithParent([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True)
    assert armed.communicate(timeout=30)[0].strip() == str(int(signal.SIGKILL))

    # The death signal follows the forking thread: a child started from a thread that ends must live on.
    box: dict[str, subprocess.Popen] = {}
    t = threading.Thread(target=lambda: box.setdefault("p", PopenDyingWithParent(["sleep", "30"])))
    t.start()
    t.join()
    try:
        time.sleep(0.5)
        assert box["p"].poll() is None, "the child died with the short-lived thread that started it"
    finally:
        box["p"].kill()
        box["p"].wait()
