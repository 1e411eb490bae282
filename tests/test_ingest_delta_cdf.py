"""Delta Change Data Feed from a real delta-spark table (inserts, MERGE updates, deletes) into the contract;
the requested range, complete_to and key-changing updates on small delta-rs tables (no JVM).

Oracle: the test's own record of the table after each of its writes. Restoring the commit time of
version v through the weaver equals the table as written at v (and just before v+1, still v).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.ingest_helpers import lake_fingerprint, lake_state
from weaver.core import storage
from weaver.ingest import Partitioning, ingest, load_watermark
from weaver.ingest.delta_cdf import DeltaCDF
from weaver.ingest.errors import MissingKeyAttributeError, StaleInputError
from weaver.core.settings import load_settings



def image(row: tuple) -> dict:
    i, name, qty, price = row
    return {"id": {"N": str(i)}, "name": {"S": name}, "qty": {"N": str(qty)}, "price": {"N": f"{price:.2f}"}}


class Recorder:
    """Applies each write to Spark AND to the test's own dict; remembers the dict per version."""

    def __init__(self, spark, uri):
        self.spark, self.uri = spark, uri
        self.rows: dict[int, tuple] = {}
        self.by_version: dict[int, dict] = {}

    def snap(self):
        from deltalake import DeltaTable

        v = DeltaTable(self.uri).version()
        self.by_version[v] = {(Decimal(i),): image(r) for i, r in self.rows.items()}

    def insert(self, rows):
        self.spark.createDataFrame(rows, "id INT, name STRING, qty BIGINT, price DECIMAL(10,2)").write.format(
            "delta").mode("append").save(self.uri)
        for r in rows:
            self.rows[r[0]] = r
        self.snap()

    def merge(self, rows, delete_ids=()):
        from delta.tables import DeltaTable as SparkDT

        src = self.spark.createDataFrame([(*r, False) for r in rows] + [(i, "", 0, Decimal("0"), True) for i in delete_ids],
                                         "id INT, name STRING, qty BIGINT, price DECIMAL(10,2), gone BOOLEAN")
        (SparkDT.forPath(self.spark, self.uri).alias("t").merge(src.alias("s"), "t.id = s.id")
         .whenMatchedDelete(condition="s.gone")
         .whenMatchedUpdate(set={"name": "s.name", "qty": "s.qty", "price": "s.price"})
         .whenNotMatchedInsert(condition="NOT s.gone", values={"id": "s.id", "name": "s.name", "qty": "s.qty",
                                                              "price": "s.price"})
         .execute())
        for r in rows:
            self.rows[r[0]] = r
        for i in delete_ids:
            self.rows.pop(i, None)
        self.snap()

    def delete(self, ids):
        self.spark.sql(f"DELETE FROM delta.`{self.uri}` WHERE id IN ({','.join(map(str, ids))})")
        for i in ids:
            self.rows.pop(i, None)
        self.snap()


def commit_times(uri) -> dict[int, datetime]:
    from deltalake import DeltaTable

    return {int(h["version"]): datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc)
            for h in DeltaTable(uri).history()}


def check_versions(s, rec, versions):
    times = commit_times(rec.uri)
    for v in versions:
        assert lake_state(s, times[v]) == rec.by_version[v], f"version {v}"
        if v + 1 in times:
            assert lake_state(s, times[v + 1] - timedelta(milliseconds=1)) == rec.by_version[v], f"before {v + 1}"


