"""Completeness: a run at T uses the change log only up to the source's watermark; it waits (bounded)
for a late source and proceeds, or fails naming the lag."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.inject import crash_at
from tests.test_ingest_dynamodb import T0, T1, T2, full_export, incremental, make_writes
from weaver.ingest import ingest
from weaver.ingest.completeness import check_watermark, poke_watermark, wait_for_watermark
from weaver.ingest.dynamodb import DynamoDBExport
from weaver.ingest.errors import WatermarkBehindError
from weaver.core.settings import load_settings

SRC = "dynamodb-export:orders"
US = timedelta(microseconds=1)


@pytest.fixture()
def lake(tmp_path):
    writes = make_writes()
    s = load_settings(lake=str(tmp_path / "lake"))
    root = tmp_path / "b"
    ingest(s, DynamoDBExport(full_export(root, writes, T0), keys="pk,sk"))
    ingest(s, DynamoDBExport(incremental(root, writes, T0, T1, "02-inc"), keys="pk,sk"))
    return s, writes, root


def test_check_names_the_lag(lake):
    s, _, _ = lake
    assert check_watermark(s, SRC, T1 - US).complete_to == T1 - US
    with pytest.raises(WatermarkBehindError, match=r"complete only up to 2026-03-01T12:59:59.999999\+00:00 .* 2h behind"):
        check_watermark(s, SRC, T1 + timedelta(hours=2))
    with pytest.raises(WatermarkBehindError, match="never ingested"):
        check_watermark(s, "debezium:other", T1)


def test_a_late_source_is_waited_for_then_the_run_proceeds(lake):
    s, writes, root = lake
    late = DynamoDBExport(incremental(root, writes, T1, T2, "03-inc"), keys="pk,sk")

    def arrive():
        time.sleep(1.0)
        ingest(s, late)  # the source catches up while the run waits

    errors = []

    def arrive_or_record():
        try:
            arrive()
        except Exception as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    th = threading.Thread(target=arrive_or_record)
    th.start()
    end = T2 - US
    try:
        # The bound is 60 s from now (T2 lies in this machine's past): long enough, never endless.
        grace = datetime.now(timezone.utc) - end + timedelta(seconds=60)
        got = wait_for_watermark(s, SRC, end, grace=grace, poke=timedelta(seconds=0.2))
    finally:
        th.join(timeout=60)
    assert not errors
    assert got["pokes"] >= 2 and got["waited_s"] >= 0.8
    assert got["complete_to"] == (T2 - US).isoformat()


def test_past_its_bound_the_run_fails_with_the_lag(lake):
    s, _, _ = lake
    end = T1 + timedelta(days=200)  # a run months after the last ingest (still in this machine's past)
    t0 = time.monotonic()
    with pytest.raises(WatermarkBehindError, match=r"200d behind") as err:
        wait_for_watermark(s, SRC, end, grace=timedelta(hours=2), poke=timedelta(seconds=5))
    assert time.monotonic() - t0 < 5  # the bound had passed: no waiting at all
    assert "waited until" in str(err.value)
    # Within the bound a poke says "not yet" instead of failing.
    assert poke_watermark(s, SRC, end, timedelta(hours=2), now=end + timedelta(hours=1)) is False


def test_ingest_suite_passes_a_good_batch_and_stops_a_bad_one(lake):
    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.checks.ingest import check_ingested

    s, writes, root = lake
    res = ingest(s, DynamoDBExport(incremental(root, writes, T1, T2, "03-inc"), keys="pk,sk")).to_json()
    summary = check_ingested(s, res)
    assert summary["success"] and summary["rows"] == res["changes_written"] and summary["failed"] == 0
    assert check_ingested(s, {**res, "changes_written": 0, "first_seq": None, "last_seq": None})["checked"] is False
    # The source bookkeeping of one change goes missing: the suite names the failed expectation.
    storage.overwrite(storage.uri_for(s, storage.INGEST_LOG), storage.INGEST_LOG,
                      storage.empty(storage.INGEST_LOG), predicate=f"seq = {res['last_seq']}")
    with pytest.raises(ExpectationFailedError, match="has_source"):
        check_ingested(s, res)


def test_a_batch_committed_by_a_crashed_attempt_is_checked_by_the_retry(lake):
    from weaver.core import storage
    from weaver.core.errors import ExpectationFailedError
    from weaver.checks.ingest import check_ingested

    s, writes, root = lake
    before = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).num_rows
    inc = incremental(root, writes, T1, T2, "03-inc")

    with crash_at("ingest.after_changelog"):
        ingest(s, DynamoDBExport(inc, keys="pk,sk"))
    after = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).num_rows
    assert after > before  # the crashed attempt committed its batch
    again = ingest(s, DynamoDBExport(inc, keys="pk,sk")).to_json()  # the task's retry
    assert again["changes_written"] == 0
    # The retry names the batch the crashed attempt committed, so its check covers it.
    assert (again["first_seq"], again["last_seq"]) == (before + 1, after)
    summary = check_ingested(s, again)
    assert summary["checked"] and summary["success"] and summary["rows"] == after - before
    storage.overwrite(storage.uri_for(s, storage.INGEST_LOG), storage.INGEST_LOG,
                      storage.empty(storage.INGEST_LOG), predicate=f"seq = {after}")
    with pytest.raises(ExpectationFailedError, match="has_source"):
        check_ingested(s, again)
