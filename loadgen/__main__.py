"""``smartgrid-loadgen`` / ``python -m loadgen``: drive load into a smartgrid and report on it.

Commands: ``run`` (a demand profile, followed to the end, with a report), ``watch`` (live
substation table from heartbeats), ``demo`` (the whole grid locally, under a burst),
``stations`` (simulated OCPP 2.0.1 charging stations against a CSMS),
``ensure-broker`` (start a local RabbitMQ if none answers), ``cluster up`` / ``cluster down``
(a RabbitMQ cluster of 1 to 5 nodes on this machine, ``loadgen.cluster``).
Exit codes (``messaging.exit_codes``, the same for every smartgrid process): 0 ok (every
accepted request finished), 1 the run lost requests (the grid no longer holds them) or could not
reach the grid, 2 invalid options or settings, 4 requests unfinished (still in the grid when the
settle time was up: held in ``<ns>.requests``, queued at a substation or charging) and none lost,
130 interrupted by SIGINT (Ctrl-C), 143 by SIGTERM: the report so far is printed first; a second
signal exits at once (``loadgen.signals``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from dispatcher.policies import PolicyName
from loadgen.choices import ClusterAction, Profile, Via
from loadgen.settings import LoadgenSettings
from messaging.cli import env_var, new_app, option_label, settings_option

if TYPE_CHECKING:
    from loadgen.run import RunOptions
    from loadgen.signals import StopSignals

from messaging import exit_codes

EXIT_OK = exit_codes.OK
EXIT_FAILED = exit_codes.FAILURE
EXIT_INTERRUPTED = exit_codes.INTERRUPTED  # SIGINT; any signal: 128 + its number (SIGTERM: 143)

# loadgen's own output is the point: its log is quiet unless asked.
DEFAULT_LOG_LEVEL = "WARNING"

# The demo's grid gets 10 s to stop, then its namespace is deleted: more than a run alone
# needs before a signal makes the process exit regardless.
DEMO_HARD_EXIT_S = 40.0

app = new_app(
    help="Drive load into a smartgrid and report what it did. " + exit_codes.SUMMARY,
    no_args_is_help=True,
)

# -- options shared by several commands (each with its environment variable) ------------------

AMQP_URL = settings_option(LoadgenSettings, "amqp_url", help="Broker URL.")
NAMESPACE = settings_option(LoadgenSettings, "namespace", help="Namespace of the grid.")
GATEWAY_URL = settings_option(LoadgenSettings, "gateway_url", help="Base URL of the gateway.")
LOG_LEVEL = typer.Option(
    None,
    "--log-level",
    envvar=env_var(LoadgenSettings, "log_level"),
    help=f"Log level of loadgen itself. [default: {DEFAULT_LOG_LEVEL}]",
    show_default=False,
)
# How a settings error names the fields these options set (the rest: their variable).
LABELS = {
    name: option_label([f"--{name.replace('_', '-')}"], env_var(LoadgenSettings, name))
    for name in ("amqp_url", "namespace", "gateway_url", "log_level")
}


def _option(default: Any, *names: str, envvar: str | None = None, **kw: Any) -> Any:
    """A loadgen option: its environment variable is LOADGEN_ and its long name (``--top``:
    LOADGEN_TOP) unless ``envvar`` names another."""
    derived = "LOADGEN_" + names[0].removeprefix("--").replace("-", "_").upper()
    return typer.Option(default, *names, envvar=envvar or derived, **kw)


SEED = _option(None, "--seed", help="Seed the demand for a repeatable run.")
TOP = _option(
    20,
    "--top",
    min=1,
    max=1000,
    help="Show at most this many substations live and in the report (the busiest; the rest "
    "is one line).",
)
BROKER_TIMEOUT = _option(
    5.0,
    "--broker-timeout",
    min=0.1,
    max=300,
    help="Seconds one broker call (declare, bind, consume, delete, close) may take; cleanup "
    "that takes longer is given up.",
)
CONCURRENCY = _option(
    64,
    "--concurrency",
    min=1,
    max=1000,
    help="HTTP connections at most; more requests in flight wait for one.",
)


def _settings(**overrides: Any) -> LoadgenSettings:
    from messaging.runtime import build_settings, configure_logging

    overrides.setdefault("log_level", None)
    settings = build_settings(LoadgenSettings, labels=LABELS, **overrides)
    # Quiet by default: loadgen's own output is the point; SMARTGRID_LOG_LEVEL turns it up.
    level = (overrides["log_level"] or DEFAULT_LOG_LEVEL).upper()
    configure_logging(level)
    if level != "DEBUG":
        # pika logs every refused connection as ERROR; loadgen reports those itself.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    return settings


@contextmanager
def _friendly_errors(console: Console) -> Iterator[None]:
    """Known failures become one clear line and exit 1, never a traceback."""
    from loadgen.broker import BrokerSetupError
    from loadgen.grid import GridStartError
    from loadgen.profiles import TraceError
    from loadgen.senders import IngressUnreachable
    from loadgen.view import print_error
    from messaging.errors import MessagingError

    try:
        yield
    except TraceError as exc:
        print_error(console, str(exc))
        raise typer.Exit(exit_codes.USAGE) from None
    except (BrokerSetupError, GridStartError, IngressUnreachable, MessagingError) as exc:
        print_error(console, str(exc))
        raise typer.Exit(EXIT_FAILED) from None


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # CI logs and pipes: rich would assume 80 columns and fold the tables.
        console.width = 140
    return console


@app.command("run")
def run_cmd(
    via: Via = _option(
        "http",
        "--via",
        help="http: through the gateway; amqp: publish to <ns>.requests with confirms.",
    ),
    profile: Profile = _option(
        "steady",
        "--profile",
        help="steady, rush-hour (ramp to a peak and back), spike (step burst) or replay.",
    ),
    rate: float = _option(50.0, "--rate", min=0.01, help="Requests/s (at the peak)."),
    requests: int | None = _option(
        None,
        "--requests",
        "-n",
        min=1,
        max=10_000_000,
        help="How many requests (or give --duration).",
    ),
    duration: float | None = _option(None, "--duration", min=0.1, help="Seconds of sending."),
    trace: Path | None = _option(
        None,
        "--trace",
        help="replay: CSV with arrival_s,energy_kwh,max_power_kw[,departure_h].",
    ),
    speed: float = _option(
        1.0,
        "--speed",
        min=0.001,
        help="replay: time runs this much faster (departures too: give the workers the same "
        "--time-scale).",
    ),
    concurrency: int = CONCURRENCY,
    seed: int | None = SEED,
    settle: float = _option(
        60.0,
        "--settle",
        min=0,
        help="After sending, wait this long at most for every accepted request to finish.",
    ),
    request_timeout: float = _option(
        10.0,
        "--request-timeout",
        min=0.1,
        help="Give up one request's answer (202 or confirm) after seconds.",
    ),
    json_path: Path | None = _option(None, "--json", help="Also write the report as JSON here."),
    top: int = TOP,
    broker_timeout: float = BROKER_TIMEOUT,
    plot_path: Path | None = _option(
        None,
        "--plot",
        help="Also draw each substation's load over time into this PNG.",
    ),
    gateway_url: str | None = GATEWAY_URL,
    namespace: str | None = NAMESPACE,
    amqp_url: str | None = AMQP_URL,
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Send a demand profile, follow every request to its end, report what happened.

    A request accepted but neither completed nor rejected within --settle is unfinished while
    the grid still holds it (held in <ns>.requests, queued at a substation, charging), and lost
    once it does not: the grid counts requests (the queue's messages, the heartbeats' queued and
    active sessions at the places the missing requests were last seen), so if it holds at least
    as many as are missing none is lost, and if fewer, the difference is.

    Exit 0 when every accepted request finished; 1 when one was lost (or the grid could not be
    reached, or refused the API key); 2 for bad options; 4 when some are unfinished and none
    lost; 130 (Ctrl-C) or 143 (SIGTERM) when stopped early, after the report so far.
    """
    from loadgen.run import RunOptions

    if profile == "replay":
        if trace is None:
            raise typer.BadParameter(
                "the replay profile needs --trace FILE.csv", param_hint="--trace"
            )
    elif (requests is None) == (duration is None):
        raise typer.BadParameter("give exactly one of --requests or --duration")
    console = _console()
    if profile == "replay" and trace is not None:
        from loadgen.profiles import load_trace

        with _friendly_errors(console):  # a bad trace is a usage error, found before connecting
            load_trace(trace)
    settings = _settings(
        namespace=namespace, amqp_url=amqp_url, gateway_url=gateway_url, log_level=log_level
    )
    try:
        options = RunOptions(
            via=via,
            profile=profile,
            rate=rate,
            requests=requests,
            duration_s=duration,
            trace=trace,
            speed=speed,
            concurrency=concurrency,
            seed=seed,
            settle_s=settle,
            request_timeout_s=request_timeout,
            gateway_url=settings.gateway_url,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            top=top,
            broker_timeout_s=broker_timeout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from loadgen.signals import StopSignals

    with StopSignals() as signals, _friendly_errors(console):
        code = run(
            settings, options, console, json_path=json_path, plot_path=plot_path, signals=signals
        )
    raise typer.Exit(code)


def run(
    settings: LoadgenSettings,
    options: RunOptions,
    console: Console,
    *,
    json_path: Path | None = None,
    plot_path: Path | None = None,
    signals: StopSignals | None = None,
) -> int:
    """``loadgen run`` without the CLI: returns the exit code; tests call this directly.
    ``signals`` (a ``StopSignals``) lets SIGINT/SIGTERM end the run early."""
    from loadgen.live import run_live
    from loadgen.report import build_report, print_report, write_json, write_plot

    result = run_live(settings, options, console, signals)
    report = build_report(result, limit=options.top)
    print_report(console, report, options.top)
    refused = report.rejected_at_ingress.get("401", 0)
    if refused:
        from loadgen.view import print_error

        key = "a wrong key was sent" if options.api_key else "none was sent"
        print_error(
            console,
            f"the gateway refused {refused} requests with 401: it wants an API key and {key}; "
            "set SMARTGRID_API_KEY",
        )
    if json_path is not None:
        write_json(report, json_path)
        console.print(f"report written to {json_path}")
    if plot_path is not None:
        write_plot(result.state, plot_path, f"{options.profile} via {options.via}", options.top)
        console.print(f"plot written to {plot_path}")
    if result.interrupted or (signals is not None and signals.exit_code is not None):
        console.print("[yellow]interrupted: the report above is of what was seen so far[/]")
    if signals is not None and signals.exit_code is not None:
        return signals.exit_code
    if result.interrupted:
        return EXIT_INTERRUPTED
    # Refused for want of a key is a setup error, like an unreachable gateway.
    return EXIT_FAILED if refused else report.exit_code


@app.command("watch")
def watch_cmd(
    namespace: str | None = NAMESPACE,
    amqp_url: str | None = AMQP_URL,
    duration: float | None = _option(
        None,
        "--duration",
        min=0.1,
        help="Stop after seconds. [default: until Ctrl-C]",
    ),
    top: int = TOP,
    broker_timeout: float = BROKER_TIMEOUT,
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Live table of the substations from their heartbeats (the busiest, and a count of the
    others): load, capacity, utilization, sessions, queued, status. Ctrl-C or SIGTERM ends it
    (exit 0)."""
    from loadgen.signals import StopSignals
    from loadgen.watch import watch

    console = _console()
    settings = _settings(namespace=namespace, amqp_url=amqp_url, log_level=log_level)

    async def main(signals: StopSignals) -> None:
        stop = asyncio.Event()
        with signals.setting(stop):  # a signal is the normal way to end a watch
            await watch(settings, console, duration, stop, top=top, broker_timeout_s=broker_timeout)

    with StopSignals() as signals, _friendly_errors(console):
        asyncio.run(main(signals))


@app.command("demo")
def demo_cmd(
    requests: int = _option(600, "--requests", "-n", min=1, max=100_000, help="How many."),
    policy: PolicyName = _option(
        "headroom", "--policy", envvar="SMARTGRID_POLICY", help="Dispatch policy to demonstrate."
    ),
    time_scale: float = _option(
        3600.0,
        "--time-scale",
        envvar="SMARTGRID_TIME_SCALE",
        min=1,
        help="Simulated seconds per wall second.",
    ),
    concurrency: int = CONCURRENCY,
    rate: float = _option(300.0, "--rate", min=0.1, help="Requests per second."),
    seed: int | None = SEED,
    timeout: float = _option(
        180.0,
        "--timeout",
        envvar="LOADGEN_SETTLE",
        min=1,
        help="After sending, give up if not all done after seconds.",
    ),
    keep_namespace: bool = _option(
        False,
        "--keep-namespace",
        help="Leave the demo's queues and exchanges for inspection.",
    ),
    linger: float = _option(
        0.0,
        "--linger",
        min=0,
        max=24 * 3600,
        help="Keep the grid up this many seconds after the burst (to look at it in Prometheus).",
    ),
    stations: int = _option(
        0,
        "--stations",
        envvar="LOADGEN_DEMO_STATIONS",
        min=0,
        max=100,
        help="Add an OCPP substation served by this many simulated stations (0: none).",
    ),
    station_evses: int = _option(
        2, "--station-evses", min=1, max=64, help="EVSEs per station (with --stations)."
    ),
    walk_ins: int = _option(
        6,
        "--walk-ins",
        envvar="LOADGEN_DEMO_WALK_INS",
        min=0,
        max=1000,
        help="Walk-in cars at the stations during the burst, in all (with --stations).",
    ),
    top: int = TOP,
    broker_timeout: float = BROKER_TIMEOUT,
    amqp_url: str | None = AMQP_URL,
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Local grid of 150/300/600 kW substations, a burst through the gateway, live load, report.

    With --stations N, one more substation is a worker serving OCPP 2.0.1, with N simulated
    stations of --station-evses EVSEs (7.5 kW of capacity per 22 kW EVSE: its cars are limited)
    and --walk-ins walk-in cars; the report compares what the stations metered with the
    completed events. Starts a broker if none answers, runs everything in a fresh namespace,
    stops every process and deletes the namespace at the end. Exit 0 when every request was
    accepted and completed (and, with stations, the energy adds up), 4 when some were still in
    the grid after --timeout (none lost), 1 otherwise.
    """
    from loadgen.demo import DemoOptions, run_demo
    from loadgen.demo_stations import StationsOptions

    if stations and (log_level or DEFAULT_LOG_LEVEL).upper() != "DEBUG":
        # The ocpp package logs every frame of the stations at INFO; its errors still show.
        logging.getLogger("ocpp").setLevel(logging.WARNING)

    console = _console()
    settings = _settings(amqp_url=amqp_url, log_level=log_level)
    opts = DemoOptions(
        requests=requests,
        concurrency=concurrency,
        rate_per_s=rate,
        seed=seed,
        timeout_s=timeout,
        policy=policy,
        time_scale=time_scale,
        keep_namespace=keep_namespace,
        linger_s=linger,
        top=top,
        broker_timeout_s=broker_timeout,
        stations=(
            StationsOptions(stations, station_evses, walk_ins, seed=seed) if stations else None
        ),
    )
    from loadgen.signals import StopSignals

    with StopSignals(hard_exit_s=DEMO_HARD_EXIT_S) as signals, _friendly_errors(console):
        code = run_demo(settings, opts, console, signals)
    raise typer.Exit(code)


@app.command("stations")
def stations_cmd(
    url: str = _option(
        "ws://127.0.0.1:9000/ocpp",
        "--url",
        envvar="LOADGEN_OCPP_URL",
        help="The CSMS's OCPP endpoint; each station connects to <url>/<station id>.",
    ),
    count: int = _option(
        1, "--count", envvar="LOADGEN_STATIONS", min=1, max=1000, help="How many stations."
    ),
    evses: int = _option(
        2,
        "--evses",
        envvar="LOADGEN_STATION_EVSES",
        min=1,
        max=64,
        help="EVSEs per station (1 connector each).",
    ),
    evse_max_kw: float = _option(
        22.0, "--evse-max-kw", min=0.1, max=1000, help="The most one EVSE delivers, kW."
    ),
    car_kwh: float = _option(
        100.0,
        "--car-need-kwh",
        "--car-kwh",
        min=0.1,
        max=1000,
        help="Energy the car of a remote start needs, kWh (large: the CSMS stops it).",
    ),
    car_max_kw: float = _option(
        11.0, "--car-max-kw", min=0.1, max=1000, help="The most that car draws, kW."
    ),
    walk_ins_per_hour: float = _option(
        0.0,
        "--walk-ins-per-hour",
        min=0,
        max=10_000,
        help="Walk-in cars per station per simulated hour (0: none).",
    ),
    walk_ins: int = _option(
        10_000, "--walk-ins", min=0, max=1_000_000, help="At most this many walk-ins in all."
    ),
    seed: int | None = SEED,
    password: str | None = _option(
        None,
        "--password",
        envvar="SMARTGRID_STATION_PASSWORD",
        help="HTTP Basic password of every station (user: its id).",
    ),
    ca_file: Path | None = _option(
        None, "--ca-file", exists=True, dir_okay=False, help="CA bundle for a wss:// CSMS."
    ),
    time_scale: float = _option(
        60.0,
        "--time-scale",
        envvar="SMARTGRID_TIME_SCALE",
        min=1,
        max=1_000_000,
        help="Simulated seconds per wall second (give the worker the same).",
    ),
    meter_interval: float = _option(
        1.0,
        "--meter-interval",
        min=0.05,
        max=3600,
        help="Wall seconds between MeterValues (and TransactionEvent Updated) of a session.",
    ),
    prefix: str = _option(
        "sim",
        "--prefix",
        envvar="LOADGEN_STATION_PREFIX",
        help="Station ids are <prefix>-1 .. <prefix>-N (letters, digits, '.', '_', '~', '-').",
    ),
    duration: float | None = _option(
        None,
        "--duration",
        min=0.1,
        help="Stop after seconds. [default: until Ctrl-C]",
    ),
    log_level: str | None = LOG_LEVEL,
) -> None:
    """Simulated OCPP 2.0.1 charging stations: they boot, report their EVSEs, take remote
    starts and walk-in cars, draw what their profiles allow, meter in simulated time and stop
    when asked, full or the driver leaves. Ctrl-C or SIGTERM stops them (exit 0); exit 1 when no
    station could boot."""
    import re

    from contracts.ocpp import MAX_STATION_ID, STATION_ID_CHARS
    from loadgen.signals import StopSignals
    from loadgen.stations.fleet import FleetReport, make_fleet, run_fleet
    from loadgen.stations.station import StationConfig
    from loadgen.stations.walkins import WalkInConfig

    console = _console()
    _settings(log_level=log_level)
    if (log_level or DEFAULT_LOG_LEVEL).upper() != "DEBUG":
        # The ocpp package logs every frame at INFO; its errors still show.
        logging.getLogger("ocpp").setLevel(logging.WARNING)
    if not url.startswith(("ws://", "wss://")):
        raise typer.BadParameter("must start with ws:// or wss://", param_hint="--url")
    # <prefix>-<n> must be a station id the substation takes (contracts.ocpp).
    longest = MAX_STATION_ID - len(f"-{count}")
    if not re.fullmatch(rf"[{STATION_ID_CHARS}]{{1,{longest}}}", prefix):
        raise typer.BadParameter(
            f"1 to {longest} letters, digits, '.', '_', '~' or '-'", param_hint="--prefix"
        )
    config = StationConfig(
        evses=evses,
        evse_max_w=evse_max_kw * 1000,
        car_need_wh=car_kwh * 1000,
        car_max_w=car_max_kw * 1000,
        meter_interval_s=meter_interval,
        password=password or None,
        ca_file=str(ca_file) if ca_file is not None else None,
    )
    walk = WalkInConfig(per_hour=walk_ins_per_hour, max_count=walk_ins, seed=seed)
    console.print(
        f"{count} station(s) of {evses} EVSE(s) at {evse_max_kw:g} kW -> {url}/{prefix}-<n>, "
        f"time x{time_scale:g}"
    )

    async def main(signals: StopSignals) -> FleetReport:
        stop = asyncio.Event()
        with signals.setting(stop):
            fleet = make_fleet(prefix, count, config)
            return await run_fleet(url, fleet, config, time_scale, stop, duration, walk)

    with StopSignals() as signals:
        report = asyncio.run(main(signals))
    console.print(
        f"stations booted {report.booted}/{report.stations}, sessions ended "
        f"{report.sessions_ended}, charging {report.charging}, walk-ins {report.walk_ins} "
        f"({report.turned_away} found no free EVSE), "
        f"energy {report.energy_wh / 1000:.3f} kWh"
    )
    raise typer.Exit(EXIT_OK if report.booted else EXIT_FAILED)


@app.command("prometheus")
def prometheus_cmd(
    targets_dir: Path = _option(
        Path(".demo/prometheus"),
        "--targets-dir",
        envvar="LOADGEN_PROMETHEUS_TARGETS_DIR",
        help="Where grids write their targets (make demo: .demo/prometheus).",
    ),
    listen: str = _option(
        "127.0.0.1:9090",
        "--listen",
        envvar="LOADGEN_PROMETHEUS_LISTEN",
        help="Prometheus' web address.",
    ),
    rabbitmq: str = _option(
        "127.0.0.1:15692",
        "--rabbitmq",
        envvar="LOADGEN_RABBITMQ_PROMETHEUS",
        help="RabbitMQ's Prometheus plugin (host:port).",
    ),
) -> None:
    """Run a local Prometheus (Debian's `prometheus` package) on the demo grid's targets.

    Same jobs, labels and alert rules as deploy/compose.yaml's; it follows grids as they start
    and stop. Runs in the foreground until Ctrl-C."""
    import os

    from loadgen import local_prometheus

    console = _console()
    config_path = local_prometheus.write_config(targets_dir, rabbitmq=rabbitmq)
    try:
        cmd = local_prometheus.command(config_path, listen=listen)
    except local_prometheus.PrometheusNotFound as exc:
        from loadgen.view import print_error

        print_error(console, str(exc))
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        f"Prometheus on http://{listen} with {config_path}; targets follow {targets_dir}/*.json"
    )
    os.execv(cmd[0], cmd)


@app.command("ensure-broker")
def ensure_broker_cmd(amqp_url: str | None = AMQP_URL) -> None:
    """Make sure RabbitMQ answers; start a local rabbitmq-server if not. With a Docker engine,
    start nothing: `make test` and `make demo` start a container for their run themselves."""
    from loadgen.broker import ensure_broker

    console = _console()
    settings = _settings(amqp_url=amqp_url)
    with _friendly_errors(console):
        how = ensure_broker(settings, say=console.print)
    console.print(f"RabbitMQ at {settings.redacted_url()}: {how}")


@app.command("cluster")
def cluster_cmd(
    action: ClusterAction = typer.Argument(
        ..., help="up: start and join the nodes; down: stop and remove them."
    ),
    nodes: int = _option(
        3, "--nodes", envvar="LOADGEN_CLUSTER_NODES", min=1, max=5, help="How many nodes (up)."
    ),
    directory: Path | None = _option(
        None,
        "--dir",
        envvar="LOADGEN_CLUSTER_DIR",
        file_okay=False,
        help="The cluster's folder: data, logs, config and cluster.json. "
        "[default: <tmp>/smartgrid-cluster]",
        show_default=False,
    ),
    base_port: int | None = _option(
        None,
        "--base-port",
        envvar="LOADGEN_CLUSTER_BASE_PORT",
        min=1024,
        max=65500,
        help="Node i's AMQP port is base+i-1, management +10, Prometheus +20, distribution "
        "+30 (up). [default: free ports, printed]",
        show_default=False,
    ),
) -> None:
    """A RabbitMQ cluster on this machine (Debian's rabbitmq-server): `up` starts the nodes on
    127.0.0.1 with the management and Prometheus plugins, joins them and prints the URL list for
    SMARTGRID_AMQP_URL on stdout (the rest on stderr); `down` stops those nodes and removes
    their folder. Exit 1 when it could not."""
    from loadgen import cluster
    from loadgen.view import print_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    where = directory or cluster.default_dir()
    started = time.monotonic()
    try:
        if action == "down":
            gone = cluster.down(where)
            err.print(
                f"cluster in {where} stopped and removed in {time.monotonic() - started:.1f}s"
                if gone
                else f"no cluster recorded in {where}: nothing to do"
            )
            return
        info = cluster.up(nodes, where, base_port, say=err.print)
    except cluster.ClusterError as exc:
        print_error(err, str(exc))
        raise typer.Exit(EXIT_FAILED) from None
    err.print(
        f"{nodes} node(s) up in {time.monotonic() - started:.1f}s, cluster {info.cluster_name}"
    )
    for n in info.nodes:
        p = n.ports
        err.print(
            f"  {n.name}  amqp {p.amqp}  management {n.management_url}  "
            f"prometheus {n.prometheus_url}  distribution {p.dist}  pid {info.pids[n.name]}"
        )
    err.print(f"stop it with: smartgrid-loadgen cluster down --dir {info.dir}")
    err.print("SMARTGRID_AMQP_URL (user guest, from 127.0.0.1 only):")
    print(info.url_list, flush=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