@pytest.mark.spark
@pytest.mark.slow
def test_cdf_inserts_merges_deletes_restore_each_version(spark, tmp_path):
    uri = str(tmp_path / "orders")
    spark.sql(f"CREATE TABLE delta.`{uri}` (id INT, name STRING, qty BIGINT, price DECIMAL(10,2)) "
              "USING delta TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    rec = Recorder(spark, uri)
    rec.snap()
    d = Decimal
    rec.insert([(i, f"item{i}", i * 10, d(f"{i}.25")) for i in range(-3, 9)])
    rec.merge([(2, "two", 200, d("2.50")), (5, "five", 500, d("5.50")), (20, "twenty", 1, d("0.01"))])
    rec.delete([0, 7])
    rec.merge([(3, "three", 3, d("3.00")), (21, "x", 2, d("9.99"))], delete_ids=[-3, 8])

    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DeltaCDF(uri, keys="id", name="orders"), partitioning=Partitioning(partitions=2, tag="N"))
    assert r.old_watermark is None and r.new_watermark == "version 4" and r.first_seq == 1
    check_versions(s, rec, range(1, 5))

    # Nothing new: nothing written (an idle commit only moves complete_to forward).
    before = load_watermark(s, "delta-cdf:orders")
    idle = ingest(s, DeltaCDF(uri, keys="id", name="orders"))
    assert idle.changes_written == 0 and idle.new_watermark == "version 4"
    assert storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).num_rows == r.changes_written
    assert load_watermark(s, "delta-cdf:orders").complete_to >= before.complete_to

    # More writes, then an incremental ingest from the watermark on.
    rec.merge([(1, "one", 11, d("1.10")), (22, "y", 3, d("0.30"))])
    rec.delete([22, 4])
    r2 = ingest(s, DeltaCDF(uri, keys="id", name="orders"))
    assert r2.first_seq == r.last_seq + 1 and r2.new_watermark == "version 6" and r2.duplicates_skipped == 0
    check_versions(s, rec, range(1, 7))

    # Re-reading versions 5..6 explicitly (the same input as r2): nothing written.
    before = lake_fingerprint(s)
    again = ingest(s, DeltaCDF(uri, keys="id", name="orders", starting_version=5, ending_version=6))
    assert again.changes_written == 0
    # An explicit range wholly below the watermark that was never ingested as such: refused.
    with pytest.raises(StaleInputError, match="version 2"):
        ingest(s, DeltaCDF(uri, keys="id", name="orders", starting_version=2, ending_version=3))
    with pytest.raises(MissingKeyAttributeError, match="sku"):
        ingest(s, DeltaCDF(uri, keys="sku", name="orders"))
    assert lake_fingerprint(s) == before


# --- delta-rs tables (no JVM) --------------------------------------------------------------------
def cdf_table(uri, rows):
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(uri, pa.table({"id": [r[0] for r in rows], "v": [r[1] for r in rows]}),
                    configuration={"delta.enableChangeDataFeed": "true"})


def append(uri, rows):
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(uri, pa.table({"id": [r[0] for r in rows], "v": [r[1] for r in rows]}), mode="append")


def item(i, v):
    return {"id": {"N": str(i)}, "v": {"S": v}}


def test_a_commit_after_the_adapter_opened_the_table_is_read_or_not_vouched_for(tmp_path):
    uri = str(tmp_path / "src")
    cdf_table(uri, [(1, "a")])
    s = load_settings(lake=str(tmp_path / "lake"))
    adapter = DeltaCDF(uri, keys="id", name="src")  # the CLI opens the table first...
    append(uri, [(2, "b")])  # ...and version 1 lands before the read
    r = ingest(s, adapter)
    v1 = commit_times(uri)[1]
    # complete_to vouches for every commit up to it: version 1 (committed before it) is in the lake.
    assert r.complete_to >= v1
    assert r.new_watermark == "version 1"
    assert lake_state(s, r.complete_to) == {(Decimal(1),): item(1, "a"), (Decimal(2),): item(2, "b")}


def test_an_idle_read_of_a_range_below_the_latest_version_does_not_move_complete_to(tmp_path):
    uri = str(tmp_path / "src")
    cdf_table(uri, [(1, "a")])
    append(uri, [(2, "b")])
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DeltaCDF(uri, keys="id", name="src"))
    assert r.new_watermark == "version 1"
    append(uri, [(3, "c")])
    append(uri, [(4, "d")])  # versions 2 and 3: not ingested
    before, wm = lake_fingerprint(s), load_watermark(s, "delta-cdf:src")
    idle = ingest(s, DeltaCDF(uri, keys="id", name="src", ending_version=1))
    assert idle.changes_written == 0 and idle.complete_to == r.complete_to
    assert load_watermark(s, "delta-cdf:src").complete_to == wm.complete_to
    assert lake_fingerprint(s) == before  # nothing committed


def test_a_starting_version_past_the_table_is_refused_by_name_and_writes_nothing(tmp_path):
    from weaver.core.errors import InvalidParameterError

    uri = str(tmp_path / "src")
    cdf_table(uri, [(1, "a")])
    append(uri, [(2, "b")])
    s = load_settings(lake=str(tmp_path / "lake"))
    with pytest.raises(InvalidParameterError, match="version"):
        ingest(s, DeltaCDF(uri, keys="id", name="src", starting_version=5))
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))
    r = ingest(s, DeltaCDF(uri, keys="id", name="src"))  # the source starts at version 0 after all
    assert r.changes_written == 2 and r.new_watermark == "version 1"


