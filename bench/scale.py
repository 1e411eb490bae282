"""The whole loop at 20 M changes and one hourly cycle at two history lengths (issue 11, points 4-5).

Setup: one simulated lake of ``--partitions`` (1,000) initial partitions over ``--days`` (4) days,
``base_rate`` 240 writes/h per initial partition and a flat trend (``daily_growth`` 0.97-1.03), so
an hour of changes is about the same size on day 2 and on day 4: the cycle's increment is held
fixed while its history doubles (about 23 M changes in all). Every stage is its own process, so
its memory is its own:

1. ``simulate`` (skipped with ``--reuse``).
2. The hourly cycle of the ``temporal_weaver`` DAG at history H (end of day ``days/2``) and 2H (end
   of day ``days``), each measured at the hour ending one hour before that day's end (``LAG``): the
   simulated lake holds every day's changes at once and a timepoint is woven only once the change
   log has reached it, so at the log's very end nothing would be due; one hour earlier the log has
   passed the measured instant at both lengths alike (history 47 h and 95 h, 2.02x). The same stage functions its tasks call, one process per task -
   ``extract``, ``check_changelog`` (GX), ``metrics`` (incremental build + accounting),
   ``forecast`` (staged, model ``path``), ``check_predictions`` (GX), ``weave`` (the engine
   ``planned_engine`` picks: Arrow in-process, or ``spark_jobs/weave.py --engine spark``),
   ``check_woven`` (GX), ``advise``, ``publish`` (reconcile, summary, run record). Before each
   length the schedule's other work runs, unmeasured as cycle cost: the daily ``weaver snapshot``
   at the end of the previous day (its cost is reported on its own), then the two previous hours'
   cycles (``--warm-hours``: the DAG's metrics task resumes at the last bucket built, which the
   checkpoint two buckets back serves, so the incremental fold is in its steady state only from an
   hourly schedule's third run on); then the hour ending at H (2H) is the measured cycle.
3. The whole loop on the full lake, the way an operator runs it with the CLI: ``predict --at
   END-6h``, ``weave --at END --run-ts END-6h`` (woven tier dropped first: that run's sequences
   woven from nothing over 6 h of timepoints, from the daily snapshots), ``snapshot --at END``
   from scratch (snapshots dropped first: the first base snapshot over the whole log),
   ``recover`` of one partition at END, ``backtest`` over the last 12 h (runs every 6 h).

Per stage: wall seconds, exit code, ``peak_rss_mb`` (largest resident set of one process of the
stage, ``wait4`` rusage) and ``peak_tree_rss_mb`` (largest sum over its process tree - CLI + JVM -
sampled every 0.2 s). Ratios: ``per_run_cost_growth`` (cycle wall at 2H / at H; goal <= 1.2), the
same without weave and check_woven (``per_run_cost_growth_without_weave``: those two do the work of
whatever predictions crossed the threshold that hour), forecast seconds per live partition at 2H /
at H, and, per stage, RSS at 2H / at H (goal ~1.0: bounded by the increment). Spark vs Arrow weaving at three
sizes and local[2] vs local[1] are ``bench/weave.py``'s (``bench/results/weave.json``).

Run (each part under its own hold of the bench lock, since the whole run takes longer than one
hold may: simulate apart, then ``--reuse``; ``--append`` adds a part's stages to the result)::

    /usr/bin/time -v -o /tmp/sim.time .venv/bin/python bench/scale.py --lake /tmp/x --keep --parts none
    flock /work/notes/bench.lock .venv/bin/python bench/scale.py --lake /tmp/x --reuse --keep --parts cycle \
        --simulate-time /tmp/sim.time --simulate-commit $(git rev-parse HEAD)
    flock /work/notes/bench.lock .venv/bin/python bench/scale.py --lake /tmp/x --reuse --keep --append --parts loop_weave
    flock /work/notes/bench.lock .venv/bin/python bench/scale.py --lake /tmp/x --reuse --append --parts loop_snapshot

-> bench/results/scale.json (the lake is deleted afterwards unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import _common  # noqa: E402  (bench/_common.py, beside this script)

RESULTS = ROOT / "bench" / "results" / "scale.json"
SIM = dict(base_rate=240.0, daily_growth=(0.97, 1.03))  # a flat trend: equal hourly increments
#: The measured cycles end this long before their day's end, so the change log has passed them.
LAG = timedelta(hours=1)
CYCLE = ("extract", "check_changelog", "metrics", "forecast", "check_predictions", "weave", "check_woven",
         "advise", "publish")
PARAMS = {"window": "24h", "confidence_threshold": 0.75, "model": "path", "size_threshold": None,
          "write_threshold": None, "weave_engine": None}  # the DAG's defaults


def run_stage(name: str, args: list[str], code_root: Path, timeout_s: float) -> dict:
    """Run `weaver <args>` with `code_root` first on PYTHONPATH; time it and track its memory."""
    env = dict(os.environ, PYTHONPATH=str(code_root), COLUMNS="200")
    if args[0] == "-c":
        cmd = [sys.executable, "-c", args[1], *args[2:]]
    elif args[0] == "--cycle":
        cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    else:
        cmd = [sys.executable, "-c", "from weaver.cli import main; main()", *args]
    t0 = time.perf_counter()
    # cwd outside any checkout: `python -c` puts the cwd first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=tempfile.gettempdir())
    peak_tree, stop = [0], threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [p, *p.children(recursive=True)]
                peak_tree[0] = max(peak_tree[0], sum(_rss(q) for q in procs))
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_lines: list[str] = []
    err_lines: list[str] = []
    readers = [threading.Thread(target=lambda s=s, acc=acc: acc.extend(s), daemon=True)
               for s, acc in ((proc.stdout, out_lines), (proc.stderr, err_lines))]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout_s
    status, usage = None, None
    try:
        while status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = st, ru
            elif time.monotonic() > deadline:
                os.killpg(proc.pid, 9)  # the stage and its JVM
                _, status, usage = os.wait4(proc.pid, 0)
            else:
                time.sleep(0.1)
    except BaseException:  # the bench stopped (Ctrl-C, SIGTERM: bench/_common.py): so does its stage
        os.killpg(proc.pid, 9)
        os.wait4(proc.pid, 0)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for r in readers:
        r.join(timeout=10)
    children = psutil.Process().children(recursive=True)  # Spark's JVM is reaped by the CLI; nothing left
    elapsed = time.perf_counter() - t0
    rec = {"stage": name, "args": args, "exit_code": proc.returncode, "elapsed_s": round(elapsed, 1),
           "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "peak_tree_rss_mb": round(peak_tree[0] / 2**20, 1)}
    if proc.returncode != 0:
        rec["error"] = (err_lines[-1].strip() if err_lines else "") or "".join(out_lines)[-400:]
    else:
        try:
            rec["output"] = json.loads("".join(out_lines))
        except ValueError:
            try:  # a stage that printed progress first: its last line is the JSON summary
                rec["output"] = json.loads(out_lines[-1])
            except (ValueError, IndexError):
                rec["output"] = "".join(out_lines)[-400:]
    if children:
        rec["stray_processes"] = len(children)
    print(f"{name}: rc={proc.returncode} {rec['elapsed_s']} s, peak RSS {rec['peak_rss_mb']} MB "
          f"(tree {rec['peak_tree_rss_mb']} MB)", flush=True)
    return rec


def _rss(p: psutil.Process) -> int:
    try:
        return p.memory_info().rss
    except psutil.Error:
        return 0


def lake_facts(lake: str) -> dict:
    """Size of the lake: changes, partitions, bytes on disk, the end instant and a partition alive at it."""
    from weaver.core import storage
    from weaver.core.settings import load_settings
    from weaver.log import Lineage, resolve_seq

    s = load_settings(lake=lake)
    policy = json.loads((Path(lake) / "_weaver" / "lake.json").read_text())
    end = datetime.fromisoformat(policy["end"])
    seq = resolve_seq(s, end)
    alive = Lineage.load(s).active(seq)
    dt = storage.open_table(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    import pyarrow as pa

    adds = pa.table(dt.get_add_actions(flatten=True))
    return {"end": end.isoformat(), "changes": seq, "partitions_alive_at_end": len(alive),
            "changelog_files": adds.num_rows, "changelog_bytes_on_disk": int(sum(adds.column("size_bytes").to_pylist())),
            "lake_bytes_on_disk": sum(f.stat().st_size for f in Path(lake).rglob("*") if f.is_file()),
            "recover_partition": alive[0].partition_id}


def drop(lake: str, *names: str) -> None:
    """Delete derived tables (or folders) of the lake so the next stage builds them from nothing."""
    for name in names:
        shutil.rmtree(Path(lake) / name, ignore_errors=True)


SIMULATED = {"changelog", "partitions", "splits", "access_log"}


def reset_derived(lake: str) -> None:
    """A reused lake back to what `simulate` wrote: every table and file a stage derived is deleted."""
    for p in Path(lake).iterdir():
        if p.name == "_weaver":
            for q in p.iterdir():
                if q.name != "lake.json":
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        elif p.name not in SIMULATED:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def cycle_stage(stage: str, lake: str, start: str, end: str, state_file: str) -> dict:
    """One task of the `temporal_weaver` DAG for the interval [start, end), called the way the task
    calls it (dags/temporal_weaver.py); XCom between tasks is the JSON file `state_file`."""
    from weaver.core.settings import settings_from_params

    s = settings_from_params({**PARAMS, "lake": lake})
    t0, t1 = datetime.fromisoformat(start), datetime.fromisoformat(end)
    state = json.loads(Path(state_file).read_text()) if Path(state_file).exists() else {}
    if stage == "extract":
        from weaver.pipeline import extract as run

        state["manifest"] = run(s, start=t0, end=t1)
        out = {k: v for k, v in state["manifest"].items() if k != "per_partition"}
    elif stage == "check_changelog":
        from weaver.pipeline import gate_changelog

        out = gate_changelog(s, state["manifest"])
    elif stage == "metrics":
        from weaver.pipeline import account_metrics, resume_point
        from weaver.predict import build_metrics

        built = build_metrics(s, start=resume_point(s, t1), end=t1)
        out = {"metrics": built, "accounting": account_metrics(s, state["manifest"])}
    elif stage == "forecast":
        from weaver.predict import predict

        out = {"predictions": predict(s, at=t1, model=PARAMS["model"], stage=True).num_rows}
    elif stage == "check_predictions":
        from weaver.pipeline import gate_predictions

        out = gate_predictions(s, at=t1)
    elif stage == "weave":
        from weaver.weave import planned_engine

        plan = planned_engine(s, at=t1, confidence_threshold=PARAMS["confidence_threshold"], model=PARAMS["model"])
        if plan["engine"] == "spark":  # the DAG's SparkSubmitOperator branch
            job = subprocess.run([sys.executable, str(ROOT / "spark_jobs" / "weave.py"), f"--at={end}",
                                  f"--confidence-threshold={PARAMS['confidence_threshold']}", f"--lake={lake}",
                                  f"--model={PARAMS['model']}",
                                  "--engine=spark"], capture_output=True, text=True)
            if job.returncode:
                raise RuntimeError(f"spark_jobs/weave.py failed: {job.stderr[-400:]}")
            r = json.loads(job.stdout.strip().splitlines()[-1])
        else:  # the weave_arrow task
            from dataclasses import replace

            from weaver.weave import weave as run_weave

            r = run_weave(None, replace(s, weave_engine="arrow"), at=t1,
                          confidence_threshold=PARAMS["confidence_threshold"], model=PARAMS["model"], stage=True)
        out = {"plan": plan, **{k: r.get(k) for k in ("sequences", "new_sequences", "timepoints_written",
                                                       "rows_written", "engine", "work_changes")}}
    elif stage == "check_woven":
        from weaver.pipeline import gate_weaves

        out = gate_weaves(s)
    elif stage == "advise":
        from weaver.whatif import advise

        actions = advise(s, at=t1, confidence_threshold=PARAMS["confidence_threshold"]).column("action").to_pylist()
        out = {a: actions.count(a) for a in sorted(set(actions))}
    elif stage == "publish":
        from weaver.pipeline import run_summary, write_run_record
        from weaver.weave import reconcile

        summary = {**run_summary(s, at=t1), "lifecycle": reconcile(s, at=t1)}
        write_run_record(s, f"scheduled__{end}", summary)
        out = summary
    else:
        raise SystemExit(f"unknown cycle stage {stage!r}")
    Path(state_file).write_text(json.dumps(state, default=str))
    return out


def run_cycle(label: str, lake: str, start: datetime, end: datetime, work: Path, timeout_s: float,
              skip: frozenset = frozenset()) -> list[dict]:
    """The DAG's tasks for [start, end) in order (but `skip`), one process each; stops at the first failure."""
    state = work / f"xcom-{label}.json"
    state.unlink(missing_ok=True)
    recs = []
    for stage in CYCLE:
        if stage in skip:
            continue
        rec = run_stage(f"{label}:{stage}", ["--cycle", stage, lake, start.isoformat(), end.isoformat(), str(state)],
                        ROOT, timeout_s)
        recs.append(rec)
        if rec["exit_code"] != 0:
            break
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--days", type=int, default=4, help="even: the cycle runs at the end of day days/2 and days")
    ap.add_argument("--lake", default=None, help="lake folder (default: a new folder under /tmp)")
    ap.add_argument("--reuse", action="store_true", help="use the simulated lake at --lake as is (simulate not measured)")
    ap.add_argument("--keep", action="store_true", help="keep the lake afterwards")
    ap.add_argument("--parts", default="cycle,loop",
                    help="cycle, loop_weave (predict, weave), loop_snapshot (snapshot, recover, backtest); loop = both "
                         "loop parts. Run separately (--keep, then --reuse --append) to hold the bench lock < 25 min")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--warm-hours", type=int, default=2,
                    help="hourly cycles run before the measured one: the metrics fold resumes from the checkpoint "
                         "two buckets back (its steady state), so an hourly schedule reaches it from the third run")
    ap.add_argument("--lengths", default="H,2H", help="history lengths whose cycle runs (H, 2H or both)")
    ap.add_argument("--no-daily-snapshot", action="store_true",
                    help="no snapshot run before a length's cycles (the weave then starts from older bases)")
    ap.add_argument("--skip", default="", help="cycle tasks not run (comma-separated; named in the result)")
    ap.add_argument("--append", action="store_true", help="add this run's stages to the result already at --out")
    ap.add_argument("--simulate-time", default=None,
                    help="with --reuse: the `/usr/bin/time -v` report of the run that simulated the lake (recorded as "
                         "the simulate stage, marked as measured apart)")
    ap.add_argument("--simulate-commit", default=None, help="the commit whose simulator made the reused lake")
    args = ap.parse_args()
    if args.days % 2:
        ap.error("--days must be even (history H = days/2, 2H = days)")

    work = Path(tempfile.mkdtemp(prefix="weaver-scale-"))
    lake = args.lake or str(work / "lake")
    stages: list[dict] = []
    started = datetime.now(timezone.utc)
    info = _common.machine("pyarrow", "deltalake", "pyspark")
    todo = set(args.parts.split(","))
    if "loop" in todo:
        todo |= {"loop_weave", "loop_snapshot"}
    skip = frozenset(x for x in args.skip.split(",") if x)
    try:
        if not args.reuse:
            code = ("import json, sys; from weaver.simulate import SimConfig; "
                    "from weaver.simulate.simulator import simulate; "
                    f"r = simulate(sys.argv[1], SimConfig(partitions={args.partitions}, days={args.days}, "
                    f"base_rate={SIM['base_rate']}, daily_growth={SIM['daily_growth']})); "
                    "print(json.dumps({'changes': r.changes, 'partitions': r.partitions, 'splits': r.splits}))")
            stages.append(run_stage("simulate", ["-c", code, lake], ROOT, args.timeout))
        else:
            if not args.append:  # a later part continues on what the earlier parts built
                reset_derived(lake)
            if args.simulate_time:
                stages.append(time_v_record(args.simulate_time, args.simulate_commit))
        facts = lake_facts(lake)
        print(json.dumps(facts), flush=True)
        end = datetime.fromisoformat(facts["end"])
        t_start = end - timedelta(days=args.days)
        if "cycle" in todo:
            for label, day in (("H", args.days // 2), ("2H", args.days)):
                if label not in args.lengths.split(","):
                    continue
                t = t_start + timedelta(days=day) - LAG
                if not args.no_daily_snapshot:
                    # The daily snapshot DAG's run at the end of the previous day: the weave's bases.
                    stages.append(run_stage(f"{label}:daily_snapshot",
                                            ["snapshot", "--at", (t_start + timedelta(days=day - 1)).isoformat(),
                                             "--lake", lake, "--json"], ROOT, args.timeout))
                for w in range(args.warm_hours, 0, -1):
                    stages += run_cycle(f"{label}:warm{w}", lake, t - timedelta(hours=w + 1), t - timedelta(hours=w),
                                        work, args.timeout, skip)
                stages += run_cycle(label, lake, t - timedelta(hours=1), t, work, args.timeout, skip)
        end_s, run_s = end.isoformat(), (end - timedelta(hours=6)).isoformat()
        if "loop_weave" in todo:
            stages.append(run_stage("loop:predict", ["predict", "--at", run_s, "--lake", lake, "--json"], ROOT,
                                    args.timeout))
            drop(lake, "woven")  # that run's sequences woven from nothing (bases: the daily snapshots)
            stages.append(run_stage("loop:weave", ["weave", "--at", end_s, "--run-ts", run_s, "--lake", lake,
                                                   "--json"], ROOT, args.timeout))
        if "loop_snapshot" in todo:
            drop(lake, "snapshots", "snapshot_catalog")  # the first base snapshot, over the whole log
            stages.append(run_stage("loop:snapshot", ["snapshot", "--at", end_s, "--lake", lake, "--json"], ROOT,
                                    args.timeout))
            stages.append(run_stage("loop:recover", ["recover", "--partition", facts["recover_partition"], "--at", end_s,
                                                     "--out", str(work / "recovered.parquet"), "--lake", lake, "--json"],
                                    ROOT, args.timeout))
            stages.append(run_stage("loop:backtest", ["backtest", "--from", (end - timedelta(hours=12)).isoformat(),
                                                      "--to", end_s, "--every", "6h", "--out", str(work / "backtest"),
                                                      "--lake", lake, "--json"], ROOT, args.timeout))
    finally:
        if not args.keep:
            shutil.rmtree(lake, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    for rec in stages:  # outputs can be long (per-partition lists): keep the counts
        out = rec.get("output")
        if isinstance(out, dict):
            rec["output"] = _counts(out)
    run = {"parts": sorted(todo), "lengths": args.lengths, "daily_snapshot": not args.no_daily_snapshot,
           "skipped_cycle_tasks": sorted(skip), "machine": info, "date": started.isoformat(timespec="seconds"),
           "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    runs = []
    if args.append and Path(args.out).exists():
        # One result from parts run separately (each under its own hold of the bench lock).
        prev = json.loads(Path(args.out).read_text())
        runs = prev.get("runs", [])
        # A stage killed by a signal (an interrupted part) is dropped; a rerun replaces a stage.
        stages = [r for r in prev["stages"] if r["stage"] not in {x["stage"] for x in stages}
                  and r.get("exit_code", 0) >= 0] + stages
    result = {"bench": "scale", "runs": [*runs, run],
              "setup": {"partitions": args.partitions, "days": args.days, "simulation": SIM, "reused_lake": args.reuse,
                        "history_H": (t_start + timedelta(days=args.days // 2) - LAG).isoformat(),
                        "history_2H": (end - LAG).isoformat(), **facts},
              "weave_engines": "Spark vs Arrow weaving at three sizes and local[2] vs local[1]: bench/weave.py "
                               "(bench/results/weave.json); here the engine is settings' auto choice, named per run.",
              "stages": stages, "ratios": ratios(stages)}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["ratios"], indent=2))


def time_v_record(path: str, commit: str | None) -> dict:
    """The simulate stage from a `/usr/bin/time -v` report (the lake was simulated apart, then reused)."""
    text = Path(path).read_text()
    wall = next(line.rsplit(" ", 1)[1] for line in text.splitlines() if "Elapsed (wall clock)" in line)
    secs = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
    rss_kb = next(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "Maximum resident set size" in line)
    code = next((int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "Exit status" in line), None)
    return {"stage": "simulate", "measured_apart": "/usr/bin/time -v, outside the bench lock", "code": commit,
            "exit_code": code, "elapsed_s": round(secs, 1), "peak_rss_mb": round(rss_kb / 1024.0, 1),
            "peak_tree_rss_mb": round(rss_kb / 1024.0, 1)}


def _counts(out: dict) -> dict:
    return {k: (len(v) if isinstance(v, list) and len(v) > 20 else _counts(v) if isinstance(v, dict) and len(v) > 20
                else v) for k, v in out.items()}


def ratios(stages: list[dict]) -> dict:
    """per_run_cost_growth (cycle wall at 2H / H) and per-stage wall and RSS growth."""
    by = {r["stage"]: r for r in stages}
    out: dict = {}
    ran = [st for st in CYCLE if all(by.get(f"{lab}:{st}", {}).get("exit_code") == 0 for lab in ("H", "2H"))]
    out["not_compared"] = [st for st in CYCLE if st not in ran]
    cyc = {lab: [by[f"{lab}:{st}"] for st in ran] for lab in ("H", "2H")}
    if "extract" in ran:
        tot = {lab: sum(r["elapsed_s"] for r in recs) for lab, recs in cyc.items()}
        out["cycle_wall_s"] = {lab: round(v, 1) for lab, v in tot.items()}
        out["cycle_tasks"] = ran
        out["per_run_cost_growth"] = round(tot["2H"] / max(0.1, tot["H"]), 3)
        ch = {lab: by[f"{lab}:extract"]["output"].get("changes") for lab in ("H", "2H")}
        out["increment_changes"] = ch
        out["increment_growth"] = round(ch["2H"] / max(1, ch["H"]), 3)
        out["per_stage"] = {st: {"wall_growth": round(by[f"2H:{st}"]["elapsed_s"] / max(0.1, by[f"H:{st}"]["elapsed_s"]), 2),
                                 "peak_rss_growth": round(by[f"2H:{st}"]["peak_tree_rss_mb"]
                                                          / max(1.0, by[f"H:{st}"]["peak_tree_rss_mb"]), 2)}
                            for st in ran}
        out["max_peak_rss_growth"] = max(v["peak_rss_growth"] for v in out["per_stage"].values())
        # weave and check_woven do the work of the predictions that crossed the threshold that
        # hour (Spark for one hour, Arrow or nothing for another), not a function of history.
        steady = [st for st in ran if st not in ("weave", "check_woven")]
        st_tot = {lab: sum(by[f"{lab}:{st}"]["elapsed_s"] for st in steady) for lab in ("H", "2H")}
        out["per_run_cost_growth_without_weave"] = round(st_tot["2H"] / max(0.1, st_tot["H"]), 3)
        # forecast works per live partition, and splits keep adding partitions.
        parts = {lab: (by[f"{lab}:forecast"].get("output") or {}).get("predictions") for lab in ("H", "2H")}
        if all(isinstance(v, int) and v for v in parts.values()):
            out["partitions_forecast"] = parts
            out["forecast_s_per_partition_growth"] = round(
                (by["2H:forecast"]["elapsed_s"] / parts["2H"]) / (by["H:forecast"]["elapsed_s"] / parts["H"]), 3)
    out["weave_engine"] = {lab: (by[f"{lab}:weave"].get("output") or {}).get("engine")
                           for lab in ("H", "2H") if isinstance(by.get(f"{lab}:weave", {}).get("output"), dict)}
    loop = [r for r in stages if r["stage"].startswith(("loop:", "simulate"))]
    if loop:
        out["loop_peak_tree_rss_mb"] = {r["stage"]: r["peak_tree_rss_mb"] for r in loop}
        out["loop_ok"] = all(r["exit_code"] == 0 for r in loop)
    return out


def rescore(path: str) -> None:
    """Recompute the ratios of a result from its stages (after a change to :func:`ratios`)."""
    result = json.loads(Path(path).read_text())
    result["ratios"] = ratios(result["stages"])
    result["ratios_computed_by"] = _common.git()
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["ratios"], indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--cycle":
        print(json.dumps(cycle_stage(*sys.argv[2:7]), default=str))
    elif len(sys.argv) > 1 and sys.argv[1] == "--rescore":
        rescore(sys.argv[2])
    else:
        main()
