"""``python -m bench.throughput [--quick] [--count N] [--json PATH] [--only PARTS]``: throughput.

1. ceiling: bare pika (pipelined publisher, pipelined relay, intent-first relay, relay waiting
   for each confirm);
2. dispatcher: the real smartgrid-dispatcher against the bare relays, same load, same run;
   peers (2b): the bare relay written with FastStream and with Dramatiq, in the same rounds;
3. gateway: wrk against the real gateway and against the same HTTP stack without a broker;
4. end to end: loadgen against a LocalGrid at increasing rates, via HTTP and via AMQP.

The relays of parts 1, 2 and peers each run in a process of their own (``bench.throughput.bare``,
``bench.throughput.peers``, ``python -m dispatcher``) and drain a pre-filled quorum
``<ns>.requests`` of N ChargeRequests into 3 quorum substation queues, measured alike (the
substation queues' depth, from 10 % to 90 % of N). What each guarantees:

* bare relay, FastStream relay, Dramatiq relay: consume with manual ack, republish persistent
  and mandatory with publisher confirms, ack the source only once the republish is confirmed
  (a return or a nack is counted and the run fails). The bare relay pipelines its confirms
  (prefetch 1000) and acks with ``multiple``; FastStream (``AckPolicy.MANUAL``, prefetch 1000)
  awaits each publish's confirm in the task of its delivery and acks each message alone;
  Dramatiq (``confirm_delivery=True``, 8 worker threads) never pipelines confirms, each send
  blocks its thread until confirmed, and it acks once the actor returned.
* smartgrid-dispatcher: the same, after a confirmed DispatchIntent per batch, with its policy.

``--only peers`` runs the bare relay, the dispatcher and the peers (table 2b) without the rest
of parts 1 and 2; the peers need the ``bench`` extra (``pip install -e '.[bench]'``, which
``make bench`` installs). ``--count N`` sets N (default 20,000; 10,000 with ``--quick``).

Every part uses namespaces of its own and deletes them; every load is bounded in count and time.
Needs wrk (``apt-get install -y wrk``) for part 3. ``--baseline-src DIR`` also measures the
dispatcher and gateway of another checkout in the same run (before/after a change).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.throughput.report import Table
from messaging import AmqpSettings

DEFAULT_JSON = Path("bench/results/throughput.json")
PARTS = ("ceiling", "dispatcher", "peers", "gateway", "e2e")


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _print(tables: list[Table]) -> None:
    for t in tables:
        print(t.render(), end="\n\n", flush=True)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    settings = AmqpSettings()
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    out: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    print(
        f"bench.throughput on {os.cpu_count()} CPUs, load average {_load()} at the start "
        "(the machine is shared: compare the ratios, and the CPU per message, more than the "
        "rates)",
        flush=True,
    )
    started = time.perf_counter()
    if parts & {"ceiling", "dispatcher", "peers"}:
        from bench.throughput.relay import run as run_relay

        figs, tables = await run_relay(
            settings,
            quick=args.quick,
            profile=args.profile,
            baseline_src=args.baseline_src,
            ceiling=bool(parts & {"ceiling", "dispatcher"}),
            peers="peers" in parts,
            count=args.count,
        )
        out["relay"] = figs.to_json()
        _print(tables)
    if "gateway" in parts:
        from bench.throughput.gateway import run as run_gateway

        gw, tables = await run_gateway(settings, quick=args.quick, baseline_src=args.baseline_src)
        out["gateway"] = gw
        _print(tables)
    if "e2e" in parts:
        from bench.throughput.e2e import run as run_e2e

        res, tables = await run_e2e(settings, quick=args.quick)
        out["e2e"] = res
        _print(tables)
    out["wall_s"] = time.perf_counter() - started
    out["load_average_at_end"] = os.getloadavg()
    print(f"bench.throughput: {out['wall_s']:.0f}s wall; load average {_load()} at the end")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="smaller loads, about a minute")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the figures")
    p.add_argument("--only", default="", help=f"comma-separated parts of: {', '.join(PARTS)}")
    p.add_argument(
        "--profile", default=None, help="py-spy of the dispatcher (part 2): .svg, or .txt (raw)"
    )
    p.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="another checkout (e.g. `git archive main | tar -x -C DIR`): its dispatcher and "
        "gateway are measured too, in the same run, for before/after figures",
    )
    p.add_argument(
        "--count",
        type=_positive,
        default=None,
        help="messages per relay in parts 1, 2 and peers (default 20,000; 10,000 with --quick)",
    )
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive count: {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options, checked: known parts only, and the peers' frameworks installed if chosen."""
    p = parser()
    args = p.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    unknown = only - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if "gateway" in (only or PARTS):
        from bench.throughput.gateway import WrkMissing, wrk_path

        try:
            wrk_path()
        except WrkMissing as exc:  # said before the other parts run, not minutes into the run
            p.error(f"the gateway part needs wrk ({exc}), or leave gateway out with --only")
    if "peers" in (only or PARTS):
        from bench.throughput.peers import missing_frameworks

        missing = missing_frameworks()
        if missing:
            p.error(
                f"the peers part needs {', '.join(missing)}: pip install -e '.[bench]' "
                "(make bench does), or leave peers out with --only"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(_main(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
