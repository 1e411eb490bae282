"""Crash-injection harness (issue 14): run a writing command as a subprocess, SIGKILL it at a named
pause point (``weaver.core.faults.point``, reached through the test-only ``WEAVER_TEST_PAUSE_POINTS``)
or a measured time after one (``name:go``, i.e. in the middle of the write that follows), look at
what a reader sees, rerun it, and compare with an uninterrupted run.

Used by tests/test_crash.py (one kill per command) and bench/crash.py (every point, with counts).
The oracle for "what a reader sees" is tests/oracle.py's fold and the tables read straight with
delta-rs; the equality after the rerun is against a run of the same command that was never killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

from tests.lakes import H, T0, make_log, prediction, put_predictions, weave_settings, write_lake
from tests.oracle import fold
from weaver.core.scratch import PREFIX as SCRATCH_PREFIX

ROOT = Path(__file__).resolve().parent.parent
WEAVER = [sys.executable, "-c", "from weaver.cli import main; main()"]
PAUSED = "WEAVER_PAUSED"
RUN_TIMEOUT_S = 900


def env(**extra: str) -> dict[str, str]:
    """The subprocess environment: this worktree's package, no inherited WEAVER_* policy."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("WEAVER_")}
    e.update({"PYTHONPATH": str(ROOT), "WEAVER_SHUFFLE_PARTITIONS": "2", "WEAVER_SPARK_MASTER": "local[2]",
              "SPARK_LOCAL_IP": "127.0.0.1", "WEAVER_FORECAST_WORKERS": "1"})
    for k in ("WEAVER_DELTA_JARS", "WEAVER_IVY_SETTINGS", "WEAVER_CACHE"):
        if os.environ.get(k):
            e[k] = os.environ[k]
    e.update(extra)
    return e


