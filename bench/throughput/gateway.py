"""Part 3: wrk against the real gateway and against the same HTTP stack without a broker.

* peak: ``wrk -t1 -c64`` (closed loop) POSTing valid ChargeRequests, a fresh request_id each
  (Lua), against each server in turn, same run;
* half rate: wrk2 is not packaged, so wrk paces itself: 16 connections, each pausing between
  an answer and its next request (the Lua ``delay()`` hook) for ``16 / (peak / 2)`` s less the
  time a request takes (measured by a 2 s probe run), which approximates an open-loop half-peak
  rate while the server keeps up; the rate achieved is reported next to the target;
* every 202 confirmed: after the runs, the depth of ``<ns>.requests`` (nothing consumes it) must
  equal the gateway's own count of 202 answers, and be at least the 202s wrk saw (wrk drops the
  answers still in flight when its time is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.processes import terminate
from bench.throughput.broker import REPO_ROOT, broker_pid, namespace, process_cpu_s
from bench.throughput.report import (
    WRK_LUA,
    Table,
    WrkResult,
    fmt,
    fmt_ratio,
    parse_wrk,
    ratio,
)
from loadgen.grid import free_ports, metric_value
from messaging import AmqpSettings

PATH = "/v1/charge-requests"
PEAK_CONNECTIONS = 64
HALF_CONNECTIONS = 16
RATIO_TARGET = 0.6
P99_TARGET_MS = 25.0


class WrkMissing(Exception):
    pass


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("wrk is not installed: apt-get install -y wrk")
    return found


@contextlib.asynccontextmanager
async def server(
    args: list[str], env: dict[str, str], url: str, cwd: Path = REPO_ROOT
) -> AsyncIterator[asyncio.subprocess.Process]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, after the process)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, cwd=cwd, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(150):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        break
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{' '.join(args)} not healthy at {url} within 15 s")
        if proc.returncode is not None:
            log.seek(0)
            raise RuntimeError(f"{' '.join(args)} exited: {log.read().decode()[-2000:]}")
        yield proc
    finally:
        await terminate(proc, 20)
        log.close()


@dataclass
class Measured:
    wrk: WrkResult
    cpu_us: float | None  # the HTTP server's CPU per request
    broker_cpu_us: float | None  # the broker's (everything it did meanwhile, per request)


async def measure(
    url: str,
    pids: tuple[int, int | None],
    *,
    connections: int,
    seconds: float,
    seed: int,
    delay_ms: float = 0.0,
) -> Measured:
    before = [process_cpu_s(p) for p in pids]
    result = await wrk(url, connections=connections, seconds=seconds, seed=seed, delay_ms=delay_ms)
    after = [process_cpu_s(p) for p in pids]
    per = [
        None if math.isnan(b - a) or not result.requests else (b - a) / result.requests * 1e6
        for a, b in zip(before, after, strict=True)
    ]
    return Measured(result, per[0], per[1])


async def wrk(
    url: str, *, connections: int, seconds: float, delay_ms: float = 0.0, seed: int
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
        script = f.name
    env = dict(os.environ, BENCH_SEED=str(seed), BENCH_DELAY_MS=f"{delay_ms:.3f}")
    try:
        proc = await asyncio.create_subprocess_exec(
            wrk_path(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            "--timeout", "5s", "-s", script, f"{url}{PATH}",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    finally:
        os.unlink(script)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-2000:]}")
    return parse_wrk(text)


def pause_for(rate: float, connections: int) -> float:
    """Milliseconds each of ``connections`` waits between requests to offer ``rate`` per s."""
    return 1000.0 * connections / rate if rate > 0 else 0.0


async def gateway_202s(url: str) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    return metric_value(text, "smartgrid_gateway_requests_total", {"status": "202"}) or 0.0


def _row(t: Table, name: str, m: Measured, vs: float | None, target: str = "") -> None:
    r = m.wrk
    lat = r.latency_ms
    ok = r.statuses.get("202", 0)
    t.add(
        name,
        r.rate,
        f"{lat.get('50', float('nan')):.1f}",
        f"{lat.get('99', float('nan')):.1f}",
        ok,
        r.requests - ok,
        fmt_ratio(vs),
        fmt(m.cpu_us),
        fmt(m.broker_cpu_us),
        target,
    )


async def run(
    settings: AmqpSettings, *, quick: bool, baseline_src: Path | None = None
) -> tuple[dict[str, Any], list[Table]]:
    seconds = 4.0 if quick else 6.0
    rounds = 1 if quick else 2
    seed = random.randrange(1, 2**31)
    port_gw, port_nb, port_base = free_ports(3)
    url_gw, url_nb = f"http://127.0.0.1:{port_gw}", f"http://127.0.0.1:{port_nb}"
    url_base = f"http://127.0.0.1:{port_base}"
    base_runs: list[Measured] = []
    async with namespace(settings, "gateway") as (topo, session):
        env = dict(os.environ)
        env.update(
            SMARTGRID_AMQP_URL=settings.amqp_url.get_secret_value(),
            SMARTGRID_NAMESPACE=topo.namespace,
            SMARTGRID_HTTP_PORT=str(port_gw),
            SMARTGRID_LOG_LEVEL="WARNING",
        )
        nb_args = ["-m", "bench.throughput.nobroker", "--port", str(port_nb)]
        beam = broker_pid()
        async with (
            server(["-m", "gateway"], env, url_gw) as gw,
            server(nb_args, env, url_nb) as nb,
        ):
            # Peaks, one server after the other (both idle while the other is measured),
            # alternated so that what else runs on the machine hits both alike; best of each.
            counted = 0.0
            nb_runs: list[Measured] = []
            gw_runs: list[Measured] = []
            for i in range(rounds):
                nb_runs.append(
                    await measure(
                        url_nb, (nb.pid, beam), connections=PEAK_CONNECTIONS, seconds=seconds,
                        seed=seed + 10 * i,
                    )
                )  # fmt: skip
                gw_runs.append(
                    await measure(
                        url_gw, (gw.pid, beam), connections=PEAK_CONNECTIONS, seconds=seconds,
                        seed=seed + 10 * i + 1,
                    )
                )  # fmt: skip
            if baseline_src is not None:
                # The gateway of another checkout (e.g. before a change), same namespace.
                base_env = dict(env, SMARTGRID_HTTP_PORT=str(port_base))
                base_env["PYTHONPATH"] = str(baseline_src)
                async with server(["-m", "gateway"], base_env, url_base, baseline_src) as bg:
                    for i in range(rounds):
                        base_runs.append(
                            await measure(
                                url_base, (bg.pid, beam), connections=PEAK_CONNECTIONS,
                                seconds=seconds, seed=seed + 10 * i + 5,
                            )
                        )  # fmt: skip
                    counted += await gateway_202s(url_base)
            nobroker = max(nb_runs, key=lambda m: m.wrk.rate)
            peak = max(gw_runs, key=lambda m: m.wrk.rate)
            half_target = peak.wrk.rate / 2
            # Pace: each connection waits so that all offer half the peak; one short run
            # measures how long a request itself takes, which the pause then leaves out.
            pause = pause_for(half_target, HALF_CONNECTIONS)
            probe = await wrk(
                url_gw, connections=HALF_CONNECTIONS, seconds=min(2.0, seconds), seed=seed + 2,
                delay_ms=pause,
            )  # fmt: skip
            if probe.rate > 0:
                per_request_ms = 1000.0 * HALF_CONNECTIONS / probe.rate - pause
                pause = max(0.0, pause - per_request_ms)
            half = await measure(
                url_gw, (gw.pid, beam), connections=HALF_CONNECTIONS, seconds=seconds,
                seed=seed + 3, delay_ms=pause,
            )  # fmt: skip
            counted += await gateway_202s(url_gw)
        await asyncio.sleep(0.5)
        depth = await session.queue_depth(topo.requests_queue)
    runs = (*(g.wrk for g in (*gw_runs, *base_runs)), probe, half.wrk)
    seen = sum(m.statuses.get("202", 0) for m in runs)
    r = ratio(peak.wrk.rate, nobroker.wrk.rate)
    p99 = half.wrk.latency_ms.get("99")
    confirmed_ok = depth == int(counted) and depth >= seen
    t = Table(
        f"3. Gateway: wrk POST {PATH} (valid ChargeRequests, distinct request_ids), "
        f"{seconds:g} s each; peaks best of {rounds}, alternated",
        [
            "what",
            "req/s",
            "p50 ms",
            "p99 ms",
            "202",
            "other",
            "vs no-broker",
            "CPU us/req",
            "broker us/req",
            "target / met",
        ],
    )
    _row(t, f"same HTTP stack, no broker (c={PEAK_CONNECTIONS})", nobroker, 1.0)
    _row(
        t,
        f"gateway, 202 after confirm (c={PEAK_CONNECTIONS})",
        peak,
        r,
        f">= {RATIO_TARGET:.2f}x {'yes' if r is not None and r >= RATIO_TARGET else 'NO'}",
    )
    _row(
        t,
        f"gateway at half its peak ({half_target:,.0f}/s offered, c={HALF_CONNECTIONS})",
        half,
        ratio(half.wrk.rate, nobroker.wrk.rate),
        f"p99 < {P99_TARGET_MS:g} ms {'yes' if p99 is not None and p99 < P99_TARGET_MS else 'NO'}",
    )
    if base_runs:
        base = max(base_runs, key=lambda m: m.wrk.rate)
        _row(
            t,
            f"gateway from {baseline_src} (c={PEAK_CONNECTIONS})",
            base,
            ratio(base.wrk.rate, nobroker.wrk.rate),
        )
        t.notes.append(
            f"this checkout's gateway against {baseline_src}'s: "
            f"{fmt_ratio(ratio(peak.wrk.rate, base.wrk.rate))} the rate, "
            f"{fmt_ratio(ratio(peak.cpu_us, base.cpu_us))} the CPU per request "
            "(runs: " + " / ".join(f"{m.wrk.rate:,.0f}" for m in base_runs) + ")"
        )
    t.notes.append(
        "peak runs, req/s: no broker "
        + " / ".join(f"{m.wrk.rate:,.0f}" for m in nb_runs)
        + "; gateway "
        + " / ".join(f"{m.wrk.rate:,.0f}" for m in gw_runs)
    )
    t.notes.append(
        f"every 202 stored: <ns>.requests holds {depth:,}; the gateway counted {counted:,.0f} "
        f"202s, wrk saw {seen:,} (the rest were in flight when wrk stopped): "
        f"{'yes' if confirmed_ok else 'NO'}"
    )
    t.notes.append(
        f"half rate: wrk2 is not packaged; wrk paced by its Lua delay(): {pause:.1f} ms between "
        f"a connection's answer and its next request ({HALF_CONNECTIONS} connections; the pause "
        "calibrated by a 2 s probe run), closed loop, so a slow answer delays the next request"
    )
    t.notes.append(
        "CPU us/req from /proc: the HTTP server process, and the broker (which also serves the "
        "other users of this shared broker meanwhile)"
    )
    result = {
        "seconds_per_run": seconds,
        "nobroker": _json(nobroker),
        "gateway_peak": _json(peak),
        "nobroker_runs": [m.wrk.rate for m in nb_runs],
        "gateway_peak_runs": [m.wrk.rate for m in gw_runs],
        "baseline_gateway_runs": [_json(m) for m in base_runs],
        "gateway_half": {**_json(half), "offered_rate": half_target, "pause_ms": pause},
        "gateway_over_nobroker": r,
        "ratio_target": RATIO_TARGET,
        "p99_target_ms": P99_TARGET_MS,
        "requests_queue_depth": depth,
        "gateway_counted_202": counted,
        "wrk_seen_202": seen,
        "every_202_stored": confirmed_ok,
    }
    return result, [t]


def _json(m: Measured) -> dict[str, Any]:
    r = m.wrk
    return {
        "cpu_us_per_request": m.cpu_us,
        "broker_cpu_us_per_request": m.broker_cpu_us,
        "requests": r.requests,
        "seconds": r.seconds,
        "rate": r.rate,
        "latency_ms": r.latency_ms,
        "statuses": r.statuses,
        "socket_errors": r.socket_errors,
    }
