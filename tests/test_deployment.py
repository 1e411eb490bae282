"""The deployment as it runs in production, on this machine: `weaver services up` starts
docker-compose.yml's services (Postgres, Airflow 3 api-server/scheduler/dag-processor/triggerer
with LocalExecutor, a Spark standalone master and worker, the query API) once for this module, and
the SCHEDULER runs the DAGs — no `airflow dags test`.

- a manual trigger with a bad param through the api-server's REST API (JWT from /auth/token) is
  refused with the param's message, and no run is created;
- the scheduler runs `weaver_snapshots` and `temporal_weaver` on their schedules over the lake's
  last interval; `weaver_backtest`, scheduled on the Assets `temporal_weaver` emits, runs after a
  successful producer run and never because of a failed one;
- `airflow backfill create` over a past span gives one prediction set per logical date, equal to
  what `weaver backtest` computes for the same instants on an untouched copy of the lake (no
  look-ahead); a second backfill with `--reprocess-behavior completed` writes no new data file;
  small runs forecast in the task's own process and weave with Arrow inside the task; a run given
  `forecast_engine: spark` and `weave_engine: spark` fits on the stack's Spark master
  (applyInPandas) and spark-submits its weave there (the branch not taken is skipped), and its
  predictions equal the in-process backtest's;
  the woven tier holds sequences, and recovery from it equals the standard path and an
  independent fold of the change log.

The lake is a small simulation whose last hour is the current one, so the scheduler's latest
interval falls inside it. Every process is stopped by `weaver services down` in the fixture's
finalizer, bounded in time, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.oracle import fold, rows_to_dict
from tests.procs import alive, listen_addresses

ROOT = Path(__file__).resolve().parent.parent
# Through the compose file's ${VAR:-default}s: no retries (a failure shows at once), fewer sample
# paths and no fit pool (a 2-core machine); the oracle backtest uses the same settings.
FAST = {"WEAVER_TASK_RETRIES": "0", "WEAVER_FORECAST_SAMPLES": "50", "WEAVER_FORECAST_WORKERS": "1",
        # The Spark worker removes a stopped application's folder after 2 s, not a day (compose's default).
        "WEAVER_SPARK_CLEANUP_INTERVAL_S": "2", "WEAVER_SPARK_APP_DATA_TTL_S": "2"}
WEAVER = str(Path(sys.executable).parent / "weaver")
# Bounds, not targets: a loaded 2-core machine runs each DAG run several times slower.
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]


def _weaver(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([WEAVER, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class Stack:
    """The running services of one test module and a small authenticated REST client."""

    def __init__(self, state: Path, lake: Path, pristine: Path, end: datetime, up: dict):
        import httpx

        self.state, self.lake, self.pristine, self.end, self.up = state, lake, pristine, end, up
        ports = {s["service"]: s["ports"] for s in up["services"]}
        self.api = f"http://127.0.0.1:{ports['airflow-api-server']['8080']}"
        self.spark_ui = f"http://127.0.0.1:{ports['spark-master']['8081']}"
        pw_file = state / "volumes" / "airflow-home" / "simple_auth_manager_passwords.json.generated"
        password = json.loads(pw_file.read_text())["admin"]
        r = httpx.post(f"{self.api}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        assert r.status_code in (200, 201), r.text
        self.http = httpx.Client(base_url=self.api, timeout=60,
                                 headers={"Authorization": f"Bearer {r.json()['access_token']}"})

    def get(self, path: str, **params) -> dict:
        r = self.http.get(path, params=params)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:500]}"
        return r.json()

    def set_paused(self, dag_id: str, paused: bool) -> None:
        r = self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": paused})
        assert r.status_code == 200, r.text

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="run_after")["dag_runs"]

    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """An `airflow` CLI command with the scheduler's environment (like `docker compose exec`)."""
        return _weaver("services", "exec", "--state-dir", str(self.state), "airflow-scheduler", "--",
                       "airflow", *args, timeout=timeout)

    def wait_runs(self, dag_id: str, want, timeout: float, what: str) -> list[dict]:
        """Poll until `want(runs)` holds; fail with the runs' states (and task failures) if it never does."""
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if want(runs):
                return runs
            time.sleep(3)
        raise AssertionError(f"{what}: not reached within {timeout} s; {dag_id} runs: "
                             + json.dumps([(r["dag_run_id"], r["state"]) for r in runs]) + self.failures(dag_id))

    def spark_apps(self) -> list[str]:
        """Names of the applications the Spark master has run or runs (its web UI's JSON)."""
        import httpx

        r = httpx.get(f"{self.spark_ui}/json/", timeout=30)
        assert r.status_code == 200, r.text[:500]
        return [a["name"] for k in ("activeapps", "completedapps") for a in r.json().get(k, [])]

    def failures(self, dag_id: str) -> str:
        out = []
        for r in self.runs(dag_id):
            if r["state"] == "failed":
                tis = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]
                out += [f"{r['dag_run_id']}.{t['task_id']}={t['state']}" for t in tis if t["state"] == "failed"]
        return ("; failed tasks: " + ", ".join(out)) if out else ""


