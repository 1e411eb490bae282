"""partition_metrics against a brute-force oracle: fold the raw change rows per bucket and partition."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tests.oracle import fold
from tests.lakes import event_log, oracle_snapshots, part, write_lake
from weaver.core import storage
from weaver.core.errors import InvalidParameterError
from weaver.core.settings import load_settings

H = timedelta(hours=1)


def oracle_metrics(lake, start: datetime, end: datetime, changes: list[dict] | None = None) -> dict:
    """{(partition_id, bucket_start): row} computed from raw rows with tests.oracle.fold."""
    if changes is None:
        changes = storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    parts = storage.read(storage.table_uri(str(lake), storage.PARTITIONS), storage.PARTITIONS).to_pylist()
    acc_uri = storage.table_uri(str(lake), storage.ACCESS_LOG)
    access = storage.read(acc_uri, storage.ACCESS_LOG).to_pylist() if storage.is_table(acc_uri) else []
    out = {}
    bs = start
    while bs + H <= end:
        be = bs + H
        before = [c["seq"] for c in changes if c["ts"] < be]
        end_seq = max(before) if before else 0
        for p in parts:
            in_bucket = [c for c in changes if c["partition_id"] == p["partition_id"] and bs <= c["ts"] < be]
            alive = p["created_ts"] < be and (p["retired_ts"] is None or p["retired_ts"] > bs)
            if not alive and not in_bucket:
                continue
            cut = end_seq
            if p["retired_ts"] is not None and p["retired_ts"] < be:
                cut = min(cut, p["retired_seq"])
            state = fold(changes, key_lo=p["key_lo"], key_hi=p["key_hi"], upto_seq=cut)
            out[(p["partition_id"], bs)] = {
                "size_bytes": sum(len(k.encode()) + len(v) for k, v in state.items()),
                "item_count": len(state),
                "writes": len(in_bucket),
                "write_bytes": sum(len(c["key"].encode()) + (len(c["value"]) if c["op"] == "PUT" else 0)
                                   for c in in_bucket),
                "reads": sum(1 for a in access if a["partition_id"] == p["partition_id"] and bs <= a["ts"] < be),
            }
        bs = be
    return out


def stored(lake) -> dict:
    t = storage.read(storage.table_uri(str(lake), storage.PARTITION_METRICS), storage.PARTITION_METRICS)
    return {(r.pop("partition_id"), r.pop("bucket_start")): r for r in t.to_pylist()}


def first_last(lake) -> tuple[datetime, datetime]:
    t = storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG, columns=["ts"]).column("ts")
    lo, hi = min(t.to_pylist()), max(t.to_pylist())
    return lo.replace(minute=0, second=0, microsecond=0), hi.replace(minute=0, second=0, microsecond=0) + H


def test_simulated_lake_matches_oracle(lake_copy):
    from weaver.predict import build_metrics

    s = load_settings(lake=str(lake_copy))
    start, end = first_last(lake_copy)
    got = build_metrics(s, end=end)
    expected = oracle_metrics(lake_copy, start, end)
    assert stored(lake_copy) == expected
    assert got["rows"] == len(expected)
    assert got["reads"] > 0  # the simulated lake carries an access log
    # nothing lost: every change is counted once in `writes`
    n = storage.read(storage.table_uri(str(lake_copy), storage.CHANGELOG), storage.CHANGELOG).num_rows
    assert sum(r["writes"] for r in expected.values()) == n


def test_incremental_equals_full_and_is_idempotent(lake_copy):
    from weaver.predict import build_metrics
    from weaver.core.storage import version_of

    s = load_settings(lake=str(lake_copy))
    start, end = first_last(lake_copy)
    mid = start + 29 * H
    build_metrics(s, end=mid)
    build_metrics(s, start=mid, end=end)
    rows_once = stored(lake_copy)
    assert rows_once == oracle_metrics(lake_copy, start, end)
    # rerunning an interval (even a misaligned start) writes the same rows once
    build_metrics(s, start=mid - timedelta(minutes=30), end=end)
    v = version_of(storage.table_uri(str(lake_copy), storage.PARTITION_METRICS))
    assert stored(lake_copy) == rows_once
    assert v is not None


def test_retired_mid_bucket_and_incomplete_bucket(tmp_path):
    """A partition retiring at 01:30 is measured at its retirement; the bucket at `end` is skipped."""
    from weaver.predict import build_metrics

    t0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
    ev = []
    for i in range(10):  # 00:00 .. 01:30: ten inserts into p
        ev.append((t0 + timedelta(minutes=10 * i), "p", f"k{i:02d}", "PUT", 100))
    # seq 10 at 01:30 is p's last; the split happens after it
    for i in range(10, 16):  # 01:40 .. 02:30: children write
        k = f"k{i - 10:02d}" if i % 2 else f"k{i:02d}"
        pid = "l" if k < "k05" else "r"
        ev.append((t0 + timedelta(minutes=10 * i), pid, k, "DELETE" if i == 11 else "PUT", 50))
    split_ts = t0 + timedelta(minutes=95)
    parts = [part("p", "", None, created=t0, retired=split_ts, retired_seq=10),
             part("l", "", "k05", created=split_ts, parent="p", created_seq=10),
             part("r", "k05", None, created=split_ts, parent="p", created_seq=10)]
    lake = write_lake(tmp_path / "lake", event_log(
        parts, ev, splits=[{"parent_id": "p", "split_seq": 10, "split_ts": split_ts, "split_key": "k05",
                            "left_id": "l", "right_id": "r", "reason": "manual"}]))
    s = load_settings(lake=str(lake))
    end = t0 + timedelta(hours=2, minutes=45)  # the 02:00 bucket is incomplete: not written
    r = build_metrics(s, end=end)
    got = stored(lake)
    assert got == oracle_metrics(lake, t0, t0 + 2 * H)
    assert {b for _, b in got} == {t0, t0 + H}
    assert got[("p", t0 + H)]["item_count"] == 10  # at its retirement, not the bucket's end
    assert got[("p", t0 + H)]["size_bytes"] == 10 * (3 + 100)
    assert r["buckets"] == 2


def test_bad_interval_changes_nothing(lake_copy):
    from weaver.predict import build_metrics

    s = load_settings(lake=str(lake_copy))
    t = datetime(2026, 1, 2, tzinfo=timezone.utc)
    with pytest.raises(InvalidParameterError):
        build_metrics(s, start=t, end=t - H)
    with pytest.raises(InvalidParameterError):
        build_metrics(s, end=datetime(2026, 1, 2))  # naive
    assert not storage.is_table(storage.table_uri(str(lake_copy), storage.PARTITION_METRICS))


def test_value_bytes_missing_is_measured(tmp_path):
    """A user's log without value_bytes still gets sizes (from the values themselves)."""
    from weaver.predict import build_metrics

    t0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
    ev = [(t0 + timedelta(minutes=i), "p", f"k{i}", "PUT", 7) for i in range(5)]
    lake = write_lake(tmp_path / "lake", event_log([part("p", "", None, created=t0)], ev))
    uri = storage.table_uri(str(lake), storage.CHANGELOG)
    t = storage.read(uri, storage.CHANGELOG)
    t = t.set_column(t.schema.get_field_index("value_bytes"), "value_bytes", pa.nulls(t.num_rows, pa.int64()))
    storage.overwrite(uri, storage.CHANGELOG, t)
    build_metrics(load_settings(lake=str(lake)), end=t0 + H)
    assert stored(lake)[("p", t0)]["size_bytes"] == 5 * (2 + 7)


