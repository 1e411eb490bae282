"""take_snapshots (Spark) against the oracle: log-applied, split-aware, idempotent, never half-visible."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from tests.lakes import split_log, write_lake
from tests.oracle import fold, rows_to_dict


def _settings(lake):
    from weaver.core.settings import load_settings

    return load_settings(lake=str(lake))


def _snapshot_rows(s, sid: str) -> pa.Table:
    from weaver.core import storage

    return storage.read(storage.uri_for(s, storage.SNAPSHOTS), storage.SNAPSHOTS, filters=[("snapshot_id", "=", sid)])


def _files(s, name: str) -> tuple[int, list[str]]:
    from deltalake import DeltaTable

    from weaver.core import storage

    dt = DeltaTable(storage.uri_for(s, name))
    return dt.version(), sorted(dt.file_uris())


def _check_against_oracle(s, changes, lineage, summary):
    from weaver.pitr import read_snapshot_catalog

    by_seq = {c["seq"]: c for c in changes}
    cat = {r["snapshot_id"]: r for r in read_snapshot_catalog(s).to_pylist()}
    for sid in summary["taken"]:
        pid, seq = sid.rsplit("@", 1)
        p = lineage.get(pid)
        want = fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, upto_seq=int(seq))
        got = rows_to_dict(_snapshot_rows(s, sid))
        assert got == want, sid
        row = cat[sid]
        assert row["as_of_seq"] == int(seq) and row["as_of_ts"] == by_seq[int(seq)]["ts"]
        assert row["rows"] == len(want)
        assert row["bytes"] == _bytes_on_storage(s, sid) and (row["bytes"] > 0) == (len(want) > 0)


def _bytes_on_storage(s, sid: str) -> int:
    """Sizes of the Parquet files the current Delta version lists under snapshot_id=<sid>/."""
    import os

    _, uris = _files(s, "snapshots")
    return sum(os.path.getsize(u.replace("file://", "")) for u in uris if f"snapshot_id={sid}/" in u)


@pytest.mark.spark
@pytest.mark.slow
def test_snapshot_runs_log_apply_across_splits_and_rerun_adds_nothing(spark, lake_copy):
    from weaver.core import storage
    from weaver.log import Lineage, read_changes
    from weaver.pitr import restore_partition
    from weaver.pitr import latest_snapshot, take_snapshots

    s = _settings(lake_copy)
    changes = read_changes(s).to_pylist()
    lineage = Lineage.load(s)
    splits = storage.read(storage.uri_for(s, storage.SPLITS), storage.SPLITS).to_pylist()
    first_split = min(splits, key=lambda r: r["split_seq"])

    # Run 1, before any split: the first snapshots come from the log alone.
    r1 = take_snapshots(spark, s, datetime(2026, 1, 1, 12, tzinfo=timezone.utc))
    assert r1["sources"] == [] and sorted(r1["taken"]) == [f"p000{i}@{r1['as_of_seq']}" for i in range(3)]
    _check_against_oracle(s, changes, lineage, r1)

    # Log-apply, not a rescan: drop the log up to run 1's seq; run 2 must still be exact.
    storage.overwrite(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG, storage.empty(storage.CHANGELOG),
                      predicate=f"seq <= {r1['as_of_seq']}")
    at2 = first_split["split_ts"]  # exactly at the first real split
    r2 = take_snapshots(spark, s, at2)
    assert r2["as_of_seq"] == max(c["seq"] for c in changes if c["ts"] <= at2)
    assert r2["as_of_seq"] >= first_split["split_seq"]
    # The split parent's snapshot is cut at the split key into the children's snapshots.
    kids = {first_split["left_id"], first_split["right_id"]}
    assert {sid.rsplit("@", 1)[0] for sid in r2["taken"]} >= kids
    assert first_split["parent_id"] not in {sid.rsplit("@", 1)[0] for sid in r2["taken"]}
    assert f"{first_split['parent_id']}@{r1['as_of_seq']}" in r2["sources"]
    _check_against_oracle(s, changes, lineage, r2)
    assert latest_snapshot(s, first_split["left_id"], r2["as_of_seq"])["snapshot_id"] == \
        f"{first_split['left_id']}@{r2['as_of_seq']}"
    assert latest_snapshot(s, first_split["left_id"], r2["as_of_seq"] - 1) is None

    # Rerunning the same data interval (a later instant with no new change) adds nothing.
    before = _files(s, storage.SNAPSHOTS), _files(s, storage.SNAPSHOT_CATALOG)
    again = take_snapshots(spark, s, at2 + timedelta(microseconds=1))
    assert again["as_of_seq"] == r2["as_of_seq"]
    assert again["taken"] == [] and sorted(again["skipped"]) == sorted(r2["taken"])
    assert (_files(s, storage.SNAPSHOTS), _files(s, storage.SNAPSHOT_CATALOG)) == before

    # Spark wrote, delta-rs reads: restores from these snapshots match the oracle.
    for at in (datetime(2026, 1, 2, 14, tzinfo=timezone.utc), datetime(2026, 1, 2, 23, tzinfo=timezone.utc)):
        for p in lineage:
            r = restore_partition(s, p.partition_id, at, lineage=lineage)
            assert r.source_snapshot_id is not None
            assert rows_to_dict(r.table) == fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=at)


@pytest.mark.spark
def test_data_committed_without_catalog_row_is_invisible_then_replaced(spark, tmp_path):
    from pyspark.sql import functions as F

    from weaver.core import storage
    from weaver.pitr import restore_partition
    from weaver.pitr import latest_snapshot, store_snapshot_data, take_snapshots

    log, _ = split_log()
    s = _settings(write_lake(tmp_path / "lake", log))
    at = log["changes"][8]["ts"]  # seq 9, after the split: p0001 and p0002 are alive
    # A run that crashed after its data commit, before its catalog row, and wrote garbage.
    junk = (spark.createDataFrame([("p0001@9", "p0001", 9, at, "k00", b"junk"), ("p0001@9", "p0001", 9, at, "k10", b"x")],
                                  "snapshot_id string, partition_id string, as_of_seq long, as_of_ts timestamp, "
                                  "key string, value binary"))
    store_snapshot_data(spark, s, junk, ["p0001@9"])
    assert latest_snapshot(s, "p0001", 9) is None
    r = restore_partition(s, "p0001", at)
    assert r.source_snapshot_id is None  # readers go through the catalog: the junk is never used
    assert rows_to_dict(r.table) == fold(log["changes"], key_hi="k50", at=at)

    summary = take_snapshots(spark, s, at)
    assert sorted(summary["taken"]) == ["p0001@9", "p0002@9"]
    got = storage.read(storage.uri_for(s, storage.SNAPSHOTS), storage.SNAPSHOTS)
    assert got.num_rows == sum(len(fold(log["changes"], key_lo=lo, key_hi=hi, upto_seq=9))
                               for lo, hi in ((None, "k50"), ("k50", None)))
    assert rows_to_dict(_snapshot_rows(s, "p0001@9")) == fold(log["changes"], key_hi="k50", upto_seq=9)
    assert latest_snapshot(s, "p0001", 9)["rows"] == 1  # k20 (k10 was deleted at seq 5)
    assert spark.read.format("delta").load(storage.uri_for(s, storage.SNAPSHOTS)).where(F.col("value") == b"junk").count() == 0


@pytest.mark.spark
def test_batched_run_equals_the_oracle_with_a_batch_boundary_between_split_children(spark, tmp_path):
    from deltalake import DeltaTable

    from tests.lakes import make_log
    from weaver.core import storage
    from weaver.log import Lineage
    from weaver.pitr import read_snapshot_catalog, take_snapshots

    log = make_log(11)  # p0 splits into p2 ['', k10) / p3 [k10, k20) after seq 90; p1 [k20, )
    s = _settings(write_lake(tmp_path / "lake", log, [60]))  # p0@60, p1@60 exist: log-apply across the split
    at = log["changes"][-1]["ts"]
    version_before = DeltaTable(storage.uri_for(s, storage.SNAPSHOTS)).version()
    r = take_snapshots(spark, s, at, batch_partitions=2)
    # Key order p2, p3 | p1: one Delta commit per batch, every snapshot exact.
    assert r["batches"] == 2 and sorted(r["taken"]) == ["p1@160", "p2@160", "p3@160"]
    assert DeltaTable(storage.uri_for(s, storage.SNAPSHOTS)).version() == version_before + 2
    assert r["sources"] == ["p0@60", "p1@60"]
    _check_against_oracle(s, log["changes"], Lineage.load(s), r)
    assert r["rows"] == sum(len(fold(log["changes"], key_lo=lo, key_hi=hi, upto_seq=160))
                            for lo, hi in (("", "k10"), ("k10", "k20"), ("k20", None)))
    # A rerun finds every batch catalogued: no new data commit, no new catalog rows.
    again = take_snapshots(spark, s, at, batch_partitions=1)
    assert again["taken"] == [] and again["batches"] == 0 and sorted(again["skipped"]) == sorted(r["taken"])
    assert DeltaTable(storage.uri_for(s, storage.SNAPSHOTS)).version() == version_before + 2
    assert read_snapshot_catalog(s).num_rows == 2 + 3


def test_with_retry_retries_infrastructure_failures_only():
    from weaver.core.errors import SeqGapError
    from weaver.pitr import with_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("transient store failure")
        return "stored"

    assert with_retry(flaky, attempts=3, delay_s=0.0) == "stored" and len(calls) == 3
    calls.clear()
    with pytest.raises(OSError):
        with_retry(flaky, attempts=2, delay_s=0.0)

    def bad_input():
        calls.append(1)
        raise SeqGapError("gap", seq=1)

    calls.clear()
    with pytest.raises(SeqGapError):
        with_retry(bad_input, attempts=3, delay_s=0.0)
    assert len(calls) == 1


def test_weaver_snapshots_dag_is_wiring_with_policies():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    bag = DagBag(dag_folder=str(ROOT / "dags" / "weaver_snapshots.py"))
    assert bag.import_errors == {}
    dag = bag.dags["weaver_snapshots"]
    assert "weaver" in dag.tags and dag.catchup is False
    # Daily data intervals (see test_dag_integrity's midnight test for why not a trigger timetable).
    from airflow.timetables.interval import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.timetable.summary == "0 0 * * *"
    assert dag.default_args["retries"] >= 1
    order = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert order == {"validate_changelog": ["take_snapshots"], "take_snapshots": ["report"], "report": []}
