"""Spark writes, delta-rs reads (and back): the same rows and types through both engines."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

from weaver.core import storage
from weaver.core.spark import spark_schema

pytestmark = pytest.mark.spark


def _rows():
    t = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    return [
        {"weave_id": "w1", "woven_partition_id": "p1~w1~L", "source_partition_id": "p1", "timepoint": t,
         "as_of_seq": 7, "key": "k1", "value": b"\x00\x01binary"},
        {"weave_id": "w1", "woven_partition_id": "p1~w1~R", "source_partition_id": "p1", "timepoint": t,
         "as_of_seq": 7, "key": "k9", "value": None},
    ]


def test_spark_written_table_reads_identically_in_delta_rs(spark, tmp_path):
    uri = str(tmp_path / "woven_snapshots")
    rows = _rows()
    df = spark.createDataFrame([tuple(r.values()) for r in rows], schema=spark_schema(storage.WOVEN_SNAPSHOTS))
    df.write.format("delta").option("compression", "zstd").save(uri)
    from deltalake import DeltaTable

    dt = DeltaTable(uri)
    assert (dt.protocol().min_reader_version, dt.protocol().min_writer_version) == (1, 2)
    got = storage.read(uri, storage.WOVEN_SNAPSHOTS).sort_by("key").to_pylist()
    assert got == rows  # microseconds, UTC and binary survive


def test_delta_rs_written_table_reads_identically_in_spark(spark, tmp_path):
    uri = str(tmp_path / "snapshot_catalog")
    t = datetime(2026, 2, 3, 4, 5, 6, 789, tzinfo=timezone.utc)
    rows = [{"snapshot_id": "p1@5", "partition_id": "p1", "as_of_seq": 5, "as_of_ts": t, "rows": 3, "bytes": 99,
             "created_at": t}]
    storage.merge(uri, storage.SNAPSHOT_CATALOG, pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]),
                  ["snapshot_id"])
    back = [r.asDict() for r in spark.read.format("delta").load(uri).collect()]
    assert len(back) == 1
    b = back[0]
    assert b["as_of_ts"].replace(tzinfo=timezone.utc) == t  # session time zone is UTC
    assert {k: v for k, v in b.items() if k not in ("as_of_ts", "created_at")} == \
        {k: v for k, v in rows[0].items() if k not in ("as_of_ts", "created_at")}


def test_version_as_of_matches_across_engines(spark, tmp_path):
    uri = str(tmp_path / "t")
    schema = spark_schema(storage.WOVEN_SNAPSHOTS)
    rows = _rows()
    spark.createDataFrame([tuple(rows[0].values())], schema).write.format("delta").save(uri)
    spark.createDataFrame([tuple(rows[1].values())], schema).write.format("delta").mode("append").save(uri)
    v0_spark = spark.sql(f"SELECT key FROM delta.`{uri}` VERSION AS OF 0").collect()
    v0_rs = storage.read(uri, storage.WOVEN_SNAPSHOTS, version=0).column("key").to_pylist()
    assert [r.key for r in v0_spark] == v0_rs == ["k1"]
    assert sorted(storage.read(uri, storage.WOVEN_SNAPSHOTS).column("key").to_pylist()) == ["k1", "k9"]
