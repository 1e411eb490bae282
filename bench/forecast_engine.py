"""Where forecast fits should run: the task's own process pool or a Spark cluster (`forecast_engine`).

Setup: a Spark standalone master and worker (2 cores, 2 GB) started from the pip pyspark on
127.0.0.1 (`weaver.deploy.spark_daemon`, the compose file's command), and two simulated lakes
(seed 3, 3 days, base rate 30 writes/h, no burst, splits disabled) of ``--sizes`` partitions. Each
cell is one `weaver predict --no-write --no-check` at the lake's end, in a fresh process, as an
Airflow task runs it, every partition fitted (triage off, 200 sample paths, 2 pool workers):

* ``process``: ``WEAVER_FORECAST_ENGINE=process``, the fits in the task's process pool;
* ``spark``: ``WEAVER_FORECAST_ENGINE=spark``, the fits through applyInPandas on the cluster
  (the driver in the task's process, as the DAG's forecast task on a ``spark://`` master did for
  every run before `auto`).

Each cell runs ``--reps`` times, alternating the engines; the minimum wall counts. The worker has
this machine's 2 cores, the pool's workers too, so Spark brings no extra core here: the difference
``spark - process`` is what a Spark application costs a run by itself (its JVM, executors, Python
workers, pickling), the fixed cost `forecast_spark_min_s` has to outweigh. Also recorded per cell:
`forecasting.planned_fit_s` of the run and the engine `auto` takes for it on a ``spark://`` master.

``spark_job_s`` (the source of `forecasting.SPARK_JOB_S`): what one more Spark job costs in an
application already started, as a backtest's later instants find it. In this process, driver of
an application on the same cluster, the path fits of the smallest lake (milliseconds in the pool)
go through applyInPandas ``--reps`` + 1 times: the first wall includes the application's start,
the minimum of the others is one job's cost. ``spark_app_s`` (the source of
`forecasting.SPARK_APP_S`) is the cells' median ``spark - process``.

``fit_cpu_s`` (the source of `forecasting.FIT_CPU_S`): per model, the CPU seconds of one fit in
this process's pool (2 workers; children's CPU included), measured on the largest lake's
partitions (72 history buckets, 200 sample paths; at most ``--fit-partitions`` fits per model
after a 2-fit warm-up): the path model, Prophet, ARIMA (statsmodels) and statsforecast.

Ratios: ``spark_vs_process_wall_<model>_<partitions>`` (< 1 would mean Spark paid off here).

Run: ``.venv/bin/python bench/forecast_engine.py [--quick]`` -> bench/results/forecast_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import machine, save  # noqa: E402

WEAVER = str(Path(sys.executable).parent / "weaver")
MODELS = ("path", "prophet")


def _cluster(work: Path) -> tuple[str, list[subprocess.Popen], dict]:
    """Start a standalone master and a 2-core worker on 127.0.0.1; (master URL, processes, env)."""
    import httpx

    from weaver.deploy.postgres import free_port
    from weaver.deploy.spark_daemon import spark_home

    for d in ("local", "worker"):
        (work / d).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SPARK_HOME=str(spark_home()), SPARK_LOCAL_DIRS=str(work / "local"),
               SPARK_WORKER_DIR=str(work / "worker"), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    port, ui, wport, wui = (free_port() for _ in range(4))
    url = f"spark://127.0.0.1:{port}"
    daemon = [sys.executable, "-m", "weaver.deploy.spark_daemon"]
    procs = []
    with open(work / "master.log", "wb") as m_log, open(work / "worker.log", "wb") as w_log:
        procs.append(subprocess.Popen(daemon + ["master", "--host", "127.0.0.1", "--port", str(port),
                                                "--webui-port", str(ui)],
                                      stdout=m_log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        procs.append(subprocess.Popen(daemon + ["worker", "--host", "127.0.0.1", "--port", str(wport),
                                                "--webui-port", str(wui), "--cores", "2", "--memory", "2g",
                                                "--work-dir", str(work / "worker"), url],
                                      stdout=w_log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        try:
            if httpx.get(f"http://127.0.0.1:{ui}/json/", timeout=3).json().get("aliveworkers", 0) >= 1:
                return url, procs, env
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(1)
    _stop(procs)
    raise SystemExit("the Spark worker did not register:\n" + (work / "worker.log").read_text()[-2000:])


def _signal(p: subprocess.Popen, sig: int) -> None:
    """`sig` to `p`'s process group (its own session), also when `p` itself has already exited."""
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _signal(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait(timeout=30)


def _predict(lake: Path, at: datetime, model: str, engine: str, env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([WEAVER, "predict", "--lake", str(lake), "--at", at.isoformat(), "--model", model,
                        "--no-write", "--no-check", "--json"],
                       env=dict(env, WEAVER_FORECAST_ENGINE=engine), capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"predict {model} {engine} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return wall


def _fit_cpu_s(lake: Path, at: datetime, workers: int, limit: int) -> dict:
    """CPU seconds per fit of each model in a prediction run's own pool (module docstring)."""
    import resource

    from weaver.core.settings import load_settings
    from weaver.predict import forecasting, gather_batched, run_params

    s = load_settings(lake=str(lake), forecast_workers=workers, forecast_samples=200, forecast_triage=False)

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    out = {}
    for model in ("path", "statsforecast", "prophet", "arima"):
        params = run_params(s, at=at, model=model)
        jobs = list(forecasting.run_jobs_of(params, gather_batched(s, params)).values())[:limit]
        with forecasting.forecast_pool(s) as pool:  # the model's imports, then workers forked warm
            forecasting.run_jobs(jobs[:2], s, pool=pool, engine="process")
        # A worker's CPU reaches RUSAGE_CHILDREN when the pool reaps it: a pool of its own, closed
        # before the second reading (its start and shutdown count, as a run pays them).
        c0, t0 = cpu(), time.perf_counter()
        with forecasting.forecast_pool(s) as pool:
            forecasting.run_jobs(jobs, s, pool=pool, engine="process")
        wall, used = time.perf_counter() - t0, cpu() - c0
        out[model] = {"fits": len(jobs), "history_buckets": int(np.median([len(j.ds) for j in jobs])),
                      "wall_s": round(wall, 2), "cpu_s": round(used, 2), "cpu_s_per_fit": round(used / len(jobs), 4),
                      "planned_fit_s": round(forecasting.planned_fit_s(jobs, s), 2)}
        print(json.dumps({"fit_cpu_s": model, **out[model]}), flush=True)
    return out


def _spark_job_s(lake: Path, at: datetime, url: str, env: dict, reps: int) -> dict:
    """One more Spark job's wall in a started application (module docstring)."""
    from weaver.core.settings import load_settings
    from weaver.predict import forecasting, gather_batched, run_params

    os.environ.update({k: v for k, v in env.items() if k.startswith(("SPARK_", "PYSPARK_")) or k == "PYTHONPATH"})
    s = load_settings(lake=str(lake), spark_master=url, forecast_workers=2, forecast_samples=200,
                      forecast_triage=False)
    params = run_params(s, at=at, model="path")
    jobs = list(forecasting.run_jobs_of(params, gather_batched(s, params)).values())
    walls = []
    try:
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            forecasting.run_jobs(jobs, s, engine="spark")
            walls.append(round(time.perf_counter() - t0, 2))
    finally:
        from weaver.core.spark import get_spark

        get_spark(s, app_name="weaver-forecast").stop()
    out = {"fits": len(jobs), "first_s": walls[0], "walls_s": walls[1:], "job_s": min(walls[1:])}
    print(json.dumps({"spark_job_s": out}), flush=True)
    return out


def run(args) -> dict:
    from weaver.core.settings import load_settings
    from weaver.predict import forecasting
    from weaver.predict.models import Job
    from weaver.simulate import SimConfig, simulate

    tmp = tempfile.TemporaryDirectory(prefix="weaver-bench-forecast-engine-")
    procs: list[subprocess.Popen] = []
    try:
        url, procs, env = _cluster(Path(tmp.name) / "spark")
        env.update(WEAVER_SPARK_MASTER=url, WEAVER_SPARK_DRIVER_HOST="127.0.0.1", WEAVER_SPARK_BIND_ADDRESS="127.0.0.1",
                   WEAVER_FORECAST_TRIAGE="0", WEAVER_FORECAST_WORKERS=str(args.workers),
                   WEAVER_FORECAST_SAMPLES="200")
        cells, ratios = [], {}
        for n in args.sizes:
            cfg = SimConfig(seed=3, partitions=n, days=3, base_rate=30.0, burst=False,
                            size_threshold_bytes=10**12, write_threshold_per_s=1e9)
            lake = Path(tmp.name) / f"lake{n}"
            simulate(str(lake), cfg)
            at = cfg.start + timedelta(days=cfg.days)
            for model in MODELS:
                walls: dict[str, list[float]] = {"process": [], "spark": []}
                for _ in range(args.reps):
                    for engine in walls:
                        walls[engine].append(round(_predict(lake, at, model, engine, env), 2))
                best = {e: min(w) for e, w in walls.items()}
                s = load_settings(lake=str(lake), spark_master=url, forecast_workers=args.workers)
                ds = np.zeros(24 * cfg.days)  # the run's history buckets: the whole lake
                jobs = [Job(f"p{i}", ds, ds, ds, ds, 0.0, 0.0, 200, i, model) for i in range(n)]
                cell = {"model": model, "partitions": n, "walls_s": walls, "process_s": best["process"],
                        "spark_s": best["spark"], "spark_minus_process_s": round(best["spark"] - best["process"], 2),
                        "planned_fit_s": round(forecasting.planned_fit_s(jobs, s), 2),
                        "auto_engine_on_cluster": forecasting.fit_engine(jobs, s)}
                cells.append(cell)
                ratios[f"spark_vs_process_wall_{model}_{n}"] = round(best["spark"] / best["process"], 2)
                print(json.dumps(cell), flush=True)
        fits = _fit_cpu_s(lake, at, args.workers, args.fit_partitions)
        # After the fork pools of fit_cpu_s: this process becomes a Spark driver. Every lake ends at `at`.
        job = _spark_job_s(Path(tmp.name) / f"lake{min(args.sizes)}", at, url, env, args.reps)
        start_cost = sorted(c["spark_minus_process_s"] for c in cells)
        figures = {"cells": cells, "fit_cpu_s": fits, "spark_job_s": job,
                   "spark_minus_process_s_median": start_cost[len(start_cost) // 2],
                   "forecast_spark_min_s_default": load_settings(lake=str(Path(tmp.name) / "x")).forecast_spark_min_s}
        return {"bench": "forecast_engine", "date": datetime.now(timezone.utc).isoformat(),
                "params": {"sizes": args.sizes, "models": list(MODELS), "reps": args.reps, "workers": args.workers,
                           "fit_partitions": args.fit_partitions,
                           "samples": 200, "triage": False, "cluster": "standalone master + 1 worker, 2 cores, 2g, 127.0.0.1",
                           "simulation": "seed 3, 3 days, base_rate 30/h, no splits, no burst"},
                "ratios": ratios, "figures": figures}
    finally:
        _stop(procs)
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--fit-partitions", type=int, default=64, help="fits per model in fit_cpu_s")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="8 partitions, one rep (not written)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecast_engine.json"))
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.reps, args.fit_partitions = [8], 1, 8
    result = {"machine": machine("pyspark"), **run(args)}
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    save(result, args.out, quick=args.quick)


if __name__ == "__main__":
    main()
