"""Triage before fitting (issue 11, point 2): unreachable partitions get probability 0 and no fit.

Two kinds of evidence:

* a hand-built lake whose answers follow from its construction: one partition far from both
  thresholds (2 inserts an hour, 144 kB against 800 kB, 2 writes/h against 100/h) is triaged and
  never reaches the fitter; one that grows 10 kB an hour to 720 kB is fitted;
* a property on simulated lakes (several seeds and workload shapes, several run times and
  thresholds): the full model run on every partition (triage off) is the oracle - no partition
  it puts at or above the confidence threshold is triaged away by the run with triage on, for
  the path model and for Prophet and ARIMA.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import (
    WRITE_T,
    H,
    event_log,
    forecast_settings,
    growing,
    part,
    write_lake,
)
from weaver.predict import triage

SIZE_T = 800_000
HOURS = 72
AT = T0 + HOURS * H + timedelta(minutes=10)


def slow_grower(pid: str, prefix: str, hours: int) -> list[tuple]:
    """Exactly 2 new 1000-byte items an hour: size grows 2 kB/h (144 kB at 72 h), 2 writes/h."""
    return growing(pid, prefix, hours, per_hour=2)


@pytest.fixture(scope="module")
def far_near_lake(tmp_path_factory) -> str:
    """f: far from both thresholds (144 kB, 2 writes/h); g: 720 kB growing 10 kB/h (crosses 800 kB at 81 h)."""
    root = tmp_path_factory.mktemp("triage") / "lake"
    parts = [part("f", "", "b"), part("g", "b", None)]
    ev = slow_grower("f", "a", HOURS) + growing("g", "c", HOURS)
    return write_lake(root, event_log(parts, ev),
                      policy={"size_threshold_bytes": SIZE_T, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


def _run(lake: str, *, triage_on: bool, model: str = "path"):
    """predict() with the fitter's job count recorded through its progress callback."""
    from weaver.predict import predict

    jobs: list[int] = []
    s = forecast_settings(lake, forecast_triage=triage_on)
    t = predict(s, at=AT, model=model, write=False, progress=lambda i, n: jobs.append(n), calibration="none")
    return {r["partition_id"]: r for r in t.to_pylist()}, (jobs[-1] if jobs else 0), t


def test_far_partition_triaged_without_fit_near_one_fitted(far_near_lake):
    from weaver.checks import check_predictions
    from weaver.log import Lineage

    rows, fitted, table = _run(far_near_lake, triage_on=True)
    assert fitted == 1  # only g reached the fitter
    f, g = rows["f"], rows["g"]
    assert f["skip_reason"].startswith("unreachable")
    assert (f["probability"], f["probability_raw"], f["reason"], f["predicted_split_ts"]) == (0.0, None, None, None)
    assert g["skip_reason"] is None and g["reason"] == "size" and g["probability"] > 0.9
    # The predictions suite accepts an unreachable row like any other skip.
    s = forecast_settings(far_near_lake)
    assert check_predictions(table, Lineage.load(s), at=AT)["success"]


def test_setting_turns_triage_off(far_near_lake, monkeypatch):
    from weaver.core.settings import load_settings

    rows, fitted, _ = _run(far_near_lake, triage_on=False)
    assert fitted == 2
    assert rows["f"]["skip_reason"] is None and rows["f"]["probability"] == 0.0  # the full model agrees: far
    monkeypatch.setenv("WEAVER_FORECAST_TRIAGE", "off")
    assert load_settings(lake=far_near_lake).forecast_triage is False
    monkeypatch.setenv("WEAVER_FORECAST_TRIAGE", "maybe")
    from weaver.core.errors import InvalidParameterError
    with pytest.raises(InvalidParameterError, match="WEAVER_FORECAST_TRIAGE"):
        load_settings(lake=far_near_lake)


def test_calibration_never_lifts_an_unreachable_row(far_near_lake):
    """A map that lifts raw 0 to >= the confidence threshold turns triage off; a mild one keeps the row at 0."""
    from weaver.predict import forecasting
    from weaver.predict.calibration import CalibrationMap

    s = forecast_settings(far_near_lake)
    params = forecasting.run_params(s, at=AT)
    run = forecasting.gather(s, params)
    lifts_zero = CalibrationMap("path", "platt", {"a": 0.1, "b": 4.0})  # cmap(0) ~ 0.96 >= 0.75
    assert triage.min_crossing_count(params.samples, params.confidence_threshold, lifts_zero) == 0
    jobs, triaged = forecasting.triage_jobs(run, lifts_zero)
    assert triaged == {} and len(jobs) == 2
    mild = CalibrationMap("path", "platt", {"a": 1.0, "b": 0.5})  # cmap(0) ~ 1.6e-4: lifts, but not to 0.75
    jobs, triaged = forecasting.triage_jobs(run, mild)
    assert set(triaged) == {"f"}
    rows = forecasting._rows(run, {}, mild, triaged)
    f = next(r for r in rows.to_pylist() if r["partition_id"] == "f")
    assert f["probability"] == 0.0 and f["probability_raw"] is None


