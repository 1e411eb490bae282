"""Write-audit-publish (issue 14): each stage's output is staged, its GX suite validates exactly
that, and only a pass publishes it. Each test injects a defect its suite must catch and then reads
the published tables directly with delta-rs (the oracle: what a reader would get), never through
weaver's own readers.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, write_lake
from tests.oracle import fold


def raw(settings, name: str) -> list[dict]:
    """A table's rows straight from delta-rs ([] when absent): the published truth."""
    from deltalake import DeltaTable

    from weaver.core import storage

    uri = storage.uri_for(settings, name)
    if not storage.is_table(uri):
        return []
    return DeltaTable(uri).to_pyarrow_table().to_pylist()


@pytest.fixture()
def lake(tmp_path):
    data = make_log(seed=3)
    return weave_settings(write_lake(tmp_path / "lake", data)), data


def staged_rows(run_ts, data, *, probability: float = 0.1) -> list[dict]:
    """One staged prediction per partition active at `run_ts` (hand-built from the lake's rows)."""
    rows = []
    for p in data["partitions"]:
        alive = p["created_ts"] <= run_ts and (p["retired_ts"] is None or run_ts < p["retired_ts"])
        if alive:
            lo = p["key_lo"] or "k00"
            r = prediction(p["partition_id"], run_ts=run_ts, split_key=lo[:2] + "5" if lo == "k00" else lo + "5",
                           probability=probability, window=timedelta(hours=6),
                           split_ts=run_ts + 2 * H)
            rows.append({**r, "threshold": 0.75, "status": "staged"})
    return rows


def stage(settings, rows: list[dict]) -> None:
    from weaver.core import storage

    storage.merge(storage.uri_for(settings, storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED,
                  pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS_STAGED]), ["prediction_id"])


# --- predictions ---------------------------------------------------------------------------------
def test_predictions_publish_only_on_a_pass_and_a_probability_of_1_3_is_quarantined(lake):
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import gate_predictions, list_quarantine

    settings, data = lake
    good_run, bad_run = T0 + 2 * H, T0 + 3 * H
    good = staged_rows(good_run, data)
    stage(settings, good)
    summary = gate_predictions(settings, at=good_run)
    assert summary["success"] and summary["published"] == len(good)
    assert sorted(r["prediction_id"] for r in raw(settings, "predictions")) == sorted(r["prediction_id"] for r in good)
    assert raw(settings, "predictions_staged") == []  # published rows leave staging

    bad = staged_rows(bad_run, data)
    bad[0]["probability"] = 1.3
    stage(settings, bad)
    with pytest.raises(ExpectationFailedError, match="probability"):
        gate_predictions(settings, at=bad_run)
    published = raw(settings, "predictions")
    assert {r["run_ts"] for r in published} == {good_run}, "nothing of the failed run was published"
    held = raw(settings, "predictions_staged")
    assert sorted(r["prediction_id"] for r in held) == sorted(r["prediction_id"] for r in bad)
    assert {r["status"] for r in held} == {"quarantined"}
    (q,) = list_quarantine(settings)
    assert (q["item_kind"], q["item_id"], q["rows"]) == ("predictions", bad_run.isoformat(), len(bad))
    assert "probability" in q["result"]

    # the operator's view and clear (CLI): clear deletes the quarantined rows and the record, publishes nothing
    from typer.testing import CliRunner

    from weaver.cli import app

    listed = CliRunner().invoke(app, ["quarantine", "list", "--lake", settings.lake, "--json"])
    assert listed.exit_code == 0, listed.output
    (item,) = json.loads(listed.stdout)["items"]
    assert item["item_kind"] == "predictions" and "probability" in item["result"]
    res = CliRunner().invoke(app, ["quarantine", "clear", "--kind", "predictions", "--lake", settings.lake, "--json"])
    assert res.exit_code == 0, res.output
    cleared = json.loads(res.stdout)
    assert (cleared["cleared"], cleared["prediction_rows_deleted"]) == (1, len(bad))
    assert raw(settings, "predictions_staged") == [] and list_quarantine(settings) == []
    assert {r["run_ts"] for r in raw(settings, "predictions")} == {good_run}


