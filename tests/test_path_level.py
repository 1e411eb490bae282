"""The path model's size level on a hand-built, noise-free growth history (issue 15).

A partition whose hourly size increment grows exponentially, A * G ** (t / 24) bytes in hour t,
with nothing else going on: its continuation is known, so the hour at which it first exceeds a
threshold is known. The threshold is put at the size the continuation reaches CROSS hours after
the run; the model sees only the 48 h history.

Before the level's spread took only a share (`models.PATH_SPREAD_SHARE`) of the recent growth -
the day means, or with less than two days the last hours against the same hours a day earlier,
differ by the growth itself - such a series got probability 0.82 for a crossing 12 h ahead and
0.22 for one 6 h after the window's end.
"""

from __future__ import annotations

import numpy as np
import pytest

from weaver.predict import models as M

H = 3_600_000_000  # one hour in us
A, G = 4000.0, 1.4  # bytes in the first hour, growth of the hourly increment per day
HIST = 48


def _job(cross_h: int, seed: int = 1) -> tuple[M.Job, np.ndarray]:
    t = np.arange(HIST + 48)
    size = 100_000.0 + np.cumsum(A * G ** (t / 24.0))
    thr = size[HIST - 1 + cross_h] - 1.0  # the continuation first exceeds it cross_h hours after the run
    ds = np.arange(1, HIST + 1, dtype=np.int64) * H
    horizon = np.arange(HIST + 1, HIST + 25, dtype=np.int64) * H  # a 24 h window right after the history
    rate = np.full(HIST, 0.01)  # far below the write threshold: only size can split
    return M.Job("x", ds, size[:HIST], rate, horizon, thr, 1.0, 400, seed, "path", H), ds


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_known_crossing_inside_the_window_is_likely_and_timed(seed):
    job, ds = _job(12, seed)
    r = M.run_job(job)
    assert r.skip_reason is None and r.reason == "size"
    assert r.probability >= 0.9
    # the median first crossing within one bucket of the true one (hour 12 after the run)
    assert abs((r.p50 - ds[-1]) / H - 12) <= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_crossing_after_the_window_is_unlikely(seed):
    job, _ = _job(30, seed)  # 6 h after the window ends
    assert M.run_job(job).probability <= 0.1


def test_level_spread_takes_only_a_share_of_the_recent_growth():
    """`size_terms` by hand: with less than two whole days of increments the level's spread is the
    last 6 buckets' shift against the same buckets a day earlier - here one day of growth - and the
    level's sd is PATH_LEVEL_WIDTH x hypot(standard error of the last day's mean, PATH_SPREAD_SHARE x
    that shift)."""
    size = 100_000.0 + np.cumsum(A * G ** (np.arange(HIST) / 24.0))
    inc = np.diff(size)  # 47 increments: one whole day
    se = inc[-24:].std() / np.sqrt(24)
    shift = inc[-6:].mean() - inc[-30:-24].mean()
    terms = M.size_terms(size, 24)
    assert terms.shift == pytest.approx(shift)
    assert terms.slope == 0.0
    assert terms.sd == pytest.approx(M.PATH_LEVEL_WIDTH * np.hypot(se, M.PATH_SPREAD_SHARE * abs(shift)))
    assert M.PATH_SPREAD_SHARE < 1.0


def test_blocks_from_a_busier_day_are_scaled_not_shifted():
    """An insert-only partition (every hourly increment positive) with a daily cycle whose oldest
    day ran at 3x the level of the last two: the size never shrank, so a path should not either.
    A bootstrapped block from the busy day *shifted* down to the last day's mean carries its large
    troughs below zero (72 % of paths shrank at some hour before `models.PATH_SCALE_RANGE`);
    scaled to the step's mean it keeps the cycle's shape. Only paths whose Normal level draw falls
    to <= 0 may step down (a fraction of a percent here)."""
    t = np.arange(72)
    inc = np.where(t < 24, 3000.0, 1000.0) * (1 + 0.9 * np.sin(2 * np.pi * t / 24))
    assert inc.min() > 0
    size = 50_000.0 + np.concatenate([[0.0], np.cumsum(inc)])[:72]
    ds = np.arange(1, 73, dtype=np.int64) * H
    horizon = np.arange(73, 97, dtype=np.int64) * H
    paths = M._path_size(ds, size, horizon, 2000, 7)
    steps = np.diff(np.concatenate([np.full((len(paths), 1), size[-1]), paths], axis=1), axis=1)
    assert (steps < 0).any(axis=1).mean() <= 0.01
    # the cycle survives: step k is the increment of hour 72 + k, and the history's cycle peaks at
    # hour 6 of a day and bottoms at hour 18 (1 +- 0.9; +-1 h of jitter blurs it)
    med = np.median(steps, axis=0)
    assert 5 <= int(np.argmax(med)) <= 8 and 17 <= int(np.argmin(med)) <= 20
    assert med.max() >= 5 * med.min() > 0


