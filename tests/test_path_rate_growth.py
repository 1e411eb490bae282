"""The path model's write-rate growth on a second day (issue 15), on hand-built noise-free rates.

A partition writing R * G ** (t / 24) * (1 + C * sin(2 pi t / 24)) writes per second in hour t: a
daily cycle on compounding growth. The same hours a day apart differ by exactly G, whatever the
cycle, so the growth is known from the moment the history holds enough of the day before its last
one (`models.PATH_GROWTH_SHARE` of a day); before that the model assumes none.
"""

from __future__ import annotations

import numpy as np
import pytest

from weaver.predict import models as M

H = 3_600_000_000  # one hour in us
R, G, C = 0.5, 1.5, 0.9


def _rates(n: int, g: float = G, c: float = C) -> np.ndarray:
    t = np.arange(n)
    return R * g ** (t / 24.0) * (1.0 + c * np.sin(2 * np.pi * t / 24.0))


@pytest.mark.parametrize("n", [42, 45, 47, 48, 60, 72])
def test_growth_is_the_same_hours_a_day_apart(n):
    assert M.rate_growth(_rates(n), 24, 0.0) == pytest.approx(G)


def test_growth_from_two_whole_days_is_the_ratio_of_their_means():
    r = np.random.default_rng(5).gamma(2.0, 1.0, 72)
    assert M.rate_growth(r, 24, 1e-3) == pytest.approx((r[-24:].mean() + 1e-3) / (r[-48:-24].mean() + 1e-3))


@pytest.mark.parametrize("n", [24, 30, 41])
def test_no_growth_before_three_quarters_of_the_day_before(n):
    assert M.PATH_GROWTH_SHARE * 24 == 18
    assert M.rate_growth(_rates(n), 24, 0.0) == 1.0


def test_growth_is_clipped():
    assert M.rate_growth(_rates(48, g=3.0), 24, 0.0) == 2.0
    assert M.rate_growth(_rates(48, g=0.2), 24, 0.0) == 0.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_second_day_rate_crosses_when_its_growth_says(seed):
    """44 h of history, no cycle, 1,800+ writes an hour (Poisson noise small): the continuation
    passes the write threshold 12 h after the run. Assumed flat (the model before the second day's
    growth) it would stay at the last hours' level, 1.5 ** (12 / 24) = 1.22x below the threshold."""
    n, cross = 44, 12
    r = _rates(n + 48, c=0.0)
    thr = float(r[n - 1 + cross]) * 0.999
    ds = np.arange(1, n + 1, dtype=np.int64) * H
    horizon = np.arange(n + 1, n + 25, dtype=np.int64) * H
    size = np.full(n, 1000.0)  # size stays far below its threshold
    job = M.Job("x", ds, size, r[:n], horizon, 1e9, thr, 400, seed, "path", H)
    got = M.run_job(job)
    assert got.reason == "throughput" and got.p_throughput == got.probability
    assert got.probability >= 0.5
    assert abs((got.p50 - ds[-1]) / H - cross) <= 2
