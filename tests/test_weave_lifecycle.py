"""Lifecycle of woven sequences (active -> confirmed | refuted -> expired) and vacuum of the tier.

Catalog rows and woven rows are built by hand (no Spark): the expected statuses follow from the
hand-written `splits` history and the windows.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
import pyarrow as pa
import pytest

from tests.lakes import H, T0, make_log, weave_settings, write_lake


def _weave(pid: str, source: str, split_ts, window_start, window_end, status="active", split_key="k05") -> dict:
    wid = hashlib.sha1(pid.encode()).hexdigest()[:16]
    return {"weave_id": wid, "prediction_id": pid, "source_partition_id": source, "split_key": split_key,
            "split_ts": split_ts, "confidence": 0.9, "window_start": window_start, "window_end": window_end,
            "child_ids": [f"{source}~{wid[:8]}~L", f"{source}~{wid[:8]}~R"], "status": status,
            "created_at": window_start, "last_timepoint": split_ts, "last_seq": 10, "actual_split_key": None,
            "actual_split_ts": None, "updated_at": window_start}


def _woven_rows(w: dict, n: int = 3) -> list[dict]:
    return [{"weave_id": w["weave_id"], "woven_partition_id": w["child_ids"][i % 2], "source_partition_id": w["source_partition_id"],
             "timepoint": w["split_ts"], "as_of_seq": 10, "key": f"k{i:02d}", "value": b"v"} for i in range(n)]


@pytest.fixture()
def tier(tmp_path):
    """A lake whose p0 really splits (see make_log) and four hand-built sequences."""
    from deltalake import write_deltalake

    from weaver.core import storage

    data = make_log(seed=3)
    settings = weave_settings(write_lake(tmp_path / "lake", data), woven_retention="1d")
    real = data["splits"][0]["split_ts"]  # ~05:37
    assert T0 + 5 * H < real < T0 + 6 * H
    seqs = {
        # Window holds the real split: confirmed once `at` has passed it.
        "hit": _weave("hit", "p0", T0 + 5 * H, T0 + 2 * H, T0 + 8 * H),
        # Another partition, no split ever: refuted when its window closes.
        "miss": _weave("miss", "p1", T0 + 4 * H, T0 + 2 * H, T0 + 8 * H),
        # Same parent, but the window starts after the real split: refuted.
        "late": _weave("late", "p0", T0 + 8 * H, T0 + 7 * H, T0 + 12 * H),
        # A sequence woven long ago, already refuted: expires first.
        "old": _weave("old", "p1", T0 + H, T0, T0 + 2 * H, status="refuted"),
    }
    from weaver.weave import write_woven_catalog

    write_woven_catalog(settings, list(seqs.values()))
    rows = [r for w in seqs.values() for r in _woven_rows(w)]
    write_deltalake(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS),
                    pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]), partition_by=["weave_id"])
    return settings, data, seqs


def _statuses(settings) -> dict[str, str]:
    from weaver.weave import read_woven_catalog

    return {r["prediction_id"]: r["status"] for r in read_woven_catalog(settings).to_pylist()}


def test_confirm_refute_expire(tier):
    from weaver.core import storage
    from weaver.weave import read_woven_catalog, reconcile

    settings, data, seqs = tier
    real = data["splits"][0]

    r = reconcile(settings, at=T0 + 5 * H)  # before the real split: nothing is known yet
    assert (r["confirmed"], r["refuted"], r["expired"]) == (0, 0, 0)
    assert _statuses(settings) == {"hit": "active", "miss": "active", "late": "active", "old": "refuted"}

    r = reconcile(settings, at=T0 + 7 * H)  # the real split happened inside hit's window
    assert (r["confirmed"], r["refuted"]) == (1, 0)
    row = {x["prediction_id"]: x for x in read_woven_catalog(settings).to_pylist()}["hit"]
    assert row["status"] == "confirmed" and row["updated_at"] == T0 + 7 * H
    assert row["actual_split_key"] == real["split_key"] and row["actual_split_ts"] == real["split_ts"]
    assert r["timing_error_s"][row["weave_id"]] == (real["split_ts"] - seqs["hit"]["split_ts"]).total_seconds()

    r = reconcile(settings, at=T0 + 8 * H)  # hit's and miss's windows close
    assert (r["confirmed"], r["refuted"], r["expired"]) == (0, 1, 0)
    assert _statuses(settings) == {"hit": "confirmed", "miss": "refuted", "late": "active", "old": "refuted"}

    # late's window closes at 12:00 without a split of p0 in it, but the change log ends before
    # 12:00: the outcome is unknown (censored), so late stays active - refuted is final.
    assert max(c["ts"] for c in data["changes"]) < T0 + 12 * H
    r = reconcile(settings, at=T0 + 12 * H)
    assert _statuses(settings)["late"] == "active" and r["refuted"] == 0

    r = reconcile(settings, at=T0 + 26 * H)  # old: 2h + 1d retention
    assert r["expired"] == 1 and _statuses(settings)["old"] == "expired"
    r = reconcile(settings, at=T0 + 32 * H)  # hit and miss: 8h + 1d
    assert r["expired"] == 2
    assert _statuses(settings) == {"hit": "expired", "miss": "expired", "late": "active", "old": "expired"}

    # Reconciling again changes nothing and adds no catalog version.
    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    v = storage.version_of(uri)
    r = reconcile(settings, at=T0 + 32 * H)
    assert (r["confirmed"], r["refuted"], r["expired"]) == (0, 0, 0) and storage.version_of(uri) == v


def test_active_sequence_past_its_window_and_retention_is_refuted_then_expired_in_one_pass(tier):
    from weaver.weave import read_woven_catalog, reconcile

    settings, data, _ = tier
    r = reconcile(settings, at=T0 + 40 * H)
    # late's window (to 12:00) is past the end of the change log: censored, it stays active.
    assert r["statuses"] == {"expired": 3, "active": 1} and r["expired"] == 3
    rows = {x["prediction_id"]: x for x in read_woven_catalog(settings).to_pylist()}
    # hit went active -> confirmed -> expired in one pass: the real split is still recorded.
    assert rows["hit"]["actual_split_key"] == data["splits"][0]["split_key"]
    assert rows["miss"]["actual_split_key"] is None


def test_vacuum_removes_only_expired_sequences(tier, monkeypatch):
    from weaver.core import storage
    from weaver.weave import read_woven_catalog, vacuum_woven

    settings, _, seqs = tier
    settings = settings.with_overrides(woven_retention="2h")
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)

    def by_weave():
        t = storage.read(uri, storage.WOVEN_SNAPSHOTS).to_pylist()
        out: dict[str, list] = {}
        for r in t:
            out.setdefault(r["weave_id"], []).append((r["woven_partition_id"], r["timepoint"], r["key"], r["value"]))
        return {k: sorted(v) for k, v in out.items()}

    before = by_weave()
    files_before = set(storage.open_table(uri).file_uris())
    # At 09:00 with 2h retention only old (window end 02:00) has expired; hit (confirmed), miss
    # (refuted at 08:00, expires at 10:00) and late (active) keep every row.
    r = vacuum_woven(settings, now=T0 + 9 * H)
    st = {x["prediction_id"]: x["status"] for x in read_woven_catalog(settings).to_pylist()}
    assert st == {"hit": "confirmed", "miss": "refuted", "late": "active", "old": "expired"}
    assert r["expired_sequences"] == 1 and r["rows_deleted"] == 3
    after = by_weave()
    old_id = seqs["old"]["weave_id"]
    assert old_id not in after
    assert after == {k: v for k, v in before.items() if k != old_id}  # active, confirmed, refuted untouched
    # The surviving sequences' data files are the very same files.
    kept = {f for f in files_before if f"weave_id={old_id}" not in f}
    assert kept <= set(storage.open_table(uri).file_uris())

    # Removed files stay on disk within the retention (time travel still reads them) ...
    assert any(f"weave_id={old_id}" in f for f in _files_on_disk(uri))
    # With a 1 s retention hit and miss expire at 09:00 too, but the vacuum rounds the retention up
    # to whole hours (delta-rs vacuums by hours): no file removed a second ago goes yet.
    time.sleep(1.1)
    r = vacuum_woven(settings.with_overrides(woven_retention="1s"), now=T0 + 9 * H)
    assert r["newly_expired"] == 2 and r["files_removed"] == 0
    assert any(f"weave_id={seqs['hit']['weave_id']}" in f for f in _files_on_disk(uri))
    # ... and they go once it has passed (an hour is too long to wait: the vacuum is told 0 h),
    # while the active sequence keeps its rows and its file.
    import weaver.weave.lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "_vacuum_hours", lambda dt, hours: 0)
    r = vacuum_woven(settings.with_overrides(woven_retention="1s"), now=T0 + 9 * H)
    assert r["newly_expired"] == 0 and r["files_removed"] >= 3
    on_disk = _files_on_disk(uri)
    for name in ("old", "hit", "miss"):
        assert all(f"weave_id={seqs[name]['weave_id']}" not in f for f in on_disk)
    late_id = seqs["late"]["weave_id"]
    assert any(f"weave_id={late_id}" in f for f in on_disk)
    assert by_weave() == {late_id: before[late_id]}


def _files_on_disk(uri: str) -> list[str]:
    from pathlib import Path

    return [str(p) for p in Path(uri).rglob("*.parquet") if "_delta_log" not in str(p)]


def test_reconcile_without_splits_table_and_with_naive_time(tmp_path):
    from datetime import datetime

    from weaver.core.errors import InvalidTimepointError
    from weaver.weave import reconcile

    data = make_log(seed=1, split_at=None)
    settings = weave_settings(write_lake(tmp_path / "lake", data))
    r = reconcile(settings, at=T0)
    assert r["statuses"] == {} and r["confirmed"] == 0
    with pytest.raises(InvalidTimepointError):
        reconcile(settings, at=datetime(2026, 1, 1))


def test_a_sub_hour_retention_keeps_the_files_an_old_version_still_needs(tier):
    """WEAVER_WOVEN_RETENTION=30m: the vacuum rounds up to 1 h (not down to 0 h), so a reader of
    version 0 - the rows as written by hand in the fixture - still gets every row after the
    expired sequences' rows were deleted and the tier vacuumed."""
    from weaver.core import storage
    from weaver.weave import vacuum_woven, woven_as_of

    settings, _, seqs = tier
    settings = settings.with_overrides(woven_retention="30m")
    expect = sorted((r["weave_id"], r["woven_partition_id"], r["key"]) for w in seqs.values() for r in _woven_rows(w))
    r = vacuum_woven(settings, now=T0 + 40 * H)
    assert r["expired_sequences"] == 3 and r["rows_deleted"] == 9 and r["files_removed"] == 0
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    assert storage.version_of(uri) >= 1
    got = sorted((r["weave_id"], r["woven_partition_id"], r["key"]) for r in woven_as_of(settings, version=0).to_pylist())
    assert got == expect


