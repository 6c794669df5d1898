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

from bench.throughput.bare import (
    _Confirms,
    assignment_body,
    event_body,
    intent_body,
    request_bodies,
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
from contracts import Assignment, ChargeEvent, ChargeRequest, DispatchIntent

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
     "bench.throughput.e2e", "bench.throughput.nobroker"],
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
