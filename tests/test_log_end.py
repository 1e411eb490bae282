"""weaver.log.last_change_ts / history_end: how far the history reaches, read from file statistics.

Oracle: the brute-force maximum of the `ts` of every row written (kept in memory), checked against
a full delta-rs read of the table too. Files are committed with the statistics each writer leaves:
delta-rs' own (timestamps truncated to the millisecond), Spark-style truncated maxima, maxima
rounded up (weaver.core.filecommit) and no `ts` statistic at all - so a maximum that the statistics
place in the wrong file, or do not state, must still be found.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.lakes import split_log, write_lake
from weaver.core import storage

X = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def _settings(lake, **kw):
    from weaver.core.settings import load_settings

    return load_settings(lake=str(lake), **kw)


def _rows(first_seq: int, offsets_us: list[int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"seq": first_seq + i, "ts": X + timedelta(microseconds=o), "partition_id": "p", "key": f"k{first_seq + i}",
          "op": "PUT", "value": b"v", "value_bytes": 1} for i, o in enumerate(offsets_us)],
        schema=storage.SCHEMAS[storage.CHANGELOG])


def _ms(t: datetime, up: bool = False) -> str:
    if up and t.microsecond % 1000:
        t = t.replace(microsecond=t.microsecond - t.microsecond % 1000) + MS
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _commit(uri: str, t: pa.Table, style: str) -> None:
    """Append `t` as one file: by delta-rs (`deltars`), or by hand with `truncated` / `rounded_up`
    millisecond ts statistics or `no_ts` (seq statistics only)."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.transaction import AddAction

    if style == "deltars" or not storage.is_table(uri):
        write_deltalake(uri, t, mode="append")
        return
    rel = f"part-hand-{uuid.uuid4()}.parquet"
    pq.write_table(t, f"{uri}/{rel}")
    seqs, ts = t.column("seq").to_pylist(), t.column("ts").to_pylist()
    lo, hi = {"seq": min(seqs)}, {"seq": max(seqs)}
    if style != "no_ts":
        lo["ts"], hi["ts"] = _ms(min(ts)), _ms(max(ts), up=style == "rounded_up")
    stats = json.dumps({"numRecords": t.num_rows, "minValues": lo, "maxValues": hi,
                        "nullCount": {c: 0 for c in lo}})
    dt = DeltaTable(uri)
    dt.create_write_transaction([AddAction(rel, Path(uri, rel).stat().st_size, {}, int(time.time() * 1000), True,
                                           stats)], mode="append", schema=dt.schema())


def _brute(uri: str) -> datetime | None:
    from deltalake import DeltaTable

    ts = DeltaTable(uri).to_pyarrow_table(columns=["ts"]).column("ts").to_pylist()
    return max(ts) if ts else None


STYLES = ("deltars", "truncated", "rounded_up", "no_ts")
commits_st = st.lists(st.tuples(st.lists(st.integers(0, 5000), min_size=1, max_size=6), st.sampled_from(STYLES)),
                      min_size=1, max_size=6)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits=commits_st, sort=st.booleans())
def test_last_change_ts_is_the_brute_force_maximum(commits, sort):
    """Several commits of µs timestamps within a few ms of each other (so statistics tie or mislead);
    `sort` False lets a later commit hold earlier ts (the maximum is not the ts of the last seq)."""
    from weaver.log import last_change_ts

    written: list[datetime] = []
    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(tmp)
        uri = storage.uri_for(s, storage.CHANGELOG)
        seq = 1
        offsets_all = sorted(o for offs, _ in commits for o in offs) if sort else None
        for offs, style in commits:
            if sort:
                offs, offsets_all = offsets_all[:len(offs)], offsets_all[len(offs):]
            t = _rows(seq, offs)
            seq += t.num_rows
            _commit(uri, t, style)
            written += t.column("ts").to_pylist()
            assert last_change_ts(s) == max(written) == _brute(uri)


def test_maximum_in_a_file_without_ts_statistics_and_in_a_tie(tmp_path):
    """The statistics say 12:00:00.004 (two files tie there); the real maximum is .004900 in the
    first, and .007 in a later file that states no ts statistic."""
    from weaver.log import last_change_ts

    s = _settings(tmp_path)
    uri = storage.uri_for(s, storage.CHANGELOG)
    _commit(uri, _rows(1, [1000, 4900]), "deltars")
    _commit(uri, _rows(3, [4100, 4200]), "truncated")
    assert last_change_ts(s) == X + timedelta(microseconds=4900)
    _commit(uri, _rows(5, [7000]), "no_ts")
    assert last_change_ts(s) == X + timedelta(microseconds=7000)


def test_after_vacuum_of_the_log_prefix(tmp_path):
    """weaver vacuum deletes the log's prefix (rewriting files): the end stays the brute-force one."""
    from weaver.log import history_end, last_change_ts
    from weaver.pitr import vacuum

    log, snaps = split_log()
    now = log["changes"][-1]["ts"]
    lake = write_lake(tmp_path / "lake", log, snaps, log_chunk=3)
    s = _settings(lake).with_overrides(recovery_window=now - log["changes"][9]["ts"])
    before = max(c["ts"] for c in log["changes"])
    assert last_change_ts(s) == before
    assert vacuum(s, now)["log_rows_deleted"] == 8
    uri = storage.uri_for(s, storage.CHANGELOG)
    assert last_change_ts(s) == before == _brute(uri)
    # history_end: the later of the log's end and the last split (the split lies before the end here)
    splits = storage.read(storage.uri_for(s, storage.SPLITS), storage.SPLITS)
    assert max(splits.column("split_ts").to_pylist()) < before
    assert history_end(s, splits) == before
    later = splits.set_column(splits.schema.get_field_index("split_ts"), "split_ts",
                              pa.array([before + timedelta(hours=1)] * splits.num_rows, storage.TS))
    assert history_end(s, later) == before + timedelta(hours=1)


