"""Recovery (DESIGN §4.3): woven and standard paths return the oracle's rows; low confidence is never read.

The lakes are hand-built (tests/lakes.py: build_lake, add_weave, standard_lake): woven rows are
computed from the oracle fold (tests/oracle.py) and MERGEd with storage.merge, so these tests are
independent of the weaving engine.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.lakes import T0, Lake, add_weave, build_lake, random_changes, standard_lake, weave_id_of
from tests.oracle import fold, rows_to_dict
from weaver.core import storage
from weaver.core.errors import (
    InvalidConfidenceError, InvalidParameterError, InvalidTimepointError, UnknownPartitionError, UnknownWeaveError,
)
from weaver.recover import recover


def add_base_snapshot(lake: Lake, partition_id: str, seq: int) -> str:
    """A base snapshot of `partition_id` at `seq` (rows from the oracle fold), cataloged."""
    s = lake.settings
    lo, hi = lake.ranges[partition_id]
    ts = lake.ts_of(seq)
    sid = f"snap-{partition_id}-{seq}"
    state = fold(lake.changes, key_lo=lo, key_hi=hi, upto_seq=seq)
    rows = [{"snapshot_id": sid, "partition_id": partition_id, "as_of_seq": seq, "as_of_ts": ts, "key": k, "value": v}
            for k, v in state.items()]
    if rows:
        storage.merge(storage.uri_for(s, storage.SNAPSHOTS), storage.SNAPSHOTS,
                      pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.SNAPSHOTS]), ["snapshot_id", "key"])
    cat = [{"snapshot_id": sid, "partition_id": partition_id, "as_of_seq": seq, "as_of_ts": ts, "rows": len(rows),
            "bytes": sum(len(r["value"]) for r in rows), "created_at": T0}]
    storage.merge(storage.uri_for(s, storage.SNAPSHOT_CATALOG), storage.SNAPSHOT_CATALOG,
                  pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]), ["snapshot_id"])
    return sid


def oracle_rows(table) -> dict[str, bytes]:
    return rows_to_dict(table)


# --- tests ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return standard_lake(tmp_path_factory.mktemp("recovery") / "lake")


def test_woven_path_used_and_equals_oracle(lake):
    w = next(iter(lake.weaves.values()))
    tps = sorted({lake.ts_of(30), lake.ts_of(60), lake.ts_of(90)})
    at = lake.ts_of(75)
    r = recover(lake.settings, "P0", at)
    assert r.path == "woven"
    assert r.weave_id == w["weave_id"]
    assert r.timepoint == tps[1]  # nearest timepoint <= T
    assert r.changes_replayed == sum(1 for c in lake.changes if lake.seq_at(tps[1]) < c["seq"] <= lake.seq_at(at)
                                     and c["key"] < "k4")
    assert oracle_rows(r.table) == lake.expected("P0", at)
    assert r.rows == len(lake.expected("P0", at))
    assert r.source.startswith(w["weave_id"])
    s = recover(lake.settings, "P0", at, prefer="standard")
    assert s.path == "standard"
    assert oracle_rows(s.table) == oracle_rows(r.table)


def test_woven_children_recover_their_half(lake):
    w = lake.weaves[weave_id_of("pred-P0")]
    at = lake.ts_of(100)
    for child in (w["left"], w["right"]):
        r = recover(lake.settings, child, at)
        assert r.path == "woven" and r.timepoint == lake.ts_of(90)
        assert oracle_rows(r.table) == lake.expected(child, at)
        s = recover(lake.settings, child, at, prefer="standard")
        assert oracle_rows(s.table) == lake.expected(child, at)
    assert set(lake.expected(w["left"], at)) | set(lake.expected(w["right"], at)) == set(lake.expected("P0", at))


def test_woven_child_before_its_split_is_refused(lake):
    w = lake.weaves[weave_id_of("pred-P0")]
    with pytest.raises(InvalidTimepointError, match="exists only from its split"):
        recover(lake.settings, w["left"], lake.ts_of(10))


def test_before_first_timepoint_takes_standard_path(lake):
    at = lake.ts_of(20)
    r = recover(lake.settings, "P0", at)
    assert r.path == "standard" and r.weave_id is None
    assert oracle_rows(r.table) == lake.expected("P0", at)


def test_below_confidence_is_never_used(tmp_path):
    rng = random.Random(5)
    lake = build_lake(tmp_path / "lake", random_changes(rng, 80, 40), 40)
    # Poisoned rows: if a recovery read them, its values would be b"WRONG".
    w = add_weave(lake, "P0", "k2", 0.6, [lake.ts_of(50)], corrupt=True)
    at = lake.ts_of(70)
    for pid in ("P0", w["left"], w["right"]):
        for c in (0.61, 0.75, 1.0):
            r = recover(lake.settings, pid, at, confidence_threshold=c)
            assert r.path == "standard"
            assert oracle_rows(r.table) == lake.expected(pid, at)
    # The same rows at or under the threshold are read (so the poison is observable).
    r = recover(lake.settings, "P0", at, confidence_threshold=0.6)
    assert r.path == "woven" and b"WRONG" in r.table.column("value").to_pylist()


def test_expired_weave_is_not_used(tmp_path):
    lake = build_lake(tmp_path / "lake", random_changes(random.Random(9), 60, None), None)
    add_weave(lake, "P0", "k2", 0.99, [lake.ts_of(30)], status="expired", corrupt=True)
    r = recover(lake.settings, "P0", lake.ts_of(50), confidence_threshold=0.5)
    assert r.path == "standard" and oracle_rows(r.table) == lake.expected("P0", lake.ts_of(50))


def test_weave_of_ancestor_serves_real_descendant(tmp_path):
    """A woven snapshot of P1 covers P2's range after P1 really split: P2 may be served from it."""
    lake = build_lake(tmp_path / "lake", random_changes(random.Random(2), 100, 40), 40)
    add_weave(lake, "P1", "k6", 0.8, [lake.ts_of(60), lake.ts_of(80)])
    at = lake.ts_of(95)
    for pid in ("P1", "P2", "P3"):
        r = recover(lake.settings, pid, at)
        assert r.path == "woven" and r.timepoint == lake.ts_of(80)
        assert oracle_rows(r.table) == lake.expected(pid, at)


