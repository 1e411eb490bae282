"""The change feed read from a Delta table's log (``weaver.ingest.delta_log``): column-mapped tables
(which delta-rs' ``load_cdf`` refuses), tables with deletion vectors (whose feed it gets wrong
where a removed file carries one) and shallow clones (whose log it cannot parse), written by
delta-spark: DELETE by deletion vector (no change data file), UPDATE and MERGE (change data
files), a column renamed and one added, a whole partition deleted over files carrying deletion
vectors, OPTIMIZE and REORG (no data change), INSERT OVERWRITE, RESTORE.

Oracles, both independent of the reader:
* the test's own record of the table after each write (row images built by hand, under the column
  names of the moment); restoring each version's commit time through the weaver gives it;
* Spark's own change feed (``readChangeFeed``, over ranges it accepts: none across a rename) gives
  the same changes, value for value, as the reader.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.ingest_helpers import lake_fingerprint, lake_state
from tests.test_ingest_delta_cdf import commit_times
from weaver.core.settings import load_settings
from weaver.ingest import Partitioning, ingest, load_watermark
from weaver.ingest.delta_cdf import DeltaCDF
from weaver.ingest.delta_log import ChangeFeed
from weaver.ingest.errors import MalformedInputError

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def num(v):
    return {"N": str(v)}


def text(v):
    return {"NULL": True} if v is None else {"S": v}


class Table:
    """A column-mapped Delta table written through Spark SQL, and the test's own record of it."""

    def __init__(self, spark, uri, mode):
        self.spark, self.uri = spark, uri
        self.label = "name"  # the string column's name of the moment
        self.images: dict[int, dict] = {}
        self.by_version: dict[int, dict] = {}
        spark.sql(f"CREATE TABLE delta.`{uri}` (id INT, name STRING, qty BIGINT, info STRUCT<a: INT, b: STRING>, "
                  "p STRING) USING delta PARTITIONED BY (p) TBLPROPERTIES (delta.enableChangeDataFeed = true, "
                  f"delta.columnMapping.mode = '{mode}', delta.enableDeletionVectors = true)")
        self.snap()

    def image(self, i, name, qty, info, p, **extra):
        img = {"id": num(i), self.label: text(name), "qty": num(qty), "p": text(p),
               "info": {"NULL": True} if info is None else {"M": {"a": num(info[0]), "b": text(info[1])}}}
        img.update(extra)
        return img

    def sql(self, statement):
        self.spark.sql(statement.replace("{t}", f"delta.`{self.uri}`"))

    def snap(self):
        from deltalake import DeltaTable

        self.by_version[DeltaTable(self.uri).version()] = {(Decimal(i),): img
                                                          for i, img in self.images.items()}

    def values(self, rows):
        """VALUES of (id, name, qty, (a, b) or None, p); the record takes their images."""
        out = []
        for i, name, qty, info, p in rows:
            self.images[i] = self.image(i, name, qty, info, p)
            st = "NULL" if info is None else f"named_struct('a', {info[0]}, 'b', '{info[1]}')"
            out.append(f"({i}, '{name}', {qty}, {st}, '{p}')")
        return ", ".join(out)


def rows_of(i):
    return (i, f"n{i}", i * 10, (i, f"b{i}"), "a" if i % 2 == 0 else "b")


def feed_rows(tables, cols):
    return Counter(tuple(r[c] for c in cols) for t in tables for r in t.to_pylist())


def spark_feed(spark, uri, start, end, cols):
    df = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start)
          .option("endingVersion", end).load(uri))
    return Counter(tuple(r[c] for c in cols) for r in (x.asDict(recursive=True) for x in df.collect()))


