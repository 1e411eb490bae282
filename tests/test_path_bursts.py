"""One-off write bursts in the path model's write-rate paths (issue 15, nineteenth pass).

Hand-built rates: a partition writing Poisson(400) an hour, far below a write threshold of 1,800
an hour, with a few hours at Poisson(2,700) in its history. Whether it crosses the threshold in the
next 24 h depends only on whether the burst comes again: a steady rate of 400 an hour reaches 1,800
in one of 24 hours with probability ~0 (the Poisson tail beyond 4.5x its mean), a burst at the same
hours every day comes back at those hours. The day blocks the rate paths are bootstrapped from used
to bring a one-off burst back at its hour of day in every path that drew its day.
"""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest

from weaver.predict import models as M
from weaver.predict import triage as T

H = 3_600_000_000  # one hour in us
THRESHOLD = 0.5  # writes/s: 1,800 an hour
EPS = 1.0 / 3600.0


def _job(r: np.ndarray, seed: int) -> M.Job:
    n = len(r)
    ds = np.arange(1, n + 1, dtype=np.int64) * H
    horizon = np.arange(n + 1, n + 25, dtype=np.int64) * H
    size = np.full(n, 1000.0)  # size stays far below its threshold
    return M.Job("x", ds, size, r, horizon, 1e9, THRESHOLD, 400, seed, "path", H)


def _steady(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(400, n) / 3600.0


def _burst(r: np.ndarray, hours: list[int], seed: int) -> np.ndarray:
    r = r.copy()
    r[hours] = np.random.default_rng(seed + 100).poisson(2700, len(hours)) / 3600.0
    return r


def test_one_off_buckets_are_cut_to_the_cap_by_hand():
    r = np.full(48, 0.1)
    r[30] = 0.9
    want = r.copy()
    want[30] = 3 * 0.1  # PATH_BURST_CAP x the last day's median
    assert M.PATH_BURST_CAP == 3.0
    assert np.allclose(M.one_off_capped(r, 24, EPS), want)
    # The same hour the day before was high too: a daily job, kept on both days.
    r[6] = 0.9
    assert np.array_equal(M.one_off_capped(r, 24, EPS), r)
    # Below the cap nothing moves; too short a history is left alone.
    assert np.array_equal(M.one_off_capped(np.full(30, 0.1) * np.r_[np.ones(29), 2.9], 24, EPS),
                          np.full(30, 0.1) * np.r_[np.ones(29), 2.9])
    short = np.array([0.1, 0.1, 5.0, 0.1, 0.1])
    assert np.array_equal(M.one_off_capped(short, 24, EPS), short)
    # A burst still going on at the end of the history is now, not past: kept; one that ended is cut.
    going = np.full(48, 0.1)
    going[[20, 46, 47]] = 0.9
    want = going.copy()
    want[20] = 0.3
    assert np.allclose(M.one_off_capped(going, 24, EPS), want)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n, hours", [(40, [20, 21, 22]), (60, [40, 41])])
def test_a_one_off_burst_does_not_come_back(seed, n, hours):
    got = M.run_job(_job(_burst(_steady(n, seed), hours, seed), seed))
    assert got.p_throughput <= 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_daily_burst_does(seed):
    """Two whole days with the burst at hours 10-12 of each: the next one is 10-12 h after the run."""
    r = _burst(_steady(48, seed), [10, 11, 12, 34, 35, 36], seed)
    got = M.run_job(_job(r, seed))
    assert got.reason == "throughput" and got.p_throughput >= 0.9
    assert 9 <= (got.p10 - 48 * H) / H <= 12


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_burst_now_still_counts(seed):
    """The last two hours are a burst at 2,700 an hour: the anomaly now reads them as written (it
    fades with PATH_PHI = 0.93 an hour), so the next hours may pass 1,800 - more often than after the
    same two hours written at the cap, and far more often than without them."""
    quiet = _steady(40, seed)
    now = _burst(quiet, [38, 39], seed)
    at_cap = quiet.copy()
    at_cap[[38, 39]] = M.PATH_BURST_CAP * np.median(quiet[-24:])
    p_now, p_cap, p_quiet = (M.run_job(_job(r, seed)).p_throughput for r in (now, at_cap, quiet))
    assert p_now >= 0.25 and p_now >= p_cap + 0.05 and p_quiet <= 0.05


def _grown_after_a_burst(seed: int) -> np.ndarray:
    """A day at 72 writes an hour with one hour at 7,200, then a day at 400: capping the burst makes
    the day-over-day growth larger (the earlier day's mean falls), so a bound taken from the rates
    as written would fall below the paths built from the capped ones."""
    rng = np.random.default_rng(seed)
    r = np.r_[rng.poisson(72, 24), rng.poisson(400, 24)] / 3600.0
    r[10] = 2.0
    return r


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", ["daily", "now", "grown"])
def test_triage_keeps_every_partition_the_model_gives_075(seed, case):
    """Triage's rate bound reads the same capped series as the paths: for a threshold just under
    what the paths reach, the model's probability is >= 0.75 and triage must not drop the partition."""
    r = {"daily": lambda: _burst(_steady(48, seed), [10, 11, 12, 34, 35, 36], seed),
         "now": lambda: _burst(_steady(40, seed), [38, 39], seed),
         "grown": lambda: _grown_after_a_burst(seed)}[case]()
    job = _job(r, seed)
    ds, horizon = job.ds, job.horizon
    paths = M._path_rate(ds, r, horizon, 400, M.seed_for(f"{case}{seed}"))
    thr = float(np.quantile(paths.max(axis=1), 0.2))  # 80 % of paths pass it
    job = M.Job("x", ds, job.size, r, horizon, 1e9, thr, 400, seed, "path", H)
    got = M.run_job(job)
    assert got.probability >= 0.75
    q = T.path_budget(400, T.min_crossing_count(400, 0.75))
    assert T.check(job, q) is None
    assert T.envelope(job, q).rate > thr


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fitted_models_rate_bound_keeps_the_burst(seed):
    """Prophet, ARIMA and statsforecast fit the rates as written, so their triage margin does not cut
    a one-off burst: it never sits below the highest rate the history reached (every factor of the
    bound is >= 1 over it), where the path model's may."""
    r = _burst(_steady(40, seed), [20, 21, 22], seed)
    q = T.path_budget(400, T.min_crossing_count(400, 0.75))
    path = T.envelope(_job(r, seed), q).rate
    for model in ("prophet", "arima", "statsforecast"):
        assert T.envelope(dataclasses.replace(_job(r, seed), model=model), q).rate >= r.max() > path
