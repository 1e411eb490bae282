"""Reads of files whose Delta statistics leave a column's bounds unstated.

delta-rs gives each pyarrow fragment its file's statistics as a guarantee, and a bound the file
does not state as ``c >= null``; a filter on ``c`` then pruned the file and its rows were never
read. Every reader goes through ``storage.dataset``. Oracle: the rows of each data file read with
pyarrow.parquet directly (no Delta statistics involved), filtered in Python.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.test_log_end import X, _rows, _settings
from weaver.core import storage


def _add(uri: str, t: pa.Table, stats: dict | None, partition: dict | None = None) -> None:
    """Commit `t` as one file written by hand, with exactly the statistics `stats` (None: none)."""
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction

    part = partition or {}
    rel = "/".join([f"{k}={v}" for k, v in part.items()] + [f"part-hand-{uuid.uuid4()}.parquet"])
    Path(uri, rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t.drop_columns(list(part)), f"{uri}/{rel}")
    dt = DeltaTable(uri)
    dt.create_write_transaction(
        [AddAction(rel, Path(uri, rel).stat().st_size, part, int(time.time() * 1000), True,
                   None if stats is None else json.dumps(stats))], mode="append", schema=dt.schema())


def _seq_stats(t: pa.Table) -> dict:
    seqs = t.column("seq").to_pylist()
    return {"numRecords": t.num_rows, "minValues": {"seq": min(seqs)}, "maxValues": {"seq": max(seqs)},
            "nullCount": {"seq": 0}}


@pytest.fixture()
def mixed_log(tmp_path):
    """A change log of four files: delta-rs' own (every statistic), `seq` statistics only, a
    record count only, and no statistics at all; plus every row written (the oracle)."""
    from deltalake import write_deltalake

    s = _settings(tmp_path)
    uri = storage.uri_for(s, storage.CHANGELOG)
    a, b, c, d = _rows(1, [0, 400]), _rows(3, [800, 1200]), _rows(5, [1600]), _rows(6, [2000, 2400])
    write_deltalake(uri, a, mode="append")
    _add(uri, b, _seq_stats(b))
    _add(uri, c, {"numRecords": c.num_rows})
    _add(uri, d, None)
    rows = pa.concat_tables([pq.read_table(f) for f in sorted(Path(uri).glob("*.parquet"))]).to_pylist()
    assert len(rows) == 7
    return s, uri, rows


def _seqs(t: pa.Table) -> list[int]:
    return sorted(t.column("seq").to_pylist())


@pytest.mark.parametrize("us", [-1, 0, 500, 800, 1300, 2400])
def test_filtered_reads_find_rows_in_files_without_statistics(mixed_log, us):
    """ts, key and partition_id filters through storage.read and the change log's readers."""
    from weaver.log import ChangeLog, read_changes
    from weaver.predict.metrics import read_log

    s, uri, rows = mixed_log
    tp = X + timedelta(microseconds=us)
    upto = sorted(r["seq"] for r in rows if r["ts"] <= tp)
    before = sorted(r["seq"] for r in rows if r["ts"] < tp)
    assert _seqs(storage.read(uri, storage.CHANGELOG, filters=[("ts", "<=", pa.scalar(tp, storage.TS))])) == upto
    assert _seqs(read_changes(s, upto_ts=tp)) == upto
    log = ChangeLog(s)
    expr = pc.field("ts") < pa.scalar(tp, storage.TS)
    assert _seqs(log.pruned([("ts", "<", tp)]).to_table(filter=expr)) == before
    assert _seqs(log.ds.to_table(filter=expr)) == before
    assert sorted(read_log(s, upto=tp).seq.tolist()) == upto


def test_key_and_partition_filters_find_rows_in_files_without_statistics(mixed_log):
    from weaver.log import read_changes
    from weaver.predict.metrics import read_log

    s, uri, rows = mixed_log
    want = sorted(r["seq"] for r in rows if "k3" <= r["key"] < "k6")
    assert want == [3, 4, 5]
    assert _seqs(read_changes(s, key_lo="k3", key_hi="k6")) == want
    assert sorted(read_log(s, ranges=[("k3", "k6")]).seq.tolist()) == want
    assert _seqs(read_changes(s, partition_ids=["p"])) == [1, 2, 3, 4, 5, 6, 7]
    assert _seqs(read_changes(s, partition_ids=["q"])) == []


def test_stated_statistics_still_prune(mixed_log):
    """Only the files that leave a bound unstated lose their statistics: the delta-rs file, whose
    ts lie before 12:00:00.001, is not a candidate for a later ts filter; the others are."""
    s, uri, _ = mixed_log
    ds = storage.dataset(storage.open_table(uri, storage.CHANGELOG))
    later = pc.field("ts") > pa.scalar(X + timedelta(milliseconds=2), storage.TS)
    assert len(list(ds.get_fragments())) == 4
    assert len(list(ds.get_fragments(filter=later))) == 3


def test_a_partitioned_table_keeps_its_partition_values(tmp_path):
    """A remade fragment still fills its partition column, from the Delta log, and is pruned by it."""
    from deltalake import write_deltalake

    uri = str(tmp_path / "t")
    schema = pa.schema([("part", pa.string()), ("n", pa.int64()), ("v", pa.string())])
    write_deltalake(uri, pa.table({"part": ["a"], "n": [1], "v": ["x"]}, schema=schema), mode="append",
                    partition_by=["part"])
    _add(uri, pa.table({"part": ["b", "b"], "n": [2, 3], "v": ["y", "z"]}, schema=schema),
         {"numRecords": 2, "minValues": {"n": 2}, "maxValues": {"n": 3}, "nullCount": {"n": 0}}, {"part": "b"})
    ds = storage.dataset(storage.open_table(uri))
    got = ds.to_table(filter=pc.field("v") >= "y").sort_by("n").to_pylist()
    assert got == [{"part": "b", "n": 2, "v": "y"}, {"part": "b", "n": 3, "v": "z"}]
    assert ds.to_table(filter=pc.field("part") == "a").to_pylist() == [{"part": "a", "n": 1, "v": "x"}]
    assert len(list(ds.get_fragments(filter=pc.field("part") == "a"))) == 1
