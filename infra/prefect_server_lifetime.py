"""Prefect's temporary API server dies with the process that started it (Linux).

With no ``PREFECT_API_URL``, Prefect 3 starts a temporary API server as a child process
(``prefect.server.api.server.SubprocessASGIServer._run_uvicorn_command``, a ``subprocess.Popen``
of uvicorn) and stops it from an ``atexit`` hook.  A CLI killed with SIGKILL runs no hook, so
the server lived on, holding its port and the SQLite database, for over a minute.

The kernel can do what ``atexit`` cannot: a child that set ``PR_SET_PDEATHSIG`` gets that
signal when its parent goes, however it goes.  Prefect's ``Popen`` call takes no
``preexec_fn``, so :func:`tie_to_this_process` gives *that one module* a ``subprocess`` whose
``Popen`` adds one (nothing in site-packages is edited, no other module sees a change).

The death signal is sent when the *thread* that forked the child ends, not the process, and
Prefect may start the server from a short-lived thread (a flow-run heartbeat, a log or event
worker).  So the fork runs on one daemon thread of ours that lives as long as the process.

A Prefect upgrade that changes these internals makes :func:`tie_to_this_process` return False
with a warning instead of patching blindly; tests/test_crash_hygiene.py asserts that it applies
and that a killed CLI leaves no process behind.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
import types
import warnings
from typing import Any, Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_lock = threading.Lock()
_jobs: "queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]]" = queue.SimpleQueue()
_spawner: threading.Thread | None = None


def _prctl() -> Callable[..., int]:
    # Looked up before the fork: the child between fork and exec should do as little as possible.
    fn = ctypes.CDLL(None, use_errno=True).prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


def die_with_parent_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent (thread) dies."""
    prctl, parent = _prctl(), os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return preexec


def _serve() -> None:
    while True:
        fn, future = _jobs.get()
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                future.set_exception(exc)


def on_lasting_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a thread that lives as long as the process; return its result."""
    global _spawner
    with _lock:
        if _spawner is None:
            _spawner = threading.Thread(target=_serve, name="pdeathsig-spawner", daemon=True)
            _spawner.start()
    if threading.current_thread() is _spawner:
        return fn()
    future: concurrent.futures.Future = concurrent.futures.Future()
    _jobs.put((fn, future))
    return future.result()


class PopenDyingWithParent(subprocess.Popen):
    """``subprocess.Popen`` whose child gets SIGKILL when this process dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        inner = kwargs.pop("preexec_fn", None)
        arm = die_with_parent_preexec()

        def preexec() -> None:
            arm()
            if inner is not None:
                inner()

        on_lasting_thread(lambda: subprocess.Popen.__init__(self, *args, preexec_fn=preexec, **kwargs))


def _subprocess_module() -> types.ModuleType:
    shim = types.ModuleType("subprocess", "subprocess, with a Popen whose child dies with this process")
    shim.__dict__.update({k: v for k, v in vars(subprocess).items() if k not in ("__name__", "__doc__")})
    shim.Popen = PopenDyingWithParent  # type: ignore[attr-defined]
    shim.__dies_with_parent__ = True  # type: ignore[attr-defined]
    return shim


def tie_to_this_process() -> bool:
    """Make the temporary Prefect server (started later by this process) die with it.

    Returns whether it applies: False off Linux, or (with a warning) when Prefect's
    server module no longer starts the server the way this relies on.
    """
    if not sys.platform.startswith("linux"):
        return False
    from prefect.server.api import server as server_module

    current = getattr(server_module, "subprocess", None)
    if getattr(current, "__dies_with_parent__", False):
        return True
    starter = getattr(getattr(server_module, "SubprocessASGIServer", None), "_run_uvicorn_command", None)
    try:
        source = inspect.getsource(starter) if starter is not None else ""
    except (OSError, TypeError):
        source = ""
    if current is not subprocess or "subprocess.Popen(" not in source:
        warnings.warn("prefect.server.api.server no longer starts its temporary server with subprocess.Popen "
                      "in SubprocessASGIServer._run_uvicorn_command; a killed process may leave that server "
                      "running (infra/prefect_server_lifetime.py needs updating)", RuntimeWarning, stacklevel=2)
        return False
    server_module.subprocess = _subprocess_module()
    return True


def tie_if_ephemeral() -> bool:
    """:func:`tie_to_this_process` when no API URL is set (Prefect will start a temporary server).

    With an API URL nothing is imported: the server module alone takes seconds to load.
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return False
    return tie_to_this_process()