@pytest.fixture(scope="module")
def stack(request):
    from weaver.simulate import SimConfig, simulate

    # Not tmp_path: pytest's base folder is root-only, and Postgres runs as its own OS user.
    root = Path(tempfile.mkdtemp(prefix="weaver-deploy-"))
    root.chmod(0o711)
    state, lake, pristine = root / "services", root / "lake", root / "pristine"
    # The lake's last complete hour is the current one: the scheduler's latest interval lies in it.
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    simulate(str(lake), SimConfig(seed=7, partitions=2, days=3, base_rate=80.0, size_threshold_bytes=900_000,
                                  write_threshold_per_s=0.5, start=end - timedelta(days=3)))
    shutil.copytree(lake, pristine)
    # No scheduled run after the lake's last interval, even if the hour turns during the test.
    env = dict(os.environ, PYTHONPATH=str(ROOT), **FAST,
               WEAVER_SCHEDULE_END=(end - timedelta(minutes=90)).isoformat())
    t0 = time.monotonic()
    try:
        proc = _weaver("services", "up", "--free-ports", "--state-dir", str(state), "--lake", str(lake), "--json",
                       env=env, timeout=480)
        assert proc.returncode == 0, f"weaver services up failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        up = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"stack up in {time.monotonic() - t0:.0f} s")
        yield Stack(state, lake, pristine, end, up)
    finally:
        pids = _service_pids(state)
        down = _weaver("services", "down", "--state-dir", str(state), "--timeout", "20", "--json", timeout=300)
        left = [p for p in pids if alive(p)]
        if request.session.testsfailed:
            # Keep what explains a failure: the services' logs and the Airflow task logs.
            keep = Path(tempfile.mkdtemp(prefix="weaver-deploy-logs-"))
            for src in (state / "logs", state / "volumes" / "airflow-logs"):
                if src.exists():
                    shutil.copytree(src, keep / src.name, dirs_exist_ok=True)
            print(f"services and task logs kept in {keep}")
        shutil.rmtree(root, ignore_errors=True)
        assert down.returncode == 0, down.stderr[-2000:]
        assert not left, f"processes left running after `weaver services down`: {left}"


def _worker_folders_removed(stack: Stack, timeout: float = 120) -> None:
    """The Spark worker removed the folder each stopped application left in its work dir (the
    executors' copies of the application's jars, their logs): compose's worker cleanup, whose TTL
    the stack's environment shortens to 2 s."""
    work = stack.state / "volumes" / "spark-work" / "work"
    log = Path(json.loads((stack.state / "state.json").read_text())["services"]["spark-worker"]["log"])
    deadline = time.monotonic() + timeout
    while True:
        removed = re.findall(r"Removing directory: (\S+)", log.read_text(errors="replace"))
        left = sorted(p.name for p in work.glob("app-*"))
        if (removed and not left) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert removed and all(Path(r).parent == work and Path(r).name.startswith("app-") for r in removed), removed
    assert not left, f"application folders left in the worker's work dir: {left}"