def _long_job(cross_h: int, hist: int, seed: int) -> tuple[M.Job, np.ndarray]:
    t = np.arange(hist + 48)
    size = 100_000.0 + np.cumsum(A * G ** (t / 24.0))
    thr = size[hist - 1 + cross_h] - 1.0
    ds = np.arange(1, hist + 1, dtype=np.int64) * H
    horizon = np.arange(hist + 1, hist + 25, dtype=np.int64) * H
    return M.Job("x", ds, size[:hist], np.full(hist, 0.01), horizon, thr, 1.0, 400, seed, "path", H), ds


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("cross_h", [8, 20])
def test_four_days_of_growth_cross_on_time(seed, cross_h):
    """The same exponential growth seen for 4 days (96 h): the last day's mean increment is the
    level 12 h back, half a day of growth below the level now. Extrapolated from there
    (`SizeTerms.lead`, from `models.PATH_LEAD_MIN_DAYS` days) the median first crossing lands within
    one bucket of the true one; from the day's end it came 2 h late at 8 and 20 h ahead (3 h at 12 and
    16 h ahead; with the lead 1-2 h there: the slope is linear, the growth exponential)."""
    job, ds = _long_job(cross_h, 96, seed)
    r = M.run_job(job)
    assert r.skip_reason is None and r.reason == "size" and r.probability >= 0.75
    assert abs((r.p50 - ds[-1]) / H - cross_h) <= 1


def test_slope_is_extrapolated_from_the_middle_of_the_last_day():
    """Step means by hand on 4 whole days of constant hourly increments 10, 12, 14, 16 (oldest
    first): day means mu = 16, 14, 12, 10 back from the end, slope 2 per day, no shift, level sd
    PATH_LEVEL_WIDTH x PATH_SPREAD_SHARE x std(16, 14, 12). Every bootstrapped block is a constant
    day, scaled to its step's mean, so the k-th step of a path is exactly its mean
    level + share x slope x (k / 24 + 1/2), level ~ N(16, sd), share ~ clip(N(1, 0.5), 0, 1.5):
    averaged over paths, 16 + E[share] x 2 x (k / 24 + 1/2)."""
    import math

    inc = np.repeat([10.0, 12.0, 14.0, 16.0], 24)
    size = 1000.0 + np.concatenate([[0.0], np.cumsum(inc)])
    t = M.size_terms(size, 24)
    assert t.mu[:4].tolist() == [16.0, 14.0, 12.0, 10.0] and t.slope == 2.0 and t.shift == 0.0
    assert t.lead == 0.5 and M.size_terms(size[-49:], 24).lead == 0.0  # two days: from the day's end
    # E[clip(X, 0, 1.5)], X ~ N(1, 0.5), by the normal integrals
    Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    a, b = (0 - 1) / 0.5, (1.5 - 1) / 0.5
    e_share = 1.0 * (Phi(b) - Phi(a)) + 0.5 * (phi(a) - phi(b)) + 1.5 * (1 - Phi(b))
    ds = np.arange(1, 98, dtype=np.int64) * H
    horizon = np.arange(98, 122, dtype=np.int64) * H
    paths = M._path_size(ds, size, horizon, 40_000, 7)
    steps = np.diff(np.concatenate([np.full((paths.shape[0], 1), size[-1]), paths], axis=1), axis=1)
    k = np.arange(1, 25)
    want = 16.0 + e_share * 2.0 * (k / 24 + 0.5)
    assert steps.mean(axis=0) == pytest.approx(want, abs=0.04)


