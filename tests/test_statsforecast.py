"""The `statsforecast` model (AutoETS over all partitions at once) against hand-built series.

The oracle is arithmetic on the series we build: a partition growing 1 MB per hour with little
noise is 36 MB below the threshold 48 hours in, so a straight line crosses it after 36 hours,
inside a 48-hour window; a flat partition sits 100 MB below it and never moves; a third
partition's write rate climbs 0.01/s per hour towards a write threshold it reaches in ~10 hours.
"""

from __future__ import annotations

import numpy as np
import pytest

from weaver.core.settings import load_settings
from weaver.predict import forecasting
from weaver.predict import models as m

H = 3_600_000_000
MB = 1_000_000


def _job(pid, size, rate, *, size_t, write_t, n=200, horizon_h=48):
    ds = (np.arange(len(size), dtype=np.int64) + 1) * H
    horizon = ds[-1] + np.arange(1, horizon_h + 1, dtype=np.int64) * H
    return m.Job(pid, ds, np.asarray(size, float), np.asarray(rate, float), horizon, size_t, write_t, n,
                 m.seed_for(pid), "statsforecast", H)


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(7)
    t = np.arange(48)
    base = 500 * MB
    rate = 0.05 + 0.01 * rng.random(48)
    grow = base + t * MB + rng.normal(0, 0.05 * MB, 48)  # last point ~ base + 47 MB
    flat = base + rng.normal(0, 0.05 * MB, 48)
    hot = 0.05 + 0.01 * t + 0.002 * rng.standard_normal(48)  # 0.52/s at the end, +0.01/s per hour
    size_t = base + 83 * MB  # grow: 36 MB (36 h) away; flat: ~83 MB away, no trend
    write_t = 0.62  # hot: 0.1/s (10 h) away; the others ~0.06/s
    return [_job("grow", grow, rate, size_t=size_t, write_t=write_t),
            _job("flat", flat, rate, size_t=size_t, write_t=write_t),
            _job("hot", np.full(48, float(base)), hot, size_t=size_t, write_t=write_t)]


def test_batch_probabilities_rank_growth_above_flat(series):
    res = {r.partition_id: r for r in m.run_batch(series, n_jobs=1)}
    for r in res.values():
        assert r.skip_reason is None, r.skip_reason
        assert 0.0 <= r.probability <= 1.0
    assert res["grow"].probability >= 0.8 and res["grow"].reason == "size"
    assert res["flat"].probability <= 0.1
    assert res["grow"].probability > res["flat"].probability
    # The median crossing of the growing partition is near the straight line's 36 h.
    p50_h = (res["grow"].p50 - series[0].ds[-1]) / H
    assert 24 <= p50_h <= 48, p50_h
    # The write-rate partition crosses on throughput (its size is constant: a constant path).
    assert res["hot"].probability >= 0.8 and res["hot"].reason == "throughput"
    assert res["hot"].size_median == [float(series[2].size[0])] * 48
    # Medians of a growing size keep growing; a rate path is never negative.
    assert np.all(np.diff(res["grow"].size_median) > 0)
    assert min(res["flat"].rate_median) >= 0.0


def test_run_jobs_dispatches_to_the_batch_and_single_series_agrees(series):
    settings = load_settings(lake="/nonexistent-lake-not-read", forecast_workers=1)
    assert forecasting.run_params(settings, at="2026-01-03T00:00:00Z", model="statsforecast").model == "statsforecast"
    batch = {r.partition_id: r for r in forecasting.run_jobs(series, settings)}
    one = m.run_job(series[0])  # the per-series path (Spark executors): same model, other draws
    assert one.skip_reason is None
    assert abs(one.probability - batch["grow"].probability) <= 0.15
    assert batch["flat"].probability < batch["grow"].probability


def test_ets_paths_follow_statsforecasts_own_point_forecast():
    """With the noise switched off, a path is the fitted model's point forecast (statsforecast's
    `predict`, which keeps an undamped trend; its own `simulate` in 2.1.1 drops it)."""
    from statsforecast.models import AutoETS

    t = np.arange(72)
    y = 100 + 0.5 * t + 5 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(1).normal(0, 0.3, 72)
    for season in (1, 24):
        fit = AutoETS(season_length=season).fit(y)
        mod = dict(fit.model_, sigma2=0.0)
        path = m.ets_paths(mod, 24, 3, np.random.default_rng(0))
        np.testing.assert_allclose(path, np.tile(fit.predict(24)["mean"], (3, 1)), rtol=1e-9)
    assert path[0, -1] > y[-1]  # the trend survives
