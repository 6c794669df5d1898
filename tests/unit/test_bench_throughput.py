"""bench.throughput's pure helpers: rates from samples, CPU per message, tables, wrk output.

No broker, no processes: the bench itself runs with ``python -m bench.throughput``.
"""

from __future__ import annotations

import importlib
import json
import math

import pika.frame
import pika.spec
import pytest

from bench.throughput import gateway, peers
from bench.throughput.__main__ import parse_args
from bench.throughput.bare import (
    RelayJob,
    _Confirms,
    assignment_body,
    event_body,
    intent_body,
    request_bodies,
)
from bench.throughput.peers import as_body, as_message
from bench.throughput.peers import parser as peers_parser
from bench.throughput.relay import (
    PEER_TIMEOUT_S,
    SUBSTATIONS,
    Measured,
    RelayFigures,
    peers_table,
    relay_args,
    tables,
)
from bench.throughput.report import (
    Table,
    backlog_flat,
    crossing_time,
    fmt_ratio,
    parse_wrk,
    ratio,
    slope,
    window_cpu_us,
    window_rate,
)
from contracts import Assignment, ChargeEvent, ChargeRequest, DispatchIntent, Topology

WRK_OUTPUT = """\
Running 8s test @ http://127.0.0.1:18765/v1/charge-requests
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    20.01ms    8.11ms 112.40ms   80.00%
    Req/Sec     3.21k   210.00     3.60k    70.00%
  Latency Distribution
     50%   18.44ms
     75%   22.10ms
     90%   28.00ms
     99%   58.62ms
  25530 requests in 8.00s, 4.10MB read
  Socket errors: connect 0, read 0, write 0, timeout 2
Requests/sec:   3191.25
Transfer/sec:    524.00KB
status 202 25470
status 503 60
"""


@pytest.mark.parametrize(
    "module",
    ["bench.throughput.__main__", "bench.throughput.relay", "bench.throughput.gateway",
     "bench.throughput.e2e", "bench.throughput.nobroker", "bench.throughput.peers"],
)  # fmt: skip
def test_every_part_imports(module: str) -> None:
    importlib.import_module(module)


def test_crossing_time_interpolates_between_samples() -> None:
    samples = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0)]
    assert crossing_time(samples, 50) == pytest.approx(0.5)
    assert crossing_time(samples, 200) == pytest.approx(1.5)
    assert crossing_time(samples, 301) is None


def test_window_rate_leaves_out_start_and_tail() -> None:
    # Given a slow start (1 s for the first 100), then 1000 per second
    samples = [(0.0, 0.0), (1.0, 100.0), *((1.0 + k, 100.0 + 1000.0 * k) for k in range(1, 4))]
    # When measured from 10 % to 90 % of 3100
    rate = window_rate(samples, 3100)
    # Then only the steady part counts
    assert rate == pytest.approx(1000.0)


def test_window_rate_is_none_when_the_count_never_got_there() -> None:
    assert window_rate([(0.0, 0.0), (1.0, 10.0)], 1000) is None


def test_cpu_per_message_over_the_same_window() -> None:
    # 10 % and 90 % of 2000 are first reached at the samples of 200 and 1800 messages
    samples = [(0.0, 0.0), (1.0, 200.0), (2.0, 1100.0), (3.0, 1800.0)]
    # two processes: 0.05 s and 0.2 s of CPU between those two samples
    cpu = [(0.0, 0.0), (1.0, 1.0), (1.03, 1.1), (1.05, 1.2)]
    own, other = window_cpu_us(samples, cpu, 2000)
    assert own == pytest.approx(0.05 / 1600 * 1e6)
    assert other == pytest.approx(0.2 / 1600 * 1e6)


def test_cpu_per_message_unknown_when_unreadable() -> None:
    samples = [(0.0, 0.0), (1.0, 1000.0)]
    assert window_cpu_us(samples, [(math.nan,), (math.nan,)], 1000) == [None]


def test_ratio_and_its_format() -> None:
    assert ratio(7.0, 10.0) == pytest.approx(0.7)
    assert ratio(None, 10.0) is None
    assert ratio(1.0, 0.0) is None
    assert fmt_ratio(0.7) == "0.70x"
    assert fmt_ratio(None) == "-"


def test_slope_and_flat_backlog() -> None:
    growing = [(t / 4, 50.0 * t) for t in range(40)]
    assert slope(growing) == pytest.approx(200.0)
    assert not backlog_flat(growing, rate=400)
    steady = [(t / 4, 10.0 + (t % 3)) for t in range(40)]
    assert backlog_flat(steady, rate=400)
    assert backlog_flat([], rate=400)
    # flat but far above a second of arrivals is not keeping up either
    assert not backlog_flat([(0.0, 900.0), (1.0, 900.0)], rate=400)


