"""The test tiers stay apart: what needs a broker is marked by its directory (so ``make test-unit``
can leave it out), a unit test cannot reach the network, and test modules do not import each
other."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

TESTS = REPO / "tests"


# Collects the whole tree in a fresh pytest (nothing runs, no broker needed) and prints each
# test's node id with the markers it carries.
SHOW_MARKERS = """
import sys, pytest

class Show:
    def pytest_collection_finish(self, session):
        for item in session.items:
            names = ",".join(sorted({m.name for m in item.iter_markers()}))
            print(f"ITEM\t{item.nodeid}\t{names}")

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests"], plugins=[Show()]))
"""

TIER = {"integration": {"integration"}, "chaos": {"integration", "chaos"}}


def test_every_broker_test_is_marked_by_its_directory() -> None:
    """Every test under tests/integration is ``integration``, every test under tests/chaos
    ``chaos`` and ``integration``, no other test either: so ``-m "not integration"`` (make
    test-unit) needs no broker, ``-m chaos`` is tests/chaos alone and ``-m "not chaos"`` the
    rest."""
    out = subprocess.run(
        [sys.executable, "-c", SHOW_MARKERS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    marked: dict[str, set[str]] = {}
    for line in out.stdout.splitlines():
        if line.startswith("ITEM\t"):
            _, nodeid, names = line.split("\t")
            marked[nodeid] = set(names.split(",")) & {"integration", "chaos"}
    directories = {nodeid.split("/")[1] for nodeid in marked}
    assert directories >= {"unit", "deploy", "integration", "chaos"}, directories
    wrong = {
        nodeid: sorted(names)
        for nodeid, names in marked.items()
        if names != TIER.get(nodeid.split("/")[1], set())
    }
    assert wrong == {}


def test_a_unit_test_cannot_open_a_connection() -> None:
    with pytest.raises(AssertionError, match="unit tests run without a network"):
        socket.create_connection(("127.0.0.1", 1), timeout=1)


def _imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_test_modules_import_no_test_module_or_conftest() -> None:
    """What tests share lives in helper modules (tests/helpers.py, ...) or fixtures: a test module
    imported by another lends it its tests and fixtures, and a conftest is pytest's plugin, not a
    library."""
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in _imported_modules(path)
        if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith(("test_", "conftest"))
    ]
    assert offenders == []
