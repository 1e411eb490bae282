"""Calibration maps: known answers on hand-built score sets, the identity fallback, no look-ahead,
`probability_raw` beside `probability`, and old `predictions` tables without that column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.lakes import FORECAST_T0 as T0
from tests.lakes import H, forecast_settings
from tests.test_backtest import _lakes
from weaver.core import storage
from weaver.core.errors import InvalidParameterError, InvalidTimepointError
from weaver.core.ids import prediction_id
from weaver.predict import calibration as cal


def _logit(p):
    return np.log(p / (1 - p))


# --- known answers -------------------------------------------------------------------------------
def test_pav_pools_violators():
    # 0.2 -> 1 then 0.3 -> 0 violate monotonicity: pooled into one block at x 0.25 with mean 0.5.
    x, y, n = cal.pav(np.array([0.3, 0.1, 0.4, 0.2]), np.array([0, 0, 1, 1]))
    assert x.tolist() == pytest.approx([0.1, 0.25, 0.4])
    assert y.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert n.tolist() == [1.0, 2.0, 1.0]


def test_isotonic_map_interpolates_block_means():
    # 100 rows at p=0.2 with 30 % splits, 100 at p=0.6 with 90 % splits.
    p = np.repeat([0.2, 0.6], 100)
    y = np.concatenate([np.arange(100) < 30, np.arange(100) < 90]).astype(float)
    m = cal.fit(p, y, "isotonic")
    assert m.method == "isotonic"
    # Each block's k/n is shrunk to Jeffreys' posterior mean (k + 1/2) / (n + 1).
    lo, hi = 30.5 / 101, 90.5 / 101
    assert m.apply([0.2, 0.6, 0.4, 0.0, 1.0]).tolist() == pytest.approx([lo, hi, (lo + hi) / 2, lo, hi])


def test_isotonic_map_never_reaches_0_or_1_and_stays_monotone():
    # 1 row at p=0.01 (no split), 200 at p=0.3 (2 splits), 100 at p=0.9 (all split). Raw block means
    # 0 < 0.01 < 1; shrunk: 0.5/2 = 0.25 > 2.5/201, so the first two pool into (0.5 + 2.5) / (2 + 201).
    p = np.concatenate([[0.01], np.full(200, 0.3), np.full(100, 0.9)])
    y = np.concatenate([[0.0], np.arange(200) < 2, np.ones(100)]).astype(float)
    m = cal.fit(p, y, "isotonic")
    low, top = 3 / 203, 100.5 / 101
    centre = (0.01 * 2 + 0.3 * 201) / 203  # the pooled block's weighted centre
    at_03 = low + (top - low) * (0.3 - centre) / (0.9 - centre)  # linear between the block centres
    assert m.apply([0.0, 0.01, centre, 0.3, 0.9, 1.0]).tolist() == pytest.approx([low, low, low, at_03, top, top])
    assert 0.0 < min(m.params["y"]) and max(m.params["y"]) < 1.0
    assert np.all(np.diff(m.params["y"]) >= 0)


def test_platt_recovers_exact_frequencies():
    # Two raw values, 100 rows each, split frequencies 0.1 and 0.7: a two-parameter logistic in
    # logit(p) fits both exactly: a*logit(p_i) + b = logit(f_i).
    p = np.repeat([0.2, 0.6], 100)
    y = np.concatenate([np.arange(100) < 10, np.arange(100) < 70]).astype(float)
    m = cal.fit(p, y, "platt")
    A = np.array([[_logit(0.2), 1.0], [_logit(0.6), 1.0]])
    a, b = np.linalg.solve(A, [_logit(0.1), _logit(0.7)])
    assert m.params["a"] == pytest.approx(a, rel=1e-2) and m.params["b"] == pytest.approx(b, rel=1e-2, abs=1e-2)
    assert m.apply([0.2, 0.6]).tolist() == pytest.approx([0.1, 0.7], abs=1e-3)


def test_beta_recovers_exact_frequencies():
    # Three raw values, 200 rows each; frequencies chosen from a=2, b=1, c=0.5 (rounded to counts),
    # so the three-parameter beta map reproduces the observed frequencies.
    ps = np.array([0.1, 0.4, 0.8])
    f = 1 / (1 + np.exp(-(2 * np.log(ps) - 1 * np.log(1 - ps) + 0.5)))
    k = np.round(f * 200).astype(int)
    p = np.repeat(ps, 200)
    y = np.concatenate([np.arange(200) < kk for kk in k]).astype(float)
    m = cal.fit(p, y, "beta")
    assert m.apply(ps).tolist() == pytest.approx((k / 200).tolist(), abs=2e-3)
    assert m.params["a"] >= 0 and m.params["b"] >= 0


def test_identity_below_minimum_history():
    p, y = np.linspace(0, 1, cal.MIN_ROWS - 1), np.arange(cal.MIN_ROWS - 1) % 2
    m = cal.fit(p, y, "platt")
    assert m.method == "identity" and "identity" in m.note
    assert m.apply([0.1, 0.7]).tolist() == [0.1, 0.7]
    # enough rows but only one outcome: still the identity
    assert cal.fit(np.full(200, 0.3), np.zeros(200), "isotonic").method == "identity"


def test_ece_and_wilson_known():
    assert cal.ece([0.1] * 10, [1] + [0] * 9) == pytest.approx(0.0)
    assert cal.ece([0.9] * 10, [0] * 10) == pytest.approx(0.9)
    lo, hi = cal.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


# --- the lake's own history, no look-ahead -------------------------------------------------------
def _history(lake: str, until_h: float, window_h: float = 10) -> pa.Table:
    """Hand-built path predictions of g (split at 60 h) and f (never splits) every half hour up to `until_h`.

    Raw probabilities rise towards g's split, so a positive has a higher raw value than most negatives
    but the raw values are under-confident (0.3-0.6 where the outcome is certain)."""
    rows = []
    for k in range(int(until_h * 2) + 1):
        t = T0 + k * H / 2
        for pid in ("g", "f"):
            hit = pid == "g" and t < T0 + 60 * H <= t + window_h * H
            raw = (0.3 + 0.3 * ((k * 7) % 10) / 10) if hit else (0.05 + 0.3 * ((k * 3) % 10) / 10)
            rows.append({"prediction_id": prediction_id(t, pid, "path"), "run_ts": t, "partition_id": pid,
                         "model": "path", "window_start": t, "window_end": t + window_h * H, "probability": raw,
                         "reason": None, "predicted_split_ts": None, "split_ts_p10": None, "split_ts_p90": None,
                         "split_key": None, "threshold": 0.75, "skip_reason": None, "probability_raw": raw})
    return pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS])


def test_future_rows_and_splits_do_not_change_a_past_runs_calibration(tmp_path):
    from deltalake import write_deltalake

    from weaver.predict import predict

    _, lake = _lakes(tmp_path)  # g splits at 60 h; data until 72 h
    s = forecast_settings(lake)
    uri = storage.uri_for(s, storage.PREDICTIONS)
    storage.merge(uri, storage.PREDICTIONS, _history(lake, 56), keys=["prediction_id"])
    at = T0 + 66 * H
    m1 = cal.map_for_run(s, "path", at, "platt")
    assert m1.method == "platt" and m1.rows >= cal.MIN_ROWS and m1.positives >= cal.MIN_CLASS
    # the scored history: every row with window_end <= 66 h, labelled from `splits`
    ids, p, y = cal.scored_history(s, "path", at)
    assert len(ids) == 2 * (int(56 * 2) + 1) and int(y.sum()) == 13  # g runs in [50 h, 56 h], half-hourly
    run1 = predict(s, at=at, model="path", write=False, calibration="platt").to_pylist()
    # The future: later predictions (windows closing after `at`) and a later split of l.
    storage.merge(uri, storage.PREDICTIONS, _history(lake, 70).filter(
        pa.compute.greater(_history(lake, 70).column("window_end"), pa.scalar(at, storage.TS))), keys=["prediction_id"])
    write_deltalake(storage.table_uri(lake, storage.SPLITS), pa.Table.from_pylist(
        [{"parent_id": "l", "split_seq": 10**6, "split_ts": T0 + 71 * H, "split_key": "a00000100", "left_id": "l1",
          "right_id": "l2", "reason": "size"}], schema=storage.SCHEMAS[storage.SPLITS]), mode="append")
    m2 = cal.map_for_run(s, "path", at, "platt")
    assert (m2.version, m2.params, m2.rows) == (m1.version, m1.params, m1.rows)
    run2 = predict(s, at=at, model="path", write=False, calibration="platt").to_pylist()
    assert run1 == run2
    live = [r for r in run1 if r["skip_reason"] is None]
    assert live
    for r in live:
        assert r["probability"] == pytest.approx(float(m1.apply([r["probability_raw"]])[0]))
    # `isotonic` is the lake's own isotonic map once the history is thick enough, not the prior.
    iso_run = predict(s, at=at, model="path", write=False, calibration="isotonic").to_pylist()
    iso = cal.map_for_run(s, "path", at, "isotonic", store=False)
    assert iso.method == "isotonic" and iso.rows == m1.rows
    prior = cal.PRIORS["path"]["params"]
    live_i = [r for r in iso_run if r["skip_reason"] is None]
    assert all(r["probability"] == pytest.approx(float(iso.apply([r["probability_raw"]])[0])) for r in live_i)
    assert any(abs(r["probability"] - float(np.interp(r["probability_raw"], prior["x"], prior["y"]))) > 1e-6
               for r in live_i)
    # The default (`auto`) chooses on the rows whose windows closed in the 24 h before the run: windows
    # end 10 h after their run, so the runs after 32 h - 48 half-hourly runs x 2 partitions.
    default = predict(s, at=at, model="path", write=False).to_pylist()
    assert default == predict(s, at=at, model="path", write=False, calibration="auto").to_pylist()
    auto = cal.map_for_run(s, "path", at, "auto", store=False)
    assert auto.note.startswith("auto: ") and " chosen on the 96 rows " in auto.note
    live_d = [r for r in default if r["skip_reason"] is None]
    assert all(r["probability"] == pytest.approx(float(auto.apply([r["probability_raw"]])[0])) for r in live_d)
    # a later cut-off sees more history and gives another map
    assert cal.map_for_run(s, "path", T0 + 80 * H, "platt").version != m1.version
    # the map is stored with the model, by version
    stored = json.loads((Path(lake) / "_weaver" / "calibration" / "path" / f"{m1.version}.json").read_text())
    assert stored["params"] == m1.params and stored["cutoff"] == at.isoformat()
    assert cal.load(s, "path", m1.version).apply([0.5]).tolist() == m1.apply([0.5]).tolist()


def test_scored_history_reads_only_recent_closed_windows(tmp_path):
    # The lake-own history is bounded (calibration.HISTORY_DAYS): windows closed within `days` before
    # the run, labelled from `splits` exactly as before. Oracle: the hand-built rows filtered by hand.
    _, lake = _lakes(tmp_path)  # g splits at 60 h
    s = forecast_settings(lake)
    hist = _history(lake, 56)
    storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS, hist, keys=["prediction_id"])
    at = T0 + 66 * H
    rows = hist.to_pylist()
    label = {r["prediction_id"]: float(r["partition_id"] == "g" and r["run_ts"] < T0 + 60 * H <= r["window_end"])
             for r in rows}
    ids, p, y = cal.scored_history(s, "path", at, days=0.5)
    want = sorted(r["prediction_id"] for r in rows if at - 12 * H < r["window_end"] <= at)
    assert ids == want and len(ids) == 2 * 24  # runs in (44 h, 56 h], two partitions
    assert y.tolist() == [label[i] for i in ids] and 0 < y.sum() < len(y)
    raw = {r["prediction_id"]: r["probability_raw"] for r in rows}
    assert p.tolist() == [raw[i] for i in ids]
    # This history is shorter than the default bound: every closed window is read.
    ids_all, _, y_all = cal.scored_history(s, "path", at)
    assert ids_all == sorted(r["prediction_id"] for r in rows if r["window_end"] <= at)
    assert y_all.tolist() == [label[i] for i in ids_all]
    # Another model's rows are not read.
    assert cal.scored_history(s, "arima", at)[0] == []


def test_thin_history_is_identity_in_predict(tmp_path):
    from weaver.predict import predict

    _, lake = _lakes(tmp_path)
    rows = predict(forecast_settings(lake), at=T0 + 40 * H, model="path", write=False,
                   calibration="none").to_pylist()
    for r in rows:
        if r["skip_reason"] is None:
            assert r["probability"] == r["probability_raw"]
        else:
            assert r["probability_raw"] is None and r["probability"] == 0.0
    # A lake-own method on a thin history - the default, auto, among them - falls back to the
    # shipped prior (by its own x/y table), and the map applied is stored with the model under its
    # version; "prior" applies only the prior, whatever the history.
    prior = cal.PRIORS["path"]["params"]
    assert cal.DEFAULT_METHOD == "auto"
    for method in ("beta", None, "prior"):
        fell = predict(forecast_settings(lake), at=T0 + 40 * H, model="path", write=False,
                       calibration=method).to_pylist()
        live = [r for r in fell if r["skip_reason"] is None]
        assert live
        for r in live:
            assert r["probability"] == pytest.approx(float(np.interp(r["probability_raw"], prior["x"], prior["y"])))
    assert list((Path(lake) / "_weaver" / "calibration" / "path").glob("prior-*.json"))


def test_old_predictions_table_without_probability_raw(tmp_path):
    from deltalake import write_deltalake

    uri = str(tmp_path / "predictions")
    t = _history("x", 2)
    old = t.drop_columns(["probability_raw"])
    write_deltalake(uri, old)
    back = storage.read(uri, storage.PREDICTIONS)
    assert back.column("probability_raw").null_count == back.num_rows
    assert back.column("probability").to_pylist() == old.column("probability").to_pylist()
    # a new row MERGEs into the old table and adds the column
    new = _history("x", 3).slice(t.num_rows)
    storage.merge(uri, storage.PREDICTIONS, new, keys=["prediction_id"])
    after = storage.read(uri, storage.PREDICTIONS)
    assert after.num_rows == new.num_rows + t.num_rows
    got = dict(zip(after.column("prediction_id").to_pylist(), after.column("probability_raw").to_pylist()))
    assert all(got[i] is not None for i in new.column("prediction_id").to_pylist())
    assert all(got[i] is None for i in t.column("prediction_id").to_pylist())


def test_unknown_method_is_refused():
    from weaver.core.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        cal.fit([0.1], [1], "magic")


def test_report_draws_wilson_bands_and_the_map(tmp_path):
    """A bin whose every row split (observed 1.0) used to give a negative error bar by rounding."""
    from datetime import datetime, timezone

    from weaver.predict.report import reliability_table, render_report

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [{"model": "path", "probability": 0.95, "probability_raw": 0.9, "actual_split": True, "timing_error_s": 0.0,
             "run_ts": t} for _ in range(7)]
    rows += [{"model": "path", "probability": 0.05, "probability_raw": 0.1, "actual_split": False, "timing_error_s": None,
              "run_ts": t} for _ in range(10)]
    rows = pa.Table.from_pylist(rows)  # the scored rows, as the backtest hands them over
    tab = reliability_table(rows, "path")
    assert [(b["observed"], b["rows"]) for b in tab] == [(0.0, 10), (1.0, 7)]
    assert tab[0]["lo"] == 0.0 and tab[0]["hi"] == pytest.approx(0.2775, abs=1e-4)
    sc = {"rows": 17, "actual_splits": 7, "predicted_splits": 7, "true_positives": 7, "precision": 1.0, "recall": 1.0,
          "brier": 0.0025, "median_abs_timing_error_h": 0.0, "median_timing_error_h": 0.0}
    summary = {"backtest_id": "b", "model": "path", "start": t, "end": t, "every": "1h", "window": "24h", "runs": 1,
               "confidence_threshold": 0.75, "size_threshold_bytes": 1, "write_threshold_per_s": 1.0,
               "near_fraction": 0.1, "known_until": t, "rows_scored": 17, "censored": {"path": 0},
               "scores": {"path": sc}, "splits": [],
               "calibration": {"method": "platt", "version": "v1", "rows": 60, "note": "",
                               "curve": list(np.linspace(0, 1, 101))}}
    out = render_report(summary, rows, tmp_path / "rep")
    page = Path(out["html"]).read_text()
    assert Path(out["png"]).stat().st_size > 0
    assert "path (raw)" in page and "0.00 - 0.28" in page and "platt" in page


# --- the shipped prior map -----------------------------------------------------------------------


def test_prior_is_the_thin_history_fallback(monkeypatch):
    # A hand-set prior: Platt with a = 2, b = 0 maps p to p^2 / (p^2 + (1 - p)^2).
    monkeypatch.setitem(cal.PRIORS, "m", {"method": "platt", "params": {"a": 2.0, "b": 0.0}, "rows": 10,
                                          "positives": 3, "fitted_on": "a test"})
    thin = cal.fit([0.2, 0.9], [0, 1], "platt", model="m")
    assert thin.method == "identity"  # fit itself stays the identity below MIN_ROWS ...
    pm = cal.with_prior(thin)  # ... and a run falls back to the prior, saying so
    assert pm.method == "platt" and pm.version.startswith("prior-") and "too thin" in pm.note
    assert pm.apply([0.25, 0.5, 0.75]).tolist() == pytest.approx([1 / 10, 0.5, 9 / 10])
    # method "prior" applies only the prior, whatever the history
    assert cal.fit(np.linspace(0, 1, 200), np.arange(200) % 2, "prior", model="m").version == pm.version
    # a model without a prior keeps the identity; "none" is never replaced
    assert cal.with_prior(cal.fit([0.5], [1], "platt", model="other")).method == "identity"
    assert cal.with_prior(cal.fit([0.5], [1], "none", model="m")).method == "identity"
    # enough history: the lake's own map, not the prior
    own = cal.with_prior(cal.fit(np.repeat([0.2, 0.8], 100), np.r_[np.zeros(80), np.ones(20), np.zeros(20),
                                                                    np.ones(80)], "platt", model="m"))
    assert own.method == "platt" and not own.version.startswith("prior-")
    assert own.apply([0.2, 0.8]).tolist() == pytest.approx([0.2, 0.8], abs=2e-3)


def test_shipped_prior_is_monotone_and_keeps_the_weaving_threshold():
    """The default map (the path model's prior): a probability, never decreasing in the raw one,
    and with 200 paths (probabilities in steps of 0.005) exactly the raw probabilities >= 0.75 reach
    the 0.75 confidence threshold: what weaves does not move (docs/prediction.md §8)."""
    pm = cal.prior("path")
    grid = np.linspace(0.0, 1.0, 1001)
    out = pm.apply(grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0.0 and out.max() <= 1.0
    steps = np.arange(0, 201) / 200
    assert np.array_equal(pm.apply(steps) >= 0.75, steps >= 0.75)


# --- stored maps: names and retention ------------------------------------------------------------
def test_prune_deletes_stored_maps_of_runs_before_the_retention(tmp_path):
    """`prune` (a `weaver maintain` step) deletes the maps of runs older than the retention, dated by
    the run instant in the name (or, for a map stored before maps were named so, by its JSON's
    cutoff); the shipped prior and anything that is not a map stay. Oracle: the hand-chosen instants."""
    from datetime import datetime, timedelta, timezone

    from weaver.core.settings import load_settings

    s = load_settings(env={}, lake=str(tmp_path / "lake"))
    now = datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    p, y = np.repeat([0.2, 0.8], 100), np.r_[np.zeros(80), np.ones(20), np.zeros(20), np.ones(80)]

    def own(model: str, at: datetime) -> cal.CalibrationMap:
        m = cal.fit(p, y, "isotonic", model=model, cutoff=at.isoformat())
        cal.save(s, m)
        return m

    # The name starts with the run instant in UTC (here given at +02:00).
    m = own("path", datetime(2026, 3, 1, 5, tzinfo=timezone(timedelta(hours=2))))
    assert m.version.startswith("20260301T030000Z-") and len(m.version) == len("20260301T030000Z-") + 12
    old = {m.version, own("path", now - timedelta(days=1, seconds=1)).version, own("arima", now - timedelta(days=3)).version}
    new = {own("path", now - timedelta(days=1)).version, own("path", now - timedelta(hours=1)).version}
    folder = tmp_path / "lake" / "_weaver" / "calibration"
    # maps stored under the earlier, undated names: dated by the cutoff in the JSON
    for name, at in (("0123456789abcdef", now - timedelta(days=5)), ("fedcba9876543210", now - timedelta(hours=2))):
        (folder / "path" / f"{name}.json").write_text(json.dumps({"cutoff": at.isoformat(), "model": "path"}))
    cal.save(s, cal.prior("path"))
    (folder / "path" / "x.json.tmp").write_text("{}")  # a crashed local write's leftover: not a map

    before_bad = sorted(f.name for f in folder.rglob("*"))
    with pytest.raises(InvalidTimepointError):  # no timezone: refused, nothing deleted
        cal.prune(s, now.replace(tzinfo=None), timedelta(days=1))
    with pytest.raises(InvalidParameterError, match="retention must be positive"):
        cal.prune(s, now, timedelta(0))
    assert sorted(f.name for f in folder.rglob("*")) == before_bad
    r = cal.prune(s, now, timedelta(days=1))
    assert (r["maps_deleted"], r["maps_kept"]) == (4, 4), r
    left = {f.name for f in folder.rglob("*") if f.is_file()}
    assert left == {f"{v}.json" for v in new} | {"fedcba9876543210.json", f"{cal.prior('path').version}.json",
                                                  "x.json.tmp"}
    assert not old & {n.removesuffix(".json") for n in left}
    again = cal.prune(s, now, timedelta(days=1))  # idempotent
    assert (again["maps_deleted"], again["maps_kept"]) == (0, 4)
    # default retention: settings.calibration_retention (35 days): nothing left is that old
    assert cal.prune(s, now)["maps_deleted"] == 0
    # a lake without stored maps
    assert cal.prune(load_settings(env={}, lake=str(tmp_path / "empty")), now)["maps_deleted"] == 0


# --- the default: a held-out choice (``auto``) ---------------------------------------------------
def _blocks(*blocks):
    """Rows from (raw p, rows, splits) blocks: the first `splits` rows of a block are positives."""
    p = np.concatenate([np.full(n, x) for x, n, _ in blocks])
    y = np.concatenate([np.r_[np.ones(k), np.zeros(n - k)] for _, n, k in blocks])
    return p, y


@pytest.mark.parametrize("rest,held,winner", [
    # the earlier rows' map holds on the held-out day: the lake's map (refitted on all rows)
    (((0.2, 150, 15), (0.6, 150, 150)), ((0.2, 20, 2), (0.6, 20, 20)), "lake map"),
    # the held-out day is calibrated as it stands: the identity
    (((0.2, 150, 75), (0.6, 150, 150)), ((0.2, 20, 4), (0.6, 20, 12)), "identity"),
    # neither: the prior (here p^2 / (p^2 + (1 - p)^2)) is nearest
    (((0.2, 150, 75), (0.6, 150, 150)), ((0.2, 20, 1), (0.6, 20, 14)), "prior"),
])
def test_auto_applies_the_candidate_best_on_the_held_out_rows(monkeypatch, rest, held, winner):
    monkeypatch.setitem(cal.PRIORS, "m", {"method": "platt", "params": {"a": 2.0, "b": 0.0}, "rows": 10,
                                          "positives": 3, "fitted_on": "a test"})
    # Each candidate's held-out Brier by hand: the prior by its formula, the map from the earlier
    # rows as Jeffreys' block means (k + 1/2) / (n + 1) at the two raw values.
    block = {x: (k + 0.5) / (n + 1) for x, n, k in rest}
    cands = {"prior": lambda x: x * x / (x * x + (1 - x) ** 2), "identity": lambda x: x, "lake map": block.get}
    hand = {c: sum(k * (1 - f(x)) ** 2 + (n - k) * f(x) ** 2 for x, n, k in held) / sum(n for _, n, _ in held)
            for c, f in cands.items()}
    assert min(hand, key=hand.get) == winner  # the case is what it says
    p1, y1 = _blocks(*rest)
    p2, y2 = _blocks(*held)
    cm = cal.choose(np.r_[p1, p2], np.r_[y1, y2], np.r_[np.zeros(len(p1), bool), np.ones(len(p2), bool)],
                    model="m", cutoff="2026-01-02T00:00:00+00:00")
    assert cm.note.startswith(f"auto: {winner} chosen on the 40 rows")
    for c, b in hand.items():
        assert f"{c} {b:.4f}" in cm.note
    got = cm.apply([0.2, 0.6]).tolist()
    if winner == "lake map":  # refitted on all rows
        both = {x: (sum(k for a, _, k in rest + held if a == x) + 0.5) / (sum(n for a, n, _ in rest + held if a == x) + 1)
                for x in (0.2, 0.6)}
        assert cm.method == "isotonic" and got == pytest.approx([both[0.2], both[0.6]])
    elif winner == "identity":
        assert cm.method == "identity" and got == pytest.approx([0.2, 0.6])
    else:
        assert cm.version.startswith("prior-") and got == pytest.approx([0.04 / 0.68, 0.36 / 0.52])


def test_auto_falls_back_to_the_prior(monkeypatch):
    monkeypatch.setitem(cal.PRIORS, "m", {"method": "platt", "params": {"a": 2.0, "b": 0.0}, "rows": 10,
                                          "positives": 3, "fitted_on": "a test"})
    p, y = _blocks((0.2, 150, 15), (0.6, 150, 150))
    # no window closed in the last HOLDOUT_HOURS: no evidence to choose on, the prior
    none_held = cal.choose(p, y, np.zeros(len(p), bool), model="m")
    assert none_held.version.startswith("prior-") and "no window closed" in none_held.note
    # a thin history: the prior, as for the lake-own methods
    thin = cal.choose(p[:100], y[:100], np.ones(100, bool), model="m")
    assert thin.version.startswith("prior-") and "too thin" in thin.note
    # "auto" is a choice, not a fit
    with pytest.raises(InvalidParameterError, match="auto"):
        cal.fit(p, y, "auto")