def test_table_renders_aligned_columns_and_notes() -> None:
    t = Table("title", ["what", "msg/s"])
    t.add("relay", 18_296.4)
    t.add("dispatcher", None)
    t.notes.append("a note")
    lines = t.render().splitlines()
    assert lines[0] == "title"
    assert lines[3].split() == ["relay", "18,296"]
    assert lines[4].split() == ["dispatcher", "-"]
    assert len({len(line) for line in lines[1:4]}) == 1  # header, rule and row line up
    assert lines[-1] == "  a note"


def test_parse_wrk_with_our_status_lines() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert r.requests == 25530
    assert r.seconds == pytest.approx(8.0)
    assert r.rate == pytest.approx(3191.25)
    assert r.latency_ms == {"50": 18.44, "75": 22.10, "90": 28.0, "99": 58.62}
    assert r.statuses == {"202": 25470, "503": 60}
    assert r.socket_errors is not None
    assert "timeout 2" in r.socket_errors


def test_parse_wrk_refuses_other_output() -> None:
    with pytest.raises(ValueError, match="no request count"):
        parse_wrk("wrk: command failed")


def test_bare_messages_are_real_contract_messages_of_one_size() -> None:
    bodies = request_bodies(50)
    requests = [ChargeRequest.model_validate_json(b) for b in bodies]
    assert len({r.request_id for r in requests}) == 50
    assert len({len(b) for b in bodies}) == 1
    Assignment.model_validate_json(assignment_body())
    ChargeEvent.model_validate_json(event_body())
    assert len(DispatchIntent.model_validate_json(intent_body(300)).routes) == 300


def ack(tag: int, multiple: bool) -> pika.frame.Method[pika.spec.Basic.Ack]:
    return pika.frame.Method(1, pika.spec.Basic.Ack(delivery_tag=tag, multiple=multiple))


def test_confirms_track_the_confirmed_prefix_even_out_of_order() -> None:
    c = _Confirms()
    for _ in range(5):
        c.published()
    assert c.on_confirm(ack(2, multiple=False)) == 0  # 1 still unconfirmed
    assert c.on_confirm(ack(1, multiple=False)) == 2  # 1 and 2
    assert c.on_confirm(ack(4, multiple=True)) == 2  # 3 and 4
    assert c.on_confirm(ack(5, multiple=False)) == 1


def test_results_are_json() -> None:
    json.dumps({"ratio": ratio(1.0, 2.0)})


# -- the frameworks' relays (peers) -------------------------------------------------------


def test_peer_relays_get_the_substation_queues_and_more_time() -> None:
    topo = Topology("bench-unit")
    args = relay_args("dramatiq", topo, 500)
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts["--queue"] == topo.requests_queue
    assert opts["--exchange"] == topo.substations_exchange
    assert opts["--keys"] == ",".join(SUBSTATIONS)
    assert opts["--targets"].split(",") == [topo.substation_queue(s) for s in SUBSTATIONS]
    assert opts["--count"] == "500"
    assert float(opts["--timeout"]) == PEER_TIMEOUT_S
    # and the peers' own parser takes exactly those
    parsed = peers_parser().parse_args(["faststream", "--url", "amqp://x", *args])
    assert (parsed.queue, parsed.count, parsed.prefetch) == (topo.requests_queue, 500, 1000)


def test_bare_relays_keep_their_arguments() -> None:
    topo = Topology("bench-unit")
    relay = relay_args("relay", topo, 10)
    assert "--targets" not in relay
    assert "--events-exchange" not in relay
    assert relay[relay.index("--timeout") + 1] == "60"
    intent = relay_args("intent-batched", topo, 10)
    assert intent[intent.index("--events-exchange") + 1] == topo.events_exchange


def test_a_relay_job_is_what_the_relay_arguments_say() -> None:
    topo = Topology("bench-unit")
    args = relay_args("faststream", topo, 7)
    job = RelayJob.of(peers_parser().parse_args(["faststream", "--url", "amqp://x", *args]))
    assert job == RelayJob(
        "amqp://x", topo.requests_queue, topo.substations_exchange, SUBSTATIONS, 7, 1000,
        PEER_TIMEOUT_S,
    )  # fmt: skip
    # the routing keys in turn, as every relay republishes
    assert [job.key(n) for n in range(4)] == [*SUBSTATIONS, SUBSTATIONS[0]]


def test_raw_bodies_round_trip_through_dramatiq_message_fields() -> None:
    body = request_bodies(1)[0]
    fields = as_message(body, "ns.requests", "bench_relay")
    assert (fields["queue_name"], fields["actor_name"]) == ("ns.requests", "bench_relay")
    assert fields["args"] == [body.decode()]
    assert as_body(fields) == body
    assert as_message(body, "q", "a")["message_id"] != fields["message_id"]