def test_an_update_that_changes_the_key_deletes_the_old_key(tmp_path):
    from deltalake import DeltaTable

    uri = str(tmp_path / "src")
    cdf_table(uri, [(1, "a"), (2, "b")])
    DeltaTable(uri).update(updates={"id": "5"}, predicate="id = 1")  # UPDATE t SET id = 5 WHERE id = 1
    DeltaTable(uri).update(updates={"v": "'b2'"}, predicate="id = 2")  # an update keeping its key
    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DeltaCDF(uri, keys="id", name="src"))
    times = commit_times(uri)
    assert r.new_watermark == "version 2"
    assert lake_state(s, times[0]) == {(Decimal(1),): item(1, "a"), (Decimal(2),): item(2, "b")}
    assert lake_state(s, times[1]) == {(Decimal(5),): item(5, "a"), (Decimal(2),): item(2, "b")}
    assert lake_state(s, times[2]) == {(Decimal(5),): item(5, "a"), (Decimal(2),): item(2, "b2")}
    assert r.changes_written == 2 + 2 + 1  # inserts; DELETE 1 + PUT 5; PUT 2 (its preimage is no delete)


def test_a_column_mapped_source_written_by_delta_rs_is_read(tmp_path):
    """delta-rs' change-feed scan refuses column mapping; the adapter reads such a table from its log
    (`weaver.ingest.delta_log`): `weaver ingest` exits 0 and the lake holds the rows written, beside
    another source's changes."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, write_deltalake
    from typer.testing import CliRunner

    from weaver.cli import app

    lake = str(tmp_path / "lake")
    s = load_settings(lake=lake)
    plain = str(tmp_path / "plain")
    cdf_table(plain, [(1, "a")])
    assert ingest(s, DeltaCDF(plain, keys="id", name="plain")).changes_written == 1
    mapped = str(tmp_path / "mapped")
    write_deltalake(mapped, pa.table({"id": [10, 11], "v": ["a", "b"]}),
                    configuration={"delta.enableChangeDataFeed": "true", "delta.columnMapping.mode": "name"})
    write_deltalake(mapped, pa.table({"id": [12], "v": ["c"]}), mode="append")
    DeltaTable(mapped).delete("id = 10")
    dt = DeltaTable(mapped)
    assert dt.metadata().configuration["delta.columnMapping.mode"] == "name"  # the premise: physical names
    files = [f for f in dt.file_uris()]
    assert all(n.startswith("col-") for f in files for n in pq.read_schema(f).names)
    res = CliRunner().invoke(app, ["ingest", "--source", "delta-cdf", "--input", mapped, "--keys", "id",
                                   "--lake", lake, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["new_watermark"] == "version 2"
    assert lake_state(s, datetime.now(timezone.utc)) == {
        (Decimal(1),): item(1, "a"), (Decimal(11),): item(11, "b"), (Decimal(12),): item(12, "c")}


def test_the_log_reader_gives_delta_rs_change_feed_of_a_plain_table(tmp_path):
    """On a table without column mapping both readers apply: the log reader's rows (update pre- and
    postimages from change data files, deletes, appends) are delta-rs' ``load_cdf`` rows."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from weaver.ingest.delta_log import ChangeFeed

    uri = str(tmp_path / "plain")
    cdf_table(uri, [(1, "a"), (2, "b"), (3, "c")])
    DeltaTable(uri).update(predicate="id = 2", updates={"v": "'bb'"})
    DeltaTable(uri).delete("id = 3")
    append(uri, [(4, "d")])
    src = pa.table({"id": [1, 5], "v": ["aa", "e"]})
    (DeltaTable(uri).merge(src, "t.id = s.id", source_alias="s", target_alias="t")
     .when_matched_update_all().when_not_matched_insert_all().execute())
    ref = pa.table(DeltaTable(uri).load_cdf(starting_version=0, ending_version=4).read_all())

    def norm(rows):
        return sorted((r["_commit_version"], r["_change_type"], r["id"], r["v"],
                       r["_commit_timestamp"].replace(tzinfo=None)) for r in rows)

    mine = [r for t in ChangeFeed(uri).read(0, 4) for r in t.to_pylist()]
    assert {r[1] for r in norm(ref.to_pylist())} == {"insert", "update_preimage", "update_postimage", "delete"}
    assert norm(mine) == norm(ref.to_pylist())
    assert norm(r for t in ChangeFeed(uri).read(2, 3) for r in t.to_pylist()) == [
        r for r in norm(ref.to_pylist()) if r[0] in (2, 3)]