def run(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a weaver command to completion (bounded); raise with its output when it fails."""
    p = subprocess.run(WEAVER + args, env=env(**(extra_env or {})), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT_S, cwd=str(ROOT))
    if p.returncode != 0:
        raise AssertionError(f"weaver {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return p


def kill_at(args: list[str], point: str, *, delay_s: float = 0.0, extra_env: dict[str, str] | None = None) -> str:
    """Start the weaver command with `point` armed; SIGKILL its process group `delay_s` after the
    point is reached. Returns 'killed', or 'finished' when the process ended first (the point was
    not on its path, or a ':go' write beat the delay)."""
    return kill_cmd(WEAVER + args, point, delay_s=delay_s, extra_env=extra_env)


def kill_cmd(cmd: list[str], point: str, *, delay_s: float = 0.0, extra_env: dict[str, str] | None = None) -> str:
    """`kill_at` for any command line (e.g. ``python -c`` calling a library function)."""
    e = env(WEAVER_TEST_PAUSE_POINTS=point, **(extra_env or {}))
    p = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         cwd=str(ROOT), start_new_session=True)
    reached = threading.Event()

    def watch() -> None:
        for line in p.stderr:  # type: ignore[union-attr]
            if line.startswith(PAUSED):
                reached.set()
        reached.set()  # EOF: the process is gone

    threading.Thread(target=watch, daemon=True).start()
    try:
        reached.wait(RUN_TIMEOUT_S)
        if p.poll() is not None:
            return "finished"
        if delay_s:
            time.sleep(delay_s)
        if p.poll() is not None:
            return "finished"
        os.killpg(p.pid, signal.SIGKILL)
        return "killed"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


# --- readers: the tables straight from delta-rs -----------------------------------------------------
def table(uri: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    """Rows of a Delta table as sorted tuples (columns in `drop` left out), [] when absent."""
    from deltalake import DeltaTable

    from weaver.core import storage

    if not storage.is_table(uri):
        return []
    t = DeltaTable(uri).to_pyarrow_table()
    t = t.select([c for c in t.column_names if c not in drop])
    return sorted(tuple(r.values()) for r in t.to_pylist())


# --- scenarios ------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """One writing command on a prepared lake: how to run it, where to kill it, what a reader sees."""

    name: str
    args: Callable[[Path], list[str]]
    points: list[str]
    state: Callable[[Path], object]  # the published result compared with an uninterrupted run
    check_reader: Callable[[Path], None]  # asserts what a reader sees after a kill is whole
    prepare: Callable[[Path], None] = lambda lake: None
    extra_env: dict[str, str] = field(default_factory=dict)
    timed: list[float] = field(default_factory=list)  # kills this long after the first point (':go')


DATA = make_log(seed=3)
SNAP_AT, RUN_AT = T0 + 3 * H, T0 + 5 * H
PRED = prediction(split_ts=T0 + 3 * H + timedelta(minutes=30), window=timedelta(hours=9))


def settings(lake: Path):
    return weave_settings(str(lake))


def expect_restore(lake: Path, at) -> None:
    """Every partition restored at `at` through weaver's reader equals the oracle fold."""
    from weaver.pitr import restore_partition

    s = settings(lake)
    for pid, lo, hi in (("p0", "", "k20"), ("p1", "k20", None)):
        got = restore_partition(s, pid, at).table
        assert dict(zip(got.column("key").to_pylist(), got.column("value").to_pylist())) == \
            fold(DATA["changes"], key_lo=lo, key_hi=hi, at=at), f"restore of {pid} at {at}"


def _seq_at(at) -> int:
    return max(c["seq"] for c in DATA["changes"] if c["ts"] <= at)


def base_lake(root: Path) -> Path:
    """The shared starting lake: change log, lineage, one prediction, base snapshots at SNAP_AT and
    at T0 + 6 h (built by the oracle fold, so the harness starts no JVM of its own)."""
    lake = root / "lake"
    write_lake(lake, DATA, [_seq_at(SNAP_AT), _seq_at(T0 + 6 * H)])
    put_predictions(settings(lake), [PRED])
    _ingest_exports(root)  # written once: every copy ingests the same bytes (gzip headers hold a time)
    return lake


def _snapshot_state(lake: Path):
    from weaver.core import storage

    s = settings(lake)
    return (table(storage.uri_for(s, storage.SNAPSHOT_CATALOG), drop=("created_at",)),
            table(storage.uri_for(s, storage.SNAPSHOTS)))


def _snapshot_reader(lake: Path) -> None:
    from weaver.core import storage

    s = settings(lake)
    cat = table(storage.uri_for(s, storage.SNAPSHOT_CATALOG), drop=("created_at",))
    snaps = table(storage.uri_for(s, storage.SNAPSHOTS))
    for row in cat:  # every cataloged snapshot is whole: its row count is what the data holds
        sid, n = row[0], row[4]
        assert sum(1 for r in snaps if r[0] == sid) == n, f"snapshot {sid} cataloged but partial"
    expect_restore(lake, RUN_AT)


def _predict_state(lake: Path):
    from weaver.core import storage

    return table(storage.uri_for(settings(lake), storage.PREDICTIONS))


def _predict_reader(lake: Path) -> None:
    rows = [r for r in _predict_state(lake) if r[1] == RUN_AT]
    alive = [p for p in DATA["partitions"] if p["created_ts"] <= RUN_AT
             and (p["retired_ts"] is None or RUN_AT < p["retired_ts"])]
    assert len(rows) in (0, len(alive)), f"a reader saw {len(rows)} of the run's {len(alive)} prediction rows"


def _weave_state(lake: Path):
    from weaver.core import storage

    s = settings(lake)
    return (table(storage.uri_for(s, storage.WOVEN_CATALOG), drop=("created_at", "updated_at")),
            table(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)))


def _weave_reader(lake: Path) -> None:
    from weaver.recover import recover

    s = settings(lake)
    cat, woven = _weave_state(lake)
    for row in cat:
        assert row[9] in ("staged", "quarantined", "active", "confirmed", "refuted", "expired")
    at = RUN_AT
    got = recover(s, "p0", at)
    assert dict(zip(got.table.column("key").to_pylist(), got.table.column("value").to_pylist())) == \
        fold(DATA["changes"], key_lo="", key_hi="k20", at=at)


def _restore_out(lake: Path) -> Path:
    return lake.parent / "restored"


def _restore_state(lake: Path):
    return table(str(_restore_out(lake)))


