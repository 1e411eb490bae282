"""Exactly once at the edges: late changes, two tables under one source name, complete_to that must
not move back, and damaged lakes - each refused by name with nothing written, or ingested exactly once.

Oracle: the test's own record of what each input holds - hand-built changelog rows and states (keys
written out in the documented encoding, docs/ingestion.md), hand-computed timestamps - and a hash of
every file under the lake to prove a refusal wrote nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from tests.ingest_helpers import lake_state, us, write_export
from tests.inject import crash_at
from weaver.core import storage
from weaver.core.errors import CorruptTableError, InvalidParameterError
from weaver.core.settings import load_settings
from weaver.ingest import ingest, load_watermark, read_ledger
from weaver.ingest.base import Batch, Change
from weaver.ingest.completeness import check_watermark
from weaver.ingest.debezium import DebeziumFile
from weaver.ingest.dynamodb import DynamoDBExport
from weaver.ingest.errors import ConflictingChangeError, IngestError, IngestStateError, StaleInputError

T = datetime(2026, 3, 1, 10, 0, 0, tzinfo=timezone.utc)
S = timedelta(seconds=1)
US = timedelta(microseconds=1)
# Encoded keys of the integer ids 1..5 (docs/ingestion.md, "number N": 0.d x 10^1 -> N2 5001 d .).
K = {i: f"N25001{i}." for i in range(1, 6)}


def tree(path: Path) -> str:
    """A hash of every file (name and bytes) under `path`, or of `path` itself when it is a file."""
    path = Path(path)
    h = hashlib.sha256()
    for p in sorted([path] if path.is_file() else (q for q in path.rglob("*") if q.is_file())):
        h.update(str(p.relative_to(path) if p != path else p.name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def log_rows(s) -> list[tuple]:
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).sort_by("seq")
    return [(r["seq"], r["key"], r["op"], r["ts"]) for r in log.to_pylist()]


# --- Debezium ------------------------------------------------------------------------------------
def ev(op: str, lsn: int, ts: datetime, row: dict | None, before: dict | None = None) -> dict:
    return {"op": op, "after": row, "before": before,
            "source": {"db": "shop", "schema": "public", "table": "items", "lsn": lsn,
                       "ts_us": us(ts), "ts_ms": us(ts) // 1000}}


def events(path: Path, *evs: dict) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    return path


def test_a_late_debezium_change_is_refused_not_skipped_as_a_duplicate(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    # a.json: id 1 at LSN 100, id 3 at 150, then at LSN 300 an update moving id 3 to id 5 (a DELETE
    # and a PUT at one position).
    a = events(tmp_path / "a.json", ev("c", 100, T + S, {"id": 1, "v": "a"}), ev("c", 150, T + 1.5 * S, {"id": 3}),
               ev("u", 300, T + 3 * S, {"id": 5}, before={"id": 3}))
    ingest(s, DebeziumFile(a, keys="id"))
    expected = [(1, K[1], "PUT", T + S), (2, K[3], "PUT", T + 1.5 * S), (3, K[3], "DELETE", T + 3 * S),
                (4, K[5], "PUT", T + 3 * S)]
    assert log_rows(s) == expected
    lake = tree(tmp_path / "lake")

    # b.json: a change at LSN 200, below the watermark (300) but never ingested, and one at 400.
    b = events(tmp_path / "b.json", ev("u", 200, T + 2 * S, {"id": 1, "v": "NEW"}, before={"id": 1}),
               ev("c", 400, T + 4 * S, {"id": 4}))
    with pytest.raises(StaleInputError, match=r"never ingested \(PUT of key 1 \(.*position 200/200\)") as exc:
        ingest(s, DebeziumFile(b, keys="id"))
    assert exc.typename == "LateChangeError"
    assert tree(tmp_path / "lake") == lake and log_rows(s) == expected

    # A re-delivery of LSN 300 (both of its changes are in the lake) with LSN 400: 300 is skipped.
    c = events(tmp_path / "c.json", ev("u", 300, T + 3 * S, {"id": 5}, before={"id": 3}),
               ev("c", 400, T + 4 * S, {"id": 4}))
    r = ingest(s, DebeziumFile(c, keys="id"))
    assert (r.duplicates_skipped, r.changes_written, r.first_seq, r.last_seq) == (2, 1, 5, 5)
    assert log_rows(s) == expected + [(5, K[4], "PUT", T + 4 * S)]


def test_a_truncate_of_an_empty_table_delivered_again_is_a_duplicate_and_a_late_one_that_deletes_is_refused(tmp_path):
    """A TRUNCATE that found the table empty left no row; delivered again it is held where no key
    was live at its place, and refused as late where one was (the oracle: the keys each input leaves
    live, written out by hand)."""
    s = load_settings(lake=str(tmp_path / "lake"))
    # id 1 put at LSN 100 and deleted at 150; at 200 a TRUNCATE of the now empty table; id 2 at 300.
    a = events(tmp_path / "a.json", ev("c", 100, T + S, {"id": 1}), ev("d", 150, T + 1.5 * S, None, before={"id": 1}),
               {**ev("t", 200, T + 2 * S, None), "after": None}, ev("c", 300, T + 3 * S, {"id": 2}))
    ingest(s, DebeziumFile(a, keys="id"))
    expected = [(1, K[1], "PUT", T + S), (2, K[1], "DELETE", T + 1.5 * S), (3, K[2], "PUT", T + 3 * S)]
    assert log_rows(s) == expected  # the TRUNCATE wrote nothing
    # Delivered again with id 4 at 400: the TRUNCATE at 200 and id 2 at 300 are duplicates.
    b = events(tmp_path / "b.json", ev("t", 200, T + 2 * S, None), ev("c", 300, T + 3 * S, {"id": 2}),
               ev("c", 400, T + 4 * S, {"id": 4}))
    r = ingest(s, DebeziumFile(b, keys="id"))
    assert (r.duplicates_skipped, r.changes_written) == (2, 1)
    expected.append((4, K[4], "PUT", T + 4 * S))
    assert log_rows(s) == expected
    assert lake_state(s, T + 4 * S) == {(2,): {"id": {"N": "2"}}, (4,): {"id": {"N": "4"}}}
    lake = tree(tmp_path / "lake")
    # A TRUNCATE at LSN 120 the lake never saw, when id 1 was live: late data, refused.
    c = events(tmp_path / "c.json", ev("t", 120, T + 1.2 * S, None), ev("c", 500, T + 5 * S, {"id": 5}))
    with pytest.raises(StaleInputError, match=r"never ingested \(TRUNCATE \(.*position 120/120\)") as exc:
        ingest(s, DebeziumFile(c, keys="id"))
    assert exc.typename == "LateChangeError"
    assert tree(tmp_path / "lake") == lake

    # A batch that is nothing but a TRUNCATE of an empty table writes no row; delivered again
    # (its place: the log as that batch's commit left it, id 2 and 4 deleted first) it is a duplicate.
    d = events(tmp_path / "d.json", ev("d", 600, T + 6 * S, None, before={"id": 2}),
               ev("d", 650, T + 6.5 * S, None, before={"id": 4}))
    ingest(s, DebeziumFile(d, keys="id"))
    e = events(tmp_path / "e.json", ev("t", 700, T + 7 * S, None))
    r = ingest(s, DebeziumFile(e, keys="id"))
    assert (r.changes_written, r.first_seq) == (0, None)
    again = events(tmp_path / "e2.json", ev("t", 700, T + 7 * S, None), ev("c", 800, T + 8 * S, {"id": 3}))
    r = ingest(s, DebeziumFile(again, keys="id"))
    assert (r.duplicates_skipped, r.changes_written, r.first_seq) == (1, 1, 7)
    assert lake_state(s, T + 8 * S) == {(3,): {"id": {"N": "3"}}}


# --- DynamoDB: a write microsecond does not identify a change --------------------------------------
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def item(pk: str, n: int) -> dict:
    return {"pk": {"S": pk}, "n": {"N": str(n)}}


def inc(root: Path, export_id: str, frm: datetime, to: datetime, writes: list[tuple[datetime, str, int]]) -> Path:
    lines = [{"Metadata": {"WriteTimestampMicros": {"N": str(us(t))}}, "Keys": {"pk": {"S": pk}},
              "NewImage": item(pk, n)} for t, pk, n in writes]
    return write_export(root, export_id, table="orders", export_type="INCREMENTAL_EXPORT", from_time=frm, to_time=to,
                        lines_per_file=[lines])


def test_dynamodb_changes_sharing_a_write_microsecond_are_told_apart_by_key(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    root = tmp_path / "bucket"
    full = write_export(root, "01-full", table="orders", export_type="FULL_EXPORT", export_time=T0,
                        lines_per_file=[[{"Item": item("a", 1)}]])
    ingest(s, DynamoDBExport(full, keys="pk"))
    # An incremental export overlapping the full export: a's write before T0 is in the snapshot's state.
    r = ingest(s, DynamoDBExport(inc(root, "02", T0 - 30 * M, T0 + H, [(T0 - 10 * M, "a", 1), (T0 + 10 * M, "b", 1)]),
                                 keys="pk"))
    assert (r.duplicates_skipped, r.changes_written) == (1, 1)
    t = T0 + H + 40 * M  # c and d written in the same microsecond
    r = ingest(s, DynamoDBExport(inc(root, "03", T0 + H, T0 + 2 * H, [(t, "c", 1), (t, "d", 1)]), keys="pk"))
    assert r.changes_written == 2
    lake = tree(tmp_path / "lake")

    # An overlapping export holding c and, at the very same microsecond, e - which the lake never had.
    late = inc(root, "04", T0 + H + 30 * M, T0 + 3 * H, [(t, "c", 1), (t, "e", 1), (T0 + 2 * H + 5 * M, "f", 1)])
    with pytest.raises(StaleInputError, match="PUT of key e ") as exc:
        ingest(s, DynamoDBExport(late, keys="pk"))
    assert exc.typename == "LateChangeError"
    assert tree(tmp_path / "lake") == lake

    # The same window holding c and d (both in the lake): a duplicate pair, f is new.
    ok = inc(root, "05", T0 + H + 30 * M, T0 + 3 * H, [(t, "c", 1), (t, "d", 1), (T0 + 2 * H + 5 * M, "f", 1)])
    r = ingest(s, DynamoDBExport(ok, keys="pk"))
    assert (r.duplicates_skipped, r.changes_written) == (2, 1)
    assert lake_state(s, t) == {(k,): item(k, 1) for k in "abcd"}
    assert lake_state(s, T0 + 3 * H - US) == {(k,): item(k, 1) for k in "abcdf"}



def test_a_lake_started_by_a_full_export_before_snapshots_were_recorded_takes_an_overlapping_incremental(tmp_path):
    """A ledger written before the `full` column existed cannot say its first batch was a full
    export: the changes at or below it are not checked (as before), so the first incremental export,
    which overlaps the full export's time, is not refused as late."""
    from deltalake import write_deltalake

    s = load_settings(lake=str(tmp_path / "lake"))
    root = tmp_path / "bucket"
    full = write_export(root, "01-full", table="orders", export_type="FULL_EXPORT", export_time=T0,
                        lines_per_file=[[{"Item": item("a", 1)}]])
    ingest(s, DynamoDBExport(full, keys="pk"))
    uri = storage.uri_for(s, storage.INGEST_WATERMARKS)
    old = storage.read(uri, storage.INGEST_WATERMARKS)
    write_deltalake(uri, old.drop_columns([c for c in ("identity", "full") if c in old.column_names]),
                    mode="overwrite", schema_mode="overwrite")
    r = ingest(s, DynamoDBExport(inc(root, "02", T0 - 30 * M, T0 + H, [(T0 - 10 * M, "a", 1), (T0 + 10 * M, "b", 1)]),
                                 keys="pk"))
    assert (r.duplicates_skipped, r.changes_written) == (1, 1)
    assert lake_state(s, T0 + H - US) == {("a",): item("a", 1), ("b",): item("b", 1)}


