"""Transaction time (`as_of`) on a woven tier with many commits, past a checkpoint and a log cleanup.

The woven-snapshot lookup by `as_of` used to read the tier's whole commit history on every call (to
refuse an instant before the first commit); it now takes delta-rs' time travel by datetime and checks
the one commit file it picked (weaver.core.deltafiles.load_as_of). Expectations are built by hand:
commit k of woven_snapshots adds the weave's rows at timepoint tps[k] (the oracle fold of the raw
change log), so "as of just after commit k" must serve tps[k] with the fold at tps[k]; before the
first commit still in the log, nothing was woven (404 / the standard path).
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from fastapi.testclient import TestClient

from tests.lakes import add_weave, build_lake, random_changes
from tests.oracle import fold, rows_to_dict

N = 30


def _now() -> datetime:
    t = datetime.now(timezone.utc)
    time.sleep(0.005)  # the next commit file is written in a later millisecond (Delta's commit time)
    return t


def _append_timepoint(lake, w: dict, tp: datetime) -> None:
    """One commit of woven_snapshots: weave `w` (of P0 at k2) at `tp`, its rows the oracle fold."""
    from weaver.core import storage

    rows = [{"weave_id": w["weave_id"], "woven_partition_id": child, "source_partition_id": "P0",
             "timepoint": tp, "as_of_seq": lake.seq_at(tp), "key": key, "value": v}
            for child, lo, hi in ((w["left"], "", "k2"), (w["right"], "k2", "k4"))
            for key, v in fold(lake.changes, key_lo=lo, key_hi=hi, at=tp).items()]
    write_deltalake(storage.uri_for(lake.settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), mode="append")


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    from weaver.core import storage

    lake = build_lake(tmp_path_factory.mktemp("as_of") / "lake", random_changes(random.Random(5), 120, 60), 60)
    s = lake.settings
    tps = sorted({c["ts"] for c in lake.changes})[-N:]
    assert len(tps) == N
    before = _now()
    w = add_weave(lake, "P0", "k2", 0.9, [tps[0]], prediction_id="pred-P0")  # woven_snapshots version 0
    stamps = [_now()]
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    for k in range(1, N):
        _append_timepoint(lake, w, tps[k])
        stamps.append(_now())
        if k == N // 2:
            DeltaTable(uri).create_checkpoint()  # later versions load from a checkpoint
    assert DeltaTable(uri).version() == N - 1
    return lake, tps, stamps, before, uri


def test_each_as_of_serves_the_timepoint_committed_by_then(tier):
    from weaver.core.errors import NoDataError
    from weaver.recover import recover, woven_snapshot

    lake, tps, stamps, before, _ = tier
    s, at = lake.settings, lake.ts_of(120)
    for k in range(N):
        _, snap, rows = woven_snapshot(s, "P0", at, as_of=stamps[k])
        assert snap.timepoint == tps[k], k
        assert rows_to_dict(rows) == fold(lake.changes, key_lo="", key_hi="k4", at=tps[k])
    # A valid time earlier than the last timepoint: the latest one <= it among those committed then.
    _, snap, _ = woven_snapshot(s, "P0", tps[10], as_of=stamps[20])
    assert snap.timepoint == tps[10]
    with pytest.raises(NoDataError, match="did not exist yet"):
        woven_snapshot(s, "P0", at, as_of=before)
    rec = recover(s, "P0", at, as_of=before)
    assert rec.path == "standard" and rows_to_dict(rec.table) == lake.expected("P0", at)
    rec = recover(s, "P0", at, as_of=stamps[7])
    assert (rec.path, rec.timepoint) == ("woven", tps[7]) and rows_to_dict(rec.table) == lake.expected("P0", at)


def test_as_of_over_http_and_after_the_log_is_cleaned_up(tier):
    from weaver.api import create_app
    from weaver.core.errors import NoDataError
    from weaver.recover import woven_snapshot

    lake, tps, stamps, before, uri = tier
    s, at = lake.settings, lake.ts_of(120)
    with TestClient(create_app(s, insecure=True)) as c:
        def get(as_of: datetime):
            return c.get("/v1/woven-snapshots", params={"partition_id": "P0", "timepoint": at.isoformat(),
                                                       "as_of": as_of.isoformat(), "limit": 1000})

        for k in (0, N // 2, N - 1):
            r = get(stamps[k])
            assert r.status_code == 200 and r.headers["x-weaver-timepoint"] == tps[k].isoformat(), r.text
        r = get(before)
        assert r.status_code == 404 and r.json()["error"] == "NoDataError", r.text

        # Log cleanup: a one-second log retention (a metadata commit, version N), a checkpoint at N,
        # then the expired commit files (versions 0 .. N-1) are deleted: only version N is left.
        dt = DeltaTable(uri)
        dt.alter.set_table_properties({"delta.logRetentionDuration": "interval 1 seconds"})
        after_props = _now()
        time.sleep(1.2)
        dt = DeltaTable(uri)
        dt.create_checkpoint()
        dt.cleanup_metadata()
        assert sorted(h["version"] for h in DeltaTable(uri).history()) == [N]  # the premise
        for gone in (before, stamps[0], stamps[N - 1]):
            r = get(gone)
            assert r.status_code == 404 and f"(version {N})" in r.json()["message"], r.text
            with pytest.raises(NoDataError):
                woven_snapshot(s, "P0", at, as_of=gone)
        # Version N holds the rows of version N-1 (a metadata commit adds none).
        r = get(after_props)
        assert r.status_code == 200 and r.headers["x-weaver-timepoint"] == tps[N - 1].isoformat(), r.text
        _, snap, rows = woven_snapshot(s, "P0", at, as_of=datetime.now(timezone.utc))
        assert snap.timepoint == tps[N - 1]
        assert rows_to_dict(rows) == fold(lake.changes, key_lo="", key_hi="k4", at=tps[N - 1])


def test_load_as_of_dates_a_commit_by_its_file_in_milliseconds(tmp_path):
    """Delta dates a commit by its commit file's modification time; delta-rs compares it with the
    instant in milliseconds. Commit files dated by hand: 2021-01-01T00:00:0i.000500700 for version i."""
    import os
    from datetime import timedelta

    from weaver.core.deltafiles import load_as_of
    from weaver.core.errors import NoDataError

    uri = str(tmp_path / "t")
    for i in range(3):
        write_deltalake(uri, pa.table({"x": [i]}), mode="append")
    base = datetime(2021, 1, 1, tzinfo=timezone.utc)
    for i in range(3):
        ns = (int(base.timestamp()) + i) * 10**9 + 500_700
        os.utime(os.path.join(uri, "_delta_log", f"{i:020d}.json"), ns=(ns, ns))

    def version(at: datetime) -> int:
        dt = DeltaTable(uri)
        v = load_as_of(dt, "t", at)
        assert dt.version() == v and sorted(dt.to_pyarrow_table().column("x").to_pylist()) == list(range(v + 1))
        return v

    assert version(base) == 0  # the same millisecond as version 0's file
    assert version(base + timedelta(seconds=1, microseconds=999)) == 1
    assert version(base + timedelta(seconds=1, microseconds=999_999)) == 1
    assert version(base + timedelta(seconds=2)) == 2
    assert version(base + timedelta(days=1)) == 2
    with pytest.raises(NoDataError, match=r"\(version 0\) was written at 2021-01-01T00:00:00\+00:00"):
        version(base - timedelta(microseconds=1))


def test_an_as_of_lookup_reads_only_its_candidates_files(tmp_path):
    """The lookup selects its candidate weaves' rows in the scan: another weave's files at that
    version are never opened. Here they are gone from disk, so reading the tier as it stood
    (as the lookup once did) fails; the candidate's rows are the oracle fold."""
    import os

    import pyarrow.parquet as pq

    from tests.lakes import add_weave
    from weaver.core import storage
    from weaver.recover import woven_snapshot

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(11), 80, None), None)
    s = lake.settings
    tps = sorted({c["ts"] for c in lake.changes})
    mine = add_weave(lake, "P0", "k2", 0.9, tps[-6:-3], prediction_id="pred-P0")
    other = add_weave(lake, "P1", "k6", 0.9, tps[-6:-3], prediction_id="pred-P1")
    stamp = _now()
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    files = DeltaTable(uri).file_uris()  # absolute paths of a local table
    gone = [f for f in files if set(pq.read_table(f, columns=["weave_id"]).column("weave_id").to_pylist())
            == {other["weave_id"]}]
    assert gone and len(gone) < len(files)  # the premise: the other weave has files of its own
    for f in gone:
        os.remove(f)
    _, snap, rows = woven_snapshot(s, "P0", tps[-1], as_of=stamp)
    assert (snap.weave_id, snap.timepoint) == (mine["weave_id"], tps[-4])
    assert rows_to_dict(rows) == fold(lake.changes, key_lo="", key_hi="k4", at=tps[-4])