@pytest.mark.parametrize("mode", ["name", "id"])
def test_a_column_mapped_table_with_deletion_vectors_restores_each_version(spark, tmp_path, mode):
    uri = str(tmp_path / "orders")
    t = Table(spark, uri, mode)
    t.sql(f"INSERT INTO {{t}} VALUES {t.values([rows_of(i) for i in range(12)])}")  # v1
    t.snap()
    t.sql("DELETE FROM {t} WHERE id IN (1, 2)")  # v2: deletion vectors, no change data file
    del t.images[1], t.images[2]
    t.snap()
    t.sql("UPDATE {t} SET qty = qty + 100 WHERE id = 3")  # v3
    t.images[3] = t.image(3, "n3", 130, (3, "b3"), "b")
    t.snap()
    t.sql("MERGE INTO {t} AS t USING (SELECT * FROM VALUES (4, 'four', false), (5, '', true), (20, 'twenty', false) "
          "AS s(id, name, gone)) s ON t.id = s.id WHEN MATCHED AND s.gone THEN DELETE "
          "WHEN MATCHED THEN UPDATE SET name = s.name WHEN NOT MATCHED THEN INSERT (id, name, qty, info, p) "
          "VALUES (s.id, s.name, 0, named_struct('a', 0, 'b', 'm'), 'a')")  # v4
    t.images[4] = t.image(4, "four", 40, (4, "b4"), "a")
    del t.images[5]
    t.images[20] = t.image(20, "twenty", 0, (0, "m"), "a")
    t.snap()

    s = load_settings(lake=str(tmp_path / "lake"))
    first = ingest(s, DeltaCDF(uri, keys="id", name="orders"), partitioning=Partitioning(partitions=2, tag="N"))
    assert first.new_watermark == "version 4"

    t.sql("ALTER TABLE {t} RENAME COLUMN name TO title")  # v5: schema only
    t.label = "title"
    t.snap()
    t.sql("DELETE FROM {t} WHERE p = 'b'")  # v6: whole files removed, some with deletion vectors
    for i in [i for i, img in t.images.items() if img["p"] == {"S": "b"}]:
        del t.images[i]
    t.snap()
    t.sql(f"INSERT INTO {{t}} VALUES {t.values([(21, 'x', 1, (21, 'y'), 'b'), (22, 'z', 2, (22, 'w'), 'a')])}")  # v7
    t.snap()
    t.sql("OPTIMIZE {t}")  # v8: dataChange false
    t.snap()
    t.sql("ALTER TABLE {t} ADD COLUMNS (note STRING)")  # v9
    t.snap()
    t.sql("INSERT INTO {t} VALUES (30, 'thirty', 3, named_struct('a', 30, 'b', 't'), 'b', 'hello')")  # v10
    t.images[30] = t.image(30, "thirty", 3, (30, "t"), "b", note=text("hello"))
    t.snap()
    t.sql("UPDATE {t} SET title = 'TWENTY' WHERE id = 20")  # v11: the row gains the new column
    t.images[20] = t.image(20, "TWENTY", 0, (0, "m"), "a", note={"NULL": True})
    t.snap()
    assert sorted(t.by_version) == list(range(12))

    second = ingest(s, DeltaCDF(uri, keys="id", name="orders"))
    assert second.new_watermark == "version 11" and second.first_seq == first.last_seq + 1
    times = commit_times(uri)
    for v in range(1, 12):
        assert lake_state(s, times[v]) == t.by_version[v], f"version {v}"
        if v + 1 in times:
            assert lake_state(s, times[v + 1] - timedelta(milliseconds=1)) == t.by_version[v], f"before {v + 1}"

    # The reader's feed against Spark's, over the ranges Spark reads (none across the rename).
    for (a, b), name in (((1, 4), "name"), ((6, 11), "title")):
        cols = ("id", name, "qty", "p", "_change_type", "_commit_version")
        assert feed_rows(ChangeFeed(uri).read(a, b), cols) == spark_feed(spark, uri, a, b, cols), (a, b)

    # The same range read again (its input recognised): nothing written.
    before = lake_fingerprint(s)
    again = ingest(s, DeltaCDF(uri, keys="id", name="orders", starting_version=5, ending_version=11))
    assert again.changes_written == 0 and lake_fingerprint(s) == before


