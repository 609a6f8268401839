"""Import layering (issue 16): no layer imports from the layers above it, and no installed
package imports the dev tooling (devtools/, tests/, bench/).

Read from the source with ``ast`` rather than by importing, so a lazy import inside a function
counts the same as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "models", "infra")  # what pyproject installs


def _imported_tops(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def _offenders(package: str, forbidden: set[str]) -> dict[str, list[str]]:
    found = {str(p.relative_to(ROOT)): sorted(_imported_tops(p) & forbidden)
             for p in sorted((ROOT / package).rglob("*.py"))}
    return {f: tops for f, tops in found.items() if tops}


@pytest.mark.parametrize("package,above", [("infra", {"flows", "tasks", "models"}),
                                           ("models", {"flows", "tasks"}),
                                           ("tasks", {"flows"})])
def test_no_layer_imports_from_the_layers_above(package, above):
    """flows wire tasks, tasks wrap models, models use infra: never the other way round."""
    assert _offenders(package, above) == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_installed_packages_do_not_import_dev_tooling(package):
    assert _offenders(package, {"devtools", "tests", "bench"}) == {}
