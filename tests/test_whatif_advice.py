"""Advice and split keys on hand-built lakes with known answers (issue 13), real ARIMA forecasts.

Expected keys, shares and outcomes are computed here by brute force from the raw change rows.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.lakes import (
    FORECAST_T0, H, HOT_WRITE_T, forecast_settings, grow_shrink_lake, hot_end_lake, put_predictions,
    writes_balancing_key,
)
from tests.oracle import fold


def _changes(settings) -> list[dict]:
    from weaver.core import storage

    return storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG).to_pylist()


@pytest.fixture(scope="module")
def hot(tmp_path_factory):
    return hot_end_lake(tmp_path_factory.mktemp("hot") / "lake")


def test_hot_end_advice_pre_splits_at_the_load_balancing_key(tmp_path, hot):
    import shutil

    from weaver.log import Lineage
    from weaver.predict import predict
    from weaver.whatif import advise, read_advice, split_candidates

    root = tmp_path / "lake"
    shutil.copytree(hot, root)
    s = forecast_settings(root)
    at = FORECAST_T0 + 17 * H
    changes = _changes(s)
    live = fold(changes, at=at)
    size_median = "b00000100"  # 200 equal items: 100 on each side
    load_key = writes_balancing_key(changes, at - H, at, list(live))
    assert load_key != size_median and load_key >= "b00000180"
    choice = split_candidates(s, Lineage.load(s).get("h"), at)
    assert (choice.cuts["size"].key, choice.cuts["load"].key) == (size_median, load_key)

    (pred,) = predict(s, at=at, model="arima").to_pylist()
    assert pred["probability"] >= 0.75 and pred["reason"] == "throughput", pred
    (a,) = advise(s, at=at).to_pylist()
    assert (a["action"], a["split_key"], a["key_by"], a["prediction_id"]) == \
        ("pre_split", load_key, "load", pred["prediction_id"])
    recent = [c["key"] for c in changes if at - H < c["ts"] <= at]
    left = sum(1 for k in recent if k < load_key) / len(recent)
    assert a["expected_left_share"] == pytest.approx(left, abs=1e-6)
    assert a["expected_peak_utilization"] == pytest.approx(max(left, 1 - left), abs=1e-6)
    assert a["largest_before_bytes"] == 200 * 1000
    assert a["largest_after_bytes"] == 1000 * max(sum(1 for k in live if k < load_key),
                                                  sum(1 for k in live if k >= load_key))
    # Rerunning the same run writes the same row once (MERGE on the deterministic advice id).
    advise(s, at=at)
    rows = read_advice(s).to_pylist()
    assert [r["advice_id"] for r in rows] == [a["advice_id"]]


def test_grow_then_shrink_predicts_no_split_and_advises_wait(tmp_path):
    from weaver.predict import predict
    from weaver.whatif import advise

    s = forecast_settings(grow_shrink_lake(tmp_path / "lake"))
    at = FORECAST_T0 + 16 * H
    assert fold(_changes(s), at=at).__len__() == 160 - 8 * 18
    (pred,) = predict(s, at=at, model="arima").to_pylist()
    assert pred["probability"] < 0.75, pred
    (a,) = advise(s, at=at).to_pylist()
    assert (a["action"], a["split_key"], a["expected_peak_utilization"]) == ("wait", None, None)


def test_advice_is_backtested_against_what_happened(tmp_path, hot):
    import shutil

    from tests.lakes import prediction
    from weaver.core import storage
    from weaver.whatif import advise, read_advice, score_advice

    root = tmp_path / "lake"
    shutil.copytree(hot, root)
    s = forecast_settings(root, api_token="tok")
    run = FORECAST_T0 + 8 * H
    p = prediction("h", run_ts=run, split_key="b00000190", split_ts=run + 3 * H, window=timedelta(hours=5))
    p["reason"] = "throughput"
    put_predictions(s, [p])
    (a,) = advise(s, at=run).to_pylist()
    assert a["action"] == "pre_split" and a["backtest"] is None  # the window is still open
    v_open = storage.version_of(storage.uri_for(s, storage.ADVICE))
    assert score_advice(s, at=run + 4 * H) == {"scored": 0}
    assert score_advice(s, at=run + 5 * H)["scored"] == 1
    (scored,) = read_advice(s).to_pylist()
    # Brute force: per hour of the window, writes on each side of the advised key; none reaches 300/h.
    changes = _changes(s)
    k = a["split_key"]
    per_hour = [(sum(1 for c in changes if run + i * H <= c["ts"] < run + (i + 1) * H and c["key"] < k),
                 sum(1 for c in changes if run + i * H <= c["ts"] < run + (i + 1) * H and c["key"] >= k))
                for i in range(5)]
    assert max(max(x) for x in per_hour) < HOT_WRITE_T * 3600
    assert (scored["backtest"], scored["actual_split"]) == ("avoided", False)
    # Transaction time: the version before scoring still shows the open advice.
    (before,) = read_advice(s, version=v_open).to_pylist()
    assert before["backtest"] is None

    # The same through GET /v1/advice, now and as of the version before scoring.
    from fastapi.testclient import TestClient

    from weaver.api import create_app

    auth = {"Authorization": "Bearer tok"}
    with TestClient(create_app(s)) as client:
        (item,) = client.get("/v1/advice", params={"partition_id": "h"}, headers=auth).json()["items"]
        assert (item["action"], item["split_key"], item["backtest"]) == ("pre_split", k, "avoided")
        (old,) = client.get("/v1/advice", params={"as_of_version": v_open}, headers=auth).json()["items"]
        assert old["backtest"] is None
        assert client.get("/v1/advice", params={"action": "wait"}, headers=auth).json()["items"] == []
        assert client.get("/v1/advice", params={"partition_id": "zz"}, headers=auth).status_code == 404
        assert client.get("/v1/advice", params={"run_ts": "2026-03-01T08:00:00"}, headers=auth).status_code == 400
