"""The shared writer: ordering and the timestamp rule, continuing an existing lake, routing by lineage."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.ingest_helpers import EPOCH, lake_state
from weaver.core import storage
from weaver.log import Lineage
from weaver.ingest import ingest
from weaver.ingest.debezium import DebeziumFile
from weaver.core.settings import load_settings

T = datetime(2026, 5, 1, 10, 0, 0, tzinfo=timezone.utc)


def ev(op, lsn, commit, ts, row, before=None):
    us = (ts - EPOCH) // timedelta(microseconds=1)
    return {"before": before, "after": row if op != "d" else None, "op": op, "ts_ms": us // 1000,
            "source": {"lsn": lsn, "ts_ms": us // 1000, "ts_us": us, "db": "d", "schema": "s", "table": "t",
                       "txId": commit, "snapshot": "false", "sequence": json.dumps([str(commit), str(lsn)])}}


def test_commit_times_stepping_back_are_carried_forward_and_kept(tmp_path):
    # Commit order (commit LSN) A < B < C, but B's commit time is 2 s before A's (concurrent commits).
    a, b, c = T + timedelta(seconds=5), T + timedelta(seconds=3), T + timedelta(seconds=7)
    events = [ev("c", 150, 160, b, {"id": 2, "v": "b"}),  # B's event LSN is lower than A's: interleaved
              ev("c", 110, 120, a, {"id": 1, "v": "a"}),
              ev("u", 170, 180, c, {"id": 2, "v": "b2"})]
    f = tmp_path / "ev.json"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert r.ts_carried_forward == 1
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).sort_by("seq").to_pylist()
    # Hand-computed: commit-LSN order, ts = running max of commit times.
    assert [(x["seq"], x["ts"]) for x in log] == [(1, a), (2, a), (3, c)]
    src = storage.read(storage.uri_for(s, storage.INGEST_LOG), storage.INGEST_LOG).sort_by("seq")
    assert src.column("source_ts").to_pylist() == [a, b, c]  # the source's own times are kept
    assert src.column("position").to_pylist() == ["120/110", "160/150", "180/170"]
    assert lake_state(s, b) == {}  # B only becomes visible with A, at A's commit time
    assert {k[0] for k in lake_state(s, a)} == {1, 2}
    assert lake_state(s, c)[(2,)]["v"] == {"S": "b2"}


def test_ingest_continues_an_existing_lake_and_routes_by_its_lineage(lake_copy, tmp_path):
    s = load_settings(lake=str(lake_copy))
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    last_seq = int(pc.max(log.column("seq")).as_py())
    last_ts = pc.max(log.column("ts")).as_py()
    events = [ev("c", 10 + i, 10 + i, last_ts - timedelta(minutes=1) + timedelta(seconds=i), {"id": f"k{i}"})
              for i in range(4)]
    f = tmp_path / "ev.json"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    r = ingest(s, DebeziumFile(f, keys="id", name="extra"))
    assert (r.first_seq, r.last_seq) == (last_seq + 1, last_seq + 4)
    new = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG,
                       filters=[("seq", ">", last_seq)]).sort_by("seq").to_pylist()
    lineage = Lineage.load(s)
    for row in new:
        k = row["key"]
        owner = [p.partition_id for p in lineage.active() if p.key_lo <= k and (p.key_hi is None or k < p.key_hi)]
        assert [row["partition_id"]] == owner
        assert row["ts"] >= last_ts  # never before the lake's last change
    assert r.ts_carried_forward == 4  # all four source times lie before the lake's last ts


def test_an_update_that_changes_the_key_deletes_the_old_key(tmp_path):
    events = [ev("c", 10, 10, T, {"id": 1, "v": "a"}),
              ev("u", 20, 20, T + timedelta(seconds=1), {"id": 5, "v": "a"}, before={"id": 1})]
    f = tmp_path / "ev.json"
    f.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert r.changes_written == 3  # c, then DELETE of id 1 and PUT of id 5 at the update's position
    assert lake_state(s, T) == {(1,): {"id": {"N": "1"}, "v": {"S": "a"}}}
    assert lake_state(s, T + timedelta(seconds=1)) == {(5,): {"id": {"N": "5"}, "v": {"S": "a"}}}


def test_a_later_batch_never_lands_at_or_before_a_reported_complete_to(tmp_path):
    # Batch 1 (commit A at T+5 s) reports complete_to = T+5 s. Batch 2's transaction B commits later
    # (higher commit LSN) with a commit time 2 s earlier: it must land after T+5 s, not at it.
    a, b = T + timedelta(seconds=5), T + timedelta(seconds=3)
    f1, f2 = tmp_path / "a.json", tmp_path / "b.json"
    f1.write_text(json.dumps(ev("c", 110, 120, a, {"id": 1, "v": "a"})) + "\n")
    f2.write_text(json.dumps(ev("c", 150, 160, b, {"id": 2, "v": "b"})) + "\n")
    s = load_settings(lake=str(tmp_path / "lake"))
    r1 = ingest(s, DebeziumFile(f1, keys="id"))
    assert r1.complete_to == a
    r2 = ingest(s, DebeziumFile(f2, keys="id"))
    assert r2.ts_carried_forward == 1
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).sort_by("seq").to_pylist()
    assert [(x["seq"], x["ts"]) for x in log] == [(1, a), (2, a + timedelta(microseconds=1))]
    # What was reported complete up to T+5 s is unchanged by the later batch.
    assert lake_state(s, a) == {(1,): {"id": {"N": "1"}, "v": {"S": "a"}}}


def _user_lake(tmp_path, changelog):
    """A lake written by the user's own producer: one partition, `changelog` as given."""
    from deltalake import write_deltalake

    s = load_settings(lake=str(tmp_path / "lake"))
    write_deltalake(storage.uri_for(s, storage.CHANGELOG), changelog)
    storage.overwrite(storage.uri_for(s, storage.PARTITIONS), storage.PARTITIONS, pa.Table.from_pylist(
        [{"partition_id": "p0000", "key_lo": "", "key_hi": None, "parent_id": None, "created_seq": 0,
          "created_ts": T - timedelta(days=1), "retired_seq": None, "retired_ts": None}],
        schema=storage.SCHEMAS[storage.PARTITIONS]))
    f = tmp_path / "ev.json"
    f.write_text(json.dumps(ev("c", 10, 10, T + timedelta(seconds=1), {"id": "b"})) + "\n")
    return s, f


