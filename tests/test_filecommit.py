"""weaver.core.filecommit: an instant's rows replaced (or deleted) through Arrow-written files.

Oracles are hand-built rows: what the table must hold after each write, compared as sets of
(state_id, instant, keys), plus the Delta log's own add/remove actions."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from weaver.core import faults, filecommit, storage
from weaver.core.errors import InvalidParameterError

NAME = storage.METRICS_STATE
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def rows(seq: int, parts: list[str], *, at: datetime = T0, tag: str = "") -> pa.Table:
    keys = [[f"{p}-k{i}{tag}" for i in range(3)] for p in parts]
    return pa.table({
        "state_id": [f"{p}@{seq}{tag}" for p in parts], "partition_id": parts,
        "as_of_ts": pa.array([at] * len(parts), storage.TS), "as_of_seq": pa.array([seq] * len(parts), pa.int64()),
        "log_first_ts": pa.array([T0 - timedelta(days=4)] * len(parts), storage.TS),
        "keys": pa.array(keys, pa.list_(pa.string())),
        "item_bytes": pa.array([[100 + i for i in range(3)] for _ in parts], pa.list_(pa.int64())),
    }, schema=storage.SCHEMAS[NAME])


def content(uri: str) -> set[tuple]:
    t = DeltaTable(uri).to_pyarrow_table()
    return {(r["state_id"], r["as_of_ts"], r["as_of_seq"], tuple(r["keys"])) for r in t.to_pylist()}


def expect(*tables: pa.Table) -> set[tuple]:
    return {(r["state_id"], r["as_of_ts"], r["as_of_seq"], tuple(r["keys"])) for t in tables for r in t.to_pylist()}


def parquet_files(uri: str) -> set[str]:
    return {f for f in os.listdir(uri) if f.endswith(".parquet")}


def last_actions(uri: str) -> tuple[list[dict], list[dict]]:
    log = os.path.join(uri, "_delta_log")
    last = sorted(f for f in os.listdir(log) if f.endswith(".json"))[-1]
    acts = [json.loads(line) for line in open(os.path.join(log, last))]
    return [a["add"] for a in acts if "add" in a], [a["remove"] for a in acts if "remove" in a]


def test_replace_keeps_other_instants_even_inside_a_mixed_file(tmp_path):
    uri = str(tmp_path / "ms")
    a, b = rows(1, ["p1", "p2"]), rows(2, ["p1", "p3"], at=T0 + timedelta(hours=1))
    write_deltalake(uri, pa.concat_tables([a, b]))  # one file holding two instants (as compaction leaves it)
    mixed = parquet_files(uri)
    assert len(mixed) == 1
    a2 = rows(1, ["p1", "p4", "p5"], tag="new")
    filecommit.replace_rows(uri, NAME, lambda: iter([a2.slice(0, 1), a2.slice(1)]),
                            match={"as_of_ts": T0, "as_of_seq": 1}, row_group_rows=1)
    assert content(uri) == expect(b, a2)
    adds, removes = last_actions(uri)
    assert [r["path"] for r in removes] == sorted(mixed)
    assert len(adds) == 2  # the new instant's file, and the mixed file's other instant rewritten
    for add in adds:
        st = json.loads(add["stats"])
        assert st["numRecords"] in (3, 2)
        seq = 1 if st["numRecords"] == 3 else 2
        assert st["minValues"]["as_of_seq"] == st["maxValues"]["as_of_seq"] == seq
    # A second replace of the same instant removes the instant's own file unread: no rewrite.
    a3 = rows(1, ["p9"], tag="third")
    filecommit.replace_rows(uri, NAME, lambda: iter([a3]), match={"as_of_ts": T0, "as_of_seq": 1})
    adds, removes = last_actions(uri)
    assert len(adds) == 1 and len(removes) == 1
    assert content(uri) == expect(b, a3)
    # delta-rs' reader skips files by the statistics written here and still finds every row.
    dt = DeltaTable(uri)
    got = storage.dataset(dt).to_table(filter=(pc.field("as_of_seq") == 2) & (
        pc.field("as_of_ts") == pa.scalar(T0 + timedelta(hours=1), storage.TS)))
    assert sorted(got.column("state_id").to_pylist()) == ["p1@2", "p3@2"]
    assert DeltaTable(uri).to_pyarrow_table(filters=[("partition_id", "=", "p9")]).num_rows == 1


def test_files_roll_at_their_size_and_row_groups_stay_small(tmp_path):
    uri = str(tmp_path / "ms")
    big = rows(7, [f"p{i:03d}" for i in range(200)])
    filecommit.replace_rows(uri, NAME, lambda: (big.slice(i, 10) for i in range(0, 200, 10)),
                            match={"as_of_ts": T0, "as_of_seq": 7}, row_group_rows=10, file_bytes=8 * 1024)
    import pyarrow.parquet as pq

    files = sorted(parquet_files(uri))
    assert len(files) > 1
    assert all(pq.ParquetFile(os.path.join(uri, f)).metadata.row_group(0).num_rows <= 10 for f in files)
    assert content(uri) == expect(big)
    adds, _ = last_actions(uri)
    assert sum(json.loads(a["stats"])["numRecords"] for a in adds) == 200
    assert {a["path"] for a in adds} == set(files)


def test_rows_of_another_instant_or_a_failing_stream_change_nothing(tmp_path):
    uri = str(tmp_path / "ms")
    a = rows(1, ["p1"])
    filecommit.replace_rows(uri, NAME, lambda: iter([a]), match={"as_of_ts": T0, "as_of_seq": 1})
    version, files = DeltaTable(uri).version(), parquet_files(uri)
    wrong = rows(2, ["p2"])
    with pytest.raises(InvalidParameterError, match="must all equal them"):
        filecommit.replace_rows(uri, NAME, lambda: iter([rows(1, ["p3"]), wrong]),
                                match={"as_of_ts": T0, "as_of_seq": 1}, row_group_rows=1)

    def broken():
        yield rows(1, ["p4"])
        raise OSError("source went away")

    with pytest.raises(OSError, match="source went away"):
        filecommit.replace_rows(uri, NAME, broken, match={"as_of_ts": T0, "as_of_seq": 1})
    assert DeltaTable(uri).version() == version
    assert parquet_files(uri) == files
    assert content(uri) == expect(a)


def test_a_writer_that_commits_first_is_replaced_not_doubled(tmp_path):
    """Another writer commits the same instant between this write's plan and its commit: the
    commit must not land blind (the instant's rows twice); it plans again and replaces them."""
    uri = str(tmp_path / "ms")
    other = rows(3, ["p1", "p2"], tag="other")
    mine = rows(3, ["p1", "p7"], tag="mine")
    keep = rows(4, ["p1"], at=T0 + timedelta(hours=1))
    filecommit.replace_rows(uri, NAME, lambda: iter([keep]), match={"as_of_ts": keep["as_of_ts"][0].as_py(),
                                                                     "as_of_seq": 4})
    fired = []

    def racer():
        if not fired:
            fired.append(True)
            filecommit.replace_rows(uri, NAME, lambda: iter([other]), match={"as_of_ts": T0, "as_of_seq": 3})

    with faults.hooked("filecommit.before_commit", racer):
        filecommit.replace_rows(uri, NAME, lambda: iter([mine]), match={"as_of_ts": T0, "as_of_seq": 3})
    assert fired
    assert content(uri) == expect(keep, mine)


def test_delete_rows_removes_instants_and_rewrites_only_mixed_files(tmp_path):
    uri = str(tmp_path / "ms")
    a, b, c = rows(1, ["p1"]), rows(2, ["p2"], at=T0 + timedelta(hours=1)), rows(3, ["p3"], at=T0 + timedelta(hours=2))
    write_deltalake(uri, pa.concat_tables([a, b]))  # mixed file
    filecommit.replace_rows(uri, NAME, lambda: iter([c]), match={"as_of_ts": T0 + timedelta(hours=2), "as_of_seq": 3})
    filecommit.delete_rows(uri, NAME, [{"as_of_ts": T0, "as_of_seq": 1},
                                       {"as_of_ts": T0 + timedelta(hours=2), "as_of_seq": 3}])
    assert content(uri) == expect(b)
    adds, removes = last_actions(uri)
    assert len(removes) == 2 and len(adds) == 1  # c's file removed unread; the mixed file rewritten
    version = DeltaTable(uri).version()
    filecommit.delete_rows(uri, NAME, [{"as_of_ts": T0, "as_of_seq": 1}])  # nothing left to delete
    assert DeltaTable(uri).version() == version


CHILD = """
import sys
from tests.test_filecommit import NAME, T0, rows
from weaver.core import filecommit
new = rows(5, ["p1", "p2", "p3"], tag="new")
filecommit.replace_rows(sys.argv[1], NAME, lambda: iter([new.slice(0, 2), new.slice(2)]),
                        match={"as_of_ts": T0, "as_of_seq": 5}, row_group_rows=1)
"""


def test_a_write_killed_before_its_commit_leaves_the_table_as_it_was(tmp_path, monkeypatch):
    """SIGKILL after the files are written, before the commit: a reader sees the old rows, the
    stray files are in no version, a rerun writes the new rows once, vacuum removes the strays."""
    import sys

    from tests.crash import kill_cmd

    uri = str(tmp_path / "ms")
    old = rows(5, ["p1", "p9"], tag="old")
    filecommit.replace_rows(uri, NAME, lambda: iter([old]), match={"as_of_ts": T0, "as_of_seq": 5})
    version, files = DeltaTable(uri).version(), parquet_files(uri)
    assert kill_cmd([sys.executable, "-c", CHILD, uri], "filecommit.before_commit") == "killed"
    stray = parquet_files(uri) - files
    assert stray  # the killed write's files exist ...
    assert DeltaTable(uri).version() == version and content(uri) == expect(old)  # ... and are in no version
    new = rows(5, ["p1", "p2", "p3"], tag="new")
    filecommit.replace_rows(uri, NAME, lambda: iter([new]), match={"as_of_ts": T0, "as_of_seq": 5})
    assert content(uri) == expect(new)
    # metrics' vacuum (full: files in no version too) keeps the strays for its grace, then removes them
    from weaver.predict import metrics

    metrics._vacuum_state(uri)
    assert stray <= parquet_files(uri)
    monkeypatch.setattr(metrics, "_STATE_FILE_GRACE_HOURS", 0)
    metrics._vacuum_state(uri)
    assert not stray & parquet_files(uri)
    assert content(uri) == expect(new)