def _restore_reader(lake: Path) -> None:
    rows = _restore_state(lake)
    if rows:  # either no table at all, or the whole restore
        want = {(p, k, v) for p, lo, hi in (("p0", "", "k20"), ("p1", "k20", None))
                for k, v in fold(DATA["changes"], key_lo=lo, key_hi=hi, at=RUN_AT).items()}
        assert {(r[0], r[1], r[2]) for r in rows} == want or {(r[1], r[2]) for r in rows} == {(k, v) for _, k, v in want}


def _restore_prepare(lake: Path) -> None:
    shutil.rmtree(_restore_out(lake), ignore_errors=True)


# --- ingest: the second batch (an incremental DynamoDB export) of a lake the first one created ---
def _ingest_parts(lake: Path):
    from tests.test_ingest_dynamodb import T0 as I0, T1 as I1, full_export, incremental, make_writes

    writes = make_writes()
    root = lake.parent / "bucket"
    return writes, root, I0, I1, full_export, incremental


def _ingest_exports(root: Path) -> None:
    """The source's two exports under <root>/bucket: a full one, then an increment."""
    writes, _, i0, i1, full_export, incremental = _ingest_parts(root / "lake")
    full_export(root / "bucket", writes, i0)
    incremental(root / "bucket", writes, i0, i1, "02-inc")


def _ingest_prepare(lake: Path) -> None:
    """A lake made by ingesting the full export (in-process); the command ingests the increment."""
    from weaver.core.settings import load_settings
    from weaver.ingest.dynamodb import DynamoDBExport
    from weaver.ingest.writer import ingest

    shutil.rmtree(lake, ignore_errors=True)
    ingest(load_settings(lake=str(lake)),
           DynamoDBExport(lake.parent / "bucket" / "AWSDynamoDB" / "01-full", keys="pk,sk"))


def _ingest_args(lake: Path) -> list[str]:
    return ["ingest", "--source", "dynamodb-export", "--input", str(lake.parent / "bucket" / "AWSDynamoDB" / "02-inc"),
            "--keys", "pk,sk", "--lake", str(lake), "--json"]


def _ingest_state(lake: Path):
    from weaver.core import storage
    from weaver.core.settings import load_settings

    s = load_settings(lake=str(lake))
    return (table(storage.uri_for(s, storage.CHANGELOG)), table(storage.uri_for(s, storage.INGEST_LOG)),
            table(storage.uri_for(s, storage.PARTITIONS)),
            table(storage.uri_for(s, storage.INGEST_WATERMARKS), drop=("committed_at",)))


def _ingest_reader(lake: Path) -> None:
    """The change log holds the first batch alone or both batches whole: seqs 1..n without a gap,
    and the table restored at the increment's end is either the state before it or after it."""
    from datetime import timedelta as td

    from tests.ingest_helpers import lake_state
    from tests.test_ingest_dynamodb import state_at
    from weaver.core.settings import load_settings

    s = load_settings(lake=str(lake))
    writes, _, i0, i1, _, _ = _ingest_parts(lake)
    log = _ingest_state(lake)[0]
    assert [r[0] for r in log] == list(range(1, len(log) + 1)), "a gap in the change log's seq"
    got = lake_state(s, i1 - td(microseconds=1))
    assert got in (state_at(writes, i0 - td(microseconds=1)), state_at(writes, i1 - td(microseconds=1))), \
        "a reader saw part of the increment"


VACUUM_NOW = T0 + 9 * H


def _vacuum_state(lake: Path):
    from deltalake import DeltaTable

    from weaver.core import storage

    s = settings(lake)
    log = DeltaTable(storage.uri_for(s, storage.CHANGELOG))
    return (table(storage.uri_for(s, storage.SNAPSHOT_CATALOG), drop=("created_at",)),
            len(table(storage.uri_for(s, storage.SNAPSHOTS))), len(table(storage.uri_for(s, storage.CHANGELOG))),
            log.metadata().configuration.get("weaver.logStartSeq"))


def _vacuum_reader(lake: Path) -> None:
    for h in (7, 8, 9):  # instants inside the 3 h recovery window stay correct at every kill point
        expect_restore(lake, T0 + h * H)


