"""Weaving engines: Spark (local[1], local[2]) vs Arrow (one process) at three run sizes.

Setup per size: one simulated lake (``weaver simulate``: ``partitions`` partitions, ``--days`` days,
real splits on), one prediction per partition alive at the run (split at the partition's median
live key, ``predicted_split_ts`` = run + 1 h, window 23 h, probability 0.9), woven at the window's
end with the default hourly cadence: every sequence gets ~23 timepoints in ONE run (the heaviest
incremental step, e.g. a backfill). Each contender runs ``weaver.weave.weave`` - the product path:
planning, replay, the one Delta commit of woven_snapshots (zstd), the catalog MERGE - with the
engine forced by ``weave_engine``:

* ``arrow``: weaver.replay.woven's one-pass fold, written with delta-rs (no JVM);
* ``spark_local1`` / ``spark_local2``: weaver.replay.spark's woven_rows at local[1] / local[2]
  (``shuffle_partitions`` shuffle partitions), after one warm-up weave on a scratch lake in the
  same JVM.

Each contender runs in its own process, over the sizes smallest first, ``--repeat`` times per size
(default 3), each time on a fresh copy of the lake; wall time from the call to its return, the
median of the repeats (all of them are kept: ``*_wall_s_runs``; Spark local[2]'s wall time was
seen to vary by several seconds between identical runs, enough to move local[2] / local[1] by
0.1); peak RSS of the process over its runs (VmHWM; for Spark the Python driver's only: the JVM is a separate process, sized by Spark's own settings). ``work`` is the run's size as the engine choice
sees it (weaver.weave.engine.run_work: change-log rows the sequences span, summed). The outputs
of the three contenders are checked to be the same rows. Ratios per size: ``spark_local2_vs_arrow``
(> 1: Spark faster), ``spark_local2_vs_local1`` (parallel speed-up); ``crossover_work`` is where
Arrow's and Spark local[2]'s wall times are equal, interpolated between the two neighbouring sizes
where the faster engine changes (else where straight lines through the two largest sizes meet;
null: not at a positive size), the measured basis of ``weave_spark_min_changes``.
``--rescore [file]`` recomputes it from a result's figures.

Run: ``.venv/bin/python bench/weave.py [--sizes 4,16,64 --days 2] [--quick]`` -> bench/results/weave.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core import storage  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "weave.json"
SHUFFLE_PARTITIONS = 4
MODEL = "bench"  # the hand-made predictions' model: a weaving run selects one model's rows


def machine() -> dict:
    return _common.machine('pyspark', 'deltalake', 'pyarrow')


def make_lake(root: Path, partitions: int, days: int, seed: int) -> dict:
    from weaver.simulate import SimConfig, simulate

    r = simulate(str(root), SimConfig(seed=seed, partitions=partitions, days=days))
    return {"changes": r.changes, "partitions": r.partitions, "splits": r.splits, "start": r.start, "end": r.end}


def make_predictions(lake: Path, run_ts: datetime, window: timedelta) -> list[dict]:
    """One likely split per partition alive at run_ts, at its median live key."""
    from weaver.log import Lineage, read_changes
    from weaver.replay import fold
    from weaver.core.storage import filter_range

    s = load_settings(env={}, lake=str(lake))
    lineage = Lineage.load(s)
    state = fold(None, read_changes(s, upto_ts=run_ts))
    rows = []
    for p in lineage.active_at_ts(run_ts):
        keys = filter_range(state, p.key_lo or None, p.key_hi).column("key").to_pylist()
        if len(keys) < 4:
            continue
        pid = hashlib.sha1(f"bench|{run_ts.isoformat()}|{p.partition_id}".encode()).hexdigest()[:16]
        rows.append({"prediction_id": pid, "run_ts": run_ts, "partition_id": p.partition_id, "model": MODEL,
                     "window_start": run_ts, "window_end": run_ts + window, "probability": 0.9, "reason": "size",
                     "predicted_split_ts": run_ts + timedelta(hours=1), "split_ts_p10": run_ts,
                     "split_ts_p90": run_ts + timedelta(hours=2), "split_key": keys[len(keys) // 2],
                     "threshold": 1.0, "skip_reason": None})
    storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS,
                  pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS]), ["prediction_id"])
    return rows


def peak_rss_mib() -> float | None:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


# --- contenders ----------------------------------------------------------------------------------
def child(engine: str, master: str, jobs_json: str) -> None:
    """Runs in a fresh process: (Spark: warm the JVM on a scratch lake, then) time one weave per job."""
    from weaver.weave import weave

    jobs = json.loads(jobs_json)
    spark = None
    if engine == "spark":
        from weaver.core.spark import get_spark

        s = load_settings(env={}, lake=jobs[0]["lake"], spark_master=master, spark_shuffle_partitions=SHUFFLE_PARTITIONS)
        spark = get_spark(s, f"bench-weave-{master}")
        w = jobs[0]["warm"]
        weave(spark, s.with_overrides(lake=w["lake"], weave_engine="spark"), at=datetime.fromisoformat(w["at"]),
              model=MODEL)
    out = []
    for job in jobs:
        s = load_settings(env={}, lake=job["lake"], spark_master=master, spark_shuffle_partitions=SHUFFLE_PARTITIONS,
                          weave_engine=engine)
        t0 = time.perf_counter()
        summary = weave(spark, s, at=datetime.fromisoformat(job["at"]), model=MODEL)
        summary["wall_s"] = time.perf_counter() - t0
        summary["peak_rss_mib"] = peak_rss_mib()
        out.append(summary)
    if spark is not None:
        spark.stop()
    print(json.dumps(out, default=str))


def run_child(engine: str, master: str, jobs: list[dict]) -> list[dict]:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, __file__, "--child", engine, master, json.dumps(jobs)],
                          capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} {master} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_rows(lakes: list[str]) -> bool:
    """Whether the woven_snapshots of `lakes` hold the same rows, compared weave by weave (sorted
    Arrow tables, so memory holds one sequence of each lake at a time)."""
    uris = [storage.uri_for(load_settings(env={}, lake=x), storage.WOVEN_SNAPSHOTS) for x in lakes]
    cols = ["woven_partition_id", "source_partition_id", "timepoint", "as_of_seq", "key", "value"]
    order = [("timepoint", "ascending"), ("key", "ascending")]
    ids = [sorted(set(storage.read(u, storage.WOVEN_SNAPSHOTS, columns=["weave_id"]).column("weave_id").to_pylist()))
           for u in uris]
    if any(i != ids[0] for i in ids):
        return False
    for wid in ids[0]:
        tabs = [storage.read(u, storage.WOVEN_SNAPSHOTS, filters=[("weave_id", "=", wid)], columns=cols).sort_by(order)
                for u in uris]
        if any(not t.equals(tabs[0]) for t in tabs[1:]):
            return False
    return True


def crossover(xa: list[float], ya: list[float], xb: list[float], yb: list[float]) -> float | None:
    """Where a and b (wall times at the same sizes xa == xb) are equal: interpolated between the
    two neighbouring sizes where their order flips (the first flip); with no flip, where the
    lines through the last two points meet (None: never, at a positive x)."""
    d = [p - q for p, q in zip(ya, yb)]
    for i in range(1, len(d)):
        if (d[i - 1] < 0) != (d[i] < 0):
            return xa[i - 1] + (xa[i] - xa[i - 1]) * d[i - 1] / (d[i - 1] - d[i])
    sa = (ya[-1] - ya[-2]) / (xa[-1] - xa[-2])
    sb = (yb[-1] - yb[-2]) / (xb[-1] - xb[-2])
    ia, ib = ya[-1] - sa * xa[-1], yb[-1] - sb * xb[-1]
    if sa == sb:
        return None
    x = (ib - ia) / (sa - sb)
    return x if x > 0 else None


def rescore(path: Path) -> None:
    """Recompute crossover_work of a result from its figures (after a change to :func:`crossover`)."""
    out = json.loads(path.read_text())
    per = out["figures"]["sizes"]
    work = [float(x["work"]) for x in per]
    cross = crossover(work, [x["arrow_wall_s"] for x in per], work, [x["spark_local2_wall_s"] for x in per])
    out["figures"]["crossover_work"] = round(cross) if cross else None
    out["crossover_computed_by"] = _common.git()
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(out["figures"]["crossover_work"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="4,16,64", help="partitions of the three lakes")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="sizes 2,3,4 (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="weaves per contender and size (median wall time)")
    args = ap.parse_args()
    sizes = [2, 3, 4] if args.quick else [int(x) for x in args.sizes.split(",")]
    mach = machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench_weave_"))
    try:
        window = timedelta(hours=23)
        lakes, infos, preds = [], [], []
        for n in sizes:
            base = tmp / f"lake{n}"
            info = make_lake(base, n, args.days, args.seed)
            run_ts = info["start"] + timedelta(days=args.days - 1)
            preds.append(len(make_predictions(base, run_ts, window)))
            info.update(run_ts=run_ts, at=run_ts + window)
            lakes.append(base)
            infos.append(info)
        warm = tmp / "warm"
        shutil.copytree(lakes[0], warm)
        warm_at = infos[0]["run_ts"] + timedelta(hours=2)

        def jobs(name: str) -> list[dict]:
            out = []
            for base, info in zip(lakes, infos):
                for r in range(args.repeat):
                    dst = tmp / f"{name}_{base.name}_{r}"
                    shutil.copytree(base, dst)
                    out.append({"lake": str(dst), "at": info["at"].isoformat()})
            w = tmp / f"warm_{name}"
            shutil.copytree(warm, w)
            out[0]["warm"] = {"lake": str(w), "at": warm_at.isoformat()}
            return out

        contenders = {"arrow": ("arrow", "local[1]"), "spark_local1": ("spark", "local[1]"),
                      "spark_local2": ("spark", "local[2]")}
        results, lake_of = {}, {}
        for name, (engine, master) in contenders.items():
            js = jobs(name)
            lake_of[name] = [j["lake"] for j in js][::args.repeat]  # each size's first copy
            runs = run_child(engine, master, js)
            for r in runs:
                assert r["engine"] == engine, r
            # Per size: the first run's summary, with the median wall time of the repeats.
            results[name] = []
            for i in range(len(sizes)):
                rep = runs[i * args.repeat:(i + 1) * args.repeat]
                walls = [r["wall_s"] for r in rep]
                assert all(r["rows_written"] == rep[0]["rows_written"] for r in rep), rep
                results[name].append({**rep[0], "wall_s": statistics.median(walls),
                                      "wall_s_runs": [round(w, 3) for w in walls],
                                      "peak_rss_mib": max(r["peak_rss_mib"] or 0 for r in rep)})

        for i in range(len(sizes)):
            if not same_rows([lake_of[name][i] for name in contenders]):
                raise SystemExit(f"the engines wove different rows at size {sizes[i]}")

        per_size, ratios = [], {}
        for i, n in enumerate(sizes):
            a, s1, s2 = (results[k][i] for k in ("arrow", "spark_local1", "spark_local2"))
            per_size.append({
                "partitions": n, "lake_changes": infos[i]["changes"], "lake_partitions": infos[i]["partitions"],
                "predictions": preds[i], "sequences": a["sequences"], "timepoints": a["timepoints_written"],
                "woven_rows": a["rows_written"], "work": a["work_changes"],
                **{f"{k}_wall_s": round(results[k][i]["wall_s"], 3) for k in contenders},
                **{f"{k}_wall_s_runs": results[k][i]["wall_s_runs"] for k in contenders},
                **{f"{k}_peak_rss_mib": results[k][i]["peak_rss_mib"] for k in contenders},
            })
            ratios[f"spark_local2_vs_arrow_{n}p"] = round(a["wall_s"] / s2["wall_s"], 3)
            ratios[f"spark_local1_vs_arrow_{n}p"] = round(a["wall_s"] / s1["wall_s"], 3)
            ratios[f"spark_local2_vs_local1_{n}p"] = round(s1["wall_s"] / s2["wall_s"], 3)
        work = [float(x["work"]) for x in per_size]
        cross = crossover(work, [x["arrow_wall_s"] for x in per_size], work,
                          [x["spark_local2_wall_s"] for x in per_size])
        figures = {"sizes": per_size, "crossover_work": round(cross) if cross else None,
                   "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
        out = {"bench": "weave", "machine": mach, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "params": {"sizes": sizes, "days": args.days, "seed": args.seed, "window_h": 23, "cadence": "1h",
                          "shuffle_partitions": SHUFFLE_PARTITIONS, "repeat": args.repeat},
               "ratios": ratios, "figures": figures}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({"ratios": ratios, "figures": figures}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--rescore":
        rescore(Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS)
    else:
        main()
