"""The plan's solver: a plan's first use in a process writes nothing on stdout (HiGHS's banner
included), and a worker's threads each get their own solver."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from substation_worker import planning

PLAN_ONCE = """
import numpy as np
from substation_worker import planning
found = planning.plan(5.0, np.array([0.0, 3600.0]), np.array([0.0]), np.array([3600.0]),
                      np.array([6.0]), np.array([10.0]))
import sys
sys.stderr.write(repr(float(found.delivered_kwh()[0])))
"""


def test_the_first_plan_of_a_process_prints_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PLAN_ONCE], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout == ""
    assert float(done.stderr) == pytest.approx(5.0)


def test_threads_plan_at_once_each_with_its_own_solver() -> None:
    bounds = np.array([0.0, 1800.0, 3600.0])
    results: list[float] = []
    solvers: set[int] = set()

    def run(need: float) -> None:
        for _ in range(20):
            found = planning.plan(
                4.0, bounds, np.zeros(2), np.array([1800.0, 3600.0]), np.full(2, 6.0),
                np.array([need, need]),
            )  # fmt: skip
            results.append(float(found.delivered_kwh().sum()))
        solvers.add(id(planning._solver()))

    threads = [threading.Thread(target=run, args=(n,)) for n in (1.0, 2.0, 10.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Capacity 4 kW over an hour is 4 kWh in all, the first car at most 2 kWh by its 30 min.
    assert sorted(set(results)) == pytest.approx([2.0, 4.0])
    assert len(results) == 60
    assert len(solvers) == 3
