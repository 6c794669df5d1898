"""Water-filling power sharing: a table of cases, then invariants over seeded random inputs."""

from __future__ import annotations

import math
import random

import pytest

from substation_worker.power import share_power


@pytest.mark.parametrize(
    ("capacity", "demands", "expected"),
    [
        pytest.param(100.0, [], [], id="no-sessions"),
        pytest.param(100.0, [10.0, 20.0, 30.0], [10.0, 20.0, 30.0], id="all-small"),
        pytest.param(100.0, [10.0, 500.0], [10.0, 90.0], id="one-huge-gets-the-rest"),
        pytest.param(100.0, [500.0], [100.0], id="one-huge-alone"),
        pytest.param(90.0, [50.0, 50.0, 50.0], [30.0, 30.0, 30.0], id="capacity-binding-equal"),
        pytest.param(100.0, [100.0, 10.0, 30.0], [60.0, 10.0, 30.0], id="order-kept"),
        pytest.param(100.0, [20.0, 60.0, 60.0], [20.0, 40.0, 40.0], id="small-first-rest-split"),
        pytest.param(100.0, [0.0, 150.0], [0.0, 100.0], id="zero-demand"),
        pytest.param(0.0, [10.0, 20.0], [0.0, 0.0], id="zero-capacity"),
        pytest.param(60.0, [30.0, 30.0], [30.0, 30.0], id="exactly-full"),
    ],
)
def test_share_power_table(capacity: float, demands: list[float], expected: list[float]) -> None:
    assert share_power(capacity, demands) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("capacity", "demands"),
    [
        pytest.param(100.0, [100.0] * 3, id="thirds"),
        pytest.param(0.3, [0.1] * 7, id="tenths"),
        pytest.param(1.0, [1.0] * 49, id="forty-ninths"),
        pytest.param(300.0, [7.0, 11.0, 22.0, 150.0, 150.0, 150.0, 50.0], id="mixed"),
    ],
)
def test_float_sum_never_above_capacity(capacity: float, demands: list[float]) -> None:
    shares = share_power(capacity, demands)
    assert sum(shares) <= capacity
    assert math.fsum(shares) <= capacity
    assert sum(shares) == pytest.approx(min(capacity, sum(demands)))


@pytest.mark.parametrize("seed", range(200))
def test_max_min_fair_invariants(seed: int) -> None:
    rng = random.Random(seed)
    capacity = rng.choice([rng.uniform(1, 1000), float(rng.randint(1, 1000))])
    demands = [rng.uniform(1, 350) for _ in range(rng.randint(0, 40))]
    shares = share_power(capacity, demands)

    assert len(shares) == len(demands)
    assert sum(shares) <= capacity
    assert math.fsum(shares) <= capacity
    for s, d in zip(shares, demands, strict=True):
        assert 0.0 <= s <= d
    # Work-conserving: either every session has its max, or the capacity is used up.
    if sum(demands) <= capacity:
        assert shares == pytest.approx(demands)
    else:
        assert sum(shares) == pytest.approx(capacity)
        # Fair: everyone held below its max gets the largest share there is.
        top = max(shares)
        for s, d in zip(shares, demands, strict=True):
            if s < d - 1e-9:
                assert s == pytest.approx(top)


@pytest.mark.parametrize(
    ("capacity", "demands"),
    [
        pytest.param(-1.0, [10.0], id="negative-capacity"),
        pytest.param(math.inf, [10.0], id="infinite-capacity"),
        pytest.param(100.0, [-5.0], id="negative-demand"),
        pytest.param(100.0, [math.nan], id="nan-demand"),
    ],
)
def test_rejects_nonsense(capacity: float, demands: list[float]) -> None:
    with pytest.raises(ValueError, match="must be finite"):
        share_power(capacity, demands)
