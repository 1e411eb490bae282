"""Triage before fitting: share of partitions triaged and prediction throughput with and without it.

Setup: one simulated lake (``weaver simulate`` workload, ``--partitions`` initial partitions,
3 days, base rate 30 writes/h, the simulator's data manager splitting at its thresholds), one
prediction run at day 2 + 10 h. `gather` (histories, split keys) runs once; each model then
predicts the same `RunInput` with ``forecast_triage`` off and on, side by side in one process,
on one warm process pool of ``--workers`` processes, in ABBA order (off, on, on, off; the mean
of each arm) so that a load drifting on a shared machine cancels.

Two threshold settings:

* ``own`` - the simulator's own thresholds (1.5 MB, 0.5 writes/s): the partitions grow toward
  them at different speeds;
* ``x4``  - four times them: most partitions are far below, as on a table whose thresholds were
  raised or that is young.

Figures per (setting, model): partitions, triaged share, wall seconds of predict (triage,
fits, rows) without and with triage, partitions/s end to end (gather + predict), the speed-up,
the number of fits with and without triage, and ``triaged_at_or_above_threshold`` (partitions triaged that the full run puts at or above the
confidence threshold: must be 0).

Run: ``.venv/bin/python bench/triage.py [--partitions 100] [--models path,prophet]`` -> bench/results/triage.json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core.settings import load_settings  # noqa: E402
from weaver.predict import forecasting, triage  # noqa: E402
from weaver.simulate import SimConfig, simulate  # noqa: E402


def measure(settings, run, model: str, pool, repeat: bool = True) -> dict:
    """Predict `run` with triage off, then on; timings exclude `gather` (shared)."""
    out = {}
    params = forecasting.run_params(settings, at=run.params.at, model=model, size_threshold=run.params.size_threshold,
                                    write_threshold=run.params.write_threshold)
    run = forecasting.RunInput(params, run.horizon, run.partitions, run.metrics_source)
    # Untimed first pass: warms the pool's workers and the model imports for this model.
    forecasting.predict(settings, at=params.at, model=model, write=False, run_input=forecasting.RunInput(
        params, run.horizon, run.partitions[:8], run.metrics_source), pool=pool, calibration="none",
        size_threshold=params.size_threshold, write_threshold=params.write_threshold)
    # ABBA (off, on, on, off): a load that drifts linearly on a shared machine cancels in the means.
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in (False, True, True, False)[: 4 if repeat else 2]:
        s = settings.with_overrides(forecast_triage=on)
        t0 = time.perf_counter()
        t = forecasting.predict(s, at=params.at, model=model, write=False, run_input=run, pool=pool,
                                size_threshold=params.size_threshold, write_threshold=params.write_threshold,
                                calibration="none")
        times[on].append(time.perf_counter() - t0)
        out[on] = (sum(times[on]) / len(times[on]), t.to_pylist())
    (off_s, full), (on_s, tri) = out[False], out[True]
    c = params.confidence_threshold
    dropped = {r["partition_id"] for r in tri if (r["skip_reason"] or "").startswith(triage.UNREACHABLE)}
    other_skips = sum(1 for r in full if r["skip_reason"])
    return {"triaged": len(dropped), "skipped_otherwise": other_skips,
            "fitted_without_triage": len(full) - other_skips, "fitted_with_triage": len(full) - other_skips - len(dropped),
            "predict_s_without": round(off_s, 2), "predict_s_with": round(on_s, 2),
            "triaged_at_or_above_threshold": sum(1 for r in full if r["partition_id"] in dropped and r["probability"] >= c),
            "at_or_above_threshold": sum(1 for r in full if r["probability"] >= c)}


def run(args) -> dict:
    figures: dict = {"settings": {}}
    workers = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="weaver-bench-triage-") as tmp:
        lake = str(Path(tmp) / "lake")
        cfg = SimConfig(seed=3, partitions=args.partitions, days=3, base_rate=30.0)
        t0 = time.perf_counter()
        sim = simulate(lake, cfg)
        figures["lake"] = {"changes": sim.changes, "partitions_ever": sim.partitions, "splits": sim.splits,
                           "simulate_s": round(time.perf_counter() - t0, 1)}
        at = cfg.start + timedelta(days=2, hours=10, minutes=30)
        base = load_settings(lake=lake, forecast_workers=workers)
        with forecasting.forecast_pool(base) as pool:
            for name, mult in (("own", 1.0), ("x4", 4.0)):
                params = forecasting.run_params(base, at=at, size_threshold=cfg.size_threshold_bytes * mult,
                                                write_threshold=cfg.write_threshold_per_s * mult)
                t0 = time.perf_counter()
                run_input = forecasting.gather(base, params)
                gather_s = time.perf_counter() - t0
                n = len(run_input.partitions)
                entry = {"size_threshold_bytes": params.size_threshold, "write_threshold_per_s": params.write_threshold,
                         "partitions": n, "gather_s": round(gather_s, 2), "models": {}}
                for model in args.models.split(","):
                    m = measure(base, run_input, model, pool, repeat=not args.no_repeat)
                    m["triaged_share"] = round(m["triaged"] / n, 3)
                    m["partitions_per_s_without"] = round(n / (gather_s + m["predict_s_without"]), 2)
                    m["partitions_per_s_with"] = round(n / (gather_s + m["predict_s_with"]), 2)
                    m["speedup"] = round(m["partitions_per_s_with"] / m["partitions_per_s_without"], 2)
                    entry["models"][model] = m
                    print(name, model, m, flush=True)
                figures["settings"][name] = entry
    figures["run_ts"] = at.isoformat()
    figures["workers"] = workers
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=100, help="initial partitions of the simulated lake")
    ap.add_argument("--models", default="path,prophet")
    ap.add_argument("--workers", type=int, default=0, help="fit processes (0 = one per core)")
    ap.add_argument("--no-repeat", action="store_true", help="one pass per arm instead of ABBA")
    ap.add_argument("--quick", action="store_true", help="10 partitions, path model (a smoke run; results not written)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "triage.json"))
    args = ap.parse_args()
    if args.quick:
        args.partitions, args.models = 10, "path"
    figures = run(args)
    ratios = {f"{name}_{model}_{k}": m[k] for name, e in figures["settings"].items()
              for model, m in e["models"].items() for k in ("triaged_share", "speedup")}
    result = {"bench": "triage", "machine": _common.machine("prophet", "statsmodels"),
              "date": datetime.now(timezone.utc).isoformat(),
              "params": {"partitions": args.partitions, "models": args.models, "workers": figures["workers"],
                         "simulation": "seed 3, 3 days, base_rate 30/h, splits at the simulator's thresholds",
                         "run_ts": figures["run_ts"]},
              "ratios": ratios, "figures": figures}
    print(json.dumps(ratios, indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
