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
