"""Chaos scenarios: marked integration, and one table of their scores at the end of the run."""

from __future__ import annotations

import pytest

from tests.chaos.harness import SCORES, render_scores


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.chaos)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SCORES:
        return
    terminalreporter.section("chaos: accepted, completed, lost (lost must be 0)")
    for line in render_scores(SCORES):
        terminalreporter.write_line(line)
