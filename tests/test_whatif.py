"""What-if weaves (issue 13): origin column, manual weaves against the oracle fold, bad input.

Everything expected comes from tests/oracle.py's brute-force fold of the raw change rows.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from tests.lakes import H, T0, make_log, weave_settings, woven_table, write_lake
from tests.oracle import fold, rows_to_dict


@pytest.fixture()
def lake(tmp_path):
    data = make_log(seed=3)
    return weave_settings(write_lake(tmp_path / "lake", data)), data


def oracle_size_median(state: dict[str, bytes]) -> str:
    """The key k minimising |bytes(< k) - bytes(>= k)| over live keys (item = key + value bytes)."""
    keys = sorted(state)
    w = [len(k.encode()) + len(state[k]) for k in keys]
    total = sum(w)
    best = min(range(1, len(keys)), key=lambda i: (abs(2 * sum(w[:i]) - total), i))
    return keys[best]


# --- 1. woven_catalog.origin ---------------------------------------------------------------------
def test_a_catalog_written_before_origin_existed_reads_predicted_and_the_next_merge_evolves_it(tmp_path):
    from deltalake import DeltaTable, write_deltalake

    from weaver.core import storage
    from weaver.weave import read_woven_catalog, write_woven_catalog

    settings = weave_settings(tmp_path / "lake")
    old_schema = pa.schema([f for f in storage.SCHEMAS[storage.WOVEN_CATALOG] if f.name != "origin"])
    row = {"weave_id": "a" * 16, "prediction_id": "p1", "source_partition_id": "p0", "split_key": "k07",
           "split_ts": T0, "confidence": 0.9, "window_start": T0, "window_end": T0 + H, "child_ids": ["x", "y"],
           "status": "active", "created_at": T0, "last_timepoint": None, "last_seq": None,
           "actual_split_key": None, "actual_split_ts": None, "updated_at": T0}
    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    write_deltalake(uri, pa.Table.from_pylist([row], schema=old_schema))
    assert "origin" not in DeltaTable(uri).schema().to_arrow().names

    assert read_woven_catalog(settings).column("origin").to_pylist() == ["predicted"]
    manual = {**row, "weave_id": "b" * 16, "prediction_id": "manual", "confidence": 1.0, "origin": "manual"}
    write_woven_catalog(settings, [manual])
    assert "origin" in DeltaTable(uri).schema().to_arrow().names
    got = {r["weave_id"]: r["origin"] for r in read_woven_catalog(settings).to_pylist()}
    assert got == {"a" * 16: "predicted", "b" * 16: "manual"}


# --- 2. manual weaves ----------------------------------------------------------------------------
def test_bad_what_ifs_are_named_errors_and_write_nothing(lake):
    from weaver.core.errors import InvalidParameterError, InvalidTimepointError, UnknownPartitionError
    from weaver.whatif import whatif_weave

    settings, data = lake
    end = max(c["ts"] for c in data["changes"])
    bad = [
        (UnknownPartitionError, dict(partition_id="p9", at=T0 + 2 * H)),
        (UnknownPartitionError, dict(partition_id="p0~0123abcd~L", at=T0 + 2 * H)),
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, split_key="k05")),  # below p1's range
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, split_key="k20")),  # == key_lo: empty left
        (InvalidTimepointError, dict(partition_id="p1", at=T0 - H)),  # before the partition existed
        (InvalidTimepointError, dict(partition_id="p1", at=end + timedelta(seconds=1))),  # after the data ends
        (InvalidTimepointError, dict(partition_id="p1", at="2026-01-01T02:00:00")),  # no timezone
        (InvalidTimepointError, dict(partition_id="p0", at=data["splits"][0]["split_ts"] + H)),  # p0 retired
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, until=T0 + H)),  # until before T
        (InvalidParameterError, dict(partition_id="p1", at=T0 + 2 * H, key_by="median")),
    ]
    for err, kw in bad:
        with pytest.raises(err):
            whatif_weave(None, settings, **kw)  # validation fails before Spark is touched
    # The CLI: one line or one JSON error, exit 2, before any Spark session starts.
    import json

    from typer.testing import CliRunner

    from weaver.cli import app

    runner = CliRunner()
    for args, name in ((["--partition", "p9", "--at", (T0 + 2 * H).isoformat()], "UnknownPartitionError"),
                       (["--partition", "p1", "--at", (T0 + 2 * H).isoformat(), "--split-key", "k05"],
                        "InvalidParameterError"),
                       (["--partition", "p1", "--at", (end + H).isoformat()], "InvalidTimepointError")):
        r = runner.invoke(app, ["whatif", "weave", "--lake", settings.lake, "--json", *args])
        assert r.exit_code == 2 and json.loads(r.stdout.splitlines()[0])["error"] == name, r.stdout
    r = runner.invoke(app, ["whatif", "weave", "--lake", settings.lake, "--partition", "p1", "--at", "2026-01-01T02:00"])
    assert r.exit_code == 2
    assert not (Path(settings.woven)).exists()


@pytest.mark.spark
def test_manual_weave_equals_the_oracle_at_every_timepoint_and_serves_rollback(spark, lake):
    from deltalake import DeltaTable

    from weaver.core import storage
    from weaver.recover import recover
    from weaver.weave import read_woven_catalog, reconcile
    from weaver.whatif import whatif_weave

    settings, data = lake
    changes = data["changes"]
    at, until = T0 + 2 * H + timedelta(minutes=15), T0 + 6 * H + timedelta(minutes=15)
    r = whatif_weave(spark, settings, "p1", at, until=until, key_by="size")
    # The default key is the size median of p1's live items at T, computed here by brute force.
    k = oracle_size_median(fold(changes, key_lo="k20", at=at))
    assert r["split_key"] == k and r["key_by"] == "size" and r["timepoints_written"] == 5
    left_id, right_id = r["child_ids"]
    woven = [w for w in woven_table(settings).to_pylist() if w["weave_id"] == r["weave_id"]]
    tps = [at + i * H for i in range(5)]
    assert sorted({w["timepoint"] for w in woven}) == tps
    for t in tps:
        rows = [w for w in woven if w["timepoint"] == t]
        assert rows_to_dict([w for w in rows if w["woven_partition_id"] == left_id]) == \
            fold(changes, key_lo="k20", key_hi=k, at=t)
        assert rows_to_dict([w for w in rows if w["woven_partition_id"] == right_id]) == fold(changes, key_lo=k, at=t)
        assert {w["as_of_seq"] for w in rows} == {max(c["seq"] for c in changes if c["ts"] <= t)}
    (row,) = [x for x in read_woven_catalog(settings).to_pylist() if x["weave_id"] == r["weave_id"]]
    assert (row["origin"], row["confidence"], row["prediction_id"], row["status"]) == ("manual", 1.0, "manual", "active")

    # Asking again writes nothing (same deterministic weave id, no new version).
    again = whatif_weave(spark, settings, "p1", at, until=until, key_by="size")
    assert again["weave_id"] == r["weave_id"] and again["existing"] and not again["committed"]
    assert again["version"] == r["version"]

    # Confidence 1.0 by construction: served even at the strictest threshold; rollback equals the fold.
    t = at + 3 * H + timedelta(minutes=20)
    rb = recover(settings, right_id, t, confidence_threshold=1.0, mode="rollback")
    assert rb.path == "woven" and rb.weave_id == r["weave_id"]
    assert rows_to_dict(DeltaTable(rb.output).to_pyarrow_table()) == fold(changes, key_lo=k, at=t)
    # Reality neither confirms nor refutes a what-if: it stays active past its window.
    reconcile(settings, at=until + H)
    (row,) = [x for x in read_woven_catalog(settings).to_pylist() if x["weave_id"] == r["weave_id"]]
    assert row["status"] == "active"
    assert storage.version_of(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)) == r["version"]


# --- 3 + 6: impact of a woven split, time travel on both axes, the HTTP API ----------------------
@pytest.mark.spark
@pytest.mark.slow
def test_impact_time_travel_and_api_on_the_hot_end_lake(spark, tmp_path):
    from deltalake import DeltaTable
    from fastapi.testclient import TestClient

    from tests.lakes import FORECAST_T0, forecast_settings, hot_end_lake
    from weaver.api import create_app
    from weaver.core import storage
    from weaver.recover import recover, woven_snapshot
    from weaver.whatif import impact, whatif_weave

    s = forecast_settings(hot_end_lake(tmp_path / "lake"), api_token="tok")
    auth = {"Authorization": "Bearer tok"}
    changes = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    end = max(c["ts"] for c in changes)
    t_a, t_b = FORECAST_T0 + 10 * H + timedelta(minutes=15), FORECAST_T0 + 12 * H + timedelta(minutes=30)
    with TestClient(create_app(s)) as client:
        for body, status in (({"partition_id": "nope", "at": t_a.isoformat()}, 404),
                             ({"partition_id": "h", "at": t_a.isoformat(), "split_key": ""}, 400),
                             ({"partition_id": "h", "at": "2026-03-01T10:00:00"}, 400),
                             ({"partition_id": "h", "at": (end + H).isoformat()}, 400),
                             ({"partition_id": "h", "at": t_a.isoformat(), "bogus": 1}, 422)):
            r = client.post("/v1/whatif", json=body, headers=auth)
            assert r.status_code == status, (body, r.text)
        assert not Path(s.woven).exists()
        r = client.post("/v1/whatif", json={"partition_id": "h", "at": t_a.isoformat(),
                                             "until": (t_a + 2 * H).isoformat(), "key_by": "load"}, headers=auth)
        assert r.status_code == 200, r.text
        a = r.json()
        assert a["timepoints_written"] == 3 and a["key_by"] == "load" and a["origin"] == "manual"
        b = whatif_weave(spark, s, "h", t_b, until=t_b + 2 * H, key_by="size")
        assert b["split_key"] == "b00000100" and b["version"] == a["version"] + 1

        # Valid time x transaction time: at 15:00 the current tier answers from weave B (14:30);
        # as of weave A's version it answered from weave A's last timepoint (12:15).
        q = FORECAST_T0 + 15 * H
        _, now, rows_now = woven_snapshot(s, "h", q, confidence_threshold=1.0)
        _, then, rows_then = woven_snapshot(s, "h", q, confidence_threshold=1.0, as_of_version=a["version"])
        assert (now.weave_id, now.timepoint) == (b["weave_id"], t_b + 2 * H)
        assert (then.weave_id, then.timepoint) == (a["weave_id"], t_a + 2 * H)
        assert rows_to_dict(rows_now) == fold(changes, at=t_b + 2 * H)
        assert rows_to_dict(rows_then) == fold(changes, at=t_a + 2 * H)
        ts_a = datetime_of_version(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), a["version"])
        _, then_ts, _ = woven_snapshot(s, "h", q, confidence_threshold=1.0, as_of=ts_a)
        assert then_ts.weave_id == a["weave_id"]
        r = client.get("/v1/woven-snapshots", params={"partition_id": "h", "timepoint": q.isoformat(),
                                                       "as_of_version": a["version"], "format": "json",
                                                       "confidence_threshold": 1.0}, headers=auth)
        assert r.status_code == 200 and r.json()["weave_id"] == a["weave_id"], r.text
        old = recover(s, "h", q, confidence_threshold=1.0, as_of_version=a["version"])
        assert (old.path, old.weave_id) == ("woven", a["weave_id"]) and rows_to_dict(old.table) == fold(changes, at=q)

    # Impact of weave A against the brute force.
    imp = impact(s, a["weave_id"], model="arima")
    k = a["split_key"]
    tps = [t_a + i * H for i in range(3)]
    assert imp["timepoints"] == tps
    for cid, (lo, hi) in zip(a["child_ids"], (("", k), (k, None))):
        ch = imp["children"][cid]
        for tp, row in zip(tps, ch["series"]):
            state = fold(changes, key_lo=lo, key_hi=hi, at=tp)
            assert row["items"] == len(state)
            assert row["size_bytes"] == sum(len(x.encode()) + len(v) for x, v in state.items())
            written = [c["key"] for c in changes if tp - H < c["ts"] <= tp and c["key"] >= lo and (hi is None or c["key"] < hi)]
            assert row["writes"] == len(written) and row["write_rate"] == pytest.approx(len(written) / 3600)
            top = max(written.count(x) for x in set(written))
            assert row["hottest_key_share"] == pytest.approx(top / len(written))
            assert row["read_rate"] is None  # this lake has no access log
        assert 0.0 <= ch["forecast"]["probability"] <= 1.0
    sizes = [imp["children"][c]["series"][-1]["size_bytes"] for c in a["child_ids"]]
    assert imp["largest_partition"]["before_bytes"] == 200 * 1000
    assert imp["largest_partition"]["after_bytes"] == max(sizes)
    assert imp["balance"][-1]["size"] == pytest.approx(min(sizes) / max(sizes))
    files = pa.table(DeltaTable(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)).get_add_actions(flatten=True)).to_pylist()
    assert imp["woven_bytes"] == sum(f["size_bytes"] for f in files if f["partition.weave_id"] == a["weave_id"]) > 0
    assert imp["recovery"]["rows_equal"] and imp["recovery"]["woven_path"] == "woven"


def datetime_of_version(uri: str, version: int):
    """When Delta dates `version`: its commit file's modification time (docs/api.md). Not the
    `timestamp` of delta-rs' history(), the writer's clock before the write, which can be a
    millisecond earlier (an as_of there is before version 0: this test once failed so in CI)."""
    import os
    from datetime import datetime

    ns = os.stat(os.path.join(uri, "_delta_log", f"{version:020d}.json")).st_mtime_ns
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ns // 1000)