def test_standard_path_uses_base_snapshot(tmp_path):
    lake = build_lake(tmp_path / "lake", random_changes(random.Random(4), 90, None), None)
    sid = add_base_snapshot(lake, "P0", 50)
    at = lake.ts_of(80)
    r = recover(lake.settings, "P0", at)
    assert r.path == "standard" and r.source == sid
    assert oracle_rows(r.table) == lake.expected("P0", at)


def test_rollback_writes_new_table_and_leaves_sources(tmp_path, lake):
    from deltalake import DeltaTable

    from weaver.core import storage

    s = lake.settings
    names = list(storage.SCHEMAS)
    before = {n: storage.version_of(storage.uri_for(s, n)) for n in names}
    at = lake.ts_of(70)
    out = str(tmp_path / "rolled")
    r = recover(s, "P0", at, mode="rollback", out=out)
    assert r.output == out and r.mode == "rollback"
    assert rows_to_dict(DeltaTable(out).to_pyarrow_table()) == lake.expected("P0", at)
    r2 = recover(s, "P0", at, mode="rollback", out=out)  # rerun: same rows once
    assert DeltaTable(out).to_pyarrow_table().num_rows == len(lake.expected("P0", at)) == r2.rows
    assert {n: storage.version_of(storage.uri_for(s, n)) for n in names} == before
    with pytest.raises(InvalidParameterError, match="never touches the source"):
        recover(s, "P0", at, mode="rollback", out=storage.uri_for(s, storage.CHANGELOG))
    with pytest.raises(InvalidParameterError):
        recover(s, "P0", at, mode="rollback", out=storage.uri_for(s, storage.WOVEN_SNAPSHOTS) + "/x")
    assert {n: storage.version_of(storage.uri_for(s, n)) for n in names} == before


def test_point_in_time_out_parquet(tmp_path, lake):
    import pyarrow.parquet as pq

    at = lake.ts_of(110)
    r = recover(lake.settings, "P0", at, out=str(tmp_path / "o.parquet"))
    t = pq.read_table(r.output)
    assert t.column_names == ["key", "value"] and rows_to_dict(t) == lake.expected("P0", at)


