"""The change log is validated window by window in bounded memory (issue 11, point 4).

The window budget is a module constant; these tests lower it so that a log of a few hundred
bytes crosses dozens of windows, and check that nothing a whole-segment check would catch is
lost at a window boundary: every named error keeps its seq and partition, and a valid segment
is counted exactly (the snapshots built after it are compared with the oracle fold in
tests/test_snapshots.py). The slow test crosses pyarrow's 2 GiB offset limit of one binary
column for real.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pytest

from tests.lakes import T0, make_log, write_lake
from tests.test_validation import CASES, _corrupt


def _settings(lake):
    from weaver.core.settings import load_settings

    return load_settings(lake=str(lake))


@pytest.fixture
def tiny_windows(monkeypatch):
    """A piece budget of a few changes (scan batches of 4 rows, a first window of one), and a
    record of every piece checked: (rows, bytes)."""
    from weaver.log import changelog

    monkeypatch.setattr(changelog, "SEGMENT_WINDOW_BYTES", 1024)  # pieces hold the narrow columns only
    monkeypatch.setattr(changelog, "STREAM_BATCH_ROWS", 4)
    monkeypatch.setattr(changelog, "FIRST_WINDOW_SEQS", 1)
    seen: list[tuple[int, int]] = []
    check = changelog.validate_changes

    def spy(piece, *a, **kw):
        seen.append((piece.num_rows, piece.nbytes))
        return check(piece, *a, **kw)

    monkeypatch.setattr(changelog, "validate_changes", spy)
    return seen


@pytest.mark.parametrize("layout", ["sorted_files", "interleaved_files", "one_shuffled_file"])
def test_pieces_cover_the_segment_exactly_in_bounded_pieces(tmp_path, tiny_windows, layout):
    """Files each sorted by seq take the one-pass merge; a file stored out of seq order the windows."""
    import random

    from weaver.log import Lineage, validate_segment

    log = make_log(11, n=300, keys=30)
    if layout == "sorted_files":
        lake = write_lake(tmp_path / "lake", log, log_chunk=37)  # pieces straddle file boundaries too
    elif layout == "interleaved_files":  # each file sorted, their seq ranges overlapping (a parallel writer)
        odd, even = [c for c in log["changes"] if c["seq"] % 2], [c for c in log["changes"] if not c["seq"] % 2]
        lake = write_lake(tmp_path / "lake", dict(log, changes=odd + even), log_chunk=len(odd))
    else:
        random.Random(1).shuffle(log["changes"])
        lake = write_lake(tmp_path / "lake", log)
    s = _settings(lake)
    n = len(log["changes"])
    assert validate_segment(s, Lineage.load(s), 0, n) == n
    assert validate_segment(s, Lineage.load(s), 100, 250) == 150
    assert len(tiny_windows) > 10
    assert sum(rows for rows, _ in tiny_windows) == n + 150  # each change checked once per call
    # A piece is the budget plus at most one scan batch (or a window sized from the last one's bytes).
    assert max(b for _, b in tiny_windows) <= 3 * 1024


@pytest.mark.parametrize("name,mutate,error,seq,pid", CASES, ids=[c[0] for c in CASES])
def test_every_named_error_survives_window_boundaries(tmp_path, tiny_windows, monkeypatch, name, mutate, error, seq,
                                                     pid):
    from weaver.core import errors
    from weaver.log import changelog
    from weaver.pitr import validate_for_snapshot

    monkeypatch.setattr(changelog, "SEGMENT_WINDOW_BYTES", 1)  # every scan batch / window is a piece

    log = _corrupt(mutate)
    lake = write_lake(tmp_path / "lake", log, log_chunk=2)
    with pytest.raises(getattr(errors, error)) as info:
        validate_for_snapshot(_settings(lake), max(c["ts"] for c in log["changes"]))
    assert info.value.seq == seq
    assert (f"after {seq - 1}" if error == "SeqGapError" else f"seq {seq}") in str(info.value)
    if pid is not None:
        assert info.value.partition_id == pid
    assert tiny_windows and max(rows for rows, _ in tiny_windows) <= 4  # it was found piece by piece


def test_gap_wider_than_a_window_and_missing_tail(tmp_path, tiny_windows):
    from weaver.core.errors import SeqGapError
    from weaver.log import validate_segment

    log = make_log(5, n=200, keys=20)
    holed = dict(log, changes=[c for c in log["changes"] if not 60 <= c["seq"] <= 140])
    s = _settings(write_lake(tmp_path / "holed", holed, log_chunk=25))
    with pytest.raises(SeqGapError, match="after 59: next is 141") as info:
        validate_segment(s, None, 10, 200)
    assert info.value.seq == 60
    # The segment asks for seqs the log does not hold at all: named, not an empty success.
    short = dict(log, changes=[c for c in log["changes"] if c["seq"] <= 120])
    s = _settings(write_lake(tmp_path / "short", short, log_chunk=25))
    with pytest.raises(SeqGapError, match="121"):
        validate_segment(s, None, 100, 150)


def test_the_pass_reads_no_values(tmp_path, monkeypatch):
    """The piece-by-piece pass holds the narrow columns only (values are most of a log's bytes);
    "a PUT carries a value" is checked apart, and a clean log still validates whole."""
    from weaver.log import Lineage, changelog, validate_segment

    seen: list[list[str]] = []
    check = changelog.validate_changes

    def spy(piece, *a, **kw):
        seen.append(piece.column_names)
        return check(piece, *a, **kw)

    monkeypatch.setattr(changelog, "validate_changes", spy)
    monkeypatch.setattr(changelog, "SEGMENT_WINDOW_BYTES", 1024)
    log = make_log(4, n=120, keys=20)
    s = _settings(write_lake(tmp_path / "lake", log, log_chunk=30))
    assert validate_segment(s, Lineage.load(s), 0, 120) == 120
    assert len(seen) > 3 and all("value" not in cols for cols in seen)


def _first_put_after(changes, seq):
    return next(c["seq"] for c in changes if c["seq"] > seq and c["op"] == "PUT")


@pytest.mark.parametrize("layout", ["files", "windows"])
@pytest.mark.parametrize("defects,named", [
    # (mutations of the log, the error expected and its seq): the earliest offending seq is named,
    # whether the PUT without a value (found by its own scan) or the pass's error comes first.
    ((("bare", 4), ("gap", 8)), ("UnknownOpError", 4)),
    ((("gap", 8), ("bare", 9)), ("SeqGapError", 8)),
    ((("back", 10), ("bare", 12)), ("NonMonotonicTimestampError", 10)),
    ((("bare", 3), ("misrouted", 9)), ("UnknownOpError", 3)),
    ((("misrouted", 9), ("bare", 12)), ("KeyOutOfRangeError", 9)),
], ids=["bare_before_gap", "gap_before_bare", "ts_before_bare", "bare_before_misrouted", "misrouted_before_bare"])
def test_two_defects_the_earlier_seq_is_named(tmp_path, monkeypatch, defects, named, layout):
    import copy

    from weaver.core import errors
    from weaver.log import Lineage, changelog, validate_segment
    from tests.lakes import split_log

    if layout == "windows":
        monkeypatch.setattr(changelog, "_validate_in_file_order", lambda *a: None)
    log, _ = split_log()
    log = copy.deepcopy(log)
    by_seq = {c["seq"]: c for c in log["changes"]}
    for kind, seq in defects:
        if kind == "bare":
            seq = seq if by_seq[seq]["op"] == "PUT" else _first_put_after(log["changes"], seq)
            by_seq[seq]["value"] = None
        elif kind == "gap":
            log["changes"] = [c for c in log["changes"] if c["seq"] != seq]
        elif kind == "back":
            by_seq[seq]["ts"] = by_seq[seq - 1]["ts"] - timedelta(seconds=5)
        elif kind == "misrouted":
            by_seq[seq]["partition_id"] = "p0001"  # key k90, p0001 holds [ , k50)
    assert by_seq[named[1]]["op"] == "PUT" or named[0] != "UnknownOpError"
    s = _settings(write_lake(tmp_path / "lake", log, log_chunk=4))
    with pytest.raises(getattr(errors, named[0])) as info:
        validate_segment(s, Lineage.load(s), 0, 12)
    assert info.value.seq == named[1]


def test_the_value_scan_reads_only_row_groups_that_can_hold_the_first_bare_put(tmp_path, monkeypatch):
    """One file of 16-row groups: a PUT without a value before the segment is not the segment's
    business, the earliest one inside it is named (not the later one), and row groups wholly
    before the segment are never read for values."""
    import copy

    import pyarrow.parquet as pq
    from deltalake import WriterProperties, write_deltalake

    from weaver.core import storage
    from weaver.core.errors import UnknownOpError
    from weaver.log import Lineage, validate_segment

    log = copy.deepcopy(make_log(4, n=200, keys=20, split_at=None))
    puts = [c for c in log["changes"] if c["op"] == "PUT"]
    early, named, later = (next(c for c in puts if c["seq"] >= s) for s in (30, 150, 185))
    for c in (early, named, later):
        c["value"] = None
    lake = tmp_path / "lake"
    write_lake(lake, {**log, "changes": []})
    write_deltalake(storage.table_uri(str(lake), storage.CHANGELOG),
                    pa.Table.from_pylist(log["changes"], schema=storage.SCHEMAS[storage.CHANGELOG]),
                    mode="overwrite", writer_properties=WriterProperties(max_row_group_size=16))
    groups_read: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, row_groups=None, columns=None, **kw):
        if columns and "value" in columns:
            groups_read.extend(row_groups)
        return real(self, *a, row_groups=row_groups, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    s = _settings(lake)
    with pytest.raises(UnknownOpError, match=f"PUT without a value at seq {named['seq']} ") as info:
        validate_segment(s, Lineage.load(s), 100, 200)
    assert info.value.partition_id == named["partition_id"]
    # Rows 0..99 are seqs 1..100: groups 0-5 end at or before seq 96, group 6 holds 97..112.
    assert groups_read and min(groups_read) == 6
    with pytest.raises(UnknownOpError, match=f"seq {early['seq']} "):
        validate_segment(s, Lineage.load(s), 0, 200)  # the earliest of three, in the whole log


def test_a_change_log_partitioned_by_partition_id_is_checked_through_its_dataset(tmp_path):
    """A user's change log stored with partition_id as a Delta partition column (kept in the path,
    not in the files): the files alone lack a column the checks read, so the value scan and the
    pass read through the table's dataset; a clean log validates and a PUT without a value is named
    with its partition."""
    import copy

    from deltalake import write_deltalake

    from tests.lakes import split_log
    from weaver.core import storage
    from weaver.core.errors import UnknownOpError
    from weaver.log import Lineage, validate_segment

    def lake(name, log):
        root = tmp_path / name
        write_lake(root, {**log, "changes": []})
        uri = storage.table_uri(str(root), storage.CHANGELOG)
        for i in range(0, 12, 4):  # three commits, each a file per partition
            write_deltalake(uri, pa.Table.from_pylist(log["changes"][i:i + 4], schema=storage.SCHEMAS[storage.CHANGELOG]),
                            mode="overwrite" if i == 0 else "append", partition_by=["partition_id"],
                            schema_mode="overwrite" if i == 0 else None)
        return _settings(root)

    log, _ = split_log()
    s = lake("clean", log)
    assert validate_segment(s, Lineage.load(s), 0, 12) == 12
    log = copy.deepcopy(log)
    bare = next(c for c in log["changes"] if c["op"] == "PUT" and c["seq"] >= 6)
    bare["value"] = None
    s = lake("bare", log)
    with pytest.raises(UnknownOpError, match=f"PUT without a value at seq {bare['seq']} ") as info:
        validate_segment(s, Lineage.load(s), 0, 12)
    assert info.value.partition_id == bare["partition_id"]


def test_a_put_without_a_value_in_a_file_rewritten_by_delta_rs(tmp_path):
    """A file delta-rs rewrote (UPDATE/DELETE/MERGE: string_view columns, which pyarrow's pushed-down
    filters cannot compare) is filtered in memory: a clean one validates, and a PUT without a value
    is named."""
    import copy

    from deltalake import DeltaTable

    from weaver.core import storage
    from weaver.core.errors import UnknownOpError
    from weaver.log import Lineage, validate_segment
    from tests.lakes import split_log

    import pyarrow.parquet as pq

    def rewritten(name, log):
        lake = write_lake(tmp_path / name, log)  # one file, rewritten whole
        uri = storage.table_uri(lake, storage.CHANGELOG)
        DeltaTable(uri).update(predicate="seq = 1", updates={"value_bytes": "value_bytes"})
        [f] = DeltaTable(uri).file_uris()
        assert any(pa.types.is_string_view(c.type) for c in pq.read_schema(f.removeprefix("file://")))
        return _settings(lake)

    log, _ = split_log()
    s = rewritten("clean", log)
    assert validate_segment(s, Lineage.load(s), 0, 12) == 12
    log = copy.deepcopy(log)
    log["changes"][3]["value"] = None  # seq 4, a PUT
    s = rewritten("bare", log)
    with pytest.raises(UnknownOpError, match="PUT without a value at seq 4") as info:
        validate_segment(s, Lineage.load(s), 0, 12)
    assert info.value.partition_id == "p0000"


@pytest.mark.slow
def test_a_segment_past_2_gib_of_values_validates(tmp_path):
    """2.2 GiB of values in one segment: one binary column of it would overflow int32 offsets."""
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.core.errors import SeqGapError
    from weaver.log import ChangeLog, validate_segment

    mib, n, per_file = 1 << 20, 2200, 100
    value = pa.array([b"v" * mib] * per_file, pa.binary())  # compresses to almost nothing on disk
    uri = storage.table_uri(str(tmp_path / "lake"), storage.CHANGELOG)
    for i in range(0, n, per_file):
        seqs = list(range(i + 1, i + per_file + 1))
        if i == n - per_file:
            seqs[-1] += 1  # the very last change leaves a gap: found after 2 GiB were checked
        write_deltalake(uri, pa.table({
            "seq": pa.array(seqs, pa.int64()),
            "ts": pa.array([T0 + timedelta(seconds=s) for s in seqs], storage.TS),
            "partition_id": pa.array(["p0000"] * per_file), "key": pa.array([f"k{s:06d}" for s in seqs]),
            "op": pa.array(["PUT"] * per_file), "value": value,
            "value_bytes": pa.array([mib] * per_file, pa.int64())}, schema=storage.SCHEMAS[storage.CHANGELOG]),
            mode="append")
    s = _settings(tmp_path / "lake")
    assert validate_segment(s, None, 0, n - 1) == n - 1
    # A whole read past 2 GiB comes back sorted, in chunks of the contract's 32-bit-offset types.
    t = ChangeLog(s).read(0, n + 1, columns=None)
    assert t.schema == storage.SCHEMAS[storage.CHANGELOG] and t.num_rows == n
    assert t.column("seq").to_pylist() == list(range(1, n)) + [n + 1]
    assert sum(len(v) for v in t.column("value").chunks[0].to_pylist()[:3]) == 3 * mib
    del t
    with pytest.raises(SeqGapError, match=f"after {n - 1}: next is {n + 1}"):
        validate_segment(s, None, 0, n + 1)


def test_wide_sort_keeps_rows_and_chunks_below_the_limit(monkeypatch):
    """The >2 GiB sort path (64-bit offsets, then chunks of the table's own schema), made to run
    on a small shuffled table by lowering its threshold; expected order built by hand."""
    import random

    from weaver.core import storage
    from weaver.log import changelog

    rows = [{"seq": s, "ts": T0 + timedelta(seconds=s), "partition_id": "p0000", "key": f"k{s:03d}",
             "op": "PUT" if s % 7 else "DELETE", "value": None if s % 7 == 0 else bytes([s % 251]) * (s % 50 + 1),
             "value_bytes": s % 50 + 1} for s in range(1, 201)]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    t = pa.Table.from_pylist(shuffled, schema=storage.SCHEMAS[storage.CHANGELOG])
    monkeypatch.setattr(changelog, "WIDE_SORT_BYTES", 4096)
    out = changelog.sort_by_seq(t)
    assert out.schema == t.schema
    assert out.to_pylist() == rows
    assert out.column("value").num_chunks > 1
    assert max(c.nbytes for c in out.column("value").chunks) <= 4096
    # Sorted batches in the wrong order (files of an append-only log): reordered whole.
    ordered = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.CHANGELOG])
    backwards = pa.Table.from_batches(list(reversed(ordered.to_batches(max_chunksize=30))))
    assert changelog.sort_by_seq(backwards).to_pylist() == rows


_ABANDON = """
import sys
from deltalake import DeltaTable
from weaver.core import storage
it = storage.dataset(DeltaTable(sys.argv[1])).to_batches(batch_size=1000)
print(next(it).num_rows, flush=True)
"""


def test_a_scan_dropped_mid_stream_leaves_a_clean_exit(tmp_path):
    """A read stopped early (a named error raised mid-scan, a first-batch peek) leaves Arrow's
    read-ahead in flight at interpreter exit. Through delta-rs' default Python filesystem handler
    that killed the process (SIGSEGV or std::terminate) after its work was done; local tables are
    read through Arrow's native filesystem. The rows read equal the rows written (paths with a
    space and URL-escaped partition values included)."""
    import subprocess
    import sys

    from deltalake import DeltaTable, write_deltalake

    from weaver.core import storage

    uri = str(tmp_path / "a table")
    for i in range(30):
        write_deltalake(uri, pa.table({"a": pa.array(range(i * 10_000, (i + 1) * 10_000), pa.int64()),
                                       "k": ["a b", "c%d", "e=f/g", "h"] * 2_500}),
                        mode="append", partition_by=["k"])
    got = storage.dataset(DeltaTable(uri)).to_table(columns=["a"]).column("a").to_pylist()
    assert sorted(got) == list(range(300_000))
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", _ABANDON, uri], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
        assert proc.stdout.strip() == "1000"
