"""Charging plans that deliver the most energy by the departures: a sparse linear programme, HiGHS.

Pure: no I/O, no clock. ``substation_worker.sharing`` builds its online plan and the offline
optimum on this; the model is stated once, here.

Model. Time is cut into steps at ``breakpoints_s``; car *i* may take energy ``x[i, s]`` (kWh) in
step *s* only if the step lies inside its window ``[start_i, end_i)``, at most
``max_kw_i * len(s)``, and at most ``need_i`` over all steps; together the cars take at most
``capacity_kw * len(s)`` in each step. When every start and end is a breakpoint, the set of cars
present is constant inside each step, so constant power per step loses nothing: the programme is
exact in continuous time, whatever the step lengths, and is a maximum flow (cars -> steps) written
as an LP.

Objective: maximise ``sum(w[i, s] * x[i, s])`` with weights within ``1/(2n)`` of 1 for *n* cars.
In a flow network every exchange of energy between cars is one kWh for one kWh, and an augmenting
path that adds one kWh in all crosses at most *n* car-step arcs backwards, so weights that spread
less than ``1/n`` can never buy themselves with delivered energy: every optimum delivers the
maximum. Within that spread (online plans only):

- priority: ``+ PRIORITY_SPREAD / n * priority / 9``: among maximal plans, higher priorities get
  the most. The energies a flow network can deliver to its cars form a polymatroid, on which
  weights increasing with priority select the lexicographic optimum: the highest priority's
  shortfall is made smallest first, then the next one's; a lower priority goes short first.
- earliness: ``+ EARLINESS_SPREAD / n * u * (1 - (step end - now) / longest window)``, with the
  car's urgency ``u = SLACK_URGENCY + (1 - SLACK_URGENCY) * tightness``, ``tightness`` the share
  of its time left it needs at full power (``1 -`` laxity / time left, at most 1), and the
  longest window of the cars planned as one clock for all: energy is not postponed (capacity
  left idle now may be missed later), and in any step the cars that cannot wait (little time
  left, little laxity: EDF's and LLF's orders at once) outbid the others, which keep capacity
  free for arrivals still unknown. Its whole range is below one priority level, so a kWh moved
  between priority levels is never decided by it.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass

import highspy
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Fractions of 1/n (n: cars in the plan): together below 1, so no weight outbids delivered energy;
# one priority level (PRIORITY_SPREAD / 9) is worth more than the whole earliness range.
PRIORITY_SPREAD = 0.45
EARLINESS_SPREAD = 0.04
MAX_PRIORITY = 9
# The earliness of a car that could fill up in no time, against 1 for one that needs all its time.
SLACK_URGENCY = 0.1


@dataclass(frozen=True, slots=True)
class Plan:
    """Energy per car and step (kWh): ``energy_kwh[i, s]`` over ``[bounds_s[s], bounds_s[s+1])``."""

    bounds_s: FloatArray
    energy_kwh: FloatArray

    def step_kw(self, step: int = 0) -> FloatArray:
        """Each car's power (kW) in ``step``: its energy there spread over the step."""
        length = float(self.bounds_s[step + 1] - self.bounds_s[step])
        return self.energy_kwh[:, step] * 3600.0 / length

    def delivered_kwh(self) -> FloatArray:
        """What each car receives over the whole plan, kWh."""
        return self.energy_kwh.sum(axis=1)

    def last_energy_s(self) -> FloatArray:
        """When each car's planned energy ends: the end of its last step with energy (NaN: none).
        The plan spreads a step's energy over the step, so this is when the plan lets it go."""
        has = self.energy_kwh > 1e-12
        last = self.energy_kwh.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1)
        return np.where(has.any(axis=1), self.bounds_s[last + 1], np.nan)


