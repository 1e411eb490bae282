"""Incremental metrics and forecast inputs (issue 11.1) against from-scratch folds and the oracle.

Random lakes (tests/lakes.make_log: two roots, one real split at a random change) are measured by
hourly runs at successive instants. Each run must continue from the checkpoint the previous one
left (`metrics_state`), and every stored metrics row and every forecast input must equal both
the from-scratch computation (checkpoints off) and a brute-force fold of the raw rows
(tests.oracle.fold). Rerunning the last interval changes nothing on disk.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings as hyp_settings, strategies as st

from tests.lakes import T0, make_log, write_lake
from tests.oracle import fold
from tests.test_metrics import oracle_metrics, stored
from weaver.core import storage
from weaver.core.settings import load_settings

H = timedelta(hours=1)


def _settings(lake, **kw):
    # A short forecast history so that gather, too, starts from a checkpoint inside a 12 h lake.
    return load_settings(lake=str(lake), forecast_history="3h", min_history_buckets=2, **kw)


def _files(lake) -> dict[str, set[str]]:
    """Every file of the metrics tables (data and Delta log): a rerun must add none."""
    out = {}
    for name in (storage.PARTITION_METRICS, storage.METRICS_STATE):
        root = storage.table_uri(str(lake), name)
        out[name] = {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}
    return out


def oracle_inputs(changes: list[dict], parts: list[dict], at: datetime, history: timedelta) -> dict:
    """{partition_id: (ds us, size, writes)} of the partitions active at `at`, from raw rows:
    own buckets from the partition's birth bucket on, its key range's before (DESIGN §5 step 2)."""
    bu = int(H.total_seconds() * 1_000_000)
    us = lambda t: int((t - T0).total_seconds() * 1_000_000) + T0_US  # noqa: E731
    seen = [c for c in changes if c["ts"] <= at]
    if not seen:
        return {}
    last_end = us(at) // bu * bu
    first = us(min(c["ts"] for c in seen)) // bu * bu
    hist_start = min(max(first, last_end - int(history.total_seconds() * 1_000_000)), last_end)
    out = {}
    for p in parts:
        if not (p["created_ts"] <= at and (p["retired_ts"] is None or at < p["retired_ts"])):
            continue
        lo, hi = p["key_lo"], p["key_hi"]
        born = -((-us(p["created_ts"])) // bu) * bu
        ds, size, writes = [], [], []
        for b in range(hist_start, last_end, bu):
            in_b = [c for c in seen if b <= us(c["ts"]) < b + bu]
            state = fold([c for c in seen if us(c["ts"]) < b + bu], key_lo=lo, key_hi=hi)
            ds.append(b + bu)
            size.append(sum(len(k.encode()) + len(v) for k, v in state.items()))
            if b < born:  # the range inside its ancestors: every change on its keys
                writes.append(sum(1 for c in in_b if c["key"] >= lo and (hi is None or c["key"] < hi)))
            else:
                writes.append(sum(1 for c in in_b if c["partition_id"] == p["partition_id"]))
        out[p["partition_id"]] = (ds, size, writes)
    return out


T0_US = int(T0.timestamp()) * 1_000_000


def _inputs(run) -> dict:
    return {pin.partition.partition_id: (pin.ds.tolist(), pin.size.tolist(), (pin.rate * 3600).round().tolist(),
                                         pin.size_key, pin.throughput_key, pin.skip_reason) for pin in run.partitions}


def check_runs(lake, log: dict, instants: list[datetime], **kw) -> list[int]:
    """Run build_metrics at each instant and check it; the fold batches of each run."""
    from weaver.predict import build_metrics, gather, run_params
    from weaver.predict.metrics import checkpoints

    s, scratch = _settings(lake, **kw), _settings(lake, metrics_checkpoints=0)
    first = min(c["ts"] for c in log["changes"]).replace(minute=0, second=0, microsecond=0)
    batches = []
    for i, at in enumerate(instants):
        r = build_metrics(s, end=at)
        batches.append(r["fold_batches"])
        if i:  # every run after the first continues from the previous run's checkpoint
            assert r["checkpoint"] == instants[i - 1].replace(minute=0, second=0, microsecond=0)
        last = at.replace(minute=0, second=0, microsecond=0)
        assert stored(lake) == oracle_metrics(lake, first, last, changes=log["changes"])
        assert checkpoints(s)[-1].as_of_us == int(last.timestamp()) * 1_000_000
        inc, full = gather(s, run_params(s, at=at)), gather(scratch, run_params(scratch, at=at))
        assert _inputs(inc) == _inputs(full)
        want = oracle_inputs(log["changes"], log["partitions"], at, s.forecast_history)
        assert {p: v[:3] for p, v in _inputs(inc).items()} == {p: (d, [float(x) for x in sz], [float(w) for w in wr])
                                                               for p, (d, sz, wr) in want.items()}
    # a rerun of the last interval commits nothing and adds no file
    files = _files(lake)
    versions = {n: storage.version_of(storage.table_uri(str(lake), n)) for n in files}
    build_metrics(s, end=instants[-1])
    assert _files(lake) == files
    assert {n: storage.version_of(storage.table_uri(str(lake), n)) for n in files} == versions
    # a backtest at a past instant (every checkpoint is ahead of it) is still exact
    past = instants[0]
    inc = gather(s, run_params(s, at=past))
    want = oracle_inputs(log["changes"], log["partitions"], past, s.forecast_history)
    assert {p: v[:3] for p, v in _inputs(inc).items()} == {p: (d, [float(x) for x in sz], [float(w) for w in wr])
                                                           for p, (d, sz, wr) in want.items()}
    return batches


# The split (change 90 of 100, about 10.8 h) falls between the third and the fourth run: the
# children start from the checkpoint their parent's keys were folded into. With one partition per
# fold batch, a parent splitting inside a run stays in its children's batch.
@pytest.mark.parametrize("batch", [0, 1], ids=["one-fold", "fold-per-partition"])
@example(seed=11, n=100, split_at=90, steps=[60, 60, 60, 60])
@example(seed=3, n=120, split_at=20, steps=[30, 90, 10])
@hyp_settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(40, 140), split_at=st.one_of(st.none(), st.integers(5, 35)),
       steps=st.lists(st.integers(1, 150), min_size=3, max_size=4))
def test_incremental_equals_scratch_and_oracle(tmp_path_factory, batch, seed, n, split_at, steps):
    log = make_log(seed, n, keys=30, span=timedelta(hours=12), split_at=split_at)
    lake = write_lake(tmp_path_factory.mktemp("lake"), log)
    # run ends: minutes after the first change, strictly increasing, some mid-bucket
    t, instants = T0 + 3 * H, []
    for m in steps:
        t = t + timedelta(minutes=m + 60)
        instants.append(t)
    batches = check_runs(lake, log, instants, metrics_batch_partitions=batch)
    # with a fold per partition every run folds the two roots' key ranges apart: the first from
    # the log's start (through one local copy of the log per range), the later ones from a checkpoint
    assert batches == [1] * len(instants) if batch == 0 else min(batches) >= 2, batches


def test_late_change_invalidates_checkpoints(tmp_path):
    """A change appended after a checkpoint with a ts before its instant: the run refolds and is exact."""
    from deltalake import write_deltalake

    from weaver.predict import build_metrics
    from weaver.predict.metrics import checkpoints

    log = make_log(7, 80, keys=20, span=timedelta(hours=8), split_at=30)
    last = max(log["changes"], key=lambda c: c["seq"])
    lake = write_lake(tmp_path / "lake", log)
    s = _settings(lake)
    end = last["ts"].replace(minute=0, second=0, microsecond=0) + 2 * H  # ahead of the log's last change
    build_metrics(s, end=end)
    assert checkpoints(s)[-1].as_of_us == int(end.timestamp()) * 1_000_000
    late = {"seq": last["seq"] + 1, "ts": last["ts"] + timedelta(minutes=1), "partition_id": "p1", "key": "k25",
            "op": "PUT", "value": b"x" * 500, "value_bytes": 500}
    write_deltalake(storage.table_uri(lake, storage.CHANGELOG),
                    pa.Table.from_pylist([late], schema=storage.SCHEMAS[storage.CHANGELOG]), mode="append")
    changes = log["changes"] + [late]
    r = build_metrics(s, end=end + H)
    assert r["checkpoint"] is None  # the checkpoint at `end` no longer holds: a from-scratch fold
    first = min(c["ts"] for c in changes).replace(minute=0, second=0, microsecond=0)
    assert stored(lake) == oracle_metrics(lake, first, end + H, changes=changes)
    assert [c.as_of_us for c in checkpoints(s)][-1] == int((end + H).timestamp()) * 1_000_000
    assert all(c.as_of_us <= int(late["ts"].timestamp() * 1_000_000) or c.as_of_us == checkpoints(s)[-1].as_of_us
               for c in checkpoints(s))
    r = build_metrics(s, end=end + 2 * H)
    assert r["checkpoint"] == end + H


def test_dag_resume_point_bootstraps_checkpoints(tmp_path):
    """The DAG always passes a start (its resume point): the first runs still leave a checkpoint."""
    from weaver.pipeline import resume_point
    from weaver.predict import build_metrics

    log = make_log(5, 90, keys=20, span=timedelta(hours=9), split_at=50)
    lake = write_lake(tmp_path / "lake", log)
    s = _settings(lake)
    build_metrics(s, start=T0 + 2 * H, end=T0 + 3 * H)  # a table that starts late
    used = []
    for h in range(4, 9):
        end = T0 + h * H
        used.append(build_metrics(s, start=resume_point(s, end), end=end)["checkpoint"])
    assert used[2:] == [T0 + (h - 2) * H for h in range(6, 9)]  # from the third run on: one bucket back
    assert stored(lake) == oracle_metrics(lake, T0, T0 + 8 * H, changes=log["changes"])


def test_retention_is_idempotent():
    from weaver.predict.metrics import _DAY_US, _retained

    hour = _DAY_US // 24
    xs = [i * hour for i in range(24 * 12)]
    keep = _retained(xs, 3, 9 * _DAY_US)
    assert _retained(sorted(keep), 3, 9 * _DAY_US) == keep
    assert set(xs[-3:]) <= keep
    assert {x // _DAY_US for x in keep} == set(range(2, 12))  # one a day over the horizon
    assert len(keep) == 10 + 3  # the first of days 2..11 and the three newest


def test_checkpoint_streams_to_small_row_groups_and_replaces_only_its_instant(tmp_path, monkeypatch):
    """The batched fold spills each group's checkpoint rows to a local file and writes them in
    one commit of small row groups (a later run decodes a few partitions at a time); the write
    replaces only its own instant's rows, and the run folder with the spill is gone afterwards."""
    import glob
    import tempfile

    import pyarrow.parquet as pq

    from weaver.predict import build_metrics, metrics
    from weaver.predict.metrics import checkpoints

    monkeypatch.setattr(metrics, "_STATE_ROWS_PER_BATCH", 1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    log = make_log(3, 120, keys=30, span=timedelta(hours=12), split_at=20)
    lake = write_lake(tmp_path / "lake", log)
    s = _settings(lake, metrics_batch_partitions=1)
    first = min(c["ts"] for c in log["changes"]).replace(minute=0, second=0, microsecond=0)
    instants = [T0 + 6 * H, T0 + 8 * H]
    spills, add = [], metrics._Spill.add

    def recording_add(self, t):
        add(self, t)
        spills.append(self._path)

    monkeypatch.setattr(metrics._Spill, "add", recording_add)
    for at in instants:
        assert build_metrics(s, end=at)["fold_batches"] >= 2
    from weaver.core.scratch import PREFIX, host_tag

    run_folder = str(tmp_path / "tmp" / f"{PREFIX}{os.getpid()}-{host_tag()}-run-")
    assert spills and all(p.startswith(run_folder) for p in spills)
    uri = storage.table_uri(str(lake), storage.METRICS_STATE)
    state = storage.read(uri, storage.METRICS_STATE)
    assert [c.as_of_us for c in checkpoints(s)] == [int(t.timestamp()) * 1_000_000 for t in instants]
    # hand-built expectation: per checkpoint, each active partition's live keys and their bytes
    # from a brute-force fold of the raw rows before the instant
    for ck in checkpoints(s):
        at = datetime.fromtimestamp(ck.as_of_us / 1e6, T0.tzinfo)
        rows = [r for r in state.to_pylist() if r["as_of_ts"] == at]
        want = {}
        for p in log["partitions"]:
            if p["created_ts"] <= at and (p["retired_ts"] is None or at < p["retired_ts"]):
                f = fold([c for c in log["changes"] if c["ts"] < at], key_lo=p["key_lo"], key_hi=p["key_hi"])
                want[p["partition_id"]] = {k: len(k.encode()) + len(v) for k, v in f.items()}
        got = {r["partition_id"]: dict(zip(r["keys"], r["item_bytes"])) for r in rows}
        assert got == want, at
    files = glob.glob(os.path.join(uri, "*.parquet"))
    assert files and all(pq.ParquetFile(f).metadata.row_group(i).num_rows == 1
                         for f in files for i in range(pq.ParquetFile(f).metadata.num_row_groups))
    assert not glob.glob(str(tmp_path / "tmp" / "weaver-*"))  # the run folder, with its spill, is gone
    assert stored(lake) == oracle_metrics(lake, first, instants[-1], changes=log["changes"])