def test_nested_columns_of_a_mapped_table_keep_their_values_and_nulls(tmp_path):
    """Physical names at every level (a list of structs, a map of structs, a struct), with nulls at
    every level: the log reader's rows are the rows written."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from weaver.ingest.delta_log import ChangeFeed

    uri = str(tmp_path / "nested")
    st = pa.struct([("a", pa.int32()), ("b", pa.string())])
    written = pa.table({
        "id": pa.array([1, 2, 3], pa.int64()),
        "l": pa.array([[{"a": 1, "b": "x"}, None], None, []], pa.list_(st)),
        "m": pa.array([[("k", {"a": 2, "b": "y"})], None, [("z", None)]], pa.map_(pa.string(), st)),
        "s": pa.array([{"a": 5, "b": None}, None, {"a": None, "b": "q"}], st)})
    write_deltalake(uri, written, configuration={"delta.enableChangeDataFeed": "true",
                                                 "delta.columnMapping.mode": "name"})
    (got,) = ChangeFeed(uri).read(0, 0)
    assert got.select(written.column_names).to_pylist() == written.to_pylist()
    assert set(got.column("_change_type").to_pylist()) == {"insert"}


def test_a_mapped_source_whose_older_commits_were_cleaned_up_reads_on_from_its_checkpoint(tmp_path):
    """The lake holds versions 0-2; the source then checkpoints at 3 and its log clean-up removes
    commits 0-2: the next ingest (versions 3-4) needs nothing before version 3."""
    import os

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    uri = str(tmp_path / "src")
    write_deltalake(uri, pa.table({"id": [1], "v": ["a"]}),
                    configuration={"delta.enableChangeDataFeed": "true", "delta.columnMapping.mode": "name"})
    append(uri, [(2, "b")])
    append(uri, [(3, "c")])
    s = load_settings(lake=str(tmp_path / "lake"))
    assert ingest(s, DeltaCDF(uri, keys="id", name="src")).new_watermark == "version 2"
    append(uri, [(4, "d")])
    DeltaTable(uri).create_checkpoint()
    for v in range(3):
        os.remove(os.path.join(uri, "_delta_log", f"{v:020d}.json"))
    append(uri, [(5, "e")])
    r = ingest(s, DeltaCDF(uri, keys="id", name="src"))
    assert r.new_watermark == "version 4" and r.changes_written == 2
    assert lake_state(s, datetime.now(timezone.utc)) == {(Decimal(i),): item(i, v) for i, v in
                                                         [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]}


def test_log_file_paths_resolve_on_the_table_store_and_a_file_on_another_store_is_named():
    """Relative paths are URI-encoded; absolute ones (a shallow clone's) are file: or s3/s3a URIs."""
    from weaver.ingest.delta_log import ChangeFeed
    from weaver.ingest.errors import MalformedInputError

    local = ChangeFeed("/data/t")
    assert local._data_path("p=a%3Ab/part%20one.parquet") == "/data/t/p=a:b/part one.parquet"
    assert local._data_path("file:/src/x%20y/p.parquet") == local._data_path("file:///src/x%20y/p.parquet") \
        == "/src/x y/p.parquet"
    with pytest.raises(MalformedInputError, match="another store"):
        local._data_path("s3a://bucket/k/p.parquet")
    remote = ChangeFeed("s3://bucket/t", {"aws_region": "us-east-1"})
    assert remote._data_path("k%3Dv/p.parquet") == "bucket/t/k=v/p.parquet"
    assert remote._data_path("s3a://other/k%3Dv/p.parquet") == remote._data_path("s3://other/k=v/p.parquet") \
        == "other/k=v/p.parquet"
    with pytest.raises(MalformedInputError, match="another store"):
        remote._data_path("file:/src/p.parquet")


def test_a_source_that_gains_column_mapping_after_it_was_opened_is_read_across_it(spark, tmp_path):
    """An adapter opened before the table gained column mapping (and a rename) reads the versions
    after it: the rows before the rename keep the old column name, those after carry the new one."""
    s = load_settings(lake=str(tmp_path / "lake"))
    uri = str(tmp_path / "src")
    cdf_table(uri, [(1, "a")])
    assert ingest(s, DeltaCDF(uri, keys="id", name="src")).new_watermark == "version 0"
    adapter = DeltaCDF(uri, keys="id", name="src")
    append(uri, [(2, "b")])
    spark.sql(f"ALTER TABLE delta.`{uri}` SET TBLPROPERTIES ('delta.minReaderVersion' = '2', "
              "'delta.minWriterVersion' = '5', 'delta.columnMapping.mode' = 'name')")
    spark.sql(f"ALTER TABLE delta.`{uri}` RENAME COLUMN v TO w")
    spark.sql(f"INSERT INTO delta.`{uri}` VALUES (3, 'c')")
    spark.sql(f"UPDATE delta.`{uri}` SET w = 'aa' WHERE id = 1")
    r = ingest(s, adapter)
    assert r.new_watermark == "version 5" and r.changes_written == 3
    assert lake_state(s, datetime.now(timezone.utc)) == {
        (Decimal(1),): {"id": {"N": "1"}, "w": {"S": "aa"}}, (Decimal(2),): item(2, "b"),
        (Decimal(3),): {"id": {"N": "3"}, "w": {"S": "c"}}}