def _service_pids(state: Path) -> set[int]:
    """Every process of every service: each runs in its own session, whose id is its pid."""
    try:
        st = json.loads((state / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    pids = {e["pid"] for e in st.get("services", {}).values() if e.get("pid")}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) in pids:
                    pids.add(int(d))
            except OSError:
                pass
    return pids


def _files(lake: Path) -> set[str]:
    """Data files of every Delta table of the lake (checkpoints excluded)."""
    return {str(p.relative_to(lake)) for p in lake.rglob("*.parquet") if "_delta_log" not in p.parts}


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# --- 1. the stack --------------------------------------------------------------------------------
def test_every_service_is_up_healthy_and_on_loopback(stack):
    names = [s["service"] for s in stack.up["services"]]
    assert names[:2] == ["postgres", "airflow-init"]  # dependency order
    for s in stack.up["services"]:
        want = "completed" if s["service"] == "airflow-init" else "running"
        assert s["state"] == want, s
        assert s["healthy"] in (True, None), s
    st = _weaver("services", "status", "--state-dir", str(stack.state), "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    for s in json.loads(st.stdout)["services"]:
        for port in s["ports"].values():
            assert listen_addresses(int(port)) <= {"127.0.0.1"}, (s["service"], port)


# --- 2. params -----------------------------------------------------------------------------------
def test_bad_param_is_refused_by_the_api_and_creates_no_run(stack):
    before = stack.runs("temporal_weaver")
    r = stack.http.post("/api/v2/dags/temporal_weaver/dagRuns",
                        json={"logical_date": None, "conf": {"window": "forever"}})
    assert r.status_code == 400, r.text
    assert "window" in r.text and "forever" in r.text
    r = stack.http.post("/api/v2/dags/temporal_weaver/dagRuns",
                        json={"logical_date": None, "conf": {"confidence_threshold": 1.5}})
    assert r.status_code == 400 and "confidence_threshold" in r.text, r.text
    assert stack.runs("temporal_weaver") == before
    # No token, no access (Airflow 3's API is authenticated).
    import httpx

    assert httpx.get(f"{stack.api}/api/v2/dags", timeout=30).status_code in (401, 403)


# --- 3. the scheduler and the Assets -----------------------------------------------------------
def test_scheduler_runs_the_dags_and_the_asset_consumer_only_after_success(stack):
    stack.set_paused("weaver_backtest", False)
    # A run that must fail (its lake does not exist): queued before the producer is unpaused.
    r = stack.http.post("/api/v2/dags/temporal_weaver/dagRuns",
                        json={"logical_date": None, "conf": {"lake": str(stack.lake.parent / "no-such-lake")}})
    assert r.status_code == 200, r.text
    bad_run = r.json()["dag_run_id"]
    for dag_id in ("weaver_snapshots", "temporal_weaver"):
        stack.set_paused(dag_id, False)

    latest = stack.end - timedelta(hours=1)  # the lake's last complete hourly interval ends here

    def done(runs):
        sched = [x for x in runs if x["run_type"] == "scheduled"]
        bad = [x for x in runs if x["dag_run_id"] == bad_run]
        return sched and all(x["state"] in ("success", "failed") for x in sched + bad)

    runs = stack.wait_runs("temporal_weaver", done, 900, "the scheduled temporal_weaver run and the bad manual run")
    sched = [x for x in runs if x["run_type"] == "scheduled"]
    assert [x["state"] for x in sched] == ["success"] * len(sched), stack.failures("temporal_weaver")
    assert _ts(sched[-1]["data_interval_end"]) == latest
    assert [x["state"] for x in runs if x["dag_run_id"] == bad_run] == ["failed"]

    snaps = stack.wait_runs("weaver_snapshots", lambda rs: rs and all(x["state"] in ("success", "failed") for x in rs),
                            600, "the scheduled weaver_snapshots run")
    assert {x["run_type"] for x in snaps} == {"scheduled"} and {x["state"] for x in snaps} == {"success"}, \
        stack.failures("weaver_snapshots")

    consumers = stack.wait_runs("weaver_backtest", lambda rs: rs and all(x["state"] in ("success", "failed") for x in rs),
                                600, "weaver_backtest after the producer's success")
    assert {x["run_type"] for x in consumers} == {"asset_triggered"}
    assert {x["state"] for x in consumers} == {"success"}, stack.failures("weaver_backtest")
    # Each scored the window that closed at its triggering run (every partition active then, for the
    # model and both baselines); the old wiring scored the triggering instant, whose window is open: 0 rows.
    for c in consumers:
        out = stack.get(f"/api/v2/dags/weaver_backtest/dagRuns/{c['dag_run_id']}/taskInstances/run_backtest"
                        "/xcomEntries/return_value")["value"]
        out = json.loads(out) if isinstance(out, str) else out
        assert out["runs"] == 1 and out["rows_scored"] > 0 and out["rows_scored"] % 3 == 0, out
    # Every event that triggered the consumer comes from a successful producer run; the failed run emitted none.
    good = {x["dag_run_id"] for x in sched}
    sources = set()
    for c in consumers:
        events = stack.get(f"/api/v2/dags/weaver_backtest/dagRuns/{c['dag_run_id']}/upstreamAssetEvents")
        sources |= {e["source_run_id"] for e in events["asset_events"]}
    assert sources and sources <= good, (sources, good)
    emitted = stack.get("/api/v2/assets/events", limit=100)["asset_events"]
    assert bad_run not in {e["source_run_id"] for e in emitted}
    # And nothing more arrives for the failed run (a few scheduler loops later).
    time.sleep(10)
    assert len(stack.runs("weaver_backtest")) == len(consumers)
    stack.set_paused("weaver_backtest", True)


# --- 4. backfill -------------------------------------------------------------------------------
def backfill(stack: Stack, first: datetime, last: datetime, *extra: str) -> list[dict]:
    """`airflow backfill create` over logical dates [first, last]; wait for its runs (fresh ones)."""
    instants = _instants(first, last)
    before = {x["dag_run_id"]: x.get("end_date") for x in stack.runs("temporal_weaver")}
    # The scheduler marks a backfill complete a loop or two after its last run ends; until then
    # Airflow refuses the next one (AlreadyRunningBackfill), so the next create waits for that.
    deadline = time.monotonic() + 300
    while True:
        p = stack.airflow("backfill", "create", "--dag-id", "temporal_weaver", "--from-date", first.isoformat(),
                          "--to-date", last.isoformat(), "--max-active-runs", "1", *extra)
        if p.returncode == 0 or "AlreadyRunningBackfill" not in p.stdout + p.stderr or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]

    def mine(runs):
        return [x for x in runs if x["run_type"] == "backfill" and _ts(x["data_interval_end"]) in instants]

    def finished(runs):
        fresh = [x for x in mine(runs) if before.get(x["dag_run_id"], "missing") != x.get("end_date")]
        return len(fresh) == len(instants) and all(x["state"] in ("success", "failed") for x in fresh)

    runs = mine(stack.wait_runs("temporal_weaver", finished, 900, f"backfill {' '.join(extra)}"))
    assert [x["state"] for x in runs] == ["success"] * len(instants), stack.failures("temporal_weaver")
    return runs


def _branch_states(stack: Stack, run: dict) -> dict[str, str]:
    """States of the two weave branches (spark-submit `weave`, in-task `weave_arrow`) of a run."""
    tis = stack.get(f"/api/v2/dags/temporal_weaver/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    return {t["task_id"]: t["state"] for t in tis if t["task_id"] in ("weave", "weave_arrow")}


def _instants(first: datetime, last: datetime) -> list[datetime]:
    """Hourly logical dates first..last (inclusive) predict at their data-interval ends."""
    n = int((last - first) / timedelta(hours=1)) + 1
    return [first + timedelta(hours=i + 1) for i in range(n)]


def check_predictions_equal_backtest(stack: Stack, instants: list[datetime], overrides: dict | None = None) -> None:
    """One prediction set per instant, equal to `weaver backtest` on the untouched copy of the lake."""
    from weaver.core import storage
    from weaver.predict import backtest
    from weaver.core.settings import load_settings

    s = load_settings(lake=str(stack.lake))
    preds = storage.read(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS).to_pylist()
    same = {"forecast_samples": int(FAST["WEAVER_FORECAST_SAMPLES"]), "forecast_workers": int(FAST["WEAVER_FORECAST_WORKERS"])}
    oracle_s = load_settings(lake=str(stack.pristine), **(same if overrides is None else overrides))
    for t in instants:
        backtest(oracle_s, start=t, end=t + timedelta(hours=1), every="1h", out_dir=str(stack.pristine.parent / "bt"))
    want = storage.read(storage.uri_for(oracle_s, storage.PREDICTIONS), storage.PREDICTIONS).to_pylist()
    cols = ("model", "window_end", "reason", "predicted_split_ts", "split_ts_p10", "split_ts_p90", "split_key",
            "threshold", "skip_reason")
    for t in instants:
        got = {r["partition_id"]: r for r in preds if r["run_ts"] == t}
        exp = {r["partition_id"]: r for r in want if r["run_ts"] == t}
        assert got and set(got) == set(exp), (t, sorted(got), sorted(exp))
        for pid, e in exp.items():
            g = got[pid]
            assert g["probability"] == pytest.approx(e["probability"], abs=1e-9), (t, pid)
            assert {c: g[c] for c in cols} == {c: e[c] for c in cols}, (t, pid)
    # Nothing else was predicted: the failed run wrote no prediction, no run predicted twice.
    assert {r["run_ts"] for r in preds} == set(instants)
    assert len(preds) == len({(r["run_ts"], r["partition_id"], r["model"]) for r in preds})


def check_woven_recovery(stack: Stack) -> int:
    """The woven tier holds sequences; recovery from each equals the standard path and the fold oracle."""
    from weaver.core import storage
    from weaver.pitr import restore_partition
    from weaver.recover import recover
    from weaver.core.settings import load_settings

    s = load_settings(lake=str(stack.lake))
    cat = storage.read(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG).to_pylist()
    assert cat, "nothing was woven"
    snaps = storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS,
                         columns=["weave_id", "timepoint"]).to_pylist()
    assert snaps, "the woven tier holds no snapshot"
    changes = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG).to_pylist()
    parts = {p["partition_id"]: p for p in storage.read(storage.uri_for(s, storage.PARTITIONS),
                                                         storage.PARTITIONS).to_pylist()}
    checked = 0
    for w in cat:
        tps = sorted({r["timepoint"] for r in snaps if r["weave_id"] == w["weave_id"]})
        if not tps:
            continue
        at = tps[-1]
        src = parts[w["source_partition_id"]]
        expected = fold(changes, key_lo=src["key_lo"], key_hi=src["key_hi"], at=at)
        woven = recover(s, w["source_partition_id"], at)
        assert woven.path == "woven"
        assert rows_to_dict(woven.table) == expected
        assert rows_to_dict(restore_partition(s, w["source_partition_id"], at).table) == expected
        checked += 1
    assert checked
    return checked


