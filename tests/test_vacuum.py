"""weaver vacuum: expires what no restore inside the recovery window needs, and nothing else.

Oracle: the brute-force fold of the ORIGINAL change log (kept in memory before vacuum ran).
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.lakes import instants, random_lakes, split_log, write_lake
from tests.oracle import fold, rows_to_dict


def _settings(lake: str, window: str | timedelta):
    from weaver.core.settings import load_settings

    return load_settings(lake=lake).with_overrides(recovery_window=window)


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_lakes(), st.data())
def test_every_restore_inside_the_window_stays_correct(lake_and_snaps, data):
    from weaver.log import Lineage
    from weaver.core.errors import InvalidTimepointError
    from weaver.pitr import restore_partition
    from weaver.pitr import vacuum

    log, snaps, chunk = lake_and_snaps
    pts = instants(log, snaps)
    now = pts[-1]
    window_start = data.draw(st.sampled_from(pts[1:-1]))  # now = pts[-1]: the window is never empty
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(write_lake(Path(tmp) / "lake", log, snaps, log_chunk=chunk), now - window_start)
        first = vacuum(s, now)
        again = vacuum(s, now)
        assert again["snapshots_expired"] == 0 and again["log_rows_deleted"] == 0  # idempotent
        lineage = Lineage.load(s)
        inside = [t for t in pts if t >= window_start]
        for at in data.draw(st.lists(st.sampled_from(inside), min_size=1, max_size=3, unique=True)) + [window_start]:
            for p in log["partitions"]:
                r = restore_partition(s, p["partition_id"], at, lineage=lineage)
                assert rows_to_dict(r.table) == fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], at=at), \
                    (p["partition_id"], at, first)
        # Outside the window a restore is either still right or refused - never silently wrong.
        for at in [t for t in pts if t < window_start][:3]:
            for p in log["partitions"]:
                try:
                    r = restore_partition(s, p["partition_id"], at, lineage=lineage)
                except InvalidTimepointError:
                    continue
                assert rows_to_dict(r.table) == fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], at=at)


def test_vacuum_removes_old_snapshots_and_log_prefix(tmp_path):
    from weaver.core import storage
    from weaver.core.errors import InvalidTimepointError
    from weaver.pitr import read_snapshot_catalog, restore_partition
    from weaver.pitr import vacuum

    log, snaps = split_log()  # snapshots at seq 3 (p0000) and seq 9 (p0001, p0002); split after seq 6
    now = log["changes"][-1]["ts"]
    window_start = log["changes"][9]["ts"]  # seq 10: the seq-9 snapshots cover every restore from here on
    s = _settings(write_lake(tmp_path / "lake", log, snaps), now - window_start)
    dry = vacuum(s, now, dry_run=True)
    assert dry["expire"] == ["p0000@3"] and dry["log_start_seq"] == 9 and dry["log_rows_deleted"] == 8
    assert sorted(read_snapshot_catalog(s).column("snapshot_id").to_pylist()) == ["p0000@3", "p0001@9", "p0002@9"]  # dry run

    done = vacuum(s, now)
    assert done["snapshots_expired"] == 1 and done["log_rows_deleted"] == 8
    assert sorted(read_snapshot_catalog(s).column("snapshot_id").to_pylist()) == ["p0001@9", "p0002@9"]
    left = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    assert sorted(left.column("seq").to_pylist()) == [9, 10, 11, 12]
    snap_ids = set(storage.read(storage.uri_for(s, storage.SNAPSHOTS), storage.SNAPSHOTS).column("snapshot_id").to_pylist())
    assert snap_ids == {"p0001@9", "p0002@9"}

    r = restore_partition(s, "p0000", window_start)
    assert rows_to_dict(r.table) == fold(log["changes"], at=window_start)
    with pytest.raises(InvalidTimepointError, match="recovery window"):
        restore_partition(s, "p0000", log["changes"][2]["ts"])


def test_nothing_expires_inside_a_long_window(tmp_path):
    from weaver.pitr import vacuum

    log, snaps = split_log()
    s = _settings(write_lake(tmp_path / "lake", log, snaps), "35d")  # the default window
    r = vacuum(s, log["changes"][-1]["ts"] + timedelta(days=1))
    assert r["expire"] == [] and r["log_rows_deleted"] == 0 and r["log_start_seq"] is None