def test_a_window_past_the_end_of_the_log_is_not_refuted_and_a_later_split_in_it_confirms_it(tier):
    """An active sequence whose window_end the change log has not reached stays active however late
    `at` is (a wall-clock --now); once the log and a real split inside the window arrive, it is
    confirmed with that split (hand-written rows: p1 splits at k30 at 11:00)."""
    from deltalake import write_deltalake

    from weaver.core import storage
    from weaver.weave import read_woven_catalog, reconcile, vacuum_woven, write_woven_catalog

    settings, data, _ = tier
    end = max(c["ts"] for c in data["changes"])
    assert end < T0 + 10 * H
    open_ = _weave("open", "p1", T0 + 9 * H, T0 + 8 * H, T0 + 12 * H, split_key="k30")
    write_woven_catalog(settings, [open_])
    wall_clock = T0 + 300 * H  # far past window_end + retention (1 d)
    r = reconcile(settings, at=wall_clock)
    assert _statuses(settings)["open"] == "active" and r["refuted"] == 0
    vacuum_woven(settings, now=wall_clock)
    assert _statuses(settings)["open"] == "active"

    # The log goes on to 12:30; p1 really splits at 11:00 at key k30.
    seq = max(c["seq"] for c in data["changes"])
    split_ts = T0 + 11 * H
    more = []
    m = timedelta(minutes=1)
    for i, ts in enumerate([T0 + 10 * H + 15 * m, T0 + 11 * H + 10 * m, T0 + 12 * H + 30 * m]):
        pid = "p1" if ts < split_ts else "p5"
        more.append({"seq": seq + 1 + i, "ts": ts, "partition_id": pid, "key": "k35", "op": "PUT",
                     "value": b"v%d" % i, "value_bytes": 2})
    write_deltalake(storage.uri_for(settings, storage.CHANGELOG),
                    pa.Table.from_pylist(more, schema=storage.SCHEMAS[storage.CHANGELOG]), mode="append")
    split = {"parent_id": "p1", "split_seq": seq + 1, "split_ts": split_ts, "split_key": "k30",
             "left_id": "p4", "right_id": "p5", "reason": "size"}
    write_deltalake(storage.uri_for(settings, storage.SPLITS),
                    pa.Table.from_pylist([split], schema=storage.SCHEMAS[storage.SPLITS]), mode="append")
    r = reconcile(settings, at=T0 + 13 * H)
    assert r["confirmed"] == 1
    row = {x["prediction_id"]: x for x in read_woven_catalog(settings).to_pylist()}["open"]
    assert row["status"] == "confirmed" and row["actual_split_ts"] == split_ts
    assert row["actual_split_key"] == "k30"
