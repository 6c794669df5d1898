"""Chaos scenarios: one table of their scores at the end of the run (their markers, chaos and
integration, come from tests/conftest.py by directory)."""

from __future__ import annotations

import pytest

from tests.chaos.harness import SCORES, render_scores


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SCORES:
        return
    terminalreporter.section("chaos: accepted, completed, lost (lost must be 0)")
    for line in render_scores(SCORES):
        terminalreporter.write_line(line)
