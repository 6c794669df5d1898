"""loadgen against the real grid: each profile, both ways in, checked against what the workers'
own /metrics and the broker say; a worker stopped half way; honest pacing; clear failures."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from contracts import Topology
from loadgen.__main__ import run
from loadgen.broker import delete_namespace
from loadgen.choices import Profile, Via
from loadgen.demo import DEMO_SUBSTATIONS
from loadgen.grid import LocalGrid, metric_value
from loadgen.report import Report, build_report
from loadgen.run import RunOptions, run_load
from loadgen.settings import LoadgenSettings
from messaging import AmqpSettings, Session
from tests.helpers import register_substations, wait_until

# The demo's three substations: 150/300/600 kW, 8/16/32 bays.
SUBSTATIONS = DEMO_SUBSTATIONS
IDS = [s.id for s in SUBSTATIONS]
SAMPLE_TRACE = Path(__file__).resolve().parents[2] / "loadgen" / "traces" / "sample.csv"
KWH_TO_J = 3_600_000.0
# Sessions of 10-60 kWh last 0.1-1 s of wall time at x36000.
FAST = 36_000.0


def _settings_for(amqp_settings: AmqpSettings, namespace: str) -> LoadgenSettings:
    return LoadgenSettings(amqp_url=amqp_settings.amqp_url, namespace=namespace)


@pytest.fixture(scope="module")
def grid(
    amqp_settings: AmqpSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGrid]:
    """One fast grid shared by the profile tests (each run counts only its own requests)."""
    topology = Topology(f"test-loadgen-{uuid.uuid4().hex[:8]}")
    settings = amqp_settings.model_copy(update={"namespace": topology.namespace})
    local = LocalGrid(
        SUBSTATIONS,
        settings=settings,
        time_scale=FAST,
        heartbeat_interval_s=0.5,
        log_dir=tmp_path_factory.mktemp("grid"),
    )
    with local:
        yield local
    asyncio.run(delete_namespace(amqp_settings, topology, IDS))


def worker_totals(grid: LocalGrid, skip: str | None = None) -> dict[str, tuple[float, float]]:
    """(sessions completed, kWh delivered) per substation, from each worker's own /metrics."""
    out = {}
    with httpx.Client(timeout=5) as client:
        for sid in IDS:
            if sid == skip:
                continue
            text = client.get(grid.metrics_urls[f"worker-{sid}"]).text
            labels = {"substation": sid}
            done = metric_value(text, "smartgrid_substation_sessions_completed_total", labels)
            joules = metric_value(
                text, "smartgrid_substation_energy_delivered_joules_total", labels
            )
            out[sid] = (done or 0.0, (joules or 0.0) / KWH_TO_J)
    return out


def check_against_workers(
    report: Report, before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> None:
    """The report's per-substation work equals what each worker itself counted meanwhile."""
    rows = {r.substation_id: r for r in report.substations}
    for sid in IDS:
        done = after[sid][0] - before[sid][0]
        kwh = after[sid][1] - before[sid][1]
        assert rows[sid].requests == done, (sid, rows[sid], done)
        assert rows[sid].energy_kwh == pytest.approx(kwh, rel=1e-6, abs=1e-6)
    assert sum(r.requests for r in report.substations) == report.completed


@pytest.mark.parametrize(
    ("profile", "via", "extra"),
    [
        ("steady", "http", {"rate": 100.0, "requests": 150}),
        ("rush-hour", "amqp", {"rate": 150.0, "duration_s": 2.0}),
        ("spike", "http", {"rate": 200.0, "requests": 150}),
        ("replay", "amqp", {"trace": SAMPLE_TRACE, "speed": 10.0}),
    ],
)
def test_each_profile_through_run_matches_the_workers(
    grid: LocalGrid,
    amqp_settings: AmqpSettings,
    tmp_path: Path,
    profile: Profile,
    via: Via,
    extra: dict[str, Any],
) -> None:
    # Given a running grid and its workers' counters
    before = worker_totals(grid)
    settings = _settings_for(amqp_settings, grid.namespace)
    options = RunOptions(
        via=via,
        profile=profile,
        seed=11,
        settle_s=30,
        gateway_url=grid.gateway_url,
        **extra,
    )
    # When loadgen runs the profile through its plain run() function
    out = tmp_path / "report.json"
    code = run(settings, options, Console(width=140), json_path=out)
    doc = json.loads(out.read_text())
    # Then nothing is lost, the exit code says so, and the JSON has the documented keys
    assert code == 0, doc
    assert doc["lost"] == 0
    assert doc["sent"] == doc["accepted"] == doc["completed"] > 0
    assert doc["rejected"] == doc["duplicates"] == 0
    if profile == "replay":
        assert doc["sent"] == 120
    # And every number per substation is what the workers themselves counted
    after = worker_totals(grid)
    report = _report_from_json(doc)
    check_against_workers(report, before, after)


def _report_from_json(doc: dict[str, Any]) -> Report:
    from loadgen.state import ReportRow

    rows = [ReportRow(**r) for r in doc["substations"]]
    fields = {k: v for k, v in doc.items() if k not in ("substations", "exit_code", "latency")}
    return Report(**fields, latency={}, substations=rows)


def test_the_cli_runs_a_spike_writes_json_and_a_plot(grid: LocalGrid, tmp_path: Path) -> None:
    json_path, plot_path = tmp_path / "r.json", tmp_path / "load.png"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "loadgen", "run", "--profile", "spike", "--rate", "150"),
            *("--requests", "100", "--seed", "3", "--settle", "30"),
            *("--json", str(json_path), "--plot", str(plot_path)),
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "SMARTGRID_AMQP_URL": grid.settings.amqp_url.get_secret_value(),
            "SMARTGRID_NAMESPACE": grid.namespace,
            "SMARTGRID_GATEWAY_URL": grid.gateway_url,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(json_path.read_text())
    assert (doc["sent"], doc["completed"], doc["lost"]) == (100, 100, 0)
    assert "nothing lost" in done.stdout
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _queue_depth(settings: AmqpSettings, queue: str) -> int:
    session = await Session.open(settings, "smartgrid-tests-depth")
    try:
        return await session.queue_depth(queue)
    finally:
        await session.close()