def _measured(rate: float, cpu: float) -> Measured:
    return Measured(rates=[rate * 0.9, rate], cpu_us=[cpu], broker_cpu_us=[cpu / 2])


def test_peers_table_compares_with_the_relay_and_the_dispatcher_of_the_run() -> None:
    figs = RelayFigures(n=5000)
    figs.measured["relay"] = _measured(5000, 50)
    figs.measured["dispatcher"] = _measured(4000, 90)
    figs.measured["faststream"] = _measured(1000, 1100)
    figs.measured["dramatiq"] = _measured(2000, 500)
    t = peers_table(figs)
    rows = {r[0]: dict(zip(t.headers, r, strict=True)) for r in t.rows}
    assert list(rows) == [
        "bare relay (pika, ceiling)",
        "smartgrid-dispatcher",
        "FastStream relay",
        "Dramatiq relay",
    ]
    fs, dq = rows["FastStream relay"], rows["Dramatiq relay"]
    assert (fs["msg/s"], fs["vs bare relay"], fs["vs dispatcher"]) == ("1,000", "0.20x", "0.25x")
    assert (dq["vs bare relay"], dq["vs dispatcher"], dq["CPU us/msg"]) == ("0.40x", "0.50x", "500")
    assert fs["runs"] == "900 / 1,000"
    assert rows["smartgrid-dispatcher"]["vs bare relay"] == "0.80x"
    # each framework's row points at a note that says what it cannot do
    assert fs["confirms"].endswith("[a]")
    assert dq["confirms"].endswith("[b]")
    notes = {n[:3]: n for n in t.notes}
    assert "never pipelines confirms" in notes["[b]"]
    assert "awaits its own confirm" in notes["[a]"]
    assert "5,000 msgs; best of 2" in t.title
    ratios = figs.to_json()
    assert ratios["faststream_over_relay"] == pytest.approx(0.2)
    assert ratios["dramatiq_over_relay"] == pytest.approx(0.4)


def test_peers_table_without_figures_shows_dashes() -> None:
    t = peers_table(RelayFigures(n=10))
    assert t.rows[2][1:5] == ["-", "", "-", "-"]


@pytest.fixture
def wrk_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if wrk were installed (the gateway part's load generator), whether it is or not."""
    monkeypatch.setattr(gateway, "wrk_path", lambda: "/usr/bin/wrk")


@pytest.mark.usefixtures("wrk_installed")
def test_options_count_and_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "missing_frameworks", list)  # as if the bench extra were there
    args = parse_args(["--only", "peers", "--count", "3000", "--quick"])
    assert (args.only, args.count, args.quick) == ("peers", 3000, True)
    assert parse_args(["--only", "gateway"]).count is None


@pytest.mark.parametrize("argv", [["--count", "0"], ["--count", "-5"], ["--only", "peer"]])
def test_options_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.usefixtures("wrk_installed")
def test_peers_without_their_frameworks_say_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(peers, "missing_frameworks", lambda: ["dramatiq"])
    for argv in (["--only", "ceiling,peers"], []):  # chosen, or all parts by default
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "pip install -e '.[bench]'" in capsys.readouterr().err
    # parts without the peers do not need them
    assert parse_args(["--only", "ceiling,dispatcher"]).only == "ceiling,dispatcher"


def test_the_gateway_part_without_wrk_says_so_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing() -> str:
        raise gateway.WrkMissing("wrk is not installed: apt-get install -y wrk")

    monkeypatch.setattr(gateway, "wrk_path", missing)
    monkeypatch.setattr(peers, "missing_frameworks", list)
    for argv in (["--only", "gateway"], []):
        with pytest.raises(SystemExit):
            parse_args(argv)
        assert "apt-get install -y wrk" in capsys.readouterr().err
    assert parse_args(["--only", "ceiling"]).only == "ceiling"


def test_the_relay_tables_take_every_relay_of_a_full_run() -> None:
    """A full run measures the own relays and the frameworks' together: the tables of parts 1
    and 2 read the own ones whatever else was measured."""
    figs = RelayFigures(n=1000)
    for name, rate in (("relay", 5000), ("intent-batched", 5200), ("intent", 3000),
                       ("dispatcher", 4000), ("baseline", 2500), ("faststream", 500),
                       ("dramatiq", 600)):  # fmt: skip
        figs.measured[name] = _measured(rate, 50)
    rendered = tables(figs)
    assert rendered
    assert any("smartgrid-dispatcher" in str(row[0]) for t in rendered for row in t.rows)