# --- a first day: the recent shift against the lake's ratio --------------------------------------
# 20 hours of history (19 increments, less than a day): 1000 B/h for 13 hours, then nothing for the
# last 6 (a hot spot moved on). Earlier days' same hours do not exist, so without the lake the shift
# is 0 and the level is the day's mean increment, 13000 / 19 = 684 B/h.
FIRST = np.concatenate([[0.0], np.cumsum([1000.0] * 13 + [0.0] * 6)]) + 50_000.0


def test_recent_ratio_and_the_lake_median_by_hand():
    assert M.recent_ratio(FIRST, 24) == 0.0  # last 6 increments 0 over a mean of 684
    grow = 50_000.0 + np.concatenate([[0.0], np.cumsum(np.arange(1.0, 20.0))])  # increments 1..19
    assert M.recent_ratio(grow, 24) == pytest.approx(np.mean([14, 15, 16, 17, 18, 19]) / 10.0)
    flat = 50_000.0 + np.arange(20) * 500.0
    assert M.recent_ratio(flat, 24) == pytest.approx(1.0)
    assert M.recent_ratio(flat[:12], 24) is None  # 11 increments: fewer than 2 x PATH_RECENT
    assert M.recent_ratio(np.full(20, 7.0), 24) is None  # no growth: no ratio
    # a whole day and more: against the last day's mean (the last 24 increments)
    long = 1000.0 + np.concatenate([[0.0], np.cumsum([100.0] * 5 + [10.0] * 24)])
    assert M.recent_ratio(long, 24) == pytest.approx(1.0)
    assert M.lake_recent_ratio([FIRST, grow, flat, np.full(20, 7.0)], 24) == pytest.approx(
        np.median([0.0, 1.65, 1.0]))
    assert M.lake_recent_ratio([FIRST, grow, np.full(20, 7.0)], 24) is None  # two ratios: no median


def test_first_day_shift_is_the_last_hours_against_the_lake_ratio():
    inc = np.diff(FIRST)
    mu0, se = inc.mean(), inc.std() / np.sqrt(19)
    alone = M.size_terms(FIRST, 24)
    assert alone.shift == 0.0 and alone.mu[0] == pytest.approx(mu0)
    assert alone.sd == pytest.approx(M.PATH_LEVEL_WIDTH * se)
    # the lake's partitions wrote their last 6 hours at 1.2 x their day's mean (its cycle, growth)
    t = M.size_terms(FIRST, 24, 1.2)
    assert t.shift == pytest.approx(0.0 - 1.2 * mu0)
    assert t.sd == pytest.approx(M.PATH_LEVEL_WIDTH * np.hypot(se, M.PATH_SPREAD_SHARE * 1.2 * mu0))
    # from a day and 6 buckets on, the partition's own earlier days decide; the lake ratio is unused
    two = 1000.0 + np.concatenate([[0.0], np.cumsum(np.full(30, 50.0))])
    assert M.size_terms(two, 24, 3.0).shift == M.size_terms(two, 24).shift == 0.0


def _first_day_job(lake_ratio, seed):
    ds = np.arange(1, 21, dtype=np.int64) * H
    horizon = np.arange(21, 45, dtype=np.int64) * H
    thr = FIRST[-1] + 12 * 13000.0 / 19  # 12 h ahead at the day's mean increment
    return M.Job("x", ds, FIRST, np.full(20, 0.01), horizon, thr, 1.0, 1000, seed, "path", H,
                 lake_ratio=lake_ratio)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_first_day_stall_the_lake_does_not_share_lowers_the_probability(seed):
    """Alone, the stalled partition's level is its day's mean (684 B/h, sd 2 x se = 2 x 110): it
    crosses 12 h ahead on nearly every path. Against a lake whose partitions did not stall (ratio
    1.0) its level is 684 + (0 - 684) = 0 B/h with sd 2 x hypot(110, 342) = 718, and it needs
    12 x 684 / 24 = 342 B/h on average over the window: P(N(0, 718) > 342) = 0.32, give or take the
    bootstrapped steps. A lake whose partitions all stalled alike (ratio 0) leaves it alone."""
    alone = M.run_job(_first_day_job(None, seed)).probability
    assert alone >= 0.9
    assert M.run_job(_first_day_job(1.0, seed)).probability <= 0.5
    assert M.run_job(_first_day_job(0.0, seed)).probability == alone