VACUUM_T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)


def split_lake(root) -> str:
    """30 h of changes on P, split at 15 h into l | r at k050 (6 changes an hour: inserts, updates
    of older keys, a delete now and then); the lake's root."""
    t0, ev = VACUUM_T0, []
    for h in range(30):
        for j in range(6):
            ts = t0 + h * H + timedelta(minutes=5 + 9 * j)
            k = f"k{(h * 6 + j) % 97:03d}"
            op = "DELETE" if (h * 6 + j) % 11 == 0 else "PUT"
            ev.append((ts, None, k, op, 20 + (h * 6 + j) % 13))
    split_ts = t0 + 15 * H
    n = sum(1 for e in ev if e[0] < split_ts)
    ev = [(ts, ("p" if ts < split_ts else ("l" if k < "k050" else "r")), k, op, nb) for ts, _, k, op, nb in ev]
    parts = [part("p", "", None, created=t0, retired=split_ts, retired_seq=n),
             part("l", "", "k050", created=split_ts, parent="p", created_seq=n),
             part("r", "k050", None, created=split_ts, parent="p", created_seq=n)]
    return str(write_lake(root, event_log(
        parts, ev, splits=[{"parent_id": "p", "split_seq": n, "split_ts": split_ts, "split_key": "k050",
                            "left_id": "l", "right_id": "r", "reason": "manual"}])))


def test_vacuumed_log_starts_from_base_snapshots(tmp_path):
    """After vacuum cut the log's prefix, metrics still equal the fold of the ORIGINAL log."""
    from weaver.predict import build_metrics
    from weaver.log import log_start_seq
    from weaver.pitr import vacuum

    t0 = VACUUM_T0
    lake = split_lake(tmp_path / "lake")
    s = load_settings(lake=str(lake))
    log = {"changes": storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG).to_pylist(),
           "partitions": storage.read(storage.table_uri(str(lake), storage.PARTITIONS), storage.PARTITIONS).to_pylist()}
    snap_seqs = [6 * 10, 6 * 20]  # the last change of hours 9 and 19
    rows, cat = oracle_snapshots(log, snap_seqs)
    storage.overwrite(storage.table_uri(str(lake), storage.SNAPSHOTS), storage.SNAPSHOTS,
                      pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.SNAPSHOTS]))
    storage.overwrite(storage.table_uri(str(lake), storage.SNAPSHOT_CATALOG), storage.SNAPSHOT_CATALOG,
                      pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]))
    now = t0 + 30 * H
    vacuum(s.with_overrides(recovery_window="8h"), now)
    start_seq = log_start_seq(s)
    assert start_seq == 120  # the hour-19 snapshots are every restore's base from 22 h on
    left = storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG)
    assert min(left.column("seq").to_pylist()) == start_seq  # the prefix is gone

    r = build_metrics(s, end=now)
    first = t0 + 20 * H  # the base is the instant of seq 120 (hour 19): the next full bucket is 20 h
    assert r["start"] == first
    assert stored(lake) == oracle_metrics(lake, first, now, changes=log["changes"])
    # predictions on the vacuumed lake: refused before the retained log, defined rows after it
    from weaver.core.errors import InvalidTimepointError
    from weaver.predict import predict

    with pytest.raises(InvalidTimepointError, match="retained change log"):
        predict(s, at=t0 + 10 * H, write=False)
    rows = predict(s, at=now, model="arima", write=False).to_pylist()
    assert [r["partition_id"] for r in rows] == ["l", "r"]
    assert all(r["skip_reason"].startswith("too little history: 10 complete buckets") for r in rows)