def plan(
    capacity_kw: float,
    breakpoints_s: FloatArray,
    starts_s: FloatArray,
    ends_s: FloatArray,
    max_kw: FloatArray,
    need_kwh: FloatArray,
    *,
    priority: FloatArray | None = None,
    now_s: float | None = None,
) -> Plan:
    """The plan that delivers the most energy within the cars' windows (module docstring).

    Args:
        capacity_kw: what all cars together may draw in each step, kW.
        breakpoints_s: increasing step boundaries; every start and end must be one of them.
        starts_s, ends_s: each car's window (``start < end``), on the breakpoints.
        max_kw: each car's maximum power; need_kwh: the energy it may take in all.
        priority: 0..9 per car; with ``now_s``, the online weights (priority, earliness).
        now_s: the time earliness is measured from; None: every kWh weighs the same.
    """
    n = len(starts_s)
    bounds = np.asarray(breakpoints_s, dtype=np.float64)
    lengths_h = np.diff(bounds) / 3600.0
    first = np.searchsorted(bounds, starts_s)
    last = np.searchsorted(bounds, ends_s)
    if n and (
        not np.array_equal(bounds[np.minimum(first, len(bounds) - 1)], starts_s)
        or not np.array_equal(bounds[np.minimum(last, len(bounds) - 1)], ends_s)
        or np.any(last <= first)
    ):
        raise ValueError("every window must be non-empty and start and end on a breakpoint")
    energy = np.zeros((n, len(lengths_h)))
    counts = last - first
    m = int(counts.sum())
    if m == 0:
        return Plan(bounds, energy)
    # Variable k belongs to car car_of[k], in step step_of[k]: each car's steps, consecutively.
    car_of = np.repeat(np.arange(n), counts)
    offsets = np.arange(m) - np.repeat(np.cumsum(counts) - counts, counts)
    step_of = np.repeat(first, counts) + offsets

    weight = np.ones(m)
    if now_s is not None:
        spread = 1.0 / n
        if priority is not None:
            weight += PRIORITY_SPREAD * spread * np.asarray(priority)[car_of] / MAX_PRIORITY
        window_s = np.maximum(np.asarray(ends_s) - now_s, 1e-9)
        tightness = np.minimum(
            1.0, np.asarray(need_kwh) * 3600.0 / np.maximum(np.asarray(max_kw) * window_s, 1e-12)
        )
        urgency = SLACK_URGENCY + (1.0 - SLACK_URGENCY) * tightness
        # One clock for every car (the plan's longest window): on each car's own window a step
        # would count as later for the car with less time left, which would then lose it to
        # a car that can wait.
        longest = max(float(np.max(window_s)), 1e-9)
        early = 1.0 - np.minimum((bounds[step_of + 1] - now_s) / longest, 1.0)
        weight += EARLINESS_SPREAD * spread * urgency[car_of] * early

    # Rows 0..n-1: each car's total; rows n..: each step's total. Two entries per column, the
    # car's row first (rows ascending within a column, as HiGHS's column-wise format wants).
    index = np.column_stack([car_of, n + step_of]).ravel().astype(np.int32)
    b_ub = np.concatenate([need_kwh, capacity_kw * lengths_h])
    upper = np.asarray(max_kw)[car_of] * lengths_h[step_of]
    x = np.clip(_maximise(weight, upper, index, b_ub), 0.0, upper)
    energy[car_of, step_of] = x
    # HiGHS meets the rows to its feasibility tolerance: scale each car down to its need, each
    # step down to its capacity, so the plan is feasible exactly, not to 1e-7.
    totals = energy.sum(axis=1)
    over = totals > need_kwh
    energy[over] *= (np.asarray(need_kwh)[over] / totals[over])[:, None]
    step_totals = energy.sum(axis=0)
    step_caps = capacity_kw * lengths_h
    full = step_totals > step_caps
    energy[:, full] *= step_caps[full] / step_totals[full]
    return Plan(bounds, energy)


_solvers = threading.local()
_first_solver = threading.Lock()
_banner_shown = False


def quiet_highs() -> highspy.Highs:
    """A new HiGHS instance that prints nothing. HiGHS prints a banner on stdout when the first
    instance of a process is built, whatever ``output_flag`` says: that one is built with stdout
    pointed at /dev/null, so a worker's or bench's output holds only its own lines."""
    with _first_solver:
        global _banner_shown
        if _banner_shown:
            found = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "w") as null:
                    os.dup2(null.fileno(), 1)
                    found = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_shown = True
    found.setOptionValue("output_flag", False)
    return found


def _solver() -> highspy.Highs:
    """This thread's HiGHS instance for plans (``quiet_highs``), set up once."""
    found: highspy.Highs | None = getattr(_solvers, "highs", None)
    if found is not None:
        return found
    found = quiet_highs()
    # Dual simplex without presolve: on these flow LPs (a few thousand columns, two entries
    # each) it is the fastest of HiGHS's methods, about 2.5x the default's time at 60 cars.
    found.setOptionValue("presolve", "off")
    found.setOptionValue("solver", "simplex")
    found.setOptionValue("simplex_strategy", 1)
    _solvers.highs = found
    return found


def _maximise(
    weight: FloatArray, upper: FloatArray, index: npt.NDArray[np.int32], b_ub: FloatArray
) -> FloatArray:
    """Maximise ``weight @ x`` with ``0 <= x <= upper`` and every row's sum at most ``b_ub``;
    column k has a 1 in rows ``index[2k]`` and ``index[2k + 1]``."""
    m = len(weight)
    lp = highspy.HighsLp()
    lp.num_col_ = m
    lp.num_row_ = len(b_ub)
    lp.col_cost_ = -weight
    lp.col_lower_ = np.zeros(m)
    lp.col_upper_ = upper
    lp.row_lower_ = np.full(len(b_ub), -highspy.kHighsInf)
    lp.row_upper_ = b_ub
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * m + 1, 2, dtype=np.int32)
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = np.ones(2 * m)
    highs = _solver()
    highs.passModel(lp)
    highs.run()
    status = highs.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"HiGHS found no optimal plan: {highs.modelStatusToString(status)}")
    return np.asarray(highs.getSolution().col_value, dtype=np.float64)
