"""``python -m bench.flood [--quick] [--json PATH] [--seed N]``: the dispatcher under a flood of
5,000 fake substation ids, against a quiet baseline measured in the same run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.flood.report import fmt_ratio, heartbeats_table, ratio, requests_table, verdicts
from bench.flood.run import WORKERS, Bench, Options, Outcome
from bench.output import write_json

DEFAULT_JSON = Path("bench/results/flood.json")
TIME_SCALE = 360_000.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _has_admission() -> bool:
    """The dispatcher this checkout runs probes a substation's queue before admitting it. The
    dispatcher before that declared a quorum queue for every id it heard: 5,000 of them wedged
    the shared broker. Never flood one."""
    from dispatcher.service import Dispatcher
    from dispatcher.settings import DispatcherSettings

    return hasattr(Dispatcher, "_probe") and "admit_per_s" in DispatcherSettings.model_fields


def print_report(outcome: Outcome, opts: Options, header: str) -> None:
    quiet, flood = outcome.phase("quiet"), outcome.phase("flood")
    load = outcome.load
    print(header)
    s = outcome.settings
    version = (outcome.management or {}).get("rabbitmq_version")
    print(
        f"RabbitMQ {version or '?'}; dispatcher in this process (uvloop, startup heap frozen, "
        f"{s['policy']}), 3 worker processes "
        + "/".join(f"{w.capacity_kw:g}" for w in WORKERS)
        + f" kW at time x{opts.time_scale:,.0f}; {opts.rate:g} requests/s into <ns>.requests "
        f"through every phase; flood: {opts.fakes:,} fake ids, all once in 1.5 s, then each "
        f"again every second ({load.get('fake_published', 0):,} sent in "
        f"{load.get('fake_rounds', 0)} rounds, the first in "
        f"{load.get('first_round_s') or 0:.2f} s); admission {s['admit_per_s']:g} new ids/s, "
        f"burst {s['admit_burst']:g}, at most {s['max_substations']:,} substations."
    )
    print(
        "decision: every call of the policy timed (perf_counter_ns; held: it found no room); "
        "CPU: the same calls' thread CPU time (no wait for a core in it); dispatch: request "
        "received -> its assignment confirmed (the dispatcher's clock); x quiet: ratio to the "
        "quiet phase of this run."
    )
    for line in requests_table(outcome.phases, quiet):
        print(line)
    print()
    print(
        "heartbeats: the dispatcher's handler timed (parse + admission; pika's framing not "
        "included); loop busy: its share of wall time; refused: "
        "smartgrid_dispatcher_heartbeats_total by outcome; probes: passive declares of a new "
        "id's queue (one at a time); CPU: % of one core (the dispatcher: this process)."
    )
    for line in heartbeats_table(outcome.phases):
        print(line)
    print()
    by_sub = load.get("completed_by_substation", {})
    print(
        "completed by substation: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(by_sub.items()))
        + f"; publish failures {load.get('publish_failures', 0)}, fake heartbeats unconfirmed "
        f"{load.get('fake_failed', 0)}; requests late at most "
        f"{load.get('requests_late_max_s', 0) * 1e3:.0f} ms, flood slices "
        f"{load.get('flood_late_max_s', 0) * 1e3:.0f} ms"
    )
    mgmt = outcome.management
    if mgmt is not None:
        real = {f"{outcome.namespace}.substation.{w.id}" for w in WORKERS}
        subs = [q for q in mgmt["queues"] if ".substation." in q and q not in real]
        print(
            f"management API: {len(mgmt['queues'])} queues in the namespace after the run "
            f"({', '.join(q.removeprefix(outcome.namespace + '.') for q in mgmt['queues'])}); "
            f"substation queues other than the real ones: {len(subs)}"
        )
    print(
        f"real substations' queues seen by the same probe: {outcome.real_queues_seen} of "
        f"{len(WORKERS)}; dispatch p99 under the flood "
        f"{fmt_ratio(ratio(flood.dispatch_p99_ms, quiet.dispatch_p99_ms))} the quiet figure"
    )
    print(
        f"decision CPU time p99 under the flood "
        f"{fmt_ratio(ratio(flood.decision_cpu_p99_us, quiet.decision_cpu_p99_us))} the quiet "
        f"figure: what the wall-clock p99 has beyond it is time off the CPU (the dispatcher's "
        f"thread preempted {flood.preempted_per_s or 0:,.0f}/s against "
        f"{quiet.preempted_per_s or 0:,.0f}/s quiet)"
    )
    if outcome.aborted:
        print(f"ABORTED: {outcome.aborted}")
    print()
    for v in verdicts(
        quiet, flood, outcome.phases, real=len(WORKERS), fake_queues=outcome.fake_queues,
        fake_probed=outcome.fake_probed, table_at_end=outcome.table_at_end,
    ):  # fmt: skip
        print(v.line())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter phases, half the rate")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--fakes", type=int, default=5_000, help="distinct fake substation ids")
    parser.add_argument(
        "--rate", type=float, default=None, help="requests per second (default 400; quick 200)"
    )
    args = parser.parse_args(argv)
    if not _has_admission():
        print("refusing: this dispatcher has no admission control (it would declare a queue "
              "for every fake id and wedge the broker)", file=sys.stderr)  # fmt: skip
        return 2

    log_dir = Path(tempfile.mkdtemp(prefix="smartgrid-bench-flood-"))
    logging.basicConfig(
        level=logging.INFO,
        filename=log_dir / "dispatcher.log",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    if args.quick:
        phases = {"warmup_s": 1.0, "quiet_s": 6.0, "flood_s": 6.0, "after_s": 2.0}
        rate = 200.0
    else:
        phases = {"warmup_s": 3.0, "quiet_s": 15.0, "flood_s": 15.0, "after_s": 5.0}
        # The three substations' capacity: headroom holds what they cannot take yet, so each
        # phase has some 10,000 decisions (a p99 from a few thousand moves with every stray
        # preemption on two shared cores), and the grid still completes every request.
        rate = 400.0
    if args.rate is not None:
        rate = args.rate
    opts = Options(
        rate=rate, fakes=args.fakes, seed=args.seed, time_scale=TIME_SCALE, heartbeat_s=1.0,
        log_dir=log_dir, **phases,
    )  # fmt: skip
    command = "python -m bench.flood" + (" --quick" if args.quick else "")
    now = datetime.now(UTC)
    load_at_start = os.getloadavg()
    print(f"bench.flood: logs in {log_dir}", file=sys.stderr, flush=True)
    started = time.perf_counter()

    from messaging.runtime import freeze_startup_heap

    bench = Bench(opts)
    freeze_startup_heap()  # as the dispatcher process does
    try:
        import uvloop

        outcome = uvloop.run(bench.run())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        outcome = asyncio.run(bench.run())
    elapsed = time.perf_counter() - started
    cores = os.cpu_count() or 0
    header = (
        f"Heartbeat flood: {now:%Y-%m-%d %H:%M} UTC, {cores} cores ({_cpu_model()}), "
        f"Python {platform.python_version()}, load average {load_at_start[0]:.2f} at the "
        f"start, {elapsed:.0f} s ({command})"
    )
    print_report(outcome, opts, header)
    quiet, flood = outcome.phase("quiet"), outcome.phase("flood")
    p99 = ratio(flood.decision_p99_us, quiet.decision_p99_us)
    write_json(
        args.json, "flood", started=now, cores=cores, command=command, elapsed_s=elapsed,
        seed=args.seed, rate=opts.rate, fakes=opts.fakes, time_scale=opts.time_scale,
        load_average_at_start=load_at_start, load_average_at_end=os.getloadavg(),
        decision_p99_ratio=p99, dispatch_p99_ratio=ratio(flood.dispatch_p99_ms,
        quiet.dispatch_p99_ms), log_dir=str(log_dir), **outcome.to_json(),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