@pytest.mark.parametrize("bad, err", [
    ({"partition_id": "nope"}, UnknownPartitionError),
    ({"partition_id": "../etc"}, UnknownPartitionError),
    ({"partition_id": "P0~deadbeef~L"}, UnknownWeaveError),
    ({"at": "2026-01-01T12:00:00"}, InvalidTimepointError),
    ({"at": "0001-01-01T00:00:00+01:00"}, InvalidTimepointError),  # before year 1 in UTC (was an OverflowError)
    ({"at": "9999-12-31T23:00:00-05:00"}, InvalidTimepointError),  # past year 9999 in UTC
    ({"confidence_threshold": 1.5}, InvalidConfidenceError),
    ({"confidence_threshold": -0.1}, InvalidConfidenceError),
    ({"mode": "truncate"}, InvalidParameterError),
])
def test_bad_input_gets_named_error(lake, bad, err):
    kw = {"partition_id": "P0", "at": lake.ts_of(50), **bad}
    with pytest.raises(err):
        recover(lake.settings, kw.pop("partition_id"), kw.pop("at"), **kw)


@hsettings(max_examples=int(os.environ.get("WEAVER_PROPERTY_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 10_000), n=st.integers(5, 80), split=st.booleans(),
       conf=st.floats(0.0, 1.0), c=st.floats(0.0, 1.0))
def test_property_woven_equals_standard_equals_oracle(tmp_path_factory, data, seed, n, split, conf, c):
    rng = random.Random(seed)
    split_seq = max(1, n // 2) if split else None
    lake = build_lake(tmp_path_factory.mktemp("prop") / "lake", random_changes(rng, n, split_seq), split_seq)
    source = data.draw(st.sampled_from(["P0", "P1"]))
    split_key = data.draw(st.sampled_from(["k1", "k2b", "k3"] if source == "P0" else ["k5", "k7", "k8c"]))
    seqs = sorted(set(data.draw(st.lists(st.integers(1, n), min_size=1, max_size=3))))
    w = add_weave(lake, source, split_key, conf, [lake.ts_of(s) for s in seqs])
    at = lake.ts_of(data.draw(st.integers(1, n))) + timedelta(seconds=data.draw(st.sampled_from([0, 0, 30])))
    targets = [source] + ([w["left"], w["right"]] if at >= w["split_ts"] else [])
    if split and source == "P1":
        targets += ["P2", "P3"]
    for pid in targets:
        want = lake.expected(pid, at)
        r = recover(lake.settings, pid, at, confidence_threshold=c)
        s = recover(lake.settings, pid, at, confidence_threshold=c, prefer="standard")
        assert oracle_rows(r.table) == want == oracle_rows(s.table)
        assert r.rows == len(want)
        # A timepoint at which the whole source range is empty leaves no woven row to find.
        lo, hi = lake.ranges[source]
        visible = [lake.ts_of(q) for q in seqs
                   if lake.ts_of(q) <= at and fold(lake.changes, key_lo=lo, key_hi=hi, at=lake.ts_of(q))]
        usable = conf >= c and bool(visible)
        assert r.path == ("woven" if usable else "standard"), (pid, conf, c)
        if r.path == "woven":
            assert r.timepoint == max(visible)


@pytest.mark.spark
@pytest.mark.slow
def test_real_weave_serves_recovery(spark, tmp_path):
    """Woven rows written by the real weaving engine (Spark) serve recovery with the oracle's rows."""
    from weaver.core import storage
    from weaver.weave import weave

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(8), 150, 75), 75)
    s = lake.settings.with_overrides(woven_cadence="20m")
    lake.settings = s
    split_ts, run_ts, end = lake.ts_of(30), lake.ts_of(10), lake.ts_of(150)
    pred = {"prediction_id": "pred-real-P0", "run_ts": run_ts, "partition_id": "P0", "model": "path",
            "window_start": run_ts, "window_end": end, "probability": 0.8, "reason": "size",
            "predicted_split_ts": split_ts, "split_ts_p10": None, "split_ts_p90": None, "split_key": "k2",
            "threshold": 1000.0, "skip_reason": None}
    storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS,
                  pa.Table.from_pylist([pred], schema=storage.SCHEMAS[storage.PREDICTIONS]), ["prediction_id"])
    weave(spark, s, at=end)
    wid = weave_id_of("pred-real-P0")
    left, right = f"P0~{wid[:8]}~L", f"P0~{wid[:8]}~R"
    lake.ranges[left], lake.ranges[right] = ("", "k2"), ("k2", "k4")
    woven_tps = sorted(set(storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS)
                           .column("timepoint").to_pylist()))
    assert len(woven_tps) >= 3
    for at in (woven_tps[0], woven_tps[1] + timedelta(minutes=7), lake.ts_of(149)):
        for pid in ("P0", left, right):
            r = recover(s, pid, at)
            assert r.path == "woven" and r.weave_id == wid
            assert r.timepoint == max(t for t in woven_tps if t <= at)
            assert oracle_rows(r.table) == lake.expected(pid, at)
    r = recover(s, "P0", lake.ts_of(149), confidence_threshold=0.81)
    assert r.path == "standard" and oracle_rows(r.table) == lake.expected("P0", lake.ts_of(149))


