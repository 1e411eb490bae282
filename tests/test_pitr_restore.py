"""restore_partition (delta-rs + Arrow) against the brute-force fold of tests/oracle.py.

Random logs with random real splits (tests/lakes.py) are written as real Delta tables; base snapshots
are hand-built from the oracle (Spark-written snapshots are checked in test_snapshots.py), so
these property tests exercise the restore planner and replay across lineage quickly.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.lakes import T0, instants, random_lakes, split_log, write_lake
from tests.oracle import fold, rows_to_dict


def _settings(lake: str):
    from weaver.core.settings import load_settings

    return load_settings(lake=lake)


# --- property tests --------------------------------------------------------------------------------
@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_lakes(), st.data())
def test_restore_equals_oracle_fold_for_any_partition_and_instant(lake_and_snaps, data):
    from weaver.log import Lineage
    from weaver.pitr import restore_partition

    log, snaps, chunk = lake_and_snaps
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(write_lake(Path(tmp) / "lake", log, snaps, log_chunk=chunk))
        lineage = Lineage.load(s)
        pts = instants(log, snaps)
        chosen = data.draw(st.lists(st.sampled_from(pts), min_size=1, max_size=3, unique=True))
        for at in chosen:
            for p in log["partitions"]:
                r = restore_partition(s, p["partition_id"], at, lineage=lineage)
                want = fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], at=at)
                assert rows_to_dict(r.table) == want, (p["partition_id"], at, r.source_snapshot_id)
                keys = r.table.column("key").to_pylist()
                assert keys == sorted(keys)
                assert r.as_of_seq == max((c["seq"] for c in log["changes"] if c["ts"] <= at), default=0)


# --- hand-picked cases -------------------------------------------------------------------------------
def test_retired_parent_after_split_combines_children_snapshots(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["changes"][-1]["ts"]
    r = restore_partition(s, "p0000", at)
    assert r.source_snapshot_id == "p0001@9+p0002@9"
    assert r.changes_replayed == 3  # seqs 10..12 only: the children's snapshots at seq 9 are the base
    assert rows_to_dict(r.table) == {"k15": b"k15@11", "k20": b"k20@8", "k55": b"k55@7", "k70": b"k70@4",
                                     "k80": b"k80@6", "k90": b"k90@9", "k95": b"k95@12"}


def test_child_restored_before_its_creation_uses_parent_snapshot(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["changes"][3]["ts"]  # seq 4, before the split at seq 6
    r = restore_partition(s, "p0002", at)
    assert r.source_snapshot_id == "p0000@3"
    assert r.as_of_seq == 4 and r.changes_replayed == 1
    assert rows_to_dict(r.table) == {"k60": b"k60@2", "k70": b"k70@4"}


def test_instant_before_first_snapshot_replays_from_empty(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    r = restore_partition(s, "p0001", log["changes"][1]["ts"])
    assert r.source_snapshot_id is None and r.as_of_seq == 2 and r.changes_replayed == 1
    assert rows_to_dict(r.table) == {"k10": b"k10@1"}
    before = restore_partition(s, "p0000", T0 - timedelta(days=1))
    assert before.as_of_seq == 0 and before.table.num_rows == 0


def test_instant_exactly_at_split(tmp_path):
    from weaver.pitr import restore_partition

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    at = log["splits"][0]["split_ts"]
    for pid, lo, hi in (("p0000", None, None), ("p0001", None, "k50"), ("p0002", "k50", None)):
        r = restore_partition(s, pid, at)
        assert rows_to_dict(r.table) == fold(log["changes"], key_lo=lo, key_hi=hi, at=at)


def test_unknown_partition_and_naive_instant(tmp_path):
    from weaver.core.errors import InvalidTimepointError, UnknownPartitionError
    from weaver.pitr import restore_partition

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps))
    with pytest.raises(UnknownPartitionError, match="p0099"):
        restore_partition(s, "p0099", T0)
    with pytest.raises(InvalidTimepointError, match="timezone"):
        restore_partition(s, "p0000", datetime(2026, 1, 1, 12))


def test_restore_on_simulated_lake_matches_oracle(small_lake):
    from weaver.log import Lineage, read_changes
    from weaver.pitr import restore_partition

    s = _settings(str(small_lake))
    changes = read_changes(s).to_pylist()
    lineage = Lineage.load(s)
    for at in (changes[100]["ts"], changes[len(changes) // 2]["ts"], changes[-1]["ts"]):
        for p in lineage:
            r = restore_partition(s, p.partition_id, at, lineage=lineage)
            assert rows_to_dict(r.table) == fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=at)