def test_records_an_input_repeats_count_as_duplicates(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    root = tmp_path / "bucket"
    w = [(T0 + M, "a", 1), (T0 + M, "a", 1), (T0 + 2 * M, "b", 1)]  # a's record delivered twice
    r = ingest(s, DynamoDBExport(inc(root, "01", T0, T0 + H, w), keys="pk"))
    assert (r.records_read, r.duplicates_skipped, r.changes_written) == (3, 1, 2)
    assert [(k, op) for _, k, op, _ in log_rows(s)] == [("S" + "a" + "\x00", "PUT"), ("S" + "b" + "\x00", "PUT")]


# --- the same change delivered again with another image -------------------------------------------
def test_a_debezium_change_delivered_again_with_another_image_is_refused_not_skipped(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    a = events(tmp_path / "a.json", ev("c", 100, T + S, {"id": 1, "v": "a"}), ev("c", 300, T + 3 * S, {"id": 3, "v": "c"}))
    ingest(s, DebeziumFile(a, keys="id"))
    expected = [(1, K[1], "PUT", T + S), (2, K[3], "PUT", T + 3 * S)]
    assert log_rows(s) == expected
    lake = tree(tmp_path / "lake")

    # LSN 300 again with another image of id 3 (the database restored from a backup and its history
    # written anew under the same LSNs), then a new change at 400: neither skipped nor appended.
    b = events(tmp_path / "b.json", ev("c", 300, T + 3 * S, {"id": 3, "v": "X"}), ev("c", 400, T + 4 * S, {"id": 4}))
    with pytest.raises(ConflictingChangeError, match=r"1 change\(s\) at or below the watermark .* with another item "
                       r"image \(PUT of key 3 \(.*position 300/300\) against seq 2\)"):
        ingest(s, DebeziumFile(b, keys="id"))
    assert tree(tmp_path / "lake") == lake and log_rows(s) == expected

    # The first input's positions, keys and ops again, one image changed: not the input already
    # ingested (that one is recognised and writes nothing), so it is refused as wholly below the
    # watermark - not skipped as a re-ingest.
    a2 = events(tmp_path / "a2.json", ev("c", 100, T + S, {"id": 1, "v": "CHANGED"}),
                ev("c", 300, T + 3 * S, {"id": 3, "v": "c"}))
    with pytest.raises(StaleInputError, match="not an input already ingested"):
        ingest(s, DebeziumFile(a2, keys="id"))
    assert tree(tmp_path / "lake") == lake
    assert ingest(s, DebeziumFile(a, keys="id")).changes_written == 0
    assert tree(tmp_path / "lake") == lake

    # Read again after the table gained a column (NULL in the old change's image): the same change,
    # a duplicate; 400 is new.
    c = events(tmp_path / "c.json", ev("c", 300, T + 3 * S, {"id": 3, "v": "c", "added": None}),
               ev("c", 400, T + 4 * S, {"id": 4}))
    r = ingest(s, DebeziumFile(c, keys="id"))
    assert (r.duplicates_skipped, r.changes_written) == (1, 1)
    assert log_rows(s) == expected + [(3, K[4], "PUT", T + 4 * S)]


def test_images_are_compared_with_the_sources_own_changes_only(tmp_path):
    """Two sources in one lake at the same LSNs, their batches interleaved: a redelivery of one is
    compared with its own rows, never with the other source's change of the same key there."""
    s = load_settings(lake=str(tmp_path / "lake"))
    a1 = events(tmp_path / "a1.json", ev("c", 100, T + S, {"id": 1, "v": "a"}))
    b1 = events(tmp_path / "b1.json", ev("c", 100, T + 2 * S, {"id": 1, "v": "b"}))
    a2 = events(tmp_path / "a2.json", ev("c", 300, T + 3 * S, {"id": 3, "v": "a"}))
    b2 = events(tmp_path / "b2.json", ev("c", 300, T + 4 * S, {"id": 3, "v": "b"}))
    for path, name in ((a1, "a"), (b1, "b"), (a2, "a"), (b2, "b")):
        ingest(s, DebeziumFile(path, keys="id", name=name))
    assert [(q, k) for q, k, _, _ in log_rows(s)] == [(1, K[1]), (2, K[1]), (3, K[3]), (4, K[3])]
    # a's LSNs 100 and 300 again with a's images, then 400: both held (seqs 1 and 3), 400 written.
    again = events(tmp_path / "a3.json", ev("c", 100, T + S, {"id": 1, "v": "a"}),
                   ev("c", 300, T + 3 * S, {"id": 3, "v": "a"}), ev("c", 400, T + 5 * S, {"id": 4}))
    r = ingest(s, DebeziumFile(again, keys="id", name="a"))
    assert (r.duplicates_skipped, r.changes_written, r.first_seq) == (2, 1, 5)
    lake = tree(tmp_path / "lake")
    # b's images under a's name: a conflict with a's own rows (seqs 1 and 3), not b's (2 and 4).
    swapped = events(tmp_path / "a4.json", ev("c", 100, T + S, {"id": 1, "v": "b"}),
                     ev("c", 300, T + 3 * S, {"id": 3, "v": "b"}), ev("c", 500, T + 6 * S, {"id": 5}))
    with pytest.raises(ConflictingChangeError, match=r"2 change\(s\) .*PUT of key 1 \(.*\) against seq 1; "
                                                     r"PUT of key 3 \(.*\) against seq 3\)"):
        ingest(s, DebeziumFile(swapped, keys="id", name="a"))
    assert tree(tmp_path / "lake") == lake


def test_a_debezium_input_committed_before_fingerprints_covered_images_is_still_a_re_ingest(tmp_path):
    """A lake whose ledger holds the older fingerprint (positions, keys and ops, written out here as
    those versions computed it) recognises that input again and writes nothing."""
    from deltalake import write_deltalake

    s = load_settings(lake=str(tmp_path / "lake"))
    a = events(tmp_path / "a.json", ev("c", 100, T + S, {"id": 1, "v": "a"}), ev("c", 300, T + 3 * S, {"id": 3, "v": "c"}))
    ingest(s, DebeziumFile(a, keys="id"))
    old = "debezium:" + hashlib.sha256(f"(100, 100)|{K[1]}|PUT|(300, 300)|{K[3]}|PUT|".encode()).hexdigest()
    uri = storage.uri_for(s, storage.INGEST_WATERMARKS)
    ledger = storage.read(uri, storage.INGEST_WATERMARKS)
    assert ledger.num_rows == 1 and ledger.column("fingerprint")[0].as_py() != old
    write_deltalake(uri, ledger.set_column(ledger.schema.get_field_index("fingerprint"), "fingerprint",
                                           pa.array([old], ledger.schema.field("fingerprint").type)),
                    mode="overwrite")
    lake = tree(tmp_path / "lake")
    r = ingest(s, DebeziumFile(a, keys="id"))
    assert (r.changes_written, r.duplicates_skipped) == (0, 2)
    assert tree(tmp_path / "lake") == lake


def test_a_dynamodb_record_delivered_again_with_another_image_is_refused(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    root = tmp_path / "bucket"
    ingest(s, DynamoDBExport(inc(root, "01", T0, T0 + H, [(T0 + M, "a", 1), (T0 + 2 * M, "b", 1)]), keys="pk"))
    lake = tree(tmp_path / "lake")
    # A retried export of the same window and the next hour: b's record at its write time holds n=2.
    again = inc(root, "02", T0, T0 + 2 * H, [(T0 + M, "a", 1), (T0 + 2 * M, "b", 2), (T0 + H + M, "c", 1)])
    with pytest.raises(ConflictingChangeError, match=r"PUT of key b \(.*\) against seq 2\)"):
        ingest(s, DynamoDBExport(again, keys="pk"))
    assert tree(tmp_path / "lake") == lake
    ok = inc(root, "03", T0, T0 + 2 * H, [(T0 + M, "a", 1), (T0 + 2 * M, "b", 1), (T0 + H + M, "c", 1)])
    r = ingest(s, DynamoDBExport(ok, keys="pk"))
    assert (r.duplicates_skipped, r.changes_written) == (2, 1)
    assert lake_state(s, T0 + 2 * H - US) == {(k,): item(k, 1) for k in "abc"}


# --- two tables under one source name -------------------------------------------------------------
@dataclass
class Stub:
    """A source handing the writer the batches a test built (positions are ints, one per change)."""

    batches: list[Batch]
    source: str = "stub:orders"
    keys: list[str] = field(default_factory=lambda: ["id"])

    def read(self, since, progress=None) -> Batch:
        return self.batches.pop(0)

    def describe(self, pos) -> str:
        return f"position {pos[0]}"

    def contiguous(self, watermark, start) -> bool:
        return start[0] <= watermark[0] + 1


def batch(lo: int, hi: int, *, identity: str | None = None, complete_to: datetime | None = None,
          at: dict[int, datetime] | None = None, empty: bool = False) -> Batch:
    """The input covering positions lo..hi: a PUT of id p at T + p seconds (or at `at[p]`) at each
    position, or no change at all (`empty`: a window in which nothing was written)."""
    at = at or {}
    changes = [] if empty else [Change((p,), K[p], "PUT", json.dumps({"id": {"N": str(p)}}).encode(),
                                       at.get(p, T + p * S)) for p in range(lo, hi + 1)]
    return Batch(source="stub:orders", changes=changes, start=(lo,), end=(hi,),
                 complete_to=complete_to or changes[-1].source_ts, fingerprint=f"stub:{identity}:{lo}-{hi}:{empty}",
                 records_read=len(changes), identity=identity)


def test_a_second_table_under_one_source_name_is_refused_and_needs_its_own_name(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    ingest(s, Stub([batch(1, 2, identity="table-eu")]))
    lake = tree(tmp_path / "lake")
    with pytest.raises(IngestError, match="--name") as exc:
        ingest(s, Stub([batch(3, 4, identity="table-us")]))
    assert exc.typename == "SourceIdentityError" and "table-eu" in str(exc.value) and "table-us" in str(exc.value)
    assert tree(tmp_path / "lake") == lake
    r = ingest(s, Stub([batch(3, 4, identity="table-eu")]))  # the first table's next input goes on
    assert (r.first_seq, r.last_seq) == (3, 4)


def test_the_identity_is_rebuilt_with_a_ledger_row_a_crash_lost(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    with crash_at("ingest.after_changelog"):
        ingest(s, Stub([batch(1, 2, identity="table-eu")]))
    assert read_ledger(s).num_rows == 0  # the commit carries the identity; the ledger missed it
    lake = tree(tmp_path / "lake")
    with pytest.raises(IngestError, match="--name") as exc:
        ingest(s, Stub([batch(3, 4, identity="table-us")]))
    assert exc.typename == "SourceIdentityError"
    # Refused: nothing written, not even the lost ledger row (it is rebuilt for the check only).
    assert tree(tmp_path / "lake") == lake and read_ledger(s).num_rows == 0
    r = ingest(s, Stub([batch(3, 4, identity="table-eu")]))
    assert (r.batch, r.first_seq, r.last_seq) == (2, 3, 4)
    ledger = read_ledger(s).sort_by("batch")
    assert ledger.column("batch").to_pylist() == [1, 2]
    assert ledger.column("identity").to_pylist() == ["table-eu", "table-eu"]
    assert ledger.column("first_seq").to_pylist() == [1, 3]


def test_the_same_input_again_after_a_crash_writes_back_the_lost_ledger_row(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    with crash_at("ingest.after_changelog"):
        ingest(s, Stub([batch(1, 2, identity="table-eu")]))
    assert read_ledger(s).num_rows == 0
    r = ingest(s, Stub([batch(1, 2, identity="table-eu")]))
    assert (r.changes_written, r.first_seq, r.last_seq) == (0, 1, 2)
    assert read_ledger(s).select(["batch", "first_seq", "last_seq"]).to_pylist() == [
        {"batch": 1, "first_seq": 1, "last_seq": 2}]


def test_a_source_recorded_before_identities_adopts_the_first_it_sees(tmp_path):
    from deltalake import write_deltalake

    s = load_settings(lake=str(tmp_path / "lake"))
    ingest(s, Stub([batch(1, 1, identity=None)]))
    # The ledger as a lake from before the identity (and full) columns holds it.
    uri = storage.uri_for(s, storage.INGEST_WATERMARKS)
    old = storage.read(uri, storage.INGEST_WATERMARKS)
    write_deltalake(uri, old.drop_columns([c for c in ("identity", "full") if c in old.column_names]),
                    mode="overwrite", schema_mode="overwrite")
    assert "identity" not in pa.schema(storage.open_table(uri).schema().to_arrow()).names

    ingest(s, Stub([batch(2, 2, identity="table-eu")]))  # adopted
    ingest(s, Stub([batch(3, 3, identity=None)]))  # an input that tells none keeps it
    with pytest.raises(IngestError, match="--name") as exc:
        ingest(s, Stub([batch(4, 4, identity="table-us")]))
    assert exc.typename == "SourceIdentityError"
    assert [r[0] for r in log_rows(s)] == [1, 2, 3]
    assert read_ledger(s).sort_by("batch").column("identity").to_pylist() == [None, "table-eu", "table-eu"]


def commit(uri: str, ids: list[int]) -> None:
    """One Delta commit inserting rows (id, "v<id>") into `uri` (created, with its change feed on)."""
    from deltalake import write_deltalake

    write_deltalake(uri, pa.table({"id": ids, "v": [f"v{i}" for i in ids]}), mode="append",
                    configuration={"delta.enableChangeDataFeed": "true"})


def test_two_delta_tables_of_one_name_do_not_share_a_watermark(tmp_path):
    from decimal import Decimal

    from weaver.ingest.delta_cdf import DeltaCDF

    s = load_settings(lake=str(tmp_path / "lake"))
    eu, us_ = str(tmp_path / "eu" / "orders"), str(tmp_path / "us" / "orders")
    for ids in ([1, 2], [3]):
        commit(eu, ids)
    for ids in ([100], [101], [102], [103]):
        commit(us_, ids)
    r = ingest(s, DeltaCDF(eu, keys="id"))
    assert (r.source, r.new_watermark, r.changes_written) == ("delta-cdf:orders", "version 1", 3)
    lake = tree(tmp_path / "lake")
    with pytest.raises(IngestError, match="--name") as exc:
        ingest(s, DeltaCDF(us_, keys="id"))  # also `delta-cdf:orders`: its versions 0 and 1 would be skipped
    assert exc.typename == "SourceIdentityError"
    assert tree(tmp_path / "lake") == lake
    r = ingest(s, DeltaCDF(us_, keys="id", name="us-orders"))
    assert (r.changes_written, r.duplicates_skipped) == (4, 0)
    # The eu table read again from version 0 (versions 0 and 1 are in the lake) up to its new
    # version 2: a version holds many keys, so its changes are matched by version, key and op.
    commit(eu, [4])
    r = ingest(s, DeltaCDF(eu, keys="id", starting_version=0))
    assert (r.duplicates_skipped, r.changes_written) == (3, 1)
    assert lake_state(s, datetime.now(timezone.utc)) == {
        (Decimal(i),): {"id": {"N": str(i)}, "v": {"S": f"v{i}"}} for i in (1, 2, 3, 4, 100, 101, 102, 103)}


# --- complete_to ---------------------------------------------------------------------------------
def test_complete_to_never_moves_back(tmp_path):
    # The doc's example: batch 1 commits at 10:00:05, batch 2's transaction (a later LSN) at 10:00:03.
    s = load_settings(lake=str(tmp_path / "lake"))
    src = "debezium:shop.public.items"
    r1 = ingest(s, DebeziumFile(events(tmp_path / "c1.json", ev("c", 120, T + 5 * S, {"id": 1})), keys="id"))
    assert r1.complete_to == T + 5 * S
    assert check_watermark(s, src, T + 5 * S).complete_to == T + 5 * S
    r2 = ingest(s, DebeziumFile(events(tmp_path / "c2.json", ev("c", 160, T + 3 * S, {"id": 2})), keys="id"))
    assert r2.complete_to == T + 5 * S
    assert check_watermark(s, src, T + 5 * S).complete_to == T + 5 * S  # still complete up to 10:00:05
    assert read_ledger(s).sort_by("batch").column("complete_to").to_pylist() == [T + 5 * S, T + 5 * S]
    assert log_rows(s) == [(1, K[1], "PUT", T + 5 * S), (2, K[2], "PUT", T + 5 * S + US)]


def test_a_change_never_lands_at_or_below_an_instant_once_reported_complete(tmp_path):
    s = load_settings(lake=str(tmp_path / "lake"))
    # Batch 1 vouches for 10:00:05 (its change is at 10:00:01); batch 2, an empty window, reports
    # an earlier instant; batch 3's change has source time 10:00:04.
    ingest(s, Stub([batch(1, 1, complete_to=T + 5 * S)]))
    ingest(s, Stub([batch(2, 2, empty=True, complete_to=T + 3 * S)]))
    ingest(s, Stub([batch(3, 3, at={3: T + 4 * S})]))
    assert log_rows(s) == [(1, K[1], "PUT", T + S), (2, K[3], "PUT", T + 5 * S + US)]
    assert load_watermark(s, "stub:orders").complete_to == T + 5 * S
    assert lake_state(s, T + 5 * S) == {(1,): {"id": {"N": "1"}}}  # what was complete at 10:00:05 stays


# --- damaged lakes -------------------------------------------------------------------------------
@pytest.fixture()
def two_batch_inputs(tmp_path):
    d1 = events(tmp_path / "d1.json", ev("c", 100, T, {"id": 1}))
    d2 = events(tmp_path / "d2.json", ev("c", 200, T + 5 * S, {"id": 2}))
    s = load_settings(lake=str(tmp_path / "lake"))
    ingest(s, DebeziumFile(d1, keys="id"))
    return s, tmp_path / "lake", d2


def test_a_changelog_that_lost_its_delta_log_is_refused(two_batch_inputs):
    s, lake, d2 = two_batch_inputs
    shutil.rmtree(lake / "changelog" / "_delta_log")
    before = tree(lake)
    with pytest.raises(CorruptTableError, match="no Delta log"):
        ingest(s, DebeziumFile(d2, keys="id"))
    assert tree(lake) == before


def test_a_deleted_changelog_with_ledger_rows_is_refused(two_batch_inputs):
    s, lake, d2 = two_batch_inputs
    shutil.rmtree(lake / "changelog")
    before = tree(lake)
    with pytest.raises(IngestStateError, match="no changelog"):
        ingest(s, DebeziumFile(d2, keys="id"))
    with pytest.raises(IngestStateError, match="no changelog"):
        check_watermark(s, "debezium:shop.public.items", T)
    assert tree(lake) == before


def _corrupt_data(lake: Path) -> None:
    for p in (lake / "changelog").glob("*.parquet"):
        p.write_bytes(b"garbage")


def _drop_data(lake: Path) -> None:
    for p in (lake / "changelog").glob("*.parquet"):
        p.unlink()


def _corrupt_ingest_log(lake: Path) -> None:
    (lake / "ingest_log" / "_delta_log" / "00000000000000000000.json").write_text("{oops")


def _drop_ingest_log(lake: Path) -> None:
    shutil.rmtree(lake / "ingest_log" / "_delta_log")


def _lake_is_a_file(lake: Path) -> None:
    shutil.rmtree(lake)
    lake.write_text("not a lake\n")


@pytest.mark.parametrize("damage,error,match", [
    (_corrupt_data, CorruptTableError, "changelog .*cannot be read"),
    (_drop_data, CorruptTableError, "changelog .*cannot be read"),
    (_corrupt_ingest_log, CorruptTableError, "ingest_log .*cannot be opened"),
    (_drop_ingest_log, IngestStateError, "no ingest_log"),
    (_lake_is_a_file, InvalidParameterError, "is a file"),
])
def test_a_damaged_lake_is_refused_by_name_and_nothing_is_written(two_batch_inputs, damage, error, match):
    s, lake, d2 = two_batch_inputs
    damage(lake)
    before = tree(lake)
    with pytest.raises(error, match=match):
        ingest(s, DebeziumFile(d2, keys="id"))
    assert tree(lake) == before


def test_the_cli_exits_2_with_a_named_error_for_a_lake_that_is_a_file(two_batch_inputs):
    from typer.testing import CliRunner

    from weaver.cli import app

    s, lake, d2 = two_batch_inputs
    _lake_is_a_file(lake)
    res = CliRunner().invoke(app, ["ingest", "--source", "debezium", "--input", str(d2), "--keys", "id",
                                   "--lake", str(lake), "--json"])
    assert res.exit_code == 2, res.output
    err = json.loads(res.stdout.strip().splitlines()[-1])
    assert err["error"] == "InvalidParameterError" and "is a file" in err["message"]
    assert lake.read_text() == "not a lake\n"