def _table_files(settings, name: str) -> dict:
    """{path: bytes} of every Parquet file of one contract table (to prove it was not touched)."""
    from pathlib import Path

    root = Path(storage.uri_for(settings, name))
    return {p: p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_point_in_time_out_inside_the_lakes_tables_is_refused(tmp_path):
    """--out naming a data file of the change log (or any path inside a contract table) is refused
    before anything is written: the source tables stay byte for byte as they were."""
    lake = build_lake(tmp_path / "lake", random_changes(random.Random(7), 40, None), None)
    add_weave(lake, "P0", "k2", 0.9, [lake.ts_of(20)])
    s, at = lake.settings, lake.ts_of(30)
    before = {n: _table_files(s, n) for n in (storage.CHANGELOG, storage.WOVEN_SNAPSHOTS, storage.PARTITIONS)}
    data_file = str(next(iter(before[storage.CHANGELOG])))
    targets = [data_file, storage.uri_for(s, storage.CHANGELOG) + "/new.parquet",
               storage.uri_for(s, storage.WOVEN_SNAPSHOTS) + "/x/y.parquet", storage.uri_for(s, storage.PARTITIONS)]
    for out in targets:
        for prefer in ("woven", "standard"):
            with pytest.raises(InvalidParameterError, match="inside the lake's own"):
                recover(s, "P0", at, out=out, prefer=prefer)
    assert {n: _table_files(s, n) for n in before} == before
    assert not (tmp_path / "lake" / "changelog" / "new.parquet").exists()
    # A file elsewhere is still written (and rewritten) as before.
    out = str(tmp_path / "ok.parquet")
    for _ in range(2):
        assert rows_to_dict(recover(s, "P0", at, out=out).table) == lake.expected("P0", at)
    import pyarrow.parquet as pq
    assert rows_to_dict(pq.read_table(out)) == lake.expected("P0", at)


@pytest.mark.parametrize("status", ["staged", "quarantined"])
def test_unpublished_weave_is_never_served_as_of_a_version_or_instant(tmp_path, status):
    """DESIGN §7: a staged or quarantined weave is never served - neither now nor when the woven
    tier is looked at as of a Delta version or an instant (the as-of lookup used to skip the
    status filter). Its rows are poisoned, so serving them would show."""
    from datetime import datetime, timezone

    from weaver.core.errors import NoDataError
    from weaver.recover import woven_snapshot

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(11), 60, None), None)
    add_weave(lake, "P0", "k2", 0.95, [lake.ts_of(30)], status=status, corrupt=True)
    s, at = lake.settings, lake.ts_of(50)
    for kw in ({}, {"as_of_version": 0}, {"as_of": datetime.now(timezone.utc)}):
        with pytest.raises(NoDataError):
            woven_snapshot(s, "P0", at, **kw)
        r = recover(s, "P0", at, **kw)
        assert r.path == "standard" and r.weave_id is None, kw
        assert oracle_rows(r.table) == lake.expected("P0", at)


def test_expired_weave_is_still_served_as_of_an_old_version(tmp_path):
    """Looking back keeps its point: a weave expired since is served from the version that held it."""
    from weaver.recover import woven_snapshot

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(12), 60, None), None)
    w = add_weave(lake, "P0", "k2", 0.95, [lake.ts_of(30)], status="expired")
    s, at = lake.settings, lake.ts_of(50)
    _, snap, rows = woven_snapshot(s, "P0", at, as_of_version=0)
    assert snap.weave_id == w["weave_id"] and rows_to_dict(rows) == lake.expected("P0", lake.ts_of(30))
    r = recover(s, "P0", at, as_of_version=0)
    assert r.path == "woven" and oracle_rows(r.table) == lake.expected("P0", at)
    assert recover(s, "P0", at).path == "standard"