@pytest.mark.timeout(180)
async def test_a_worker_stopped_half_way_is_accounted_for(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    # Given a grid whose sessions last a few seconds, so that a worker holds work when it dies
    register_substations(topology, IDS)
    settings = _settings_for(amqp_settings, topology.namespace)
    grid = LocalGrid(
        SUBSTATIONS, settings=settings, time_scale=3600, heartbeat_interval_s=0.5, log_dir=tmp_path
    )
    grid.start()
    try:
        victim = "s600"
        last_seen: dict[str, tuple[float, float]] = {}

        def victim_holds_work() -> bool:
            text = httpx.get(grid.metrics_urls[f"worker-{victim}"], timeout=5).text
            labels = {"substation": victim}
            done = metric_value(text, "smartgrid_substation_sessions_completed_total", labels)
            active = metric_value(text, "smartgrid_substation_active_sessions", labels)
            return (done or 0) >= 5 and (active or 0) >= 1

        async def stop_victim_half_way() -> None:
            await wait_until(
                victim_holds_work,
                f"{victim} charging, 5 sessions done",
                timeout=30,
                poll=0.2,
                blocking=True,
            )
            last_seen.update(await asyncio.to_thread(worker_totals, grid))
            grid.send_signal(f"worker-{victim}", signal.SIGKILL)

        killer = asyncio.create_task(stop_victim_half_way())
        options = RunOptions(
            rate=25, requests=200, seed=5, settle_s=60, gateway_url=grid.gateway_url
        )
        # When 200 requests go out over 8 s and the biggest worker is killed while it charges
        result = await run_load(settings, options)
        await killer
        report = build_report(result, IDS)
        depth = await _queue_depth(settings, topology.substation_queue(victim))
        survivors = await asyncio.to_thread(worker_totals, grid, victim)
    finally:
        grid.stop()
    # Then every request is accounted for, exactly once
    assert report.sent == 200
    assert report.sent == report.accepted + sum(report.rejected_at_ingress.values())
    downstream = sum(report.rejected_downstream.values())
    assert report.accepted == report.completed + downstream + report.unfinished_total + report.lost
    # What waits in the dead worker's queue (the broker's own count) is unfinished, not lost
    assert report.lost == 0
    assert report.unfinished_total == depth
    assert report.exit_code == (4 if depth else 0)
    # And completions per substation agree with the workers (the victim's until its death: a
    # session or two may end between reading its counter and the kill)
    rows = {r.substation_id: r for r in report.substations}
    assert abs(rows[victim].requests - last_seen[victim][0]) <= 2
    for sid, (done, _) in survivors.items():
        assert rows[sid].requests == done
    print(f"\nunfinished {report.unfinished_total} (in {victim}'s queue: {depth}), lost 0")


@pytest.mark.timeout(180)
def test_pacing_is_honest_at_200_per_second_for_30_seconds(
    grid: LocalGrid, amqp_settings: AmqpSettings
) -> None:
    settings = _settings_for(amqp_settings, grid.namespace)
    options = RunOptions(rate=200, duration_s=30, seed=1, settle_s=60, gateway_url=grid.gateway_url)
    result = asyncio.run(run_load(settings, options))
    report = build_report(result)
    # The send times loadgen recorded say the same as its report...
    sent = sorted(result.state.sent_at.values())
    measured = (len(sent) - 1) / (sent[-1] - sent[0]).total_seconds()
    assert report.sent == 6000
    assert measured == pytest.approx(report.achieved_rate_per_s, rel=0.01)
    # ...and that is within 5 % of the target, with nothing lost
    assert report.achieved_rate_per_s == pytest.approx(200, rel=0.05)
    assert report.lost == 0
    print(
        f"\nachieved {report.achieved_rate_per_s:.1f}/s, "
        f"max lateness {report.max_send_lateness_s:.3f}s"
    )


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unreachable_gateway_or_broker_is_one_clear_line(amqp_settings: AmqpSettings) -> None:
    url = amqp_settings.amqp_url.get_secret_value()
    no_gateway = _cli(
        "run", "-n", "5", "--gateway-url", "http://127.0.0.1:9", env={"SMARTGRID_AMQP_URL": url}
    )
    assert no_gateway.returncode == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in no_gateway.stdout
    assert "Traceback" not in no_gateway.stdout + no_gateway.stderr
    no_broker = _cli("run", "-n", "5", "--amqp-url", "amqp://guest:guest@127.0.0.1:9/%2F")
    assert no_broker.returncode == 1
    assert "cannot connect to amqp://guest:***@127.0.0.1:9" in no_broker.stdout
    assert "Traceback" not in no_broker.stdout + no_broker.stderr


def test_a_gateway_that_wants_a_key_gets_it_from_the_environment(
    amqp_settings: AmqpSettings, tmp_path: Path
) -> None:
    topology = Topology(f"test-key-{uuid.uuid4().hex[:8]}")
    settings = amqp_settings.model_copy(update={"namespace": topology.namespace})
    key = "k" * 16 + uuid.uuid4().hex
    env = {
        "SMARTGRID_AMQP_URL": amqp_settings.amqp_url.get_secret_value(),
        "SMARTGRID_NAMESPACE": topology.namespace,
    }
    grid = LocalGrid(
        SUBSTATIONS[:1],
        settings=settings,
        time_scale=FAST,
        heartbeat_interval_s=0.5,
        log_dir=tmp_path,
        process_env={"gateway": {"SMARTGRID_API_KEY": key}},
    )
    try:
        with grid:
            args = ("run", "-n", "5", "--rate", "50", "--settle", "20")
            url = ("--gateway-url", grid.gateway_url)
            # Without the key: every request refused, and loadgen says why in one line
            without = _cli(*args, *url, env=env)
            assert without.returncode == 1
            assert "401: it wants an API key and none was sent" in without.stdout
            assert "Traceback" not in without.stdout + without.stderr
            # With it (from the environment only): all accepted and completed
            with_key = _cli(*args, *url, env={**env, "SMARTGRID_API_KEY": key})
            assert with_key.returncode == 0, with_key.stdout
            assert "401" not in with_key.stdout
    finally:
        asyncio.run(delete_namespace(amqp_settings, topology, [SUBSTATIONS[0].id]))


@pytest.mark.timeout(180)
def test_requests_still_in_a_slow_grid_are_unfinished_not_lost(
    amqp_settings: AmqpSettings, topology: Topology, tmp_path: Path
) -> None:
    """Newcomer point 1: substations too slow to finish within --settle (time x60: sessions of
    minutes) hold the requests, charging or waiting in <ns>.requests; loadgen reports them as
    unfinished, by where they wait, none lost, and exits with the unfinished code (4)."""
    spec = SUBSTATIONS[0]
    register_substations(topology, [spec.id])
    settings = amqp_settings.model_copy(update={"namespace": topology.namespace})
    grid = LocalGrid(
        (spec,), settings=settings, time_scale=60, heartbeat_interval_s=0.5, log_dir=tmp_path
    )
    json_path = tmp_path / "r.json"
    with grid:
        done = _cli(
            *("run", "-n", "30", "--rate", "30", "--seed", "4", "--settle", "3"),
            *("--gateway-url", grid.gateway_url, "--json", str(json_path)),
            env={
                "SMARTGRID_AMQP_URL": amqp_settings.amqp_url.get_secret_value(),
                "SMARTGRID_NAMESPACE": topology.namespace,
            },
        )
    assert done.returncode == 4, done.stdout + done.stderr
    doc = json.loads(json_path.read_text())
    unfinished = doc["unfinished"]
    assert (doc["accepted"], doc["lost"], doc["exit_code"]) == (30, 0, 4)
    assert unfinished["total"] == 30 - doc["completed"] > 0
    # Where they wait: charging at the one substation (at most its bays), the rest held
    charging = unfinished["charging"].get(spec.id, 0)
    assert 0 < charging <= spec.bays
    assert unfinished["held"] + sum(unfinished["queued"].values()) + charging == unfinished["total"]
    assert doc["grid_holdings"]["requests_counted_by"] == "management API"
    assert f"charging at {spec.id}" in done.stdout
    assert "nothing lost" in done.stdout
