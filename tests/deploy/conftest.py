"""Tools the deploy checks need: promtool, prometheus, docker compose. In CI (CI=true) a
missing tool fails the test loudly; elsewhere the test is skipped with how to get it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import DEPLOY, REPO, missing


def _works(cmd: list[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "v2." in out.stdout


@pytest.fixture(scope="session")
def compose() -> list[str]:
    """The Compose v2 command: the docker CLI's plugin, or the standalone binary."""
    # .ci/run puts the standalone binary in the venv where there is no docker CLI.
    venv_binary = str(REPO / ".venv" / "bin" / "docker-compose")
    for cmd in (["docker", "compose"], ["docker-compose"], [venv_binary]):
        if shutil.which(cmd[0]) and _works(cmd):
            return cmd
    missing(
        "Docker Compose v2",
        "the docker CLI's compose plugin, or a docker-compose v2 binary on PATH",
    )
    raise AssertionError("unreachable")


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """deploy/ without the developer's own .env, so that only the files under test count."""
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target, ignore=shutil.ignore_patterns(".env"))
    return target
