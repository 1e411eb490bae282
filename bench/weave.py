"""Weaving throughput: the Spark weave job at local[1] and local[2] vs a single-process Arrow replay.

Setup: one simulated lake (``weaver simulate``: ``--partitions`` partitions, ``--days`` days, real
splits on), one prediction per partition alive at the run (split at the partition's median live
key, ``predicted_split_ts`` = run + 1 h, window 24 h, probability 0.9), woven at the window's end
with the default hourly cadence: every sequence gets ~24 timepoints in ONE run (the heaviest
incremental step, e.g. a backfill). The work is identical for all three contenders:

* ``spark_local1`` / ``spark_local2``: ``weaver.weaving.weave`` in a fresh process with a
  SparkSession at local[1] / local[2] (4 shuffle partitions), after one warm-up weave on a scratch
  copy of the lake in the same JVM; timed from the call to its return (planning, replay, Delta
  write of woven_snapshots in zstd, catalog MERGE);
* ``arrow``: the same sequences and timepoints replayed in this process with weaver.replay
  (pyarrow.compute: fold the key-range changes between consecutive timepoints onto the previous
  state), rows routed by split key and written to a Delta table with delta-rs (zstd).

``changes`` = the change-log rows each replay consumes (per sequence: every change of its key range
up to its last timepoint); ``changes_per_s`` = changes / wall time. The three outputs are checked to
be the same rows. Ratios: ``spark_local2_vs_arrow`` (> 1: Spark faster), ``spark_local1_vs_arrow``,
``spark_local2_vs_local1`` (parallel speed-up of the Spark job).

Run: ``.venv/bin/python bench/weave.py [--partitions 4 --days 2] [--quick]`` -> bench/results/weave.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core import storage  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "weave.json"


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
        rows.append({"prediction_id": pid, "run_ts": run_ts, "partition_id": p.partition_id, "model": "bench",
                     "window_start": run_ts, "window_end": run_ts + window, "probability": 0.9, "reason": "size",
                     "predicted_split_ts": run_ts + timedelta(hours=1), "split_ts_p10": run_ts,
                     "split_ts_p90": run_ts + timedelta(hours=2), "split_key": keys[len(keys) // 2],
                     "threshold": 1.0, "skip_reason": None})
    storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS,
                  pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS]), ["prediction_id"])
    return rows


# --- contenders ----------------------------------------------------------------------------------
def spark_child(master: str, lake: str, scratch: str, at: str, warm_at: str) -> None:
    """Runs in a fresh process: warm the JVM on `scratch`, then time one weave of `lake`."""
    from weaver.core.spark import get_spark
    from weaver.weave import weave

    s = load_settings(env={}, lake=lake, spark_master=master, spark_shuffle_partitions=4)
    spark = get_spark(s, f"bench-weave-{master}")
    weave(spark, s.with_overrides(lake=scratch), at=datetime.fromisoformat(warm_at))
    t0 = time.perf_counter()
    summary = weave(spark, s, at=datetime.fromisoformat(at))
    summary["wall_s"] = time.perf_counter() - t0
    spark.stop()
    print(json.dumps(summary, default=str))


def run_spark(master: str, lake: Path, scratch: Path, at: datetime, warm_at: datetime) -> dict:
    env = dict(os.environ, SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, __file__, "--child", master, str(lake), str(scratch), at.isoformat(),
                           warm_at.isoformat()], capture_output=True, text=True, timeout=900, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"spark child {master} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def arrow_replay(lake: Path, at: datetime) -> dict:
    """The same work in one process: plan like weave, fold with weaver.replay, write with delta-rs."""
    from deltalake import WriterProperties, write_deltalake

    from weaver.log import Lineage, read_changes
    from weaver.replay import fold
    from weaver.core.storage import filter_range
    from weaver.weave import plan_timepoints, select_predictions, sequences_for

    t0 = time.perf_counter()
    s = load_settings(env={}, lake=str(lake))
    lineage = Lineage.load(s)
    _, preds = select_predictions(s, at=at)
    seqs = plan_timepoints(s, sequences_for(preds, lineage, s.confidence_threshold, at), at)
    upto = max(x.tp_seqs[-1] for x in seqs)
    log = read_changes(s, upto_seq=upto)
    parts, changes = [], 0
    for x in seqs:
        mine = filter_range(log, x.key_lo or None, x.key_hi)
        seq_col = mine.column("seq")
        state, prev = None, 0
        left, right = x.child_ids
        for t, q in zip(x.timepoints, x.tp_seqs):
            step = mine.filter(pc.and_(pc.greater(seq_col, prev), pc.less_equal(seq_col, q)))
            changes += step.num_rows
            state = fold(state, step)
            prev = q
            n = state.num_rows
            side = pc.if_else(pc.less(state.column("key"), x.split_key), left, right)
            parts.append(pa.table({
                "weave_id": pa.array([x.weave_id] * n, pa.string()), "woven_partition_id": side,
                "source_partition_id": pa.array([x.source_partition_id] * n, pa.string()),
                "timepoint": pa.array([t] * n, storage.TS), "as_of_seq": pa.array([q] * n, pa.int64()),
                "key": state.column("key"), "value": state.column("value")}))
    out = pa.concat_tables(parts)
    uri = str(lake / "arrow_woven")
    write_deltalake(uri, out, mode="overwrite", partition_by=["weave_id"],
                    writer_properties=WriterProperties(compression="ZSTD"))
    return {"wall_s": time.perf_counter() - t0, "changes": changes, "rows": out.num_rows,
            "sequences": len(seqs), "timepoints": sum(len(x.timepoints) for x in seqs), "uri": uri}


def digest(table: pa.Table) -> str:
    t = table.select(["weave_id", "woven_partition_id", "timepoint", "as_of_seq", "key", "value"])
    t = t.sort_by([("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")])
    h = hashlib.sha1()
    for r in t.to_pylist():
        h.update(repr(tuple(r.values())).encode())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2 partitions, 2 days (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.partitions = 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_weave_"))
    try:
        base = tmp / "lake"
        info = make_lake(base, args.partitions, args.days, args.seed)
        run_ts = info["start"] + timedelta(days=args.days - 1)
        window = timedelta(hours=23)
        at = run_ts + window
        preds = make_predictions(base, run_ts, window)
        warm = tmp / "warm"
        lakes = {}
        for name in ("spark_local1", "spark_local2", "arrow"):
            lakes[name] = tmp / name
            shutil.copytree(base, lakes[name])
        shutil.copytree(base, warm)
        warm_at = run_ts + timedelta(hours=2)

        results = {"arrow": arrow_replay(lakes["arrow"], at)}
        results["spark_local1"] = run_spark("local[1]", lakes["spark_local1"], warm, at, warm_at)
        shutil.rmtree(warm)
        shutil.copytree(base, warm)
        results["spark_local2"] = run_spark("local[2]", lakes["spark_local2"], warm, at, warm_at)

        ref = digest(storage.read(results["arrow"]["uri"], storage.WOVEN_SNAPSHOTS))
        for name in ("spark_local1", "spark_local2"):
            s = load_settings(env={}, lake=str(lakes[name]))
            got = digest(storage.read(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS))
            if got != ref:
                raise SystemExit(f"{name} wove different rows than the Arrow replay")
        changes = results["arrow"]["changes"]
        figures = {
            "lake": {"changes": info["changes"], "partitions": info["partitions"], "real_splits": info["splits"]},
            "work": {"sequences": results["arrow"]["sequences"], "timepoints": results["arrow"]["timepoints"],
                     "woven_rows": results["arrow"]["rows"], "changes_replayed": changes},
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        }
        for name, r in results.items():
            figures[name] = {"wall_s": round(r["wall_s"], 3), "changes_per_s": round(changes / r["wall_s"], 1)}
        ratios = {
            "spark_local2_vs_arrow": round(results["arrow"]["wall_s"] / results["spark_local2"]["wall_s"], 3),
            "spark_local1_vs_arrow": round(results["arrow"]["wall_s"] / results["spark_local1"]["wall_s"], 3),
            "spark_local2_vs_local1": round(results["spark_local1"]["wall_s"] / results["spark_local2"]["wall_s"], 3),
        }
        out = {"bench": "weave", "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "params": {"partitions": args.partitions, "days": args.days, "seed": args.seed,
                          "predictions": len(preds), "window_h": 23, "cadence": "1h",
                          "run_ts": run_ts.isoformat(), "at": at.isoformat(), "shuffle_partitions": 4},
               "ratios": ratios, "figures": figures}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({"ratios": ratios, "figures": figures}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        spark_child(*sys.argv[2:7])
    else:
        main()
