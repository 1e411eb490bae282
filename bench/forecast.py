"""Forecast throughput and accuracy of every model on a many-partition workload (issue 11, point 3).

Setup: one simulated lake (``weaver simulate`` workload, ``--partitions`` partitions, 3 days,
base rate 30 writes/h, no burst, splits disabled so every partition keeps one unbroken series),
its hourly `partition_metrics` built with `weaver.metrics.build_metrics`. Each partition is one
forecast problem as a prediction run poses it: two series (size in bytes, write rate in
writes/s), ``--history`` hours of history, ``--horizon`` hours ahead (held out), ``--samples``
sample paths per series.

Thresholds (for the split probability): per partition, drawn once (seed 11) so that about 40 %
of the partitions cross inside the horizon (a few on write rate) - size: the last size plus U(0.5, 3.0) x its last day's
growth; write rate: the largest rate of the history x U(1.2, 2.5). ``actual`` is whether the
held-out series crosses either inside the horizon.

Models, each on the same problems, the same machine, back to back in one process:

* ``path`` (the default) *after triage*: timed from the series to the results - Job build,
  `weaver.predict.triage` check (no calibration map: a fresh lake), fits of the reachable
  partitions in `forecasting.forecast_pool` (``--workers`` processes); triaged partitions count
  as probability 0, as in a prediction row. Also without triage (every partition fitted).
* ``statsforecast``: AutoETS over all partitions in one `StatsForecast` fit per series kind,
  ``n_jobs`` = ``--workers`` (`models.run_batch`); its first call (the import and a 2-partition
  fit) is timed apart as ``first_call_s``.
* ``prophet`` and ``arima`` (statsmodels) on the first ``--slow-partitions`` partitions only (in
  partition-id order; a fit costs ~0.5 s of CPU, 1,000 would hold the shared machine ~10 min per
  model); every model's accuracy is also reported on that same subset (``accuracy_on_subset``).
* naive baselines: MASE of ``naive`` (size: last value + mean historical step; rate: last
  value); Brier of ``baseline_linear`` (a line through the last 6 sizes crosses the size
  threshold in the horizon: 1, else 0) and ``baseline_near`` (size or rate within 10 % of its
  threshold: 1) - the two baselines of `weaver backtest`.
* ``end_to_end_predict``: `forecasting.predict` (write=False) of the default model at the end of
  the history over the lake itself (lake-wide thresholds: the 90th percentile of the sizes and
  95th of the largest rates at the horizon's end), split into `gather` (metrics, change-log fold,
  split keys) and the rest (triage, fits, rows).

Per model: ``partitions_per_s_per_core`` = partitions / wall / workers; ``partitions_per_cpu_s``
= partitions / the CPU seconds (user + system) of this process and its reaped children over the
model's block (pool start, a ``--workers``-job warm-up and the run; Prophet's Stan processes
included): the figure that other load on a shared machine does not move;
``partitions_per_fit_s`` = partitions / the summed wall seconds of the fits inside the workers
(for statsforecast the batch's wall share); MASE of the path median per series
kind (median over partitions); Brier of the split probability. The load average is recorded at
the start (``machine``) and before each model.

Run: ``.venv/bin/python bench/forecast.py [--partitions 1000] [--quick]`` -> bench/results/forecast.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core.settings import load_settings  # noqa: E402
from weaver.predict import forecasting, metrics  # noqa: E402
from weaver.predict import models as _models  # noqa: E402
from weaver.predict import triage as _triage  # noqa: E402
from weaver.simulate import SimConfig, simulate  # noqa: E402

H_US = 3_600_000_000
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def machine() -> dict:
    return _common.machine('prophet', 'statsmodels', 'statsforecast')


def series(settings, hours: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """partition_id -> (ds us, size bytes, write rate /s) over `hours` hourly buckets."""
    metrics.build_metrics(settings, start=START, end=START + timedelta(hours=hours))
    t = metrics.read_metrics(settings).to_pandas().sort_values(["partition_id", "bucket_start"])
    out = {}
    for pid, g in t.groupby("partition_id"):
        if len(g) != hours:
            continue
        ds = np.array([metrics.to_us(t.to_pydatetime()) for t in g["bucket_start"]], np.int64) + H_US  # bucket ends
        out[pid] = (np.asarray(ds, np.int64), g["size_bytes"].to_numpy(float), g["writes"].to_numpy(float) / 3600.0)
    return out


def mase(actual: np.ndarray, forecast: np.ndarray, history: np.ndarray) -> float:
    scale = np.mean(np.abs(np.diff(history)))
    return float(np.mean(np.abs(actual - forecast)) / scale) if scale > 0 else float("nan")


def brier(p: dict, actual: dict, ids) -> float:
    return round(float(np.mean([(p.get(i, 0.0) - float(actual[i])) ** 2 for i in ids])), 4)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_s() -> float:
    """CPU seconds of this process and of its reaped children (pool workers once shut down, Stan)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def run(args) -> dict:
    hist, hor, n = args.history, args.horizon, args.samples
    workers = args.workers or os.cpu_count() or 1
    tmp = tempfile.TemporaryDirectory(prefix="weaver-bench-forecast-")
    lake = Path(tmp.name) / "lake"
    t0 = time.perf_counter()
    cfg = SimConfig(seed=3, partitions=args.partitions, days=3, base_rate=30.0, burst=False,
                    size_threshold_bytes=10**12, write_threshold_per_s=1e9)
    simulate(str(lake), cfg)
    lake_settings = load_settings(lake=str(lake), forecast_workers=workers, forecast_samples=n)
    data = series(lake_settings, hist + hor)
    setup_s = time.perf_counter() - t0
    ids = sorted(data)
    subset = ids[: args.slow_partitions]
    rng = np.random.default_rng(11)
    st, wt, actual = {}, {}, {}
    for pid in ids:
        ds, size, rate = data[pid]
        day = size[hist - 1] - size[max(0, hist - 1 - 24)]
        st[pid] = float(size[hist - 1] + rng.uniform(0.5, 3.0) * max(day, 1.0))
        wt[pid] = float(rate[:hist].max() * rng.uniform(1.2, 2.5) or 1.0 / 3600)
        actual[pid] = bool(np.any(size[hist:] > st[pid]) or np.any(rate[hist:] > wt[pid]))
    figures: dict = {"partitions": len(ids), "slow_subset": len(subset), "series": 2 * len(ids),
                     "setup_s": round(setup_s, 1), "actual_crossing_share": round(float(np.mean(list(actual.values()))), 3),
                     "models": {}}

    # --- naive baselines -------------------------------------------------------------------------
    nm = {"size": {}, "rate": {}}
    p_lin, p_near = {}, {}
    for pid in ids:
        ds, size, rate = data[pid]
        step = np.mean(np.diff(size[:hist]))
        nm["size"][pid] = mase(size[hist:], size[hist - 1] + step * np.arange(1, hor + 1), size[:hist])
        nm["rate"][pid] = mase(rate[hist:], np.full(hor, rate[hist - 1]), rate[:hist])
        x = (ds[hist - 6:hist] - ds[hist - 1]) / 3.6e9
        slope, icpt = np.polyfit(x, size[hist - 6:hist], 1)
        line = icpt + slope * (ds[hist:] - ds[hist - 1]) / 3.6e9
        p_lin[pid] = 1.0 if np.any(line > st[pid]) else 0.0
        p_near[pid] = 1.0 if (size[hist - 1] >= 0.9 * st[pid] or rate[hist - 1] >= 0.9 * wt[pid]) else 0.0
    med = lambda d, keys: round(float(np.nanmedian([d[k] for k in keys])), 3)  # noqa: E731
    figures["baselines"] = {
        "naive": {"mase_size_median": med(nm["size"], ids), "mase_rate_median": med(nm["rate"], ids)},
        "baseline_linear": {"brier": brier(p_lin, actual, ids)},
        "baseline_near": {"brier": brier(p_near, actual, ids)},
        "accuracy_on_subset": {"naive": {"mase_size_median": med(nm["size"], subset),
                                         "mase_rate_median": med(nm["rate"], subset)},
                               "baseline_linear": {"brier": brier(p_lin, actual, subset)},
                               "baseline_near": {"brier": brier(p_near, actual, subset)}},
    }

    settings = load_settings(lake=str(lake), forecast_workers=workers, forecast_samples=n)
    q = _triage.path_budget(n, _triage.min_crossing_count(n, settings.confidence()))

    def jobs_for(model: str, keys) -> list:
        return [_models.Job(pid, data[pid][0][:hist], data[pid][1][:hist], data[pid][2][:hist], data[pid][0][hist:],
                            st[pid], wt[pid], n, _models.seed_for(pid), model, H_US) for pid in keys]

    def score(name: str, model: str, keys, results, wall: float, extra: dict | None = None) -> None:
        by = {r.partition_id: r for r in results}
        prob = {pid: (r.probability if r.skip_reason is None else 0.0) for pid, r in by.items()}
        acc = {"size": {}, "rate": {}}
        for pid, r in by.items():
            if r.skip_reason is None and r.size_median:
                ds, size, rate = data[pid]
                acc["size"][pid] = mase(size[hist:], np.array(r.size_median), size[:hist])
                acc["rate"][pid] = mase(rate[hist:], np.array(r.rate_median), rate[:hist])
        fit_cpu = sum(r.fit_seconds for r in results) or float("nan")
        fig = {"model": model, "partitions": len(keys), "wall_s": round(wall, 2), "workers": workers,
               "partitions_per_s": round(len(keys) / wall, 2),
               "partitions_per_s_per_core": round(len(keys) / wall / workers, 2),
               "partitions_per_fit_s": round(len(results) / fit_cpu, 2) if results else None,
               "fitted": len(results), "failed": sum(1 for r in results if r.skip_reason),
               "mase_size_median": med(acc["size"], acc["size"]) if acc["size"] else None,
               "mase_rate_median": med(acc["rate"], acc["rate"]) if acc["rate"] else None,
               "brier": brier(prob, actual, keys), "mean_probability": round(float(np.mean(
                   [prob.get(k, 0.0) for k in keys])), 3)}
        if set(subset) <= set(keys) and len(keys) > len(subset):
            fs = [k for k in subset if k in acc["size"]]
            fig["accuracy_on_subset"] = {"mase_size_median": med(acc["size"], fs) if fs else None,
                                         "mase_rate_median": med(acc["rate"], fs) if fs else None,
                                         "brier": brier(prob, actual, subset)}
        fig.update(extra or {})
        figures["models"][name] = fig
        print(name, fig, flush=True)

    # --- the default model, after triage, and without ------------------------------------------
    c0 = cpu_s()
    with forecasting.forecast_pool(settings) as pool:
        forecasting.run_jobs(jobs_for("path", ids[:workers]), settings, pool=pool)  # start the workers
        la = load()
        t0 = time.perf_counter()
        jobs = jobs_for("path", ids)
        keep = [j for j in jobs if _triage.check(j, q) is None]
        results = forecasting.run_jobs(keep, settings, pool=pool)
        wall = time.perf_counter() - t0
        score("path_after_triage", "path", ids, results, wall,
              {"triaged": len(jobs) - len(keep), "load_avg_1m_before": la})
        la = load()
        t0 = time.perf_counter()
        results = forecasting.run_jobs(jobs_for("path", ids), settings, pool=pool)
        score("path", "path", ids, results, time.perf_counter() - t0, {"load_avg_1m_before": la})
    # One pool ran both path variants: its CPU is split by their wall times.
    cpu = cpu_s() - c0
    w1, w2 = figures["models"]["path_after_triage"]["wall_s"], figures["models"]["path"]["wall_s"]
    for name, w in (("path_after_triage", w1), ("path", w2)):
        figures["models"][name]["cpu_s"] = round(cpu * w / (w1 + w2), 2)
        figures["models"][name]["partitions_per_cpu_s"] = round(len(ids) / (cpu * w / (w1 + w2)), 2)

    # --- statsforecast: one batch over all partitions -----------------------------------------------
    la = load()
    t0 = time.perf_counter()
    forecasting.run_jobs(jobs_for("statsforecast", ids[:2]), settings)
    first = time.perf_counter() - t0
    la = load()
    c0 = cpu_s()
    t0 = time.perf_counter()
    results = forecasting.run_jobs(jobs_for("statsforecast", ids), settings)
    wall = time.perf_counter() - t0
    cpu = cpu_s() - c0
    score("statsforecast", "statsforecast", ids, results, wall,
          {"first_call_s": round(first, 2), "load_avg_1m_before": la, "cpu_s": round(cpu, 2),
           "partitions_per_cpu_s": round(len(ids) / cpu, 2)})

    # --- the per-series models on the subset ------------------------------------------------------
    for model in ("prophet", "arima"):
        c0 = cpu_s()
        with forecasting.forecast_pool(settings) as pool:
            forecasting.run_jobs(jobs_for(model, subset[:workers]), settings, pool=pool)  # warm imports
            la = load()
            t0 = time.perf_counter()
            results = forecasting.run_jobs(jobs_for(model, subset), settings, pool=pool)
            wall = time.perf_counter() - t0
        cpu = cpu_s() - c0
        score(model, model, subset, results, wall, {"load_avg_1m_before": la, "cpu_s": round(cpu, 2),
                                                     "partitions_per_cpu_s": round(len(subset) / cpu, 2)})

    # --- end to end over the lake: gather + triage + fits + rows -----------------------------------
    if not args.no_end_to_end:
        at = START + timedelta(hours=hist)
        size_t = float(np.quantile([data[p][1][-1] for p in ids], 0.9))
        write_t = float(np.quantile([data[p][2][hist:].max() for p in ids], 0.95))
        params = forecasting.run_params(settings, at=at, window=timedelta(hours=hor), size_threshold=size_t,
                                        write_threshold=write_t)
        with forecasting.forecast_pool(settings) as pool:
            la = load()
            t0 = time.perf_counter()
            run_in = forecasting.gather(settings, params)
            t_gather = time.perf_counter() - t0
            table = forecasting.predict(settings, at=at, window=timedelta(hours=hor), size_threshold=size_t,
                                        write_threshold=write_t, write=False, pool=pool, run_input=run_in)
            wall = time.perf_counter() - t0
        skips = [s for s in table.column("skip_reason").to_pylist() if s]
        figures["end_to_end_predict"] = {
            "model": forecasting.DEFAULT_MODEL, "partitions": table.num_rows, "workers": workers,
            "size_threshold": size_t, "write_threshold": write_t, "wall_s": round(wall, 2),
            "gather_s": round(t_gather, 2), "triage_fit_rows_s": round(wall - t_gather, 2),
            "partitions_per_s_per_core": round(table.num_rows / wall / workers, 2),
            "partitions_per_s_per_core_without_gather": round(table.num_rows / (wall - t_gather) / workers, 2),
            "triaged": sum(1 for s in skips if s.startswith(_triage.UNREACHABLE)), "other_skips": sum(
                1 for s in skips if not s.startswith(_triage.UNREACHABLE)),
            "load_avg_1m_before": la}
        print("end_to_end_predict", figures["end_to_end_predict"], flush=True)
    tmp.cleanup()
    figures["load_avg_1m_at_end"] = load()

    m = figures["models"]
    best_naive = min(figures["baselines"]["baseline_linear"]["brier"], figures["baselines"]["baseline_near"]["brier"])
    ratios = {
        "path_after_triage_partitions_per_s_per_core": m["path_after_triage"]["partitions_per_s_per_core"],
        "statsforecast_vs_prophet_partitions_per_cpu_s": round(
            m["statsforecast"]["partitions_per_cpu_s"] / m["prophet"]["partitions_per_cpu_s"], 2),
        "statsforecast_vs_arima_partitions_per_cpu_s": round(
            m["statsforecast"]["partitions_per_cpu_s"] / m["arima"]["partitions_per_cpu_s"], 2),
        "path_vs_statsforecast_partitions_per_s": round(
            m["path"]["partitions_per_s"] / m["statsforecast"]["partitions_per_s"], 2),
    }
    for name in ("path_after_triage", "path", "statsforecast"):
        ratios[f"{name}_brier_vs_best_naive"] = round(m[name]["brier"] / best_naive, 2) if best_naive else None
    for name in ("prophet", "arima"):
        sub_best = min(figures["baselines"]["accuracy_on_subset"]["baseline_linear"]["brier"],
                       figures["baselines"]["accuracy_on_subset"]["baseline_near"]["brier"])
        ratios[f"{name}_brier_vs_best_naive_on_subset"] = round(m[name]["brier"] / sub_best, 2) if sub_best else None
    return {"bench": "forecast", "machine": machine(), "date": datetime.now(timezone.utc).isoformat(),
            "params": {"partitions": args.partitions, "slow_partitions": args.slow_partitions, "history_h": hist,
                       "horizon_h": hor, "samples": n, "workers": workers,
                       "simulation": "seed 3, 3 days, base_rate 30/h, no splits, no burst",
                       "thresholds": "per partition, seed 11: size last + U(0.5,3.0) x last day's growth; "
                                     "rate max(history) x U(1.2,2.5)"},
            "ratios": ratios, "figures": figures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--slow-partitions", type=int, default=200,
                    help="partitions given to prophet and arima (statsmodels), the first in id order")
    ap.add_argument("--history", type=int, default=48, help="hours of history per series")
    ap.add_argument("--horizon", type=int, default=24, help="hours forecast (held out)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--no-end-to-end", action="store_true", help="skip the forecasting.predict run over the lake")
    ap.add_argument("--quick", action="store_true", help="40 partitions, 10 for the slow models (not written)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecast.json"))
    args = ap.parse_args()
    if args.quick:
        args.partitions, args.slow_partitions = 40, 10
    machine_at_start = machine()  # the load average before the run
    result = run(args)
    result["machine"] = machine_at_start
    result["load_avg_1m_at_end"] = load()
    print(json.dumps(result["ratios"], indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