def test_an_as_of_lookup_reads_only_the_files_of_the_snapshot_it_serves(tmp_path):
    """Back in time the look-up takes the current path's file index: the candidate's earlier
    timepoints are ruled out by their files' statistics and never opened. Here each timepoint is
    its own commit and file, and the files of the two before the one served are gone from disk
    (reading the candidate's rows as the tier stood, as the look-up once did, fails); the rows
    served are the oracle fold at the timepoint committed by then."""
    import os

    import pyarrow.parquet as pq

    from weaver.core import storage
    from weaver.recover import recover, woven_snapshot

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(13), 80, None), None)
    s = lake.settings
    tps = sorted({c["ts"] for c in lake.changes})[-5:]
    w = add_weave(lake, "P0", "k2", 0.9, [tps[0]], prediction_id="pred-P0")  # woven_snapshots version 0
    uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    stamps = [_now()]
    for tp in tps[1:]:  # versions 1..4, one timepoint (one file) each
        _append_timepoint(lake, w, tp)
        stamps.append(_now())
    files = DeltaTable(uri, version=2).file_uris()
    by_tp = {f: set(pq.read_table(f, columns=["timepoint"]).column("timepoint").to_pylist()) for f in files}
    gone = [f for f, t in by_tp.items() if t <= {tps[0], tps[1]}]
    assert len(gone) >= 2 and len(gone) < len(files)  # the premise: tps[0] and tps[1] have files of their own
    for f in gone:
        os.remove(f)
    expected = fold(lake.changes, key_lo="", key_hi="k4", at=tps[2])
    for kw in ({"as_of_version": 2}, {"as_of": stamps[2]}):
        _, snap, rows = woven_snapshot(s, "P0", tps[-1], **kw)
        assert (snap.weave_id, snap.timepoint) == (w["weave_id"], tps[2])
        assert rows_to_dict(rows) == expected
        r = recover(s, "P0", tps[-1], **kw)  # the woven rows at tps[2] plus the log's tail to tps[-1]
        assert r.path == "woven" and r.source == f"{w['weave_id']}@{tps[2].isoformat()}"
        assert rows_to_dict(r.table) == fold(lake.changes, key_lo="", key_hi="k4", at=tps[-1])
