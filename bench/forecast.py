"""Forecast throughput and accuracy: Prophet (with predictive samples) vs the ARIMA alternative.

Setup: one simulated lake (``weaver simulate`` workload, ``--partitions`` partitions, 3 days,
splits disabled so every partition keeps one unbroken series), its hourly `partition_metrics`
built with `weaver.metrics.build_metrics`. Each partition is one forecast problem exactly as a
prediction run poses it: two series (size in bytes, write rate in writes/s), ``--history`` hours
of history, ``--horizon`` hours ahead, ``--samples`` predictive sample paths per series. Both
models get the same 200+ partitions, the same process pool (`weaver.forecasting.forecast_pool`,
``--workers`` processes) and run back to back in one process.

Figures per model:

* ``partitions_per_s`` - partitions / wall time of the pool run; ``..._per_core`` divides by the
  workers; ``partitions_per_cpu_s`` = partitions / the sum of per-fit times measured inside the
  workers (robust to other load on a shared machine);
* accuracy on the held-out horizon: MASE (mean absolute error of the path median / the in-sample
  mean absolute one-step change) per series kind, median over partitions, next to a naive
  reference (size: last value + mean historical step; rate: last value).

Run: ``.venv/bin/python bench/forecast.py [--partitions 200] [--quick]`` -> bench/results/forecast.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.predict import models as _models  # noqa: E402
from weaver.predict import forecasting  # noqa: E402
from weaver.predict import metrics  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402
from weaver.simulate import SimConfig, simulate  # noqa: E402

H_US = 3_600_000_000


def machine() -> dict:
    return _common.machine('prophet', 'statsmodels')


def series(lake: Path, n_partitions: int, hours: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """partition_id -> (ds us, size bytes, write rate /s) over `hours` hourly buckets."""
    s = load_settings(lake=str(lake))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    metrics.build_metrics(s, start=start, end=start + timedelta(hours=hours))
    t = metrics.read_metrics(s).to_pandas().sort_values(["partition_id", "bucket_start"])
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


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="weaver-bench-forecast-") as tmp:
        lake = Path(tmp) / "lake"
        t0 = time.perf_counter()
        simulate(str(lake), SimConfig(seed=3, partitions=args.partitions, days=3, base_rate=30.0, burst=False,
                                      size_threshold_bytes=10**12, write_threshold_per_s=1e9))
        data = series(lake, args.partitions, args.history + args.horizon)
        setup_s = time.perf_counter() - t0
    hist, hor = args.history, args.horizon
    workers = args.workers or os.cpu_count() or 1
    settings = load_settings(lake=str(ROOT / "lake"), forecast_workers=workers, forecast_samples=args.samples)
    figures: dict = {"partitions": len(data), "series": 2 * len(data), "setup_s": round(setup_s, 1), "models": {}}
    naive = {"size": [], "rate": []}
    for ds, size, rate in data.values():
        step = np.mean(np.diff(size[:hist]))
        naive["size"].append(mase(size[hist:], size[hist - 1] + step * np.arange(1, hor + 1), size[:hist]))
        naive["rate"].append(mase(rate[hist:], np.full(hor, rate[hist - 1]), rate[:hist]))
    figures["naive_mase"] = {k: round(float(np.nanmedian(v)), 3) for k, v in naive.items()}
    for model in ("prophet", "arima"):
        jobs = [_models.Job(pid, ds[:hist], size[:hist], rate[:hist], ds[hist:], 1e18, 1e18, args.samples,
                            _models.seed_for(pid), model, H_US) for pid, (ds, size, rate) in data.items()]
        with forecasting.forecast_pool(settings) as pool:
            forecasting.run_jobs(jobs[:workers], settings, pool=pool)  # start the workers (warm imports)
            t0 = time.perf_counter()
            results = forecasting.run_jobs(jobs, settings, pool=pool)
            wall = time.perf_counter() - t0
        failed = [r.partition_id for r in results if r.skip_reason]
        acc = {"size": [], "rate": []}
        for r in results:
            if r.skip_reason:
                continue
            ds, size, rate = data[r.partition_id]
            acc["size"].append(mase(size[hist:], np.array(r.size_median), size[:hist]))
            acc["rate"].append(mase(rate[hist:], np.array(r.rate_median), rate[:hist]))
        fit_cpu = sum(r.fit_seconds for r in results)
        figures["models"][model] = {
            "wall_s": round(wall, 2), "workers": workers,
            "partitions_per_s": round(len(jobs) / wall, 3),
            "partitions_per_s_per_core": round(len(jobs) / wall / workers, 3),
            "partitions_per_cpu_s": round(len(jobs) / fit_cpu, 3),
            "mean_fit_s_per_partition": round(fit_cpu / len(jobs), 3),
            "mase_size_median": round(float(np.nanmedian(acc["size"])), 3),
            "mase_rate_median": round(float(np.nanmedian(acc["rate"])), 3),
            "failed": len(failed),
        }
        print(model, figures["models"][model], flush=True)
    p, a = figures["models"]["prophet"], figures["models"]["arima"]
    ratios = {
        "arima_vs_prophet_partitions_per_s": round(a["partitions_per_s"] / p["partitions_per_s"], 2),
        "arima_vs_prophet_partitions_per_cpu_s": round(a["partitions_per_cpu_s"] / p["partitions_per_cpu_s"], 2),
        "prophet_vs_arima_mase_size": round(p["mase_size_median"] / a["mase_size_median"], 2),
        "prophet_vs_arima_mase_rate": round(p["mase_rate_median"] / a["mase_rate_median"], 2),
        "prophet_vs_naive_mase_size": round(p["mase_size_median"] / figures["naive_mase"]["size"], 2),
        "arima_vs_naive_mase_size": round(a["mase_size_median"] / figures["naive_mase"]["size"], 2),
        "prophet_vs_naive_mase_rate": round(p["mase_rate_median"] / figures["naive_mase"]["rate"], 2),
        "arima_vs_naive_mase_rate": round(a["mase_rate_median"] / figures["naive_mase"]["rate"], 2),
    }
    return {"bench": "forecast", "machine": machine(), "date": datetime.now(timezone.utc).isoformat(),
            "params": {"partitions": args.partitions, "history_h": hist, "horizon_h": hor, "samples": args.samples,
                       "workers": workers, "simulation": "seed 3, 3 days, base_rate 30/h, no splits, no burst"},
            "ratios": ratios, "figures": figures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=200)
    ap.add_argument("--history", type=int, default=48, help="hours of history per series")
    ap.add_argument("--horizon", type=int, default=24, help="hours forecast (held out)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="20 partitions (a smoke run; results not written)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "forecast.json"))
    args = ap.parse_args()
    if args.quick:
        args.partitions = 20
    result = run(args)
    print(json.dumps(result["ratios"], indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
