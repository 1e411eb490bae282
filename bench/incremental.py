"""Per-run cost of metrics and forecast inputs at 1x and 2x history: from scratch vs incremental.

Setup: one simulated lake (``weaver simulate`` workload, ``--partitions`` partitions,
``2 * --days`` days) in a steady state: no growth trend, as many deletes as inserts, split
thresholds out of reach - so the table (live keys, partitions, write rate) is the same size at 1x
and 2x and only the history differs, which is what ``per_run_cost_growth`` is about.
Hourly runs are replayed every ``--cadence`` hours with checkpoints on (the `metrics_state`
table), as the DAG would leave them. The lake is copied as it stands at 1x (end of day
``--days``), the replay goes on to 2x (end of day ``2 * --days``), and one run at each is timed,
both ways, the four alternating inside every repeat:

* ``build_metrics`` of the last hour (``start`` = the DAG's resume point, one bucket back);
* ``gather`` (the forecast inputs of every active partition at the run's instant).

Once a simulated day the replay runs ``compact_tables`` as the daily maintenance DAG does (the
MERGE-written tables, `metrics_state` among them, compacted and checkpointed).

``scratch`` sets ``metrics_checkpoints = 0`` (every run folds the change log from its start, the
code before issue 11.1); ``incremental`` starts from the stored checkpoints. Each figure is the
fastest of ``--repeats`` runs (the machine is shared: load only adds time).
``per_run_cost_growth`` = incremental cost at 2x / at 1x (goal <= 1.2); the same ratio from
scratch is reported beside it.

Run: ``.venv/bin/python bench/incremental.py [--partitions 6] [--days 8]`` -> bench/results/incremental.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core import storage  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402
from weaver.maintain import compact_tables  # noqa: E402
from weaver.predict import forecasting, metrics  # noqa: E402
from weaver.simulate import SimConfig, simulate  # noqa: E402

H = timedelta(hours=1)


def timed(fn, repeats: int) -> float:
    """The fastest of `repeats` runs: on a machine shared with other work, load only adds time."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def relayout(lake: str, start, days: int) -> None:
    """Rewrite the simulated change log as the hourly extractor lays it out - appended commit by
    commit, here one file a day - so that a read by seq range can skip files (the simulator writes
    one big file, which no reader could prune)."""
    from deltalake import write_deltalake

    uri = storage.uri_for(load_settings(lake=lake), storage.CHANGELOG)
    t = storage.read(uri, storage.CHANGELOG).sort_by([("seq", "ascending")])
    ts = t.column("ts")
    import pyarrow.compute as pc

    for d in range(days):
        lo, hi = start + timedelta(days=d), start + timedelta(days=d + 1)
        day = t.filter(pc.and_(pc.greater_equal(ts, pa_ts(lo)), pc.less(ts, pa_ts(hi))))
        write_deltalake(uri, day, mode="overwrite" if d == 0 else "append")


def pa_ts(x):
    import pyarrow as pa

    return pa.scalar(x, storage.TS)


