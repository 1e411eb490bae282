"""Concurrent writers (issue 14): Delta's optimistic-concurrency conflicts are retried (bounded,
with backoff, ``weaver.core.retry.retry_commit``) or refused with ConcurrentWriteError; rows are
never lost or duplicated, and readers never see a torn state. One test per pair. Oracles: the
brute-force fold (tests/oracle.py) and the tables read straight with delta-rs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pyarrow as pa
import pytest

from tests.lakes import H, T0, assert_matches_oracle, make_log, prediction, put_predictions, weave_settings, write_lake
from tests.oracle import fold, rows_to_dict


def run_together(*fns, timeout_s: float = 600.0) -> list:
    """Run `fns` in threads started together; return their results (an exception counts as one)."""
    out: list = [None] * len(fns)

    def wrap(i, fn):
        try:
            out[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out[i] = exc

    threads = [threading.Thread(target=wrap, args=(i, f), daemon=True) for i, f in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return out


def test_a_conflicting_merge_is_retried_and_gives_up_with_a_named_error(tmp_path):
    """Two delta-rs MERGEs planned on the same version: the loser's commit fails (a real
    CommitFailedError), retry_commit re-plans on the winner's version; with no retries left the
    caller gets ConcurrentWriteError (409)."""
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    from weaver.core.errors import ConcurrentWriteError
    from weaver.core.retry import is_conflict, retry_commit

    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": ["a", "b"], "v": [1, 2]}))

    def merge_on(dt, rows):
        return (dt.merge(rows, predicate="t.id = s.id", source_alias="s", target_alias="t")
                .when_matched_update_all().when_not_matched_insert_all().execute())

    stale = DeltaTable(uri)  # planned on version 0
    merge_on(DeltaTable(uri), pa.table({"id": ["a"], "v": [10]}))  # the winner commits version 1
    with pytest.raises(CommitFailedError) as lost:
        merge_on(stale, pa.table({"id": ["a", "c"], "v": [11, 3]}))
    assert is_conflict(lost.value)

    # the first try plans on a stale version again, the retry opens the table afresh
    handles = iter([lambda: DeltaTable(uri, version=1), lambda: DeltaTable(uri)])
    merge_on(DeltaTable(uri), pa.table({"id": ["b"], "v": [20]}))  # version 2 makes version 1 stale
    retry_commit(lambda: merge_on(next(handles)(), pa.table({"id": ["a", "c"], "v": [11, 3]})), what="test", base_s=0.01)
    assert sorted(DeltaTable(uri).to_pyarrow_table().to_pylist(), key=lambda r: r["id"]) == \
        [{"id": "a", "v": 11}, {"id": "b", "v": 20}, {"id": "c", "v": 3}]

    with pytest.raises(ConcurrentWriteError, match="rerun") as refused:
        retry_commit(lambda: merge_on(DeltaTable(uri, version=0), pa.table({"id": ["d"], "v": [4]})),
                     what="test", attempts=2, base_s=0.01)
    assert refused.value.http_status == 409
    assert "d" not in DeltaTable(uri).to_pyarrow_table().column("id").to_pylist()


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["arrow", "spark"])
def test_two_weave_runs_together_on_a_fresh_lake(spark, tmp_path, caplog, engine):
    """Both runs plan on an empty woven tier and reach the write at the same moment (a barrier at
    the pause point: before the data for Spark; for Arrow, whose rows are spooled first, right
    before the commit and after each run saw no table): both try to create woven_snapshots. One
    wins; the other's conflict is retried as a replaceWhere. The tier holds exactly the oracle's rows, once, and one catalog row."""
    from dataclasses import replace

    from weaver.core import faults
    from weaver.weave import weave

    data = make_log(seed=3)
    s = replace(weave_settings(write_lake(tmp_path / "lake", data)), weave_engine=engine)
    p = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    put_predictions(s, [p])
    barrier = threading.Barrier(2, timeout=300)
    lined_up: set[int] = set()
    # Arrow pauses after each run decided to create the table: the partner released second goes on
    # a second later, when the winner's table is whole, and must still be refused and retried.
    late_s = 1.0 if engine == "arrow" else 0.0

    def first_attempt_waits() -> None:  # a retry must not wait for a partner that has finished
        if threading.get_ident() not in lined_up:
            lined_up.add(threading.get_ident())
            if barrier.wait() == 0:
                time.sleep(late_s)

    point = "weave.before_data" if engine == "spark" else "weave.arrow_commit"
    with faults.hooked(point, first_attempt_waits), caplog.at_level("WARNING", logger="weaver.core.retry"):
        a, b = run_together(lambda: weave(spark, s, at=T0 + 5 * H), lambda: weave(spark, s, at=T0 + 5 * H))
    assert not isinstance(a, BaseException), a
    assert not isinstance(b, BaseException), b
    assert "commit conflict" in caplog.text, "the two creators did not collide; the test proved nothing"
    assert assert_matches_oracle(s, data, [p], at=T0 + 5 * H) == 2  # every row once: nothing lost or doubled
    from deltalake import DeltaTable

    from weaver.core import storage

    woven = DeltaTable(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)).to_pyarrow_table().to_pylist()
    keys = Counter((w["weave_id"], w["timepoint"], w["woven_partition_id"], w["key"]) for w in woven)
    assert max(keys.values()) == 1
    assert len(DeltaTable(storage.uri_for(s, storage.WOVEN_CATALOG)).to_pyarrow_table()) == 1


@pytest.mark.spark
@pytest.mark.slow
def test_a_predict_publish_and_a_weave_together(spark, tmp_path):
    """The gate publishes a newer prediction run while a weave reads `predictions`: the weave sees
    either the old run or the new one whole (never a torn table), and its rows match the oracle."""
    from deltalake import DeltaTable

    from weaver.core import faults, storage
    from weaver.pipeline import gate_predictions
    from weaver.weave import weave

    data = make_log(seed=3)
    s = weave_settings(write_lake(tmp_path / "lake", data))
    old = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))
    put_predictions(s, [old])
    new_run = T0 + 4 * H
    new = [{**prediction(pid, run_ts=new_run, split_key="k05" if pid == "p0" else "k30", probability=0.2,
                         split_ts=new_run + H), "threshold": 0.75, "status": "staged"}
           for pid in ("p0", "p1")]
    storage.merge(storage.uri_for(s, storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED,
                  pa.Table.from_pylist(new, schema=storage.SCHEMAS[storage.PREDICTIONS_STAGED]), ["prediction_id"])
    barrier = threading.Barrier(2, timeout=300)
    with faults.hooked("predict.before_check", barrier.wait):
        published, woven = run_together(lambda: gate_predictions(s, at=new_run),
                                        lambda: (barrier.wait(), weave(spark, s, at=T0 + 5 * H))[1])
    assert not isinstance(published, BaseException), published
    assert not isinstance(woven, BaseException), woven
    preds = DeltaTable(storage.uri_for(s, storage.PREDICTIONS)).to_pyarrow_table().to_pylist()
    assert sorted(r["prediction_id"] for r in preds) == sorted([old["prediction_id"]] + [r["prediction_id"] for r in new])
    # the weave chose one run, whole: the old one (one woven sequence) or the new one (none above 0.75)
    if woven["run_ts"] == old["run_ts"].isoformat():
        assert woven["new_sequences"] == 1 and assert_matches_oracle(s, data, [old], at=T0 + 5 * H) == 2
    else:
        assert woven["run_ts"] == new_run.isoformat() and woven["new_sequences"] == 0


def test_a_vacuum_during_recoveries_never_gives_wrong_rows(tmp_path):
    """Recoveries loop while vacuum expires snapshots and the log prefix: inside the recovery window
    every answer equals the oracle; before it, an answer is right or a named refusal, never wrong."""
    from weaver.core.errors import WeaverError
    from weaver.core.settings import load_settings
    from weaver.pitr import vacuum
    from weaver.recover import recover

    data = make_log(seed=7, n=240)
    lake = write_lake(tmp_path / "lake", data, [40, 100, 160, 220])
    ts = {c["seq"]: c["ts"] for c in data["changes"]}
    now = ts[240] + timedelta(seconds=1)
    window_start = ts[170]
    s = load_settings(env={}, lake=str(lake)).with_overrides(recovery_window=now - window_start)
    inside = [ts[q] for q in (170, 200, 239)]
    before = [ts[q] for q in (30, 60, 120)]
    ranges = {"p1": ("k20", None), "p2": ("", "k10"), "p3": ("k10", "k20")}
    stop = threading.Event()
    wrong: list = []
    answered = Counter()

    def recoveries() -> None:
        while not stop.is_set():
            for at in inside + before:
                for pid, (lo, hi) in ranges.items():
                    try:
                        got = rows_to_dict(recover(s, pid, at).table)
                    except WeaverError as exc:
                        answered["refused"] += 1
                        if at in inside:
                            wrong.append((pid, at, f"refused inside the window: {exc}"))
                        continue
                    answered["answered"] += 1
                    if got != fold(data["changes"], key_lo=lo, key_hi=hi, at=at):
                        wrong.append((pid, at, "wrong rows"))

    def vacuum_then_stop():
        try:
            return vacuum(s, now)
        finally:
            stop.set()

    readers = [threading.Thread(target=recoveries, daemon=True) for _ in range(2)]
    for t in readers:
        t.start()
    result = vacuum_then_stop()
    for t in readers:
        t.join(120)
    assert result["snapshots_expired"] >= 1 and result["log_rows_deleted"] > 0, result
    assert answered["answered"] > 0
    assert wrong == []
