"""The path model's moving hot spot (cross-partition): hand-built histories with a known spot.

Five partitions of equal key width (boundaries k2, k4, k6, k8) each insert BASE items an hour; a
hot spot adds HOT items an hour to the partition holding its position, which moves at SPEED key
positions an hour. Everything expected follows from that construction: where the spot is at the
run, when it reaches the next partition, and which partitions can reach the size threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, VALUE, WRITE_T, event_log, forecast_settings, key, part, spread, write_lake
from weaver.predict import models

BOUNDS = ["", "k2", "k4", "k6", "k8", None]
IDS = ["a", "b", "c", "d", "e"]
HOURS = 48
BASE, HOT = 5, 20  # items (1000 B) an hour
POS0, SPEED = 0.04, 0.015  # the spot at hour h: POS0 + SPEED * h -> 0.76 at the run, at 0.8 (e) after 2.67 h
SIZE_T = 650_000


def spot_at(h: float) -> float:
    return POS0 + SPEED * h


def holder(h: float) -> int:
    return min(4, int(spot_at(h) / 0.2))


def test_key_positions_are_linear_in_digit_keys_and_monotone_otherwise():
    assert models.key_positions(BOUNDS) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert models.key_positions(["", "k25000000", "k5", None]) == [0.0, 0.25, 0.5, 1.0]
    other = models.key_positions(["", "apple", "apricot", "banana", None])
    assert other == sorted(other) and len(set(other)) == 5


def matrices(hot_of=holder, hours: int = HOURS) -> tuple[np.ndarray, np.ndarray]:
    """(rates in writes/s, sizes in bytes), partitions x hours, of the construction."""
    writes = np.full((5, hours), float(BASE))
    for h in range(hours):
        if (i := hot_of(h + 0.5)) is not None:  # None: no range hot that hour
            writes[i, h] += HOT
    return writes / 3600.0, np.cumsum(writes * 1000.0, axis=1)


RANGES = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]


def test_tracked_spot_matches_the_construction():
    rates, sizes = matrices()
    spot, _ = models.track_hot_spot(RANGES, np.arange(HOURS), rates, sizes)
    assert spot is not None
    assert spot.speed == pytest.approx(SPEED, rel=0.3)
    assert (spot.lo, spot.hi) == (0.6, 0.8)  # the range hot in the last hour holds it
    assert 0.6 <= spot.pos <= 0.8
    assert spot.excess_rate == pytest.approx(HOT / 3600.0, rel=0.1)
    assert spot.excess_bytes == pytest.approx(HOT * 1000.0, rel=0.1)


@pytest.mark.parametrize("hot_of", [lambda h: 3,  # one range hot all along: nothing moves
                                    lambda h: 2 if 40 <= h < 43 else 0,  # a 3-hour burst elsewhere
                                    ], ids=["static", "burst"])
def test_no_moving_spot_no_context(hot_of):
    rates, sizes = matrices(hot_of)
    assert models.track_hot_spot(RANGES, np.arange(HOURS), rates, sizes)[0] is None
    assert models.hot_contexts(RANGES, np.arange(HOURS), rates, sizes) == [None] * 5


@pytest.fixture(scope="module")
def hot_lake(tmp_path_factory) -> str:
    """The construction written as a change log: inserts at the hour's spread instants."""
    ev, n = [], [0] * 5
    for h in range(HOURS):
        for i, pid in enumerate(IDS):
            count = BASE + (HOT if holder(h + 0.5) == i else 0)
            for ts in spread(h, count):
                ev.append((ts, pid, key(f"k{2 * i}", n[i]), "PUT", VALUE))
                n[i] += 1
    parts = [part(pid, lo, hi) for pid, lo, hi in zip(IDS, BOUNDS, BOUNDS[1:])]
    return write_lake(tmp_path_factory.mktemp("hot") / "lake", event_log(parts, ev),
                      policy={"size_threshold_bytes": SIZE_T, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


def test_neighbours_spot_raises_the_next_partition_and_not_one_it_left(hot_lake):
    """At hour 48 the spot is in d (0.6-0.8) and reaches e after ~2.7 h: e then gains 25 000 B/h
    from 240 000 B and crosses 650 000 B about 16 h later (inside 24 h even at 0.6x the speed);
    at its own 5 000 B/h it would reach only 360 000 B. c, which the spot left 11 h before, is at
    ~500 000 B and needs 150 000 B at its own 5 000 B/h (30 h): it cannot split in 24 h, though its
    last day (13 hot hours of 25 000 B) read as its own growth says it will."""
    from weaver.predict import predict
    from weaver.predict.forecasting import gather, job_context, run_params

    s = forecast_settings(hot_lake)
    at = T0 + HOURS * H
    rows = {r["partition_id"]: r for r in predict(s, at=at, model="path", write=False,
                                                  calibration="none").to_pylist()}
    assert rows["e"]["probability"] >= 0.8 and rows["e"]["reason"] == "size"
    assert rows["c"]["probability"] <= 0.1
    # The same partitions forecast from their own history alone (no context): wrong both ways.
    run = gather(s, run_params(s, at=at, model="path"))
    ctx = job_context(run)
    assert {pid for pid, c in ctx.items() if "hot" in c} == set(IDS)
    # the lake's recent-to-daily ratio, by hand: the median over the partitions' own size series
    def ratio(y):
        inc = np.diff(y)
        return inc[-6:].mean() / inc[-24:].mean()
    want = float(np.median([ratio(p.size) for p in run.partitions]))
    assert [c["lake_ratio"] for c in ctx.values()] == [pytest.approx(want)] * len(IDS)
    alone = {p.partition.partition_id: models.run_job(models.Job(
        p.partition.partition_id, p.ds, p.size, p.rate, run.horizon, SIZE_T, WRITE_T, 200, 1, "path")).probability
        for p in run.partitions}
    assert alone["e"] <= 0.1 and alone["c"] >= 0.5


# --- one crossing: a spot seen leaving one range for its neighbour, no line to fit yet -----------
# 24 hours; nothing hot in hours 0-9 (the window's cover is 14/24 < 75 %: no fitted track), the spot
# in A (hours 10-17, 8 h) and then in B (hours 18-23, 6 h so far). It crossed A's 0.2 of key space
# in 8 h at least and has been in B 6 h without crossing its 0.2: speed <= min(0.2/8, 0.2/6).
ONE_HOURS = 24
ONE_BOUND = 0.2 / 8


def one_crossing(a: int, b: int):
    return lambda h: None if h < 10 else a if h < 18 else b


@pytest.mark.parametrize("a, b, speed, pos", [(1, 2, ONE_BOUND, 0.4), (3, 2, -ONE_BOUND, 0.6)],
                         ids=["rightwards", "leftwards"])
def test_one_crossing_gives_direction_entry_edge_and_speed_bound(a, b, speed, pos):
    rates, sizes = matrices(one_crossing(a, b), ONE_HOURS)
    spot, hot = models.track_hot_spot(RANGES, np.arange(ONE_HOURS), rates, sizes)
    assert spot is not None and spot.bounded
    assert not hot[:, :10].any() and hot[a, 10:18].all() and hot[b, 18:].all()
    assert spot.speed == pytest.approx(speed)
    assert (spot.pos, spot.since) == (pos, 6)  # entered B at the shared edge 6 hours ago
    assert (spot.lo, spot.hi) == RANGES[b]
    assert spot.excess_rate == pytest.approx(HOT / 3600.0, rel=0.1)
    assert spot.excess_bytes == pytest.approx(HOT * 1000.0, rel=0.1)


@pytest.mark.parametrize("hot_of", [
    lambda h: None if h < 18 else 2,  # B turned hot with no neighbour hot before: a burst, no crossing
    lambda h: None if h < 10 else 1 if h < 18 else 3,  # the range before it is not B's neighbour
    lambda h: None if h < 10 else 1 if h < 22 else 2,  # B hot for 2 buckets only (< HOT_MIN_RUN)
], ids=["from-nowhere", "jump", "too-new"])
def test_no_one_crossing_without_a_neighbour_handing_over(hot_of):
    rates, sizes = matrices(hot_of, ONE_HOURS)
    assert models.track_hot_spot(RANGES, np.arange(ONE_HOURS), rates, sizes)[0] is None


def test_one_crossing_paths_reach_the_next_range_no_sooner_than_the_bound_allows():
    """From B (0.4-0.6), entered 6 h ago, at v = U(0.1, 1) x 0.025 per hour the spot is at
    0.4 + v (6 + k) after k more hours: past 0.6 (in D) never at k = 1 (0.575 at most), within
    24 h for v >= 0.2 / 30, a share (1 - 0.2 / 30 / 0.025) / 0.9 = 0.815 of the paths; past 0.8
    (in E) within 24 h for v >= 0.4 / 30, a share (1 - 0.4 / 30 / 0.025) / 0.9 = 0.519."""
    rates, sizes = matrices(one_crossing(1, 2), ONE_HOURS)
    ctx = models.hot_contexts(RANGES, np.arange(ONE_HOURS), rates, sizes)
    n, h = 4000, 24
    d_size, d_rate = models.hot_deltas(ctx[3], h, n, seed=11)
    in_d, in_e = d_rate > 0, models.hot_deltas(ctx[4], h, n, seed=11)[1] > 0
    assert not in_d[:, 0].any() and in_d[:, 2].any()
    assert (in_d | in_e).any(axis=1).mean() == pytest.approx((1 - 0.2 / 30 / ONE_BOUND) / 0.9, abs=0.03)
    assert in_e.any(axis=1).mean() == pytest.approx((1 - 0.4 / 30 / ONE_BOUND) / 0.9, abs=0.03)
    assert not (in_d & in_e).any()
    # It moves one way: a range once left is never entered again.
    for held in (in_d, in_e):
        assert (np.diff(held.astype(int), axis=1) > 0).sum(axis=1).max() <= 1
    assert not (in_e[:, :-1] & ~in_e[:, 1:]).any()  # E is the last range: held once reached
    assert np.allclose(d_size[:, -1], in_d.sum(axis=1) * ctx[3].spot.excess_bytes)
    # B holds it until it leaves; the range it left and the one before never get it back.
    in_b = models.hot_deltas(ctx[2], h, n, seed=11)[1] > 0
    assert in_b[:, 0].all() and np.array_equal(in_b, ~(in_d | in_e))
    for far in (0, 1):
        assert not models.hot_deltas(ctx[far], h, n, seed=11)[1].any()


def test_a_range_cut_from_a_hot_parent_is_hot_when_the_spot_reaches_it():
    """B (0.2-0.4) and C (0.4-0.6) are the halves of a parent that held the spot in hours 7-15: the
    parent wrote HOT more over its keys, HOT / 2 in each half's range history. The spot then stays in
    C (hours 16-17) and moves to B (hours 18-23). Fifteen of B's 24 hours are above BASE, so its plain
    median is the parent's level and BASE + HOT is under twice that: read against it, B never turns
    hot. Its usual rate leaves out the hours it shared hot C's excess (C hot, B at or above the run's
    median): then B is hot now, entered from C 6 h ago, after C was hot for 11 h (7-17)."""
    writes = np.full((5, ONE_HOURS), float(BASE))
    writes[1:3, 7:16] += HOT / 2
    writes[2, 16:18] += HOT
    writes[1, 18:] += HOT
    assert models.HOT_RATIO * np.median(writes[1]) > BASE + HOT  # the premise: the plain median hides it
    rates, sizes = writes / 3600.0, np.cumsum(writes * 1000.0, axis=1)
    spot, hot = models.track_hot_spot(RANGES, np.arange(ONE_HOURS), rates, sizes)
    assert spot is not None and spot.bounded
    assert hot[1, 18:].all() and hot[2, 7:18].all() and not hot[[0, 3, 4]].any()
    assert spot.speed == pytest.approx(-0.2 / 11)  # leftwards, <= min(C's 0.2 over 11 h, B's over 6 h)
    assert (spot.pos, spot.since) == (0.4, 6)  # entered B at its upper edge, shared with C
    assert (spot.lo, spot.hi) == RANGES[1]
    assert spot.excess_rate == pytest.approx(HOT / 3600.0)
    assert spot.excess_bytes == pytest.approx(HOT * 1000.0)
    ctx = models.hot_contexts(RANGES, np.arange(ONE_HOURS), rates, sizes)
    # B's history loses the excess it had over BASE: the parent's half in hours 7-15, the spot's in 18-23.
    assert np.allclose(ctx[1].hist_rate * 3600.0, np.where(np.arange(ONE_HOURS) >= 18, HOT, 0.0)
                       + np.where((np.arange(ONE_HOURS) >= 7) & (np.arange(ONE_HOURS) < 16), HOT / 2, 0.0))


def test_a_range_idle_half_its_history_is_hot_when_the_spot_is_in_it():
    """Keys written in key order (an ordered id): d is cut at the key its writes had reached at hour
    24, so its left part d1 wrote BASE an hour until then and nothing since, and its right part d2
    nothing until then and BASE since, plus HOT while the spot is in d (hours 38-47). Each part's
    plain median over the 48 h is BASE / 2 and its median over the buckets it was not hot in is 0:
    read against either, BASE alone is already 'hot' or nothing ever is. A range's usual rate is
    taken over the buckets it wrote in (BASE for both parts): the spot is tracked as in the uncut
    construction - d2 hot in exactly its spot hours, the speed, the excess - and d1 is never hot."""
    cut = 0.6 + 1e-7  # d1 holds d's first keys only: a sliver of the key space
    ranges = RANGES[:3] + [(0.6, cut), (cut, 0.8), RANGES[4]]
    writes = np.full((6, HOURS), float(BASE))
    writes[3, 24:] = 0.0
    writes[4, :24] = 0.0
    spot_hours = np.array([holder(h + 0.5) for h in range(HOURS)])
    for i, row in ((0, 0), (1, 1), (2, 2), (3, 4), (4, 5)):  # the uncut range i's spot goes to row `row`
        writes[row, spot_hours == i] += HOT
    assert np.median(writes[4][spot_hours != 3]) == 0  # the premise: idle in most of its cool hours
    rates, sizes = writes / 3600.0, np.cumsum(writes * 1000.0, axis=1)
    spot, hot = models.track_hot_spot(ranges, np.arange(HOURS), rates, sizes)
    assert spot is not None and not spot.bounded
    assert np.array_equal(hot[4], spot_hours == 3) and not hot[3].any()
    assert spot.speed == pytest.approx(SPEED, rel=0.3)
    assert (spot.lo, spot.hi) == (cut, 0.8) and cut <= spot.pos <= 0.8
    assert spot.excess_rate == pytest.approx(HOT / 3600.0, rel=0.1)
    assert spot.excess_bytes == pytest.approx(HOT * 1000.0, rel=0.1)