def test_backfill_equals_backtest_and_reprocessing_writes_no_new_files(stack):
    stack.set_paused("temporal_weaver", False)
    stack.set_paused("weaver_backtest", True)
    # 30 h before the lake's end: the 24 h window covers its real splits (as in `weaver demo`). One
    # logical date per backfill keeps the module shorter; `_instants` is span-general.
    first = last = stack.end - timedelta(hours=30)
    backfill(stack, first, last)
    files = _files(stack.lake)
    # Rerunning the finished date rewrites nothing: not predictions, not their staging, not the woven tier.
    backfill(stack, last, last, "--reprocess-behavior", "completed")
    assert _files(stack.lake) == files, "the reprocessing backfill wrote new data files"
    from weaver.core import storage

    staged = storage.read(storage.table_uri(str(stack.lake), storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED,
                          missing_ok=True)
    assert staged.num_rows == 0, "rows that passed their check were left in staging"
    # A later date (after the real splits) extends the sequences the span started, as data arrives.
    # The runs so far fitted in the task's process and wove with Arrow inside the task (a run this
    # small is under both Spark thresholds); this one is told to use Spark for both: its fits go
    # to the cluster through applyInPandas, and the branch submits the weave job there.
    later = stack.end - timedelta(hours=3)
    runs = backfill(stack, later, later, "--dag-run-conf",
                    json.dumps({"weave_engine": "spark", "forecast_engine": "spark"}))
    assert _branch_states(stack, runs[0]) == {"weave": "success", "weave_arrow": "skipped"}
    # Only that run's fits went to the cluster: every other forecast (scheduled, backfilled,
    # reprocessed, and the backtest consumer's) ran in its task's process and started no application.
    assert stack.spark_apps().count("weaver-forecast") == 1, stack.spark_apps()
    _worker_folders_removed(stack)
    first_run = [x for x in stack.runs("temporal_weaver") if x["run_type"] == "backfill"
                 and _ts(x["data_interval_end"]) == _instants(first, last)[0]]
    assert _branch_states(stack, first_run[0]) == {"weave": "skipped", "weave_arrow": "success"}

    scheduled = [_ts(x["data_interval_end"]) for x in stack.runs("temporal_weaver")
                 if x["run_type"] == "scheduled" and x["state"] == "success"]
    # weaver_backtest, triggered by the scheduled run(s) (test 3), scored the instant one window
    # earlier and backfilled its predictions (no live run had published them).
    scored = [t - timedelta(hours=24) for t in scheduled]
    check_predictions_equal_backtest(stack, _instants(first, last) + _instants(later, later) + scheduled + scored)
    check_woven_recovery(stack)
