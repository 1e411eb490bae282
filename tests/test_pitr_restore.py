"""restore_partition (delta-rs + Arrow) against the brute-force fold of tests/oracle.py.

Random logs with random real splits are built here, written as real Delta tables; base snapshots
are hand-built from the oracle (Spark-written snapshots are checked in test_snapshots.py), so
these property tests exercise the restore planner and replay across lineage quickly.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.oracle import fold, rows_to_dict

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)


# --- a random lake ---------------------------------------------------------------------------------
def build_log(events: list[tuple], n_parts: int) -> dict:
    """Interpret `events` (key, op, dt_ms, split_roll, split_key) as a log with real splits."""
    bounds = {1: [""], 2: ["", "k50"], 3: ["", "k33", "k66"]}[n_parts]
    parts: list[dict] = []
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else None
        parts.append({"partition_id": f"p{i:04d}", "key_lo": lo, "key_hi": hi, "parent_id": None, "created_seq": 0,
                      "created_ts": T0, "retired_seq": None, "retired_ts": None})
    changes: list[dict] = []
    splits: list[dict] = []
    seq = 0
    now = T0
    for key_i, op, dt_ms, roll, split_i in events:
        now = now + timedelta(milliseconds=dt_ms)
        key = f"k{key_i:02d}"
        owner = next(p for p in parts if p["retired_seq"] is None and key >= p["key_lo"]
                     and (p["key_hi"] is None or key < p["key_hi"]))
        if roll == 0 and seq > 0:
            sk = f"k{split_i:02d}"
            if sk > owner["key_lo"] and (owner["key_hi"] is None or sk < owner["key_hi"]):
                owner["retired_seq"], owner["retired_ts"] = seq, now
                ids = [f"p{len(parts):04d}", f"p{len(parts) + 1:04d}"]
                for pid, lo, hi in ((ids[0], owner["key_lo"], sk), (ids[1], sk, owner["key_hi"])):
                    parts.append({"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": owner["partition_id"],
                                  "created_seq": seq, "created_ts": now, "retired_seq": None, "retired_ts": None})
                splits.append({"parent_id": owner["partition_id"], "split_seq": seq, "split_ts": now, "split_key": sk,
                               "left_id": ids[0], "right_id": ids[1], "reason": "manual"})
                continue
        seq += 1
        changes.append({"seq": seq, "ts": now, "partition_id": owner["partition_id"], "key": key, "op": op,
                        "value": f"{key}@{seq}".encode() if op == "PUT" else None,
                        "value_bytes": len(f"{key}@{seq}") if op == "PUT" else 0})
    return {"changes": changes, "partitions": parts, "splits": splits}


def alive_at(p: dict, seq: int) -> bool:
    return p["created_seq"] <= seq and (p["retired_seq"] is None or seq < p["retired_seq"])


def oracle_snapshots(log: dict, snap_seqs: list[int]) -> tuple[list[dict], list[dict]]:
    """Snapshot rows and catalog rows built from the oracle for every partition alive at each seq."""
    by_seq = {c["seq"]: c for c in log["changes"]}
    rows, cat = [], []
    for s in sorted(set(snap_seqs)):
        for p in log["partitions"]:
            if not alive_at(p, s):
                continue
            sid = f"{p['partition_id']}@{s}"
            state = fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], upto_seq=s)
            for k, v in sorted(state.items()):
                rows.append({"snapshot_id": sid, "partition_id": p["partition_id"], "as_of_seq": s,
                             "as_of_ts": by_seq[s]["ts"], "key": k, "value": v})
            cat.append({"snapshot_id": sid, "partition_id": p["partition_id"], "as_of_seq": s,
                        "as_of_ts": by_seq[s]["ts"], "rows": len(state),
                        "bytes": sum(len(k) + len(v) for k, v in state.items()), "created_at": T0})
    return rows, cat


def write_lake(root: Path, log: dict, snap_seqs: list[int] = (), *, log_chunk: int | None = None) -> str:
    """Write changelog, partitions, splits (and oracle snapshots + catalog) as Delta tables.

    `log_chunk` appends the change log in commits of that many changes (one file each), as an
    extractor would, so restores exercise file pruning on Delta statistics.
    """
    from deltalake import write_deltalake

    from weaver import storage

    lake = str(root)
    for name, rows in ((storage.CHANGELOG, log["changes"]), (storage.PARTITIONS, log["partitions"]),
                       (storage.SPLITS, log["splits"])):
        table = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[name])
        if name == storage.CHANGELOG and log_chunk and table.num_rows:
            for i in range(0, table.num_rows, log_chunk):
                write_deltalake(storage.table_uri(lake, name), table.slice(i, log_chunk), mode="append")
        else:
            write_deltalake(storage.table_uri(lake, name), table)
    if snap_seqs:
        rows, cat = oracle_snapshots(log, list(snap_seqs))
        write_deltalake(storage.table_uri(lake, storage.SNAPSHOTS),
                        pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.SNAPSHOTS]),
                        partition_by=["snapshot_id"])
        write_deltalake(storage.table_uri(lake, storage.SNAPSHOT_CATALOG),
                        pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]))
    return lake


def instants(log: dict, snap_seqs=()) -> list[datetime]:
    """Interesting timepoints: every change, split and snapshot instant, a microsecond before, the ends."""
    by_seq = {c["seq"]: c["ts"] for c in log["changes"]}
    pts = {T0 - timedelta(seconds=1)}
    for t in [c["ts"] for c in log["changes"]] + [s["split_ts"] for s in log["splits"]] + \
             [by_seq[s] for s in snap_seqs]:
        pts.update({t, t - US})
    pts.add(max(by_seq.values(), default=T0) + timedelta(seconds=1))
    return sorted(pts)


events_st = st.lists(
    st.tuples(st.integers(0, 99), st.sampled_from(["PUT", "PUT", "PUT", "DELETE"]), st.sampled_from([0, 1, 250, 1000]),
              st.integers(0, 6), st.integers(1, 99)),
    min_size=3, max_size=45)


@st.composite
def lakes(draw):
    log = build_log(draw(events_st), draw(st.integers(1, 3)))
    n = len(log["changes"])
    snaps = sorted(set(draw(st.lists(st.integers(1, max(n, 1)), max_size=4)))) if n else []
    return log, snaps, draw(st.sampled_from([None, 1, 4, 9]))


def _settings(lake: str):
    from weaver.settings import load_settings

    return load_settings(lake=lake)


# --- property tests --------------------------------------------------------------------------------
@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lakes(), st.data())
def test_restore_equals_oracle_fold_for_any_partition_and_instant(lake_and_snaps, data):
    from weaver.changelog import Lineage
    from weaver.pitr import restore_partition

    log, snaps, chunk = lake_and_snaps
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(write_lake(Path(tmp) / "lake", log, snaps, log_chunk=chunk))
        lineage = Lineage.load(s)
        pts = instants(log, snaps)
        chosen = data.draw(st.lists(st.sampled_from(pts), min_size=1, max_size=3, unique=True))
        for at in chosen:
            for p in log["partitions"]:
                r = restore_partition(s, p["partition_id"], at, lineage=lineage)
                want = fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], at=at)
                assert rows_to_dict(r.table) == want, (p["partition_id"], at, r.source_snapshot_id)
                keys = r.table.column("key").to_pylist()
                assert keys == sorted(keys)
                assert r.as_of_seq == max((c["seq"] for c in log["changes"] if c["ts"] <= at), default=0)


# --- hand-picked cases -------------------------------------------------------------------------------
def _split_log() -> tuple[dict, list[int]]:
    """p0000 [ , ) gets 6 changes, splits at k50 after seq 6 into p0001/p0002; 6 more changes."""
    ev = [(10, "PUT", 1000, 1, 1), (60, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1), (70, "PUT", 1000, 1, 1),
          (10, "DELETE", 1000, 1, 1), (80, "PUT", 1000, 1, 1),
          (55, "PUT", 1000, 0, 50),  # split at k50 after seq 6 (this event is the split, no change)
          (55, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1), (90, "PUT", 1000, 1, 1), (60, "DELETE", 1000, 1, 1),
          (15, "PUT", 1000, 1, 1), (95, "PUT", 1000, 1, 1)]
    log = build_log(ev, 1)
    assert [p["partition_id"] for p in log["partitions"]] == ["p0000", "p0001", "p0002"]
    assert log["splits"][0]["split_seq"] == 6
    return log, [3, 9]


def test_retired_parent_after_split_combines_children_snapshots(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = _split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["changes"][-1]["ts"]
    r = restore_partition(s, "p0000", at)
    assert r.source_snapshot_id == "p0001@9+p0002@9"
    assert r.changes_replayed == 3  # seqs 10..12 only: the children's snapshots at seq 9 are the base
    assert rows_to_dict(r.table) == {"k15": b"k15@11", "k20": b"k20@8", "k55": b"k55@7", "k70": b"k70@4",
                                     "k80": b"k80@6", "k90": b"k90@9", "k95": b"k95@12"}


def test_child_restored_before_its_creation_uses_parent_snapshot(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = _split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["changes"][3]["ts"]  # seq 4, before the split at seq 6
    r = restore_partition(s, "p0002", at)
    assert r.source_snapshot_id == "p0000@3"
    assert r.as_of_seq == 4 and r.changes_replayed == 1
    assert rows_to_dict(r.table) == {"k60": b"k60@2", "k70": b"k70@4"}


def test_instant_before_first_snapshot_replays_from_empty(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = _split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    r = restore_partition(s, "p0001", log["changes"][1]["ts"])
    assert r.source_snapshot_id is None and r.as_of_seq == 2 and r.changes_replayed == 1
    assert rows_to_dict(r.table) == {"k10": b"k10@1"}
    before = restore_partition(s, "p0000", T0 - timedelta(days=1))
    assert before.as_of_seq == 0 and before.table.num_rows == 0


def test_instant_exactly_at_split(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = _split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["splits"][0]["split_ts"]
    for pid, lo, hi in (("p0000", None, None), ("p0001", None, "k50"), ("p0002", "k50", None)):
        r = restore_partition(s, pid, at)
        assert rows_to_dict(r.table) == fold(log["changes"], key_lo=lo, key_hi=hi, at=at)


def test_unknown_partition_and_naive_instant(tmp_path):
    from weaver.errors import InvalidTimepointError, UnknownPartitionError
    from weaver.pitr import restore_partition

    log, snaps = _split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    with pytest.raises(UnknownPartitionError, match="p0099"):
        restore_partition(s, "p0099", T0)
    with pytest.raises(InvalidTimepointError, match="timezone"):
        restore_partition(s, "p0000", datetime(2026, 1, 1, 12))


def test_restore_on_simulated_lake_matches_oracle(small_lake):
    from weaver.changelog import Lineage, read_changes
    from weaver.pitr import restore_partition

    s = _settings(str(small_lake))
    changes = read_changes(s).to_pylist()
    lineage = Lineage.load(s)
    for at in (changes[100]["ts"], changes[len(changes) // 2]["ts"], changes[-1]["ts"]):
        for p in lineage:
            r = restore_partition(s, p.partition_id, at, lineage=lineage)
            assert rows_to_dict(r.table) == fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=at)