def test_a_gap_in_seq_is_quarantined_and_stops_the_run_before_anything_is_published(tmp_path):
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import extract, gate_changelog, list_quarantine

    data = make_log(seed=5)
    gone = data["changes"][40]
    data["changes"] = [c for c in data["changes"] if c["seq"] != gone["seq"]]  # seq 41 never arrives
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    hour = gone["ts"].replace(minute=0, second=0, microsecond=0)  # whole buckets (extract refuses others)
    manifest = extract(settings, start=hour - H, end=hour + 2 * H)
    with pytest.raises(ExpectationFailedError, match="seq_step"):
        gate_changelog(settings, manifest)
    (q,) = list_quarantine(settings)
    assert (q["item_kind"], q["item_id"], q["suite"]) == ("changelog", manifest["interval_id"], "changelog")
    for table in ("partition_metrics", "predictions", "predictions_staged", "woven_catalog", "woven_snapshots"):
        assert raw(settings, table) == [], f"{table} was written after a failed change-log check"


# --- weaves --------------------------------------------------------------------------------------
@pytest.mark.spark
def test_staged_weaves_are_never_served_a_misrouted_row_quarantines_them_and_a_rerun_publishes(spark, lake):
    from deltalake import write_deltalake
    from fastapi.testclient import TestClient

    from weaver.api import create_app
    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.pipeline import clear_quarantine, gate_weaves, list_quarantine
    from weaver.recover import recover
    from weaver.weave import weave

    settings, data = lake
    p = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    put_predictions(settings, [p])
    r = weave(spark, settings, at=T0 + 5 * H, stage=True)
    (wid,) = r["staged"]
    (row,) = raw(settings, "woven_catalog")
    assert row["status"] == "staged"
    last = row["last_timepoint"]
    expect = fold(data["changes"], key_lo="", key_hi="k20", at=last)

    # staged: recovery takes the standard path, the API lists no woven child, weaving does not extend it
    rec = recover(settings, "p0", last)
    assert rec.path == "standard" and dict(zip(rec.table.column("key").to_pylist(),
                                               rec.table.column("value").to_pylist())) == expect
    client = TestClient(create_app(settings, insecure=True))
    assert client.get("/v1/partitions", params={"kind": "woven"}).json()["items"] == []
    assert client.get("/v1/woven-snapshots", params={"partition_id": row["child_ids"][0],
                                                     "timepoint": last.isoformat()}).status_code == 404
    later = weave(spark, settings, at=T0 + 7 * H, stage=True)
    assert later["sequences"] == 0 and raw(settings, "woven_catalog")[0]["last_timepoint"] == last

    # the defect: a row of the right-hand key range filed under the left child at the last timepoint
    right_key = next(k for k in sorted(expect) if k >= p["split_key"])
    planted = {"weave_id": wid, "woven_partition_id": row["child_ids"][0], "source_partition_id": "p0",
               "timepoint": last, "as_of_seq": row["last_seq"], "key": right_key, "value": expect[right_key]}
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    write_deltalake(uri, pa.Table.from_pylist([planted], schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")
    with pytest.raises(ExpectationFailedError, match="misrouted"):
        gate_weaves(settings)
    (row,) = raw(settings, "woven_catalog")
    assert row["status"] == "quarantined"
    (q,) = list_quarantine(settings)
    assert (q["item_kind"], q["item_id"]) == ("weave", wid)
    assert any(f["misrouted"] >= 1 for f in json.loads(q["result"])["failed_rows"])
    assert recover(settings, "p0", last).path == "standard"

    # clear deletes the weave (rows and catalog row); the rerun weaves it again and the check passes
    cleared = clear_quarantine(settings, kind="weave")
    assert cleared["weaves_deleted"] == 1 and cleared["woven_rows_deleted"] > 0
    assert raw(settings, "woven_catalog") == [] and [w for w in raw(settings, "woven_snapshots") if w["weave_id"] == wid] == []
    weave(spark, settings, at=T0 + 5 * H, stage=True)
    assert gate_weaves(settings)["published"] == [wid]
    assert raw(settings, "woven_catalog")[0]["status"] == "active"
    assert assert_matches_oracle(settings, data, [p], at=T0 + 5 * H) == 2
    assert recover(settings, "p0", last).path == "woven"


def test_a_rerun_that_changes_one_row_is_audited_with_the_rest_of_its_run(lake):
    """A rerun stages only its changed rows; the suite's "one row per active partition" must see
    the published rest of the run, and only the changed row is republished."""
    from weaver.pipeline import gate_predictions

    settings, data = lake
    run = T0 + 2 * H
    rows = staged_rows(run, data)
    assert len(rows) >= 2
    stage(settings, rows)
    gate_predictions(settings, at=run)
    changed = {**rows[0], "probability": 0.2}
    stage(settings, [changed])
    summary = gate_predictions(settings, at=run)
    assert summary["success"] and summary["published"] == 1
    got = {r["prediction_id"]: r["probability"] for r in raw(settings, "predictions")}
    assert got == {r["prediction_id"]: (0.2 if r is rows[0] else 0.1) for r in rows}
    assert raw(settings, "predictions_staged") == []


def test_rerunning_a_published_prediction_run_writes_nothing(lake):
    """`weaver predict` twice for one instant: the second run stages nothing and its audit
    publishes nothing, so no table gets a new Delta version (delta-rs reads the versions)."""
    from deltalake import DeltaTable

    from tests.lakes import forecast_settings
    from weaver.core import storage
    from weaver.pipeline import gate_predictions
    from weaver.predict import predict

    settings, _ = lake
    s = forecast_settings(settings.lake)
    at = T0 + 4 * H
    first = predict(s, at=at, model="path", stage=True)
    assert first.num_rows and gate_predictions(s, at=at)["published"] == first.num_rows
    versions = {n: DeltaTable(storage.uri_for(s, n)).version() for n in (storage.PREDICTIONS, storage.PREDICTIONS_STAGED)}
    again = predict(s, at=at, model="path", stage=True)
    assert again.to_pylist() == first.to_pylist()
    assert gate_predictions(s, at=at)["published"] == 0
    assert {n: DeltaTable(storage.uri_for(s, n)).version() for n in versions} == versions
    published = raw(s, "predictions")
    assert sorted(r["prediction_id"] for r in published) == sorted(first.column("prediction_id").to_pylist())


def test_a_change_log_the_check_refuses_quarantines_every_staged_weave(tmp_path):
    """The woven check restores through the standard path, which refuses a change filed under
    another partition than its key's (DESIGN §4.5): that error is raised, and the staged weaves
    are quarantined with it - not left `staged`, where every rerun fails the same way and
    `weaver quarantine list` shows nothing."""
    from weaver.core.errors import KeyOutOfRangeError
    from weaver.pipeline import gate_weaves, list_quarantine
    from weaver.weave import weave

    from deltalake import write_deltalake

    from weaver.core import storage

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    p = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    put_predictions(settings, [p])
    (wid,) = weave(None, settings, at=T0 + 5 * H, stage=True)["staged"]
    # Then the log changes under the staged weave (a weaving run refuses such a log before it
    # writes: tests/test_weave_bad_log.py): a change of p1's range moved to a key of p0's range,
    # still filed under p1, before the weave's last timepoint.
    bad = next(c for c in data["changes"] if c["partition_id"] == "p1" and T0 + 2 * H < c["ts"] < T0 + 3 * H)
    bad["key"] = "k05"
    write_deltalake(storage.uri_for(settings, storage.CHANGELOG),
                    pa.Table.from_pylist(data["changes"], schema=storage.SCHEMAS[storage.CHANGELOG]), mode="overwrite")
    with pytest.raises(KeyOutOfRangeError):
        gate_weaves(settings)
    (row,) = raw(settings, "woven_catalog")
    assert (row["weave_id"], row["status"]) == (wid, "quarantined")
    (q,) = list_quarantine(settings)
    assert (q["item_kind"], q["item_id"]) == ("weave", wid)
    assert "KeyOutOfRangeError" in json.loads(q["result"])["error"]
