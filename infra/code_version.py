"""Which code a run is: the key a retrain compares to decide that nothing changed.

The key is a sha256 over the project's own source files (``flows/``, ``tasks/``,
``models/``, ``infra/``: every ``*.py``, by relative path and content) plus the
package version.  A git commit alone is not used as the key: it misses
uncommitted edits on a developer's machine, and the worker image
(``infra/Dockerfile``) may carry no ``.git``.  The commit is still recorded,
with whether the tree had local changes, so a person can find the code.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from functools import lru_cache
from importlib import metadata
from typing import Any

PACKAGE = "imdb-reviews-sentiment"
SOURCE_DIRS = ("flows", "tasks", "models", "infra")
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _package_version() -> str | None:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def source_hash(project_dir: str) -> tuple[str, int]:
    """sha256 over every ``*.py`` below the source folders, and how many files it covers."""
    h = hashlib.sha256()
    n = 0
    for top in SOURCE_DIRS:
        root = os.path.join(project_dir, top)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for name in sorted(filenames):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, project_dir).replace(os.sep, "/")
                with open(path, "rb") as f:
                    data = f.read()
                # Length framing: moving bytes between two files changes the hash.
                h.update(f"{rel}:{len(data)}:".encode())
                h.update(data)
                n += 1
    return h.hexdigest(), n


def _git(project_dir: str, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", project_dir, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version(project_dir: str = PROJECT_DIR) -> dict[str, Any]:
    """``{"key", "source_sha256", "source_files", "package_version", "git_commit", "git_dirty"}``."""
    digest, n = source_hash(project_dir)
    version = _package_version()
    commit = _git(project_dir, "rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git(project_dir, "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_DIRS)
        dirty = None if status is None else bool(status)
    return {"key": f"{version or 'unversioned'}+src.{digest[:16]}", "source_sha256": digest, "source_files": n,
            "package_version": version, "git_commit": commit, "git_dirty": dirty}


@lru_cache(maxsize=1)
def running_code_version() -> dict[str, Any]:
    """The version of the code this process loaded: computed once, so files edited while a
    long-lived worker runs do not change what its runs record."""
    return code_version(PROJECT_DIR)
