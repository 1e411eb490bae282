"""Extract + the changelog GX suite at the first stage boundary (DESIGN §4.5)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from weaver.core import storage
from weaver.log import Lineage
from weaver.core.errors import ExpectationFailedError
from weaver.checks import changelog_check_frame, check_changelog
from weaver.pipeline import extract
from weaver.checks import validate
from weaver.core.settings import load_settings


def _changes(lake):
    return storage.read(storage.table_uri(str(lake), storage.CHANGELOG), storage.CHANGELOG)


def test_extract_stages_exactly_the_interval(small_lake, tmp_path):
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(small_lake, lake)
    s = load_settings(lake=str(lake))
    rows = _changes(lake).to_pylist()
    end = max(r["ts"] for r in rows).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=3)
    m = extract(s, start=start, end=end)
    expected = [r for r in rows if start <= r["ts"] < end]
    assert m["changes"] == len(expected)
    assert (m["first_seq"], m["last_seq"]) == (min(r["seq"] for r in expected), max(r["seq"] for r in expected))
    assert m["expected_first_seq"] == max(r["seq"] for r in rows if r["ts"] < start) + 1
    per = {}
    for r in expected:
        per[r["partition_id"]] = per.get(r["partition_id"], 0) + 1
    assert m["per_partition"] == per
    assert check_changelog(s, m)["success"] is True
    # Rerunning the interval replaces the staged batch with the same rows.
    assert extract(s, start=start, end=end) == m


def test_extract_refuses_an_interval_that_is_not_whole_buckets(small_lake, tmp_path, monkeypatch):
    """A 2 h bucket under the hourly schedule, or an interval off the bucket grid, is refused before
    the staged batch is written; so is a window shorter than a bucket, by the run's first task."""
    import shutil

    from weaver.core.errors import InvalidParameterError
    from weaver.core.time import parse_timepoint
    from weaver.pipeline import staging_path, validate_run
    from weaver.core.ids import interval_id

    lake = tmp_path / "lake"
    shutil.copytree(small_lake, lake)
    end = parse_timepoint("2026-01-02T12:00:00Z")
    monkeypatch.setenv("WEAVER_BUCKET", "2h")
    s = load_settings(lake=str(lake))
    with pytest.raises(InvalidParameterError, match="2h metrics buckets"):
        extract(s, start=end - timedelta(hours=1), end=end)
    with pytest.raises(InvalidParameterError, match="2h metrics buckets"):
        validate_run(s, start=end - timedelta(hours=1), end=end, window="24h", model="path")
    monkeypatch.delenv("WEAVER_BUCKET")
    s = load_settings(lake=str(lake))
    with pytest.raises(InvalidParameterError, match="1h metrics buckets"):
        extract(s, start=end - timedelta(minutes=90), end=end - timedelta(minutes=30))
    with pytest.raises(InvalidParameterError, match="window"):
        validate_run(s, start=end - timedelta(hours=1), end=end, window="30m", model="path")
    for start, stop in ((end - timedelta(hours=1), end), (end - timedelta(minutes=90), end - timedelta(minutes=30))):
        assert not Path(staging_path(s, interval_id(start, stop))).exists()
    validate_run(s, start=end - timedelta(hours=1), end=end, window="24h", model="path")  # the defaults pass
    # as Airflow passes them: pendulum instants
    import pendulum

    p_end = pendulum.instance(end)
    validate_run(s, start=p_end.subtract(hours=1), end=p_end, window="24h", model="path")
    with pytest.raises(InvalidParameterError, match="1h metrics buckets"):
        validate_run(s, start=p_end.subtract(minutes=90), end=p_end.subtract(minutes=30), window="24h", model="path")


def _lineage(lake):
    return Lineage(storage.read(storage.table_uri(str(lake), storage.PARTITIONS), storage.PARTITIONS))


def _frame(lake, mutate):
    lin = _lineage(lake)
    rows = _changes(lake).slice(1000, 200).to_pylist()
    mutate(rows)
    t = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.CHANGELOG])
    return changelog_check_frame(t, lin, expected_first_seq=1001)


def test_suite_passes_a_good_batch(small_lake):
    assert validate("changelog", _frame(small_lake, lambda rows: None))["success"]


@pytest.mark.parametrize("name,mutate,needle", [
    ("gap", lambda rows: rows.pop(50), "seq_step"),
    ("duplicate", lambda rows: rows.__setitem__(51, dict(rows[51], seq=rows[50]["seq"])), "seq"),
    ("bad op", lambda rows: rows.__setitem__(10, dict(rows[10], op="UPSERT")), "op"),
    ("key outside range", lambda rows: rows.__setitem__(10, dict(rows[10], key="\uffff")), "in_range"),
    ("unknown partition", lambda rows: rows.__setitem__(10, dict(rows[10], partition_id="nope")), "owner_ok"),
])
def test_suite_fails_a_bad_batch_naming_the_check(small_lake, name, mutate, needle):
    with pytest.raises(ExpectationFailedError, match=needle):
        validate("changelog", _frame(small_lake, mutate))


def test_suite_fails_a_write_by_a_partition_after_it_split(small_lake):
    """A change in the parent's key range, labelled with the parent after the split retired it:
    the key is in range, but the parent no longer owns it (owner_ok, from the lineage's
    created/retired seqs)."""
    lin = _lineage(small_lake)
    parent = next(p for p in lin if p.retired_seq is not None)
    children = {p.partition_id for p in lin if p.parent_id == parent.partition_id}
    rows = _changes(small_lake).to_pylist()
    i = next(i for i, r in enumerate(rows) if r["seq"] > parent.retired_seq and r["partition_id"] in children)
    window = rows[i - 5:i + 5]
    window[5] = dict(window[5], partition_id=parent.partition_id)
    t = pa.Table.from_pylist(window, schema=storage.SCHEMAS[storage.CHANGELOG])
    frame = changelog_check_frame(t, lin, expected_first_seq=window[0]["seq"])
    assert frame["in_range"].tolist() == [True] * 10
    assert frame["owner_ok"].tolist() == [True] * 5 + [False] + [True] * 4
    with pytest.raises(ExpectationFailedError, match="owner_ok"):
        validate("changelog", frame)
