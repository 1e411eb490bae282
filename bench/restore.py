"""Single-partition restore latency vs tail length, against a raw Parquet read of the same snapshot.

Setup: one partition ``p0000`` (the whole key space) loaded with 100k PUTs of distinct keys, then
1M updates / inserts / deletes on random keys, 1 ms apart; the change log is appended in
``--commit`` -change commits (one file each), as an extractor would. The base snapshot
``p0000@100000`` (the state after the load, 100k rows) is built with weaver.replay and written as
the snapshot framework lays it out (Delta, one partition directory per snapshot_id) with its
catalog row; it is taken once, without Spark, to keep the run short: restores read snapshots
through delta-rs whichever engine wrote them.

For each tail n in 1k, 10k, 100k, 1M the restore instant is the ts of change 100k + n, so
``weaver.pitr.restore_partition`` reads the snapshot and replays exactly n changes (it also
validates that tail: seq contiguity, ops, ts order, key ownership). The reference is
``pyarrow.parquet.read_table`` of the very Parquet files of that snapshot (no Delta, no replay,
no validation), measured in the same run, interleaved with the restores. Ratio = restore /
raw read (medians of the repeats). Rows are checked against an independent dict fold.

Run: ``.venv/bin/python bench/restore.py [--quick]`` -> bench/results/restore.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core import storage  # noqa: E402
from weaver.pitr import restore_partition  # noqa: E402
from weaver.replay import fold  # noqa: E402
from weaver.core.settings import load_settings  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
VALUE_BYTES = 64


def machine() -> dict:
    return _common.machine('pyarrow', 'deltalake')


def changes(rows: int, tail: int, seed: int = 5) -> pa.Table:
    """`rows` initial PUTs of distinct keys, then `tail` random updates (80%), inserts (15%), deletes (5%)."""
    rng = np.random.default_rng(seed)
    n = rows + tail
    seq = np.arange(1, n + 1, dtype=np.int64)
    key_ids = np.concatenate([np.arange(rows), rng.integers(0, int(rows * 1.2), size=tail)])
    kind = np.concatenate([np.zeros(rows, np.int8), rng.choice([0, 1], size=tail, p=[0.95, 0.05]).astype(np.int8)])
    keys = pa.array(np.char.add("k", np.char.zfill(key_ids.astype(str), 8)).astype(object), pa.string())
    op = pa.array(np.where(kind == 1, "DELETE", "PUT").astype(object), pa.string())
    raw = rng.integers(0, 256, size=(n, VALUE_BYTES), dtype=np.uint8).tobytes()
    values = pa.FixedSizeBinaryArray.from_buffers(pa.binary(VALUE_BYTES), n, [None, pa.py_buffer(raw)]).cast(pa.binary())
    values = pa.array([None if k == 1 else v for k, v in zip(kind.tolist(), values.to_pylist())], pa.binary()) \
        if kind.any() else values
    ts = pa.array((np.datetime64(T0.replace(tzinfo=None), "us") + seq.astype("timedelta64[ms]")).astype("datetime64[us]"),
                  pa.timestamp("us", tz="UTC"))
    return pa.table({"seq": seq, "ts": ts, "partition_id": pa.array(["p0000"] * n, pa.string()), "key": keys,
                     "op": op, "value": values,
                     "value_bytes": pa.array(np.where(kind == 1, 0, VALUE_BYTES), pa.int64())},
                    schema=storage.SCHEMAS[storage.CHANGELOG])


def build(lake: Path, rows: int, max_tail: int, commit: int) -> dict:
    from deltalake import write_deltalake

    t0 = time.perf_counter()
    log = changes(rows, max_tail)
    uri = storage.table_uri(str(lake), storage.CHANGELOG)
    for i in range(0, log.num_rows, commit):
        write_deltalake(uri, log.slice(i, commit), mode="append")
    part = pa.Table.from_pylist([{"partition_id": "p0000", "key_lo": "", "key_hi": None, "parent_id": None,
                                  "created_seq": 0, "created_ts": T0, "retired_seq": None, "retired_ts": None}],
                                schema=storage.SCHEMAS[storage.PARTITIONS])
    write_deltalake(storage.table_uri(str(lake), storage.PARTITIONS), part)
    write_deltalake(storage.table_uri(str(lake), storage.SPLITS), storage.empty(storage.SPLITS))
    state = fold(None, log.slice(0, rows))
    sid = f"p0000@{rows}"
    as_of_ts = log.column("ts")[rows - 1].as_py()
    n = state.num_rows
    snap = pa.table({"snapshot_id": pa.array([sid] * n, pa.string()), "partition_id": pa.array(["p0000"] * n, pa.string()),
                     "as_of_seq": pa.array([rows] * n, pa.int64()), "as_of_ts": pa.array([as_of_ts] * n, storage.TS),
                     "key": state.column("key"), "value": state.column("value")}, schema=storage.SCHEMAS[storage.SNAPSHOTS])
    snap_uri = storage.table_uri(str(lake), storage.SNAPSHOTS)
    write_deltalake(snap_uri, snap, partition_by=["snapshot_id"])
    files = [f for f in (lake / storage.SNAPSHOTS).rglob("*.parquet")]
    cat = pa.Table.from_pylist([{"snapshot_id": sid, "partition_id": "p0000", "as_of_seq": rows, "as_of_ts": as_of_ts,
                                 "rows": n, "bytes": sum(f.stat().st_size for f in files),
                                 "created_at": datetime.now(timezone.utc)}],
                               schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG])
    write_deltalake(storage.table_uri(str(lake), storage.SNAPSHOT_CATALOG), cat)
    return {"log": log, "snapshot_files": [str(f) for f in files], "build_s": time.perf_counter() - t0}


def oracle(log: pa.Table, upto: int) -> dict[str, bytes]:
    state: dict[str, bytes] = {}
    for k, op, v in zip(log.column("key").to_pylist()[:upto], log.column("op").to_pylist()[:upto],
                        log.column("value").to_pylist()[:upto]):
        if op == "PUT":
            state[k] = v
        else:
            state.pop(k, None)
    return state


def run(args) -> dict:
    tails = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000, 1_000_000)
    rows = 10_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory(prefix="weaver-bench-restore-") as tmp:
        lake = Path(tmp) / "lake"
        built = build(lake, rows, max(tails), args.commit)
        log = built["log"]
        settings = load_settings(lake=str(lake))
        figures: dict = {"build_s": round(built["build_s"], 1), "snapshot_rows": None, "tails": {}}
        ratios: dict = {}
        raw = pq.read_table(built["snapshot_files"])
        figures["snapshot_rows"] = raw.num_rows
        figures["snapshot_bytes"] = sum(os.path.getsize(f) for f in built["snapshot_files"])
        for tail in tails:
            at = log.column("ts")[rows + tail - 1].as_py()
            reps = args.repeats if tail < 1_000_000 else max(3, args.repeats // 2)
            restore_partition(settings, "p0000", at)  # warm the OS cache and imports for both sides
            pq.read_table(built["snapshot_files"])
            r_ms, raw_ms, result = [], [], None
            for _ in range(reps):  # interleaved, so both sides see the same machine load
                t0 = time.perf_counter()
                pq.read_table(built["snapshot_files"])
                raw_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                result = restore_partition(settings, "p0000", at)
                r_ms.append((time.perf_counter() - t0) * 1000)
            assert result.changes_replayed == tail and result.as_of_seq == rows + tail
            assert result.source_snapshot_id == f"p0000@{rows}"
            want = oracle(log, rows + tail)
            got = dict(zip(result.table.column("key").to_pylist(), result.table.column("value").to_pylist()))
            assert got == want, f"restore with a {tail}-change tail differs from the fold"
            med_r, med_raw = statistics.median(r_ms), statistics.median(raw_ms)
            label = f"{tail // 1000}k" if tail < 1_000_000 else f"{tail // 1_000_000}M"
            ratios[f"restore_vs_raw_read_{label}"] = round(med_r / med_raw, 2)
            figures["tails"][label] = {
                "restore_ms": round(med_r, 2), "raw_parquet_ms": round(med_raw, 2),
                "restore_min_ms": round(min(r_ms), 2), "raw_parquet_min_ms": round(min(raw_ms), 2),
                "changes_replayed": result.changes_replayed, "rows": result.table.num_rows,
                "replayed_per_s": round(tail / (med_r / 1000.0)), "repeats": reps,
                "restore_runs_ms": [round(x, 2) for x in r_ms], "raw_runs_ms": [round(x, 2) for x in raw_ms],
            }
            print(f"tail {label:>4}: restore {med_r:9.1f} ms  raw read {med_raw:7.1f} ms  "
                  f"ratio {med_r / med_raw:7.2f}  rows {result.table.num_rows}", flush=True)
    return {"bench": "restore", "machine": machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params": {"rows": rows, "tails": list(tails), "value_bytes": VALUE_BYTES,
                       "changelog_commit_rows": args.commit, "repeats": args.repeats, "quick": args.quick},
            "ratios": ratios, "figures": figures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--commit", type=int, default=10_000, help="changes per change-log commit (file)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small smoke run; does not overwrite the results file")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "restore.json"))
    args = ap.parse_args()
    _common.save(run(args), args.out, quick=args.quick)


if __name__ == "__main__":
    main()