def test_empty_and_missing_logs(tmp_path):
    from weaver.core.errors import TableNotFoundError
    from weaver.log import history_end, last_change_ts

    s = _settings(tmp_path / "none")
    no_splits = storage.empty(storage.SPLITS)
    assert last_change_ts(s, missing_ok=True) is None and history_end(s, no_splits, missing_ok=True) is None
    with pytest.raises(TableNotFoundError):
        last_change_ts(s)
    s = _settings(tmp_path / "empty")
    write_lake(tmp_path / "empty", {"changes": [], "partitions": [], "splits": []})
    assert last_change_ts(s) is None and history_end(s, no_splits) is None


@pytest.fixture()
def six_files(tmp_path, monkeypatch):
    """A log of six commits a second apart (two changes each, 500 µs apart) and the list each
    DeltaFiles.read appends (number of files, columns) to."""
    from weaver.core.deltafiles import DeltaFiles

    s = _settings(tmp_path)
    uri = storage.uri_for(s, storage.CHANGELOG)
    for i in range(6):
        _commit(uri, _rows(1 + 2 * i, [i * 1_000_000, i * 1_000_000 + 500]), "deltars")
    reads = []
    real = DeltaFiles.read

    def read(self, paths, columns, expr, **kw):
        reads.append((len(paths) if paths is not None else None, columns))
        return real(self, paths, columns, expr, **kw)

    monkeypatch.setattr(DeltaFiles, "read", read)
    return s, reads


def test_only_the_files_that_can_hold_the_maximum_are_read(six_files):
    """The statistics leave one file to read, and of it the rows from 2 ms before its stated
    maximum on."""
    from weaver.log import last_change_ts

    s, reads = six_files
    assert last_change_ts(s) == X + timedelta(microseconds=5_000_500)
    assert reads == [(1, ["ts"])]


def _brute_seqs(uri: str, tps: list[datetime]) -> tuple[datetime | None, list[int]]:
    """Every row read: the latest ts, and per timepoint the largest seq with ts <= it (0: none)."""
    from deltalake import DeltaTable

    rows = DeltaTable(uri).to_pyarrow_table(columns=["seq", "ts"]).to_pylist()
    last = max((r["ts"] for r in rows), default=None)
    return last, [max((r["seq"] for r in rows if r["ts"] <= tp), default=0) for tp in tps]


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits=commits_st, picks=st.lists(st.integers(-1500, 6500), min_size=1, max_size=5))
def test_seqs_at_is_the_brute_force_fold(commits, picks):
    """ChangeLog.seqs_at answers from statistics where a file lies wholly before the first
    timepoint and reads the rest: every answer is the brute force's, whatever the statistics say.
    ts grows with seq (DESIGN §4.5); timepoints fall before, inside, between and after the files."""
    from weaver.log import ChangeLog

    with tempfile.TemporaryDirectory() as tmp:
        s = _settings(tmp)
        uri = storage.uri_for(s, storage.CHANGELOG)
        offsets = sorted(o for offs, _ in commits for o in offs)
        seq = 1
        for offs, style in commits:
            t = _rows(seq, offsets[seq - 1:seq - 1 + len(offs)])
            seq += t.num_rows
            _commit(uri, t, style)
        tps = sorted(X + timedelta(microseconds=p) for p in picks)
        for k in range(len(tps)):  # every suffix: the first timepoint decides what is read
            assert ChangeLog(s).seqs_at(tps[k:]) == _brute_seqs(uri, tps[k:])
            assert ChangeLog(s).seq_at(tps[k]) == _brute_seqs(uri, [tps[k]])[1][0]


def test_seqs_at_reads_only_the_tail_from_the_first_timepoint(six_files):
    """Timepoints in the fifth file: the first four answer from their statistics and the sixth
    starts after the last one: only the fifth is read for seqs (and the sixth for the latest ts)."""
    from weaver.log import ChangeLog

    s, reads = six_files
    tps = [X + timedelta(microseconds=4_000_200), X + timedelta(microseconds=4_600_000)]
    assert ChangeLog(s).seqs_at(tps) == (X + timedelta(microseconds=5_000_500), [9, 10])
    assert reads == [(1, ["ts"]), (1, ["seq", "ts"])]


def test_seq_at_reads_a_file_without_ts_statistics(tmp_path):
    """delta-rs' pyarrow dataset gives a file without a `ts` statistic the guarantee `ts >= null`,
    which pruned it from seq_at's `ts <= at` filter: the second change was never found."""
    from weaver.log import ChangeLog

    s = _settings(tmp_path)
    uri = storage.uri_for(s, storage.CHANGELOG)
    _commit(uri, _rows(1, [768]), "deltars")
    _commit(uri, _rows(2, [3193]), "no_ts")
    for us, want in ((500, 0), (768, 1), (3192, 1), (3193, 2), (4744, 2)):
        tp = X + timedelta(microseconds=us)
        assert ChangeLog(s).seq_at(tp) == _brute_seqs(uri, [tp])[1][0] == want, us
