"""An ACN day replayed by loadgen: every request that reaches ``<ns>.requests`` carries its car's
departure, its stay in the trace run at the replay's speed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from contracts import ChargeRequest, Topology
from loadgen.profiles import load_trace
from loadgen.run import RunOptions, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings, Session
from tests.helpers import collect

# The lightest shipped weekday: 14 sessions from 07:00 to the evening.
TRACE = (
    Path(__file__).resolve().parents[2] / "loadgen" / "traces" / "acn" / "caltech-2019-11-27.csv"
)
# A day in about 2.4 s; its shortest stay (0.19 h) becomes 19 ms of wall time.
SPEED = 36_000.0


@pytest.mark.timeout(120)
async def test_replayed_acn_requests_carry_their_departure(
    amqp_settings: AmqpSettings, topology: Topology, session: Session
) -> None:
    rows = {r.demand.vehicle_id: r for r in load_trace(TRACE)}
    settings = LoadgenSettings(amqp_url=amqp_settings.amqp_url, namespace=topology.namespace)
    options = RunOptions(
        via="amqp", profile="replay", trace=TRACE, speed=SPEED, settle_s=0, request_timeout_s=10
    )
    # Given no dispatcher, so that the requests stay in <ns>.requests as loadgen published them
    result = await run_load(settings, options)
    assert len(result.state.sent_at) == len(rows)
    deliveries = await collect(session, topology.requests_queue, len(rows), timeout=15)
    requests = [ChargeRequest.model_validate_json(d.body) for d in deliveries]
    # Then each row arrived once, with its demand and a departure its stay / speed after the send
    assert sorted(r.vehicle_id for r in requests) == sorted(rows)
    for request in requests:
        row = rows[request.vehicle_id]
        assert request.energy_kwh == row.demand.energy_kwh
        assert request.max_power_kw == row.demand.max_power_kw
        assert row.dwell_h is not None
        assert request.departure is not None
        stay = request.departure - request.requested_at
        assert abs(stay - timedelta(hours=row.dwell_h / SPEED)) < timedelta(microseconds=2)
        # requested_at is when loadgen sent it
        assert request.requested_at == result.state.sent_at[request.request_id]
