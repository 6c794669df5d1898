"""The whole grid on a real RabbitMQ: 600 requests through the HTTP gateway, three substations.

Gateway, dispatcher and workers run as the real processes (``python -m ...``); the test only
sends HTTP requests and listens to heartbeats and events, then checks what the workers' own
/metrics say against what the events said, so no number confirms itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from contracts import EventKind, Heartbeat, Topology
from loadgen.grid import LocalGrid, SubstationSpec, metric_value
from loadgen.observe import GridObserver
from loadgen.run import RunOptions, RunResult, run_load
from loadgen.state import GridState
from messaging import AmqpSettings
from tests.helpers import register_substations, wait_until

SUBSTATIONS = (
    SubstationSpec("s150", 150.0, 8),
    SubstationSpec("s300", 300.0, 16),
    SubstationSpec("s600", 600.0, 32),
)
REQUESTS = 600
RATE_PER_S = 300.0
TIME_SCALE = 7200.0
SEED = 20261124
SETTLE_TIMEOUT_S = 240.0
# The balance target: each substation's share of the energy within +-35% of its capacity share.
SHARE_TOLERANCE = 0.35
KWH_TO_J = 3_600_000.0


@dataclass
class GridRun:
    policy: str
    state: GridState
    result: RunResult
    heartbeats: list[Heartbeat] = field(default_factory=list)
    dispatched: dict[str, float] = field(default_factory=dict)
    worker_completed: dict[str, float] = field(default_factory=dict)
    worker_energy_kwh: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def energy_share_errors(self) -> dict[str, float]:
        """Relative error of each substation's energy share against its capacity share."""
        return {
            r.substation_id: abs(r.energy_share - r.capacity_share) / r.capacity_share
            for r in self.state.report([s.id for s in SUBSTATIONS])
        }

    def dispatch_share_errors(self) -> dict[str, float]:
        """The same for the share of requests dispatched to each (the dispatcher's counter)."""
        total_dispatched = sum(self.dispatched.values())
        total_capacity = sum(s.capacity_kw for s in SUBSTATIONS)
        return {
            s.id: abs(self.dispatched[s.id] / total_dispatched - s.capacity_kw / total_capacity)
            / (s.capacity_kw / total_capacity)
            for s in SUBSTATIONS
        }


class _RecordingState(GridState):
    """GridState that also keeps every heartbeat, to check each one against capacity."""

    def __init__(self) -> None:
        super().__init__()
        self.all_heartbeats: list[Heartbeat] = []

    def on_heartbeat(self, hb: Heartbeat) -> None:
        self.all_heartbeats.append(hb)
        super().on_heartbeat(hb)


async def _drive(grid: LocalGrid, until: EventKind) -> GridRun:
    """Send the burst, then wait until every accepted request reached ``until`` (or failed)."""
    state = _RecordingState()
    options = RunOptions(
        via="http",
        rate=RATE_PER_S,
        requests=REQUESTS,
        seed=SEED,
        settle_s=SETTLE_TIMEOUT_S,
        gateway_url=grid.gateway_url,
    )

    def reached(s: GridState) -> bool:
        return s.accepted <= s.by_kind[until] or s.all_accepted_settled()

    result = await run_load(grid.settings, options, state=state, settled=reached)
    # The last heartbeats: one from every substation after the last completion.
    heard = len(state.all_heartbeats)
    async with GridObserver(grid.settings, Topology(grid.namespace), state):
        await wait_until(
            lambda: (
                {hb.substation_id for hb in state.all_heartbeats[heard:]}
                >= {s.id for s in SUBSTATIONS}
            ),
            "a heartbeat from every substation after the last completion",
        )
    run = GridRun(grid.policy, state, result, state.all_heartbeats, elapsed_s=result.elapsed_s)
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(grid.metrics_urls["dispatcher"])).text
        for spec in SUBSTATIONS:
            labels = {"substation": spec.id, "policy": grid.policy}
            decisions = metric_value(text, "smartgrid_dispatcher_decisions_total", labels)
            run.dispatched[spec.id] = decisions or 0.0
        for spec in SUBSTATIONS:
            text = (await client.get(grid.metrics_urls[f"worker-{spec.id}"])).text
            labels = {"substation": spec.id}

            def sample(name: str, text: str = text, labels: dict[str, str] = labels) -> float:
                return metric_value(text, f"smartgrid_substation_{name}_total", labels) or 0.0

            run.worker_completed[spec.id] = sample("sessions_completed")
            run.worker_energy_kwh[spec.id] = sample("energy_delivered_joules") / KWH_TO_J
    return run


