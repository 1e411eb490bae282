"""What-if forecasts see what a prediction run sees (the moving hot spot, the lake's first-day ratio).

The lake is `tests/test_path_hotspot.py`'s construction: five partitions a-e, each inserting BASE
items an hour, and a hot spot adding HOT items an hour to the partition holding its position,
moving right at SPEED. At hour 48 it is in d and reaches e after ~2.7 h.

* The what-if report's fan of a partition is drawn from the very paths behind the run's
  probability: for e, which the spot is about to enter, the fan rises to the threshold as the
  construction says (its own history alone would not get half way).
* The impact of a split of e (the spot is about to enter it) or of d (it holds the spot) forecasts
  each child as a run over a lake where the split had happened would: the same change log written
  with that partition cut in two from the start, gathered and forecast by the prediction stage,
  gives each child the same history, context and horizon.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, VALUE, WRITE_T, event_log, forecast_settings, key, part, spread, write_lake
from tests.test_path_hotspot import BASE, BOUNDS, HOT, HOURS, IDS, POS0, SIZE_T, SPEED, holder

# The split keys: each partition's 121st key. A partition writes its keys in key order, 5 an hour
# until the spot reaches it (d from hour 37, e from hour 51), so its left child holds hours 0-23's.
CUTS = {"d": key("k6", 120), "e": key("k8", 120)}
AT = T0 + HOURS * H


def _lake(root, cut: str | None) -> str:
    """The construction's lake; with `cut`, that partition is two partitions `cut`1 / `cut`2 from
    the start, split at CUTS[cut] (the same change log)."""
    ev, n = [], [0] * 5
    for h in range(HOURS):
        for i, pid in enumerate(IDS):
            for ts in spread(h, BASE + (HOT if holder(h + 0.5) == i else 0)):
                k = key(f"k{2 * i}", n[i])
                owner = (pid + ("1" if k < CUTS[pid] else "2")) if pid == cut else pid
                ev.append((ts, owner, k, "PUT", VALUE))
                n[i] += 1
    parts = []
    for pid, lo, hi in zip(IDS, BOUNDS, BOUNDS[1:]):
        parts += [part(pid + "1", lo, CUTS[pid]), part(pid + "2", CUTS[pid], hi)] if pid == cut else [part(pid, lo, hi)]
    return write_lake(root, event_log(parts, ev),
                      policy={"size_threshold_bytes": SIZE_T, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    root = tmp_path_factory.mktemp("whatif_ctx")
    return {cut: forecast_settings(_lake(root / (cut or "whole"), cut)) for cut in (None, "d", "e")}


def _jobs(s):
    from weaver.predict import gather_batched, run_jobs_of, run_params

    params = run_params(s, at=AT, model="path")
    return run_jobs_of(params, gather_batched(s, params))


def test_report_fan_is_the_runs_own_paths_with_the_hot_spot(lakes):
    """e is at 240 items (~240 kB) and gains BASE + HOT = 25 items an hour once the spot arrives
    (0.8 - POS0) / SPEED - HOURS = 2.67 h from now: 650 kB after ~18.6 h, inside the 24 h window.
    On its own 5 items an hour it would hold ~360 kB at the window's end. c, which the spot left
    11 h ago, is at ~500 kB and ends near 620 kB on its own items (below the threshold)."""
    from weaver.predict import models, predict
    from weaver.whatif.report import fan

    s = lakes[None]
    jobs = _jobs(s)
    rows = {r["partition_id"]: r for r in predict(s, at=AT, model="path", write=False,
                                                  calibration="none").to_pylist()}
    arrive = (0.8 - POS0) / SPEED - HOURS
    cross_h = arrive + (SIZE_T - 240 * 1001 - arrive * BASE * 1001) / ((BASE + HOT) * 1001)
    assert 17.0 < cross_h < 20.0
    for pid in ("e", "c"):
        job = jobs[pid]
        f = fan(job)
        hours = (f["grid"] - f["grid"][0]) / 3.6e9 + 1
        p50 = f["size"][1]
        if pid == "e":
            first = hours[np.argmax(p50 > SIZE_T)]
            assert (p50 > SIZE_T).any() and cross_h - 5 <= first <= cross_h + 5, first
        else:
            assert (p50 < SIZE_T).all() and p50[-1] == pytest.approx(620_000, rel=0.05)
        # The very paths behind the run's raw probability: the share crossing in the window.
        grid, size_p, rate_p = models.job_paths(job)
        keep = np.isin(grid, job.horizon)
        crossed = (size_p[:, keep] > SIZE_T).any(axis=1) | (rate_p[:, keep] > WRITE_T).any(axis=1)
        assert float(crossed.mean()) == rows[pid]["probability_raw"]
    assert rows["e"]["probability_raw"] >= 0.8 and rows["c"]["probability_raw"] <= 0.1


@pytest.mark.parametrize("source", ["e", "d"], ids=["ahead-of-the-spot", "holding-the-spot"])
def test_children_of_a_whatif_split_are_forecast_as_if_the_split_had_happened(lakes, source):
    from weaver.log import Lineage
    from weaver.predict import models, read_log
    from weaver.whatif.impact import child_forecast, child_jobs

    whole, k = lakes[None], CUTS[source]
    p = Lineage.load(whole).get(source)
    left, right = source + "1", source + "2"
    got = child_jobs(whole, read_log(whole, upto=AT), p, {left: (p.key_lo, k), right: (k, p.key_hi)}, AT,
                     model="path", name="w")
    real = _jobs(lakes[source])
    item = len(k) + VALUE
    # The left child's history by hand: the source's first 120 keys, 5 an hour from hour 0, then
    # no writes. The run's buckets (hour 1 .. 48), not `forecast_history` back with empty hours
    # before the log began.
    want_ds = np.array([int((T0 + (h + 1) * H).timestamp() * 1e6) for h in range(HOURS)], dtype=np.int64)
    assert np.array_equal(got[left].ds, want_ds)
    assert np.array_equal(got[left].size, [min(BASE * (h + 1), 120) * item for h in range(HOURS)])
    for cid in (left, right):
        a, b = got[cid], real[cid]
        assert np.array_equal(a.ds, b.ds) and np.array_equal(a.horizon, b.horizon)
        assert np.allclose(a.size, b.size) and np.allclose(a.rate, b.rate)
        assert a.lake_ratio is not None and a.lake_ratio == pytest.approx(b.lake_ratio)
        # The run sees the spot move whether the cut is ahead of it or where it is (there the left
        # child has written nothing for a day: its usual rate is that of the hours it wrote in).
        assert a.hot is not None and b.hot is not None
        assert a.hot.spot == b.hot.spot and (a.hot.lo, a.hot.hi) == (b.hot.lo, b.hot.hi)
        assert np.allclose(a.hot.hist_bytes, b.hot.hist_bytes) and np.allclose(a.hot.hist_rate, b.hot.hist_rate)
    # Cut where it is, the spot is the uncut lake's, in the right child's narrower range.
    if source == "d":
        s0, s1 = _jobs(whole)["d"].hot.spot, real[right].hot.spot
        assert (s1.lo, s1.hi) == (real[right].hot.lo, real[right].hot.hi) and s1.lo > s0.lo and s1.hi == s0.hi
        assert s1.pos == pytest.approx(s0.pos) and s1.speed == pytest.approx(s0.speed)
        assert (s1.excess_bytes, s1.excess_rate) == pytest.approx((s0.excess_bytes, s0.excess_rate))
    # With the same seed the child's forecast is the real partition's.
    for cid in (left, right):
        f = child_forecast(dataclasses.replace(got[cid], seed=real[cid].seed, n_samples=real[cid].n_samples), AT)
        r = models.run_job(real[cid])
        assert (f["probability"], f["reason"]) == (r.probability, r.reason)