def test_a_table_with_deletion_vectors_restores_each_version_where_delta_rs_feed_is_wrong(spark, tmp_path):
    """No column mapping, deletion vectors on: a row deleted by vector, then the whole file deleted.
    delta-rs' ``load_cdf`` gives the second delete as the rows the vector had deleted (1 and 2
    again) and misses the file's live rows; the adapter reads such a table from its log."""
    import pyarrow as pa
    from deltalake import DeltaTable

    uri = str(tmp_path / "dv")
    spark.sql(f"CREATE TABLE delta.`{uri}` (id INT, v STRING) USING delta TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true, delta.enableDeletionVectors = true)")
    (spark.range(10).selectExpr("CAST(id AS INT) AS id", "CAST(id AS STRING) AS v").coalesce(1)
     .write.format("delta").mode("append").save(uri))  # v1
    spark.sql(f"DELETE FROM delta.`{uri}` WHERE id IN (1, 2)")  # v2: a deletion vector
    spark.sql(f"INSERT INTO delta.`{uri}` VALUES (20, 'twenty')")  # v3: another file
    spark.sql(f"DELETE FROM delta.`{uri}` WHERE id < 10")  # v4: the first file removed whole
    rows = {i: str(i) for i in range(10)}
    expected = {1: dict(rows)}
    expected[2] = {i: v for i, v in rows.items() if i not in (1, 2)}
    expected[3] = {**expected[2], 20: "twenty"}
    expected[4] = {20: "twenty"}
    broken = sorted((r["_change_type"], r["id"]) for r in
                    pa.table(DeltaTable(uri).load_cdf(starting_version=4, ending_version=4).read_all()).to_pylist())
    assert ("delete", 0) not in broken  # the premise: delta-rs' feed of version 4 misses live rows

    s = load_settings(lake=str(tmp_path / "lake"))
    r = ingest(s, DeltaCDF(uri, keys="id", name="dv"), partitioning=Partitioning(partitions=2, tag="N"))
    assert r.new_watermark == "version 4"
    times = commit_times(uri)
    for v in range(1, 5):
        want = {(Decimal(i),): {"id": num(i), "v": text(x)} for i, x in expected[v].items()}
        assert lake_state(s, times[v]) == want, f"version {v}"
    cols = ("id", "v", "_change_type", "_commit_version")
    assert feed_rows(ChangeFeed(uri).read(1, 4), cols) == spark_feed(spark, uri, 1, 4, cols)


def test_every_spark_operation_on_a_table_with_deletion_vectors_gives_spark_feed(spark, tmp_path):
    """Each version's feed, read from the log, equals Spark's own for: appends, DELETE by vector,
    OPTIMIZE, REORG ... APPLY (PURGE), a partition deleted, INSERT OVERWRITE over files with vectors
    (which delta-rs' ``load_cdf`` reads wrong), UPDATE, RESTORE (MERGE: the tests above)."""
    uri = str(tmp_path / "ops")
    t = f"delta.`{uri}`"
    spark.sql(f"CREATE TABLE {t} (id INT, v STRING, p INT) USING delta PARTITIONED BY (p) TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true, delta.enableDeletionVectors = true)")
    for op in [f"INSERT INTO {t} SELECT CAST(id AS INT), CAST(id AS STRING), CAST(id % 2 AS INT) FROM range(20)",
               f"INSERT INTO {t} SELECT CAST(id AS INT), CAST(id AS STRING), CAST(id % 2 AS INT) FROM range(20, 30)",
               f"DELETE FROM {t} WHERE id IN (3, 4, 21)",
               f"OPTIMIZE {t}",
               f"DELETE FROM {t} WHERE id IN (6, 7)",
               f"REORG TABLE {t} APPLY (PURGE)",
               f"DELETE FROM {t} WHERE p = 1",
               f"INSERT OVERWRITE {t} PARTITION (p = 0) SELECT 100, 'x'",
               f"UPDATE {t} SET v = 'y' WHERE id = 100",
               f"RESTORE TABLE {t} TO VERSION AS OF 2",
               f"INSERT OVERWRITE {t} SELECT 200, 'z', 5"]:
        spark.sql(op)
    cols = ("id", "v", "p", "_change_type", "_commit_version")
    want = spark_feed(spark, uri, 1, 11, cols)
    got = feed_rows(ChangeFeed(uri).read(1, 11), cols)
    for v in range(1, 12):
        assert {k: n for k, n in got.items() if k[-1] == v} == {k: n for k, n in want.items() if k[-1] == v}, v
    assert sum(n for k, n in want.items() if k[-1] == 8) == 14  # the premise: the overwrite deleted 13 rows


