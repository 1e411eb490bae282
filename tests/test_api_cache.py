"""The API's recovery cache is keyed on every table whose change can change a recovery's answer.

Rows were always right, but the key left out `snapshot_catalog`: after a new base snapshot a cached
summary still named the old source (and its longer tail). Expectations here are derived by hand
from the raw change log (snapshot id `"{P}@{seq}"`, the tail counted by brute force), never from
the code under test.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.lakes import standard_lake
from tests.oracle import rows_to_dict


def _tail(lake, pid: str, after_seq: int, at) -> int:
    """Changes on `pid`'s key range with seq > after_seq and ts <= at (what a replay from a base at
    after_seq applies), counted from the raw log."""
    lo, hi = lake.ranges[pid]
    return sum(1 for c in lake.changes
               if c["seq"] > after_seq and c["ts"] <= at and c["key"] >= lo and (hi is None or c["key"] < hi))


def test_cached_recovery_names_a_base_snapshot_taken_since(spark, tmp_path):
    from weaver.api import create_app
    from weaver.pitr.snapshots import take_snapshots

    lake = standard_lake(tmp_path / "lake")
    s = lake.settings
    at = lake.ts_of(110)
    body = {"partition_id": "P3", "timepoint": at.isoformat()}  # P3 has no weave: the standard path
    app = create_app(s, insecure=True)
    with TestClient(app) as c:
        first = c.post("/v1/recoveries", json=body).json()
        # No base snapshot yet: the whole log up to `at` on P3's range (it exists from seq 60).
        assert (first["path"], first["source"]) == ("standard", "changelog")
        assert first["changes_replayed"] == _tail(lake, "P3", 0, at)
        again = c.post("/v1/recoveries", json=body).json()
        assert again == first and app.state.recovery_cache.hits == 1  # the cache serves it

        snap_at = lake.ts_of(90)
        taken = take_snapshots(spark, s, snap_at)
        seq = lake.seq_at(snap_at)
        assert f"P3@{seq}" in taken["taken"]

        after = c.post("/v1/recoveries", json=body)
        assert after.status_code == 200, after.text
        got = after.json()
        assert (got["path"], got["source"]) == ("standard", f"P3@{seq}")
        assert got["changes_replayed"] == _tail(lake, "P3", seq, at) < first["changes_replayed"]
        rows = c.post("/v1/recoveries", params={"format": "arrow", "limit": 100000}, json=body)
        assert rows.headers["x-weaver-source"] == f"P3@{seq}"
        import pyarrow as pa

        assert rows_to_dict(pa.ipc.open_stream(rows.content).read_all()) == lake.expected("P3", at)


def test_cached_recovery_names_a_woven_timepoint_written_since(tmp_path):
    """A weaving run writes woven rows before it updates the catalog's bookkeeping (a crash between
    leaves the rows, which serve): a commit to woven_snapshots alone must start a new entry."""
    import pyarrow as pa

    from tests.lakes import weave_id_of
    from tests.oracle import fold
    from weaver.api import create_app
    from weaver.core import storage

    lake = standard_lake(tmp_path / "lake")
    s = lake.settings
    w = lake.weaves[weave_id_of("pred-P0")]
    at, tp_old = lake.ts_of(110), lake.ts_of(90)  # the weave's last timepoint is ts_of(90)
    tp_new = next(lake.ts_of(q) for q in range(100, 90, -1) if tp_old < lake.ts_of(q) <= at)
    body = {"partition_id": "P0", "timepoint": at.isoformat()}
    app = create_app(s, insecure=True)
    with TestClient(app) as c:
        first = c.post("/v1/recoveries", json=body).json()
        assert (first["path"], first["source"]) == ("woven", f"{w['weave_id']}@{tp_old.isoformat()}")
        assert c.post("/v1/recoveries", json=body).json() == first and app.state.recovery_cache.hits == 1

        # The weave's rows at tp_new, from the oracle fold, written to woven_snapshots only.
        seq = lake.seq_at(tp_new)
        rows = [{"weave_id": w["weave_id"], "woven_partition_id": child, "source_partition_id": "P0",
                 "timepoint": tp_new, "as_of_seq": seq, "key": k, "value": v}
                for child, lo, hi in ((w["left"], "", "k2"), (w["right"], "k2", "k4"))
                for k, v in fold(lake.changes, key_lo=lo, key_hi=hi, at=tp_new).items()]
        storage.merge(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS,
                      pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                      ["weave_id", "woven_partition_id", "timepoint", "key"])

        got = c.post("/v1/recoveries", json=body).json()
        assert (got["path"], got["source"]) == ("woven", f"{w['weave_id']}@{tp_new.isoformat()}")
        assert got["changes_replayed"] == _tail(lake, "P0", seq, at) and got["rows"] == len(lake.expected("P0", at))