def _run_grid(settings: AmqpSettings, topology: Topology, policy: str, until: EventKind) -> GridRun:
    register_substations(topology, [s.id for s in SUBSTATIONS])
    grid = LocalGrid(
        SUBSTATIONS,
        settings=settings.model_copy(update={"namespace": topology.namespace}),
        namespace=topology.namespace,
        policy=policy,
        time_scale=TIME_SCALE,
        heartbeat_interval_s=1.0,
    )
    with grid:
        return asyncio.run(_drive(grid, until))


def _check_nothing_lost_and_never_overloaded(run: GridRun) -> None:
    state = run.state
    # Every request was accepted (202 after the broker's confirm) ...
    assert state.sent == REQUESTS
    assert dict(state.ingress_statuses) == {"202": REQUESTS}
    assert run.result.settled
    assert len(state.accepted) == REQUESTS
    # ... and every accepted request_id completed: 0 lost, none failed.
    assert state.accepted <= state.by_kind[EventKind.COMPLETED], (
        f"{run.policy}: {len(state.accepted - state.by_kind[EventKind.COMPLETED])} lost "
        f"after {run.elapsed_s:.0f}s"
    )
    assert state.count(EventKind.DEAD_LETTERED) == 0
    # The workers' own counters agree with the events, substation by substation.
    by_events = {r.substation_id: r for r in state.report([s.id for s in SUBSTATIONS])}
    for sid, completed in run.worker_completed.items():
        assert completed == by_events[sid].requests, (sid, completed, by_events[sid])
        assert run.worker_energy_kwh[sid] == pytest.approx(by_events[sid].energy_kwh, rel=1e-6)
    assert sum(run.worker_completed.values()) == REQUESTS
    # No heartbeat ever reported a load above its substation's capacity.
    assert {hb.substation_id for hb in run.heartbeats} == {s.id for s in SUBSTATIONS}
    over = [hb for hb in run.heartbeats if hb.load_kw > hb.capacity_kw * (1 + 1e-9)]
    assert not over, over[:3]


@pytest.mark.timeout(600)
def test_600_requests_spread_by_capacity_and_naive_least_loaded_herds(
    amqp_settings: AmqpSettings, topology: Topology, new_topology: Callable[[], Topology]
) -> None:
    # Given three substations of 150, 300 and 600 kW behind the real gateway and dispatcher
    # When 600 requests arrive through HTTP at 300/s under smartgrid's policy
    smart = _run_grid(amqp_settings, topology, "headroom", until=EventKind.COMPLETED)
    # Then all complete, none overloads, and energy follows capacity within +-35%
    _check_nothing_lost_and_never_overloaded(smart)
    smart_errors = smart.energy_share_errors()
    assert max(smart_errors.values()) <= SHARE_TOLERANCE, smart.state.report()
    assert max(smart.dispatch_share_errors().values()) <= SHARE_TOLERANCE, smart.dispatched

    # When the same burst (same seed) meets the seeds' naive least-loaded policy; it never
    # holds, so its choices are all made once every request is dispatched
    naive = _run_grid(amqp_settings, new_topology(), "least-loaded", until=EventKind.DISPATCHED)
    # Then it herds: the requests dispatched to a substation are far off its capacity share
    assert sum(naive.dispatched.values()) == REQUESTS
    naive_errors = naive.dispatch_share_errors()
    assert max(naive_errors.values()) > SHARE_TOLERANCE, naive.dispatched
    assert max(naive_errors.values()) > 2 * max(smart.dispatch_share_errors().values())
    print(
        f"\nheadroom: all completed in {smart.elapsed_s:.1f}s; energy share (capacity share) "
        + ", ".join(
            f"{r.substation_id} {r.energy_share:.1%} ({r.capacity_share:.1%})"
            for r in smart.state.report([s.id for s in SUBSTATIONS])
        )
        + "\nrequests dispatched, headroom: "
        + ", ".join(f"{k} {v:.0f}" for k, v in smart.dispatched.items())
        + "; least-loaded: "
        + ", ".join(f"{k} {v:.0f}" for k, v in naive.dispatched.items())
    )