def test_recovery_at_the_earliest_instant_is_the_empty_state(lake):
    """seq_at(datetime.min) used to underflow (at - 1 ms): nothing precedes it, the state is empty."""
    from datetime import datetime, timezone

    for at in (datetime.min.replace(tzinfo=timezone.utc), datetime(1, 1, 1, microsecond=500, tzinfo=timezone.utc)):
        for prefer in ("woven", "standard"):
            r = recover(lake.settings, "P0", at, prefer=prefer)
            assert r.path == "standard" and oracle_rows(r.table) == lake.expected("P0", at) == {}


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_unreadable_change_log_file_is_a_named_error(tmp_path, damage):
    """A change-log data file that is not Parquet (or is gone) used to surface as a raw pyarrow /
    OS error from the change-log reader: it is a CorruptTableError on every path, and nothing is written."""
    from pathlib import Path

    from weaver.core.errors import CorruptTableError
    from weaver.log.changelog import ChangeLog
    from weaver.pitr import restore_partition

    lake = build_lake(tmp_path / "lake", random_changes(random.Random(8), 50, None), None)
    add_weave(lake, "P0", "k2", 0.9, [lake.ts_of(20)])
    files = sorted((Path(lake.settings.lake) / "changelog").glob("*.parquet"))
    assert len(files) == 1
    if damage == "garbage":
        files[0].write_bytes(b"this is not parquet" * 10)
    else:
        files[0].unlink()
    s, at, out = lake.settings, lake.ts_of(40), tmp_path / "o.parquet"
    with pytest.raises(CorruptTableError, match="changelog"):
        ChangeLog(s).seq_at(at)  # the file spans `at`: its rows are read
    with pytest.raises(CorruptTableError, match="changelog"):
        restore_partition(s, "P0", at)
    for prefer in ("woven", "standard"):
        with pytest.raises(CorruptTableError):
            recover(s, "P0", at, prefer=prefer, out=str(out))
    assert not out.exists()


def _lowercase_op(c, prev):
    c["op"] = c["op"].lower()  # 'put' / 'delete': not an op of the contract


def _put_without_value(c, prev):
    c["op"], c["value"], c["value_bytes"] = "PUT", None, None


def _ts_backwards(c, prev):
    c["ts"] = prev["ts"] - timedelta(seconds=5)  # before the previous change on the same range


def _wrong_partition(c, prev):
    c["partition_id"] = "P1"  # a key of P0's range written to P1


def _outcome(fn):
    from weaver.core.errors import WeaverError

    try:
        return "rows", oracle_rows(fn().table)
    except WeaverError as exc:
        return type(exc).__name__, exc.seq


@pytest.mark.parametrize("mutate, error", [
    (_lowercase_op, "UnknownOpError"), (_put_without_value, "UnknownOpError"),
    (_ts_backwards, "NonMonotonicTimestampError"), (_wrong_partition, "KeyOutOfRangeError"),
], ids=["lowercase_op", "put_without_value", "ts_backwards", "wrong_partition"])
def test_woven_and_standard_paths_refuse_the_same_bad_tail(tmp_path, mutate, error):
    """DESIGN §4.3/§4.5: the woven path replays its tail only after the same validation as the
    standard path; a bad change after the weave's timepoint used to be folded in by the woven
    path (rows returned) while the standard path named it. Both paths now answer alike, for the
    partition and for each woven child."""
    changes = random_changes(random.Random(21), 50, None)
    p0 = [c for c in changes if c["key"] < "k4" and c["seq"] > 20]
    bad = next(c for c in p0 if c["seq"] > 30)
    mutate(bad, p0[p0.index(bad) - 1])
    lake = build_lake(tmp_path / "lake", changes, None)
    w = add_weave(lake, "P0", "k2", 0.9, [lake.ts_of(20)])
    at = lake.ts_of(50)
    assert recover(lake.settings, "P0", lake.ts_of(25)).path == "woven"  # the weave serves before the bad change
    assert _outcome(lambda: recover(lake.settings, "P0", at)) == (error, bad["seq"])
    for pid in ("P0", w["left"], w["right"]):
        assert _outcome(lambda: recover(lake.settings, pid, at, prefer="woven")) == \
            _outcome(lambda: recover(lake.settings, pid, at, prefer="standard")), pid