def measure(points: dict, repeats: int) -> dict:
    """Seconds of one hourly run at each point - build_metrics of the last bucket, then gather -
    both ways. The points and ways alternate inside every repeat, so that load from other work on
    the machine falls on all of them alike; each figure is the fastest of `repeats`."""
    times: dict = {label: {way: {"build_metrics_s": [], "gather_s": []} for way in ("scratch", "incremental")}
                   for label in points}
    for _ in range(repeats):
        for label, (s, at) in points.items():
            for way, st in (("scratch", s.with_overrides(metrics_checkpoints=0)), ("incremental", s)):
                t0 = time.perf_counter()
                metrics.build_metrics(st, start=at - H, end=at)
                t1 = time.perf_counter()
                forecasting.gather(st, forecasting.run_params(st, at=at))
                t2 = time.perf_counter()
                times[label][way]["build_metrics_s"].append(t1 - t0)
                times[label][way]["gather_s"].append(t2 - t1)
    out: dict = {}
    for label, (s, at) in points.items():
        out[label] = {}
        for way, f in times[label].items():
            b, g = min(f["build_metrics_s"]), min(f["gather_s"])
            out[label][way] = {"build_metrics_s": round(b, 4), "gather_s": round(g, 4), "run_s": round(b + g, 4)}
        # the two ways give the same inputs (the property test checks this against the oracle too)
        scratch = s.with_overrides(metrics_checkpoints=0)
        a = forecasting.gather(s, forecasting.run_params(s, at=at))
        b = forecasting.gather(scratch, forecasting.run_params(scratch, at=at))
        out[label]["same_inputs"] = len(a.partitions) == len(b.partitions) and all(
            x.partition.partition_id == y.partition.partition_id and (x.size == y.size).all()
            and (x.rate == y.rate).all() and x.size_key == y.size_key for x, y in zip(a.partitions, b.partitions))
        out[label]["history_days"] = None
    return out


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="weaver-bench-incremental-") as tmp:
        lake = Path(tmp) / "lake"
        cfg = SimConfig(seed=5, partitions=args.partitions, days=2 * args.days, base_rate=args.rate,
                        daily_growth=(1.0, 1.0), insert_share=0.2, delete_share=0.2, burst=False,
                        size_threshold_bytes=10**15, write_threshold_per_s=1e9)
        t0 = time.perf_counter()
        sim = simulate(str(lake), cfg)
        setup = {"simulate_s": round(time.perf_counter() - t0, 1), "changes": sim.changes,
                 "partitions_total": sim.partitions, "splits": sim.splits}
        relayout(str(lake), cfg.start, 2 * args.days)
        x1, x2 = cfg.start + timedelta(days=args.days), cfg.start + timedelta(days=2 * args.days)
        t0 = time.perf_counter()
        at, points = cfg.start + args.cadence * H, {}
        s = load_settings(lake=str(lake), forecast_workers=1)
        for label, target in (("1x", x1), ("2x", x2)):
            while at < target - H:  # the hourly DAG's runs, every `cadence` hours, up to the timed one
                metrics.build_metrics(s, end=at)
                if (at - cfg.start) % timedelta(days=1) < args.cadence * H:
                    compact_tables(s)  # the daily maintenance DAG: compaction + Delta checkpoints
                at += args.cadence * H
            metrics.build_metrics(s, end=target - H)
            metrics.build_metrics(s, end=target)  # its checkpoint is the resume point's successor
            if label == "1x":  # the lake as the 1x run finds it; the original goes on to 2x
                shutil.copytree(lake, Path(tmp) / "lake1x")
                points["1x"] = (load_settings(lake=str(Path(tmp) / "lake1x"), forecast_workers=1), target)
            else:
                points["2x"] = (s, target)
        setup["replay_runs_s"] = round(time.perf_counter() - t0, 1)
        out = measure(points, args.repeats)
        for label, (st, target) in points.items():
            out[label]["history_days"] = (target - cfg.start).days
            last = metrics.read_metrics(st, start=target - H, end=target)
            out[label]["live_items"] = int(sum(last.column("item_count").to_pylist()))
            out[label]["active_partitions"] = last.num_rows
            out[label]["log_changes_before"] = int(storage.read(
                storage.uri_for(st, storage.CHANGELOG), storage.CHANGELOG, columns=["ts"],
                filters=[("ts", "<", target)]).num_rows)
        setup["checkpoints_kept"] = len(metrics.checkpoints(s))
        lake_bytes = sum(f.stat().st_size for f in lake.rglob("*") if f.is_file())
        state_bytes = sum(f.stat().st_size for f in (lake / storage.METRICS_STATE).rglob("*") if f.is_file())
        setup.update(lake_mib=round(lake_bytes / 2**20, 1), metrics_state_mib=round(state_bytes / 2**20, 2))
    ratios = {"per_run_cost_growth": round(out["2x"]["incremental"]["run_s"] / out["1x"]["incremental"]["run_s"], 3),
              "per_run_cost_growth_scratch": round(out["2x"]["scratch"]["run_s"] / out["1x"]["scratch"]["run_s"], 3),
              "build_metrics_growth": round(out["2x"]["incremental"]["build_metrics_s"]
                                            / out["1x"]["incremental"]["build_metrics_s"], 3),
              "gather_growth": round(out["2x"]["incremental"]["gather_s"] / out["1x"]["incremental"]["gather_s"], 3),
              "scratch_over_incremental_2x": round(out["2x"]["scratch"]["run_s"] / out["2x"]["incremental"]["run_s"], 2)}
    return {"benchmark": "incremental", "params": vars(args), "setup": setup, "runs": out, "ratios": ratios,
            "goal": {"per_run_cost_growth": "<= 1.2"}, "machine": _common.machine("deltalake", "pyarrow")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--days", type=int, default=8, help="1x history in days (the lake holds twice that)")
    ap.add_argument("--rate", type=float, default=300.0, help="writes per hour per initial partition")
    ap.add_argument("--cadence", type=int, default=12, help="hours between the replayed runs")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "incremental.json"))
    args = ap.parse_args()
    res = run(args)
    Path(args.out).write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps({"setup": res["setup"], "ratios": res["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