def _user_log(ts_type=pa.timestamp("us", tz="UTC"), extra=None):
    cols = {"seq": pa.array([1], pa.int64()), "ts": pa.array([T], ts_type), "partition_id": ["p0000"],
            "key": ["Sa\x00"], "op": ["PUT"], "value": pa.array([b"{}"], pa.binary()),
            "value_bytes": pa.array([2], pa.int64())}
    t = pa.table(cols)
    if extra is not None:
        t = t.append_column(extra, pa.array(["x"], pa.string()))
    return t


def test_a_user_log_with_naive_ts_is_refused_by_name_and_nothing_is_written(tmp_path):
    from tests.ingest_helpers import lake_fingerprint
    from weaver.core.errors import SchemaMismatchError

    s, f = _user_lake(tmp_path, _user_log(ts_type=pa.timestamp("us")))  # ts without a zone
    before = lake_fingerprint(s)
    with pytest.raises(SchemaMismatchError, match="ts"):
        ingest(s, DebeziumFile(f, keys="id"))
    assert lake_fingerprint(s) == before


def test_a_user_log_with_an_extra_nullable_column_gets_nulls_there(tmp_path):
    s, f = _user_lake(tmp_path, _user_log(extra=pa.field("note", pa.string(), nullable=True)))
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert (r.first_seq, r.last_seq) == (2, 2)
    from deltalake import DeltaTable

    rows = DeltaTable(storage.uri_for(s, storage.CHANGELOG)).to_pyarrow_table().sort_by("seq").to_pylist()
    assert [(x["seq"], x["key"], x["note"]) for x in rows] == [(1, "Sa\x00", "x"), (2, "Sb\x00", None)]
    assert lake_state(s, T + timedelta(seconds=1)) == {("a",): {}, ("b",): {"id": {"S": "b"}}}


def test_a_user_log_with_an_extra_required_column_is_refused_by_name_and_nothing_is_written(tmp_path):
    from tests.ingest_helpers import lake_fingerprint
    from weaver.core.errors import SchemaMismatchError

    log = _user_log(extra=pa.field("note", pa.string()))
    log = log.cast(pa.schema([*log.schema][:-1] + [pa.field("note", pa.string(), nullable=False)]))
    s, f = _user_lake(tmp_path, log)
    before = lake_fingerprint(s)
    with pytest.raises(SchemaMismatchError, match="note"):
        ingest(s, DebeziumFile(f, keys="id"))
    assert lake_fingerprint(s) == before


def test_truncate_deletes_keys_whose_last_change_vacuum_removed_from_the_log(tmp_path):
    from tests.lakes import write_lake
    from weaver.pitr import vacuum

    k1, k2, k3 = "N250011.", "N250012.", "N250013."  # ids 1, 2, 3 (docs/ingestion.md, key encoding)
    day = timedelta(days=1)

    def put(seq, ts, k, i):
        return {"seq": seq, "ts": ts, "partition_id": "p0000", "key": k, "op": "PUT",
                "value": json.dumps({"id": {"N": str(i)}}).encode(), "value_bytes": 14}

    log = {"changes": [put(1, T, k1, 1), put(2, T + day, k2, 2), put(3, T + 60 * day, k3, 3)],
           "partitions": [{"partition_id": "p0000", "key_lo": "", "key_hi": None, "parent_id": None,
                           "created_seq": 0, "created_ts": T - day, "retired_seq": None, "retired_ts": None}],
           "splits": []}
    s = load_settings(lake=write_lake(tmp_path / "lake", log, [2]), recovery_window=10 * day)
    vacuum(s, T + 62 * day)  # the snapshot at seq 2 covers the window: seq 1 (id 1's only change) goes
    assert sorted(storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
                  .column("seq").to_pylist()) == [2, 3]
    at = T + 63 * day
    f = tmp_path / "t.json"
    f.write_text(json.dumps({**ev("t", 40, 40, at, None), "after": None}) + "\n")
    r = ingest(s, DebeziumFile(f, keys="id"))
    assert (r.first_seq, r.last_seq, r.changes_written) == (4, 6, 3)
    rows = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG,
                        filters=[("seq", ">", 3)]).sort_by("seq").to_pylist()
    assert [(x["seq"], x["key"], x["op"], x["ts"]) for x in rows] == [
        (4, k1, "DELETE", at), (5, k2, "DELETE", at), (6, k3, "DELETE", at)]
    assert lake_state(s, at) == {}