@pytest.mark.parametrize("n,c,expect", [(200, 0.75, 150), (200, 0.751, 151), (10, 1.0, 10), (200, 0.0, 0)])
def test_min_crossing_count_identity(n, c, expect):
    assert triage.min_crossing_count(n, c) == expect


def test_path_budget_binomial_tail():
    """The per-path budget q against an independent binomial tail (scipy)."""
    from scipy.stats import binom

    for n, k in ((200, 150), (200, 20), (50, 1)):
        q = triage.path_budget(n, k)
        assert binom.sf(k - 1, n, q) <= triage.TOLERANCE * 1.001
        assert binom.sf(k - 1, n, q * 1.01) > triage.TOLERANCE  # the largest such q, not a timid one
    assert triage.path_budget(200, 0) == 0.0


# --- property on simulated lakes -----------------------------------------------------------------
def _sim(tmp_path_factory, seed: int, shape: str, partitions: int = 4):
    from weaver.simulate import SimConfig, simulate

    cfg = SimConfig(seed=seed, partitions=partitions, days=3, shape=shape, base_rate=100.0)
    lake = str(tmp_path_factory.mktemp(f"sim-{shape}-{seed}") / "lake")
    simulate(lake, cfg)
    return lake, cfg


def _compare(lake, at, model, size_t, write_t) -> tuple[int, int]:
    """Run with triage off and on; check the property; return (triaged, at or above the threshold)."""
    from weaver.core.settings import load_settings
    from weaver.predict import predict

    out = {}
    for on in (False, True):
        s = load_settings(lake=lake, forecast_workers=1, forecast_triage=on)
        out[on] = {r["partition_id"]: r for r in predict(s, at=at, model=model, write=False, calibration="none",
                                                         size_threshold=size_t, write_threshold=write_t).to_pylist()}
    full, tri = out[False], out[True]
    c = full[next(iter(full))]["threshold"] if full else 0.75
    assert full.keys() == tri.keys()
    dropped = {p for p, r in tri.items() if (r["skip_reason"] or "").startswith(triage.UNREACHABLE)}
    high = {p for p, r in full.items() if r["probability"] >= c}
    assert not dropped & high, f"triage dropped partitions the full {model} model puts at >= {c}: {dropped & high}"
    for p, r in tri.items():  # every other row is exactly the full run's
        if p not in dropped:
            assert r == full[p]
    return len(dropped), len(high)


SHAPES = [(3, "default"), (5, "drift"), (7, "bursty"), (11, "shrink")]


@pytest.fixture(scope="module")
def sim_lakes(tmp_path_factory):
    return [_sim(tmp_path_factory, seed, shape) for seed, shape in SHAPES]


def test_triage_never_drops_a_confident_partition_path_model(sim_lakes):
    dropped = high = 0
    for lake, cfg in sim_lakes:
        for hours in (20, 30, 53, 70):  # 20 and 30: first-day histories (`Job.lake_ratio`)
            at = cfg.start + timedelta(hours=hours, minutes=25)
            # At the simulator's own thresholds (everything near) and at 2x / 4x them (much far).
            for mult in (1.0, 2.0, 4.0):
                d, h = _compare(lake, at, "path", cfg.size_threshold_bytes * mult, cfg.write_threshold_per_s * mult)
                dropped, high = dropped + d, high + h
    print(f"path: {dropped} triaged, {high} at or above the threshold")
    assert dropped > 0 and high > 0  # the property was exercised both ways


@pytest.mark.slow
@pytest.mark.parametrize("model", ["prophet", "arima"])
def test_triage_never_drops_a_confident_partition_fitted_models(sim_lakes, model):
    dropped = high = 0
    for lake, cfg in sim_lakes[:2]:
        at = cfg.start + timedelta(hours=53, minutes=25)
        for mult in (1.0, 4.0):
            d, h = _compare(lake, at, model, cfg.size_threshold_bytes * mult, cfg.write_threshold_per_s * mult)
            dropped, high = dropped + d, high + h
    print(f"{model}: {dropped} triaged, {high} at or above the threshold")
    assert dropped > 0 and high > 0