SCENARIOS = {
    "snapshot": Scenario("snapshot", lambda lake: ["snapshot", "--at", RUN_AT.isoformat(), "--lake", str(lake)],
                         ["snapshot.before_data", "snapshot.before_catalog"], _snapshot_state, _snapshot_reader),
    "predict": Scenario("predict", lambda lake: ["predict", "--at", RUN_AT.isoformat(), "--model", "arima",
                                                 "--lake", str(lake), "--json"],
                        ["predict.staged", "predict.before_check", "predict.after_publish"], _predict_state,
                        _predict_reader, extra_env={"WEAVER_MIN_HISTORY_BUCKETS": "2", "WEAVER_FORECAST_SAMPLES": "50"}),
    "weave": Scenario("weave", lambda lake: ["weave", "--at", RUN_AT.isoformat(), "--lake", str(lake), "--json"],
                      ["weave.before_data", "weave.arrow_commit", "weave.before_catalog", "weave.before_check"],
                      _weave_state, _weave_reader),
    "restore-table": Scenario("restore-table", lambda lake: ["restore-table", "--at", RUN_AT.isoformat(), "--out",
                                                             str(_restore_out(lake)), "--lake", str(lake)],
                              ["restore_table.before_write"], _restore_state, _restore_reader,
                              prepare=_restore_prepare, timed=[0.5, 1.5, 3.0]),
    "ingest": Scenario("ingest", _ingest_args, ["ingest.after_ingest_log", "ingest.after_changelog"],
                       _ingest_state, _ingest_reader, prepare=_ingest_prepare),
    "vacuum": Scenario("vacuum", lambda lake: ["vacuum", "--now", VACUUM_NOW.isoformat(), "--recovery-window", "3h",
                                               "--lake", str(lake)],
                       ["vacuum.after_snapshot_catalog", "vacuum.after_snapshots", "vacuum.after_log_start"],
                       _vacuum_state, _vacuum_reader),
}


@dataclass
class Outcome:
    command: str
    point: str
    result: str  # killed | finished
    reader_ok: bool
    rerun_equal: bool
    #: The rerun removed the killed run's local scratch folder (weaver.core.scratch): none is left.
    scratch_clear: bool = True


def reference(sc: Scenario, template: Path, work: Path) -> object:
    """The state after an uninterrupted run on a copy of `template`."""
    lake = copy_lake(template, work / f"{sc.name}-reference")
    sc.prepare(lake)
    run(sc.args(lake), sc.extra_env)
    return sc.state(lake)


def copy_lake(template: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(template.parent, dest)
    return dest / template.name


def crash_once(sc: Scenario, template: Path, work: Path, point: str, want: object, *, delay_s: float = 0.0) -> Outcome:
    """Kill `sc` at `point` (plus `delay_s`), check the reader, rerun, compare with `want`."""
    tag = f"{sc.name}-{point.replace(':', '_')}-{delay_s}"
    lake = copy_lake(template, work / tag)
    sc.prepare(lake)
    armed = point if not delay_s else f"{point}:go"
    tmp = lake.parent / "tmp"  # the commands' temp dir: what the killed run spilled stays here
    tmp.mkdir(exist_ok=True)
    extra = {**sc.extra_env, "TMPDIR": str(tmp)}
    result = kill_at(sc.args(lake), armed, delay_s=delay_s, extra_env=extra)
    try:
        sc.check_reader(lake)
        reader_ok = True
    except AssertionError:
        reader_ok = False
    try:
        run(sc.args(lake), extra)
        equal = sc.state(lake) == want
    except AssertionError as exc:  # the rerun itself failed: not survived, and the run goes on
        print(f"rerun after a kill at {armed} (+{delay_s}s) failed: {str(exc)[-600:]}", flush=True)
        equal = False
    left = sorted(d.name for d in tmp.iterdir() if d.name.startswith(SCRATCH_PREFIX))
    if left:
        print(f"scratch folders left after the rerun of a kill at {armed}: {left}", flush=True)
    shutil.rmtree(lake.parent, ignore_errors=True)
    return Outcome(sc.name, armed + (f"+{delay_s}s" if delay_s else ""), result, reader_ok, equal, not left)