def test_a_shallow_clone_reads_its_source_files_by_their_absolute_uris(spark, tmp_path):
    """A shallow clone's log names its source's files by absolute, URI-encoded paths (``file:/...``;
    here a folder with a space): the clone's feed is Spark's."""
    src, dst = str(tmp_path / "source dir"), str(tmp_path / "clone")
    spark.sql(f"CREATE TABLE delta.`{src}` (id INT, v STRING) USING delta TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true, delta.columnMapping.mode = 'name')")
    spark.sql(f"INSERT INTO delta.`{src}` VALUES (1, 'a'), (2, 'b')")
    spark.sql(f"CREATE TABLE delta.`{dst}` SHALLOW CLONE delta.`{src}` TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    spark.sql(f"DELETE FROM delta.`{dst}` WHERE id = 1")
    import json
    from pathlib import Path

    adds = [json.loads(line)["add"]["path"] for line in Path(dst, "_delta_log", f"{0:020d}.json").read_text().splitlines()
            if '"add"' in line]
    assert adds and all(p.startswith("file:") and "%20" in p for p in adds)  # the premise
    cols = ("id", "v", "_change_type", "_commit_version")
    assert feed_rows(ChangeFeed(dst).read(0, 1), cols) == spark_feed(spark, dst, 0, 1, cols) == Counter(
        {(1, "a", "insert", 0): 1, (2, "b", "insert", 0): 1, (1, "a", "delete", 1): 1})


def test_a_plain_shallow_clone_whose_log_delta_rs_cannot_parse_is_ingested(spark, tmp_path):
    """No column mapping, no deletion vectors: delta-rs opens a Spark shallow clone but cannot parse
    its clone commit for the feed or the history; the adapter falls back to the log. A range below
    the latest version takes its complete_to from that version's commit."""
    from deltalake import DeltaTable

    src, dst = str(tmp_path / "source"), str(tmp_path / "clone")
    spark.sql(f"CREATE TABLE delta.`{src}` (id INT, v STRING) USING delta TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true)")
    spark.sql(f"INSERT INTO delta.`{src}` VALUES (1, 'a'), (2, 'b')")
    spark.sql(f"CREATE TABLE delta.`{dst}` SHALLOW CLONE delta.`{src}` TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    spark.sql(f"UPDATE delta.`{dst}` SET v = 'bb' WHERE id = 2")
    spark.sql(f"DELETE FROM delta.`{dst}` WHERE id = 1")
    with pytest.raises(Exception, match="Invalid JSON"):  # the premise
        DeltaTable(dst).load_cdf(starting_version=0, ending_version=2).read_all()
    s = load_settings(lake=str(tmp_path / "lake"))
    first = ingest(s, DeltaCDF(dst, keys="id", name="clone", ending_version=1))
    assert first.new_watermark == "version 1"
    import json
    from pathlib import Path

    info = [json.loads(line)["commitInfo"] for line in Path(dst, "_delta_log", f"{1:020d}.json").read_text().splitlines()
            if '"commitInfo"' in line][0]
    complete_to = load_watermark(s, "delta-cdf:clone").complete_to
    assert complete_to.timestamp() * 1000 == pytest.approx(info["timestamp"], abs=1)  # that commit's, to the ms
    ingest(s, DeltaCDF(dst, keys="id", name="clone"))
    times = commit_times_of_log(dst)
    want = {0: {1: "a", 2: "b"}, 1: {1: "a", 2: "bb"}, 2: {2: "bb"}}
    for v, rows in want.items():
        assert lake_state(s, times[v]) == {(Decimal(i),): {"id": num(i), "v": text(x)} for i, x in rows.items()}, v


def commit_times_of_log(uri):
    """Each version's commit time from its commitInfo (delta-rs' history cannot parse a clone's log)."""
    import json
    from datetime import datetime, timezone
    from pathlib import Path

    out = {}
    for f in sorted(Path(uri, "_delta_log").glob("*.json")):
        for line in f.read_text().splitlines():
            if '"commitInfo"' in line:
                out[int(f.stem)] = datetime.fromtimestamp(json.loads(line)["commitInfo"]["timestamp"] / 1000, tz=timezone.utc)
    return out


def test_deletion_vectors_of_every_container_kind_are_read_as_spark_reads_them(spark, tmp_path):
    """One file of 70,000 rows (two 65,536-row Roaring keys); three deletes whose vectors hold an
    array container (a few rows), a run container (a range) and a bitmap container (every third
    row of 20,000): the reader's deletes are the rows each predicate matched, as Spark's feed says."""
    uri = str(tmp_path / "big")
    spark.sql(f"CREATE TABLE delta.`{uri}` (id INT, v STRING) USING delta TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true, delta.columnMapping.mode = 'name', "
              "delta.enableDeletionVectors = true)")
    (spark.range(70_000).selectExpr("CAST(id AS INT) AS id", "CAST(id AS STRING) AS v").coalesce(1)
     .write.format("delta").mode("append").save(uri))
    preds = ["id IN (7, 65535, 65536, 69999)", "id BETWEEN 100 AND 5000", "id >= 40000 AND id < 60000 AND id % 3 = 0"]
    for p in preds:
        spark.sql(f"DELETE FROM delta.`{uri}` WHERE {p}")
    import json
    from pathlib import Path

    dvs = [json.loads(line)["add"].get("deletionVector") for f in sorted(Path(uri, "_delta_log").glob("*.json"))
           for line in f.read_text().splitlines() if '"add"' in line]
    assert sum(1 for d in dvs if d) == 3  # the premise: each delete wrote a deletion vector
    expected = [{7, 65535, 65536, 69999}, set(range(100, 5001)), {i for i in range(40000, 60000) if i % 3 == 0}]
    for v, ids in zip((2, 3, 4), expected):
        got = ChangeFeed(uri).read(v, v)
        assert [r["_change_type"] for r in got[0].to_pylist()] == ["delete"] * len(ids)
        assert {r["id"] for r in got[0].to_pylist()} == ids
        cols = ("id", "v", "_change_type", "_commit_version")
        assert feed_rows(got, cols) == spark_feed(spark, uri, v, v, cols)


def test_a_vacuumed_file_is_a_named_error_and_writes_nothing(spark, tmp_path):
    import shutil
    from pathlib import Path

    uri = str(tmp_path / "src")
    spark.sql(f"CREATE TABLE delta.`{uri}` (id INT, v STRING) USING delta TBLPROPERTIES "
              "(delta.enableChangeDataFeed = true, delta.columnMapping.mode = 'name')")
    spark.sql(f"INSERT INTO delta.`{uri}` VALUES (1, 'a'), (2, 'b')")
    s = load_settings(lake=str(tmp_path / "lake"))
    ingest(s, DeltaCDF(uri, keys="id", name="src"))
    spark.sql(f"INSERT INTO delta.`{uri}` VALUES (3, 'c')")
    import json

    added = [json.loads(line)["add"]["path"] for line in Path(uri, "_delta_log", f"{2:020d}.json").read_text().splitlines()
             if '"add"' in line]
    assert added  # the premise: version 2 added a data file
    for rel in added:
        shutil.move(str(Path(uri, rel)), str(tmp_path / "moved.parquet"))
    before, wm = lake_fingerprint(s), load_watermark(s, "delta-cdf:src")
    with pytest.raises(MalformedInputError, match="version 2.*gone"):
        ingest(s, DeltaCDF(uri, keys="id", name="src"))
    assert lake_fingerprint(s) == before and load_watermark(s, "delta-cdf:src") == wm
