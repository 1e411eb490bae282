"""Recovery latency: woven path vs standard path vs a raw Parquet read, in-process and over HTTP.

Setup (one 100k-row partition ``p0``; 100k initial PUTs, then up to 1M updates/deletes on random
keys, one second apart; the change log appended in 10k-change commits, as an extractor would):

* the standard path's nearest base snapshot is the one taken after the initial load, so a
  recovery at T_n (n changes later) replays a tail of n changes — base snapshots are sparse
  (e.g. daily), which is the situation woven snapshots exist for;
* the woven tier holds, for each T_n, a woven snapshot of p0 (one weave, split at the median
  key) ``WOVEN_TAIL`` changes before T_n — the weaving cadence is fine (e.g. hourly) and a
  timepoint is woven once the log reached it, so the nearest one sits a short tail behind T;
* transaction time: the same recoveries with the woven tier as it stood at an earlier Delta
  version or instant (``as_of_version`` / ``as_of``), alternating with the current tier;
* the physical reference is ``pyarrow.parquet.read_table`` of the very Parquet files that hold
  that woven snapshot's rows (the same bytes the woven path reads), without Delta or replay.

Fairness: both paths run the same code base on the same machine, same lake, warm OS cache,
and return identical rows (checked against each other on every tail). The speed-up comes from
the tail length, which is the design's point; as a control, the standard path is also timed
with a base snapshot placed the same ``WOVEN_TAIL`` changes before T_1M
(``standard_same_tail_ms``), which shows what remains when both replay equally short tails.
The HTTP figures run ``weaver serve`` (uvicorn) on 127.0.0.1 in a subprocess, stopped at the end,
and fetch all 100k rows as one Arrow IPC page.

Run: ``.venv/bin/python bench/recovery.py [--quick]`` -> bench/results/recovery.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/_common.py, beside this script)
from weaver.core import storage  # noqa: E402
from weaver.recover import recover  # noqa: E402
from weaver.core.settings import Settings  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ROWS = 100_000
TAILS = (1_000, 10_000, 100_000, 1_000_000)
WOVEN_TAIL = 100
VALUE_BYTES = 32
COMMIT = 10_000
TOKEN = "bench-token"
PREDICTION_ID = "bench-prediction-p0"


def machine() -> dict:
    return _common.machine('deltalake', 'pyarrow')


def key(i: np.ndarray) -> list[str]:
    return [f"k{x:07d}" for x in i]


def ts_of(seq: int) -> datetime:
    return T0 + timedelta(seconds=int(seq))


def build(lake: Path, tails: tuple[int, ...]) -> dict:
    """Write the lake; return the raw arrays needed to compute expected states."""
    from deltalake import WriterProperties, write_deltalake

    rng = np.random.default_rng(42)
    n_tail = max(tails)
    n = ROWS + n_tail
    keys = np.concatenate([np.arange(ROWS), rng.integers(0, ROWS, size=n_tail)])
    is_del = np.concatenate([np.zeros(ROWS, bool), rng.random(n_tail) < 0.02])
    seqs = np.arange(1, n + 1, dtype=np.int64)
    s = Settings(lake=str(lake), api_token=TOKEN)
    log_uri = storage.uri_for(s, storage.CHANGELOG)
    for lo in range(0, n, COMMIT):
        hi = min(n, lo + COMMIT)
        k = key(keys[lo:hi])
        vals = [None if d else (f"{kk}@{sq};" * 4)[:VALUE_BYTES].encode() for kk, sq, d in
                zip(k, seqs[lo:hi], is_del[lo:hi])]
        t = pa.table({
            "seq": pa.array(seqs[lo:hi]),
            "ts": pa.array((T0.timestamp() * 1e6 + seqs[lo:hi] * 1_000_000).astype("int64"), pa.int64()).cast(storage.TS),
            "partition_id": pa.array(["p0"] * (hi - lo)),
            "key": pa.array(k),
            "op": pa.array(np.where(is_del[lo:hi], "DELETE", "PUT").tolist()),
            "value": pa.array(vals, pa.binary()),
            "value_bytes": pa.array([None if v is None else len(v) for v in vals], pa.int64()),
        }, schema=storage.SCHEMAS[storage.CHANGELOG])
        write_deltalake(log_uri, t, mode="append")
    storage.overwrite(storage.uri_for(s, storage.PARTITIONS), storage.PARTITIONS, pa.Table.from_pylist(
        [{"partition_id": "p0", "key_lo": "", "key_hi": None, "parent_id": None, "created_seq": 0, "created_ts": T0,
          "retired_seq": None, "retired_ts": None}], schema=storage.SCHEMAS[storage.PARTITIONS]))
    storage.overwrite(storage.uri_for(s, storage.SPLITS), storage.SPLITS, storage.empty(storage.SPLITS))
    raw = {"keys": keys, "is_del": is_del, "seqs": seqs}
    add_base_snapshot(s, raw, ROWS)
    # The weave: one prediction for p0 (median split), a woven snapshot WOVEN_TAIL before each T_n,
    # each timepoint its own commit (one weaving run each), partitioned by weave_id like the weaver.
    wid = hashlib.sha1(PREDICTION_ID.encode()).hexdigest()[:16]
    left, right = f"p0~{wid[:8]}~L", f"p0~{wid[:8]}~R"
    split_key = f"k{ROWS // 2:07d}"
    tps = []
    woven_uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
    for tail in sorted(tails):
        sq = ROWS + tail - WOVEN_TAIL
        tp = ts_of(sq)
        tps.append(tp)
        st = state_at(raw, sq)
        kk = st.column("key")
        woven = pa.table({
            "weave_id": pa.array([wid] * st.num_rows),
            "woven_partition_id": pa.array(np.where(np.array(kk.to_pylist()) < split_key, left, right).tolist()),
            "source_partition_id": pa.array(["p0"] * st.num_rows),
            "timepoint": pa.array([tp] * st.num_rows, storage.TS),
            "as_of_seq": pa.array([sq] * st.num_rows, pa.int64()),
            "key": kk,
            "value": st.column("value"),
        }, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS])
        write_deltalake(woven_uri, woven, mode="append", partition_by=["weave_id"],
                        writer_properties=WriterProperties(compression="ZSTD"))
    cat = [{"weave_id": wid, "prediction_id": PREDICTION_ID, "source_partition_id": "p0", "split_key": split_key,
            "split_ts": tps[0], "confidence": 0.9, "window_start": tps[0], "window_end": tps[-1] + timedelta(hours=1),
            "child_ids": [left, right], "status": "active", "created_at": T0, "last_timepoint": tps[-1],
            "last_seq": ROWS + max(tails) - WOVEN_TAIL, "actual_split_key": None, "actual_split_ts": None,
            "updated_at": T0}]
    storage.merge(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG,
                  pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.WOVEN_CATALOG]), ["weave_id"])
    return {"settings": s, "raw": raw, "weave_id": wid, "timepoints": tps}


def state_at(raw: dict, upto_seq: int) -> pa.Table:
    """Brute-force state (key, value) after `upto_seq` from the generator's arrays (sorted by key)."""
    keys, is_del = raw["keys"][:upto_seq], raw["is_del"][:upto_seq]
    last = np.full(ROWS, -1, dtype=np.int64)
    np.maximum.at(last, keys, np.arange(upto_seq))
    live = np.nonzero((last >= 0) & ~is_del[np.maximum(last, 0)])[0]
    k = key(live)
    v = [(f"{kk}@{int(last[i]) + 1};" * 4)[:VALUE_BYTES].encode() for kk, i in zip(k, live)]
    return pa.table({"key": pa.array(k), "value": pa.array(v, pa.binary())}).cast(storage.STATE_SCHEMA)


def add_base_snapshot(s: Settings, raw: dict, seq: int) -> str:
    st = state_at(raw, seq)
    sid = f"base-p0-{seq}"
    n = st.num_rows
    snap = pa.table({"snapshot_id": [sid] * n, "partition_id": ["p0"] * n, "as_of_seq": pa.array([seq] * n, pa.int64()),
                     "as_of_ts": pa.array([ts_of(seq)] * n, storage.TS), "key": st.column("key"),
                     "value": st.column("value")}, schema=storage.SCHEMAS[storage.SNAPSHOTS])
    from deltalake import write_deltalake

    write_deltalake(storage.uri_for(s, storage.SNAPSHOTS), snap, mode="append", partition_by=["partition_id"])
    cat = [{"snapshot_id": sid, "partition_id": "p0", "as_of_seq": seq, "as_of_ts": ts_of(seq), "rows": n,
            "bytes": int(pa.compute.sum(pa.compute.binary_length(st.column("value"))).as_py()),
            "created_at": ts_of(seq)}]
    storage.merge(storage.uri_for(s, storage.SNAPSHOT_CATALOG), storage.SNAPSHOT_CATALOG,
                  pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]), ["snapshot_id"])
    return sid


def woven_files(s: Settings, tp: datetime) -> list[str]:
    """Local paths of the Parquet files holding the woven rows at `tp` (from the Delta log)."""
    dt = storage.open_table(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
    acts = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    root = Path(storage.uri_for(s, storage.WOVEN_SNAPSHOTS))
    tp_ms = tp.replace(microsecond=tp.microsecond // 1000 * 1000)
    return [str(root / a["path"]) for a in acts if a["min.timepoint"] <= tp_ms <= a["max.timepoint"]]


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    out, times = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times), times, out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def http_bench(s: Settings, at: datetime, expected: pa.Table, requests: int) -> dict:
    import httpx

    port = free_port()
    # The same request is repeated: with the API's recovery cache on, every repeat after the first
    # would be a cache hit. Off, each request recovers, which is what these figures are about.
    # The whole ~98k-row state is one Arrow page here (the default page cap is 10,000 rows).
    env = {**os.environ, "WEAVER_LAKE": s.lake, "WEAVER_API_TOKEN": TOKEN, "WEAVER_API_RECOVERY_CACHE_MB": "0",
           "WEAVER_API_MAX_PAGE_ROWS": "200000"}
    proc = subprocess.Popen([sys.executable, "-c", "from weaver.cli import main; main()", "serve", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, cwd=str(ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("weaver serve did not come up")
            time.sleep(0.2)
        body = {"partition_id": "p0", "timepoint": at.isoformat()}
        with httpx.Client(base_url=base, headers=hdr, timeout=120) as c:
            def rec(conf=None):
                r = c.post("/v1/recoveries", params={"format": "arrow", "limit": 100_000},
                           json={**body, **({"confidence_threshold": conf} if conf is not None else {})})
                r.raise_for_status()
                return r

            first = rec()
            got = pa.ipc.open_stream(first.content).read_all()
            assert got.select(["key", "value"]).equals(expected.select(["key", "value"])), "HTTP rows differ"
            assert first.headers["x-weaver-path"] == "woven"
            out: dict = {}
            for name, fn, n in (
                ("http_recover_woven", lambda: rec(), requests),
                ("http_recover_standard", lambda: rec(1.0), max(3, requests // 10)),
                ("http_woven_snapshot", lambda: c.get("/v1/woven-snapshots", params={
                    "partition_id": "p0", "timepoint": at.isoformat(), "format": "arrow", "limit": 100_000}), requests),
                ("http_recover_summary_only", lambda: c.post("/v1/recoveries", json=body), requests),
            ):
                fn()  # warm
                _, times, _ = timed(fn, n)
                out[name] = {"p50_ms": round(pct(times, 0.5), 2), "p95_ms": round(pct(times, 0.95), 2), "n": n}
            std_path = rec(1.0).headers["x-weaver-path"]
            assert std_path == "standard", std_path
            out["bytes_per_response"] = len(first.content)
            return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tails up to 100k, fewer repeats (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "recovery.json"))
    ap.add_argument("--keep", action="store_true", help="keep the generated lake")
    args = ap.parse_args()
    tails = TAILS[:3] if args.quick else TAILS
    reps_w, reps_s, http_n = (3, 2, 10) if args.quick else (15, 3, 40)
    tmp = Path(tempfile.mkdtemp(prefix="weaver-bench-recovery-"))
    try:
        t = time.perf_counter()
        env = build(tmp / "lake", tails)
        build_s = time.perf_counter() - t
        s: Settings = env["settings"]
        figures: dict = {"build_s": round(build_s, 1), "tails": {}}
        ratios: dict = {}
        for tail in tails:
            at = ts_of(ROWS + tail)
            expected = state_at(env["raw"], ROWS + tail)
            recover(s, "p0", at)  # warm caches
            tp = env["timepoints"][sorted(tails).index(tail)]
            files = woven_files(s, tp)
            # Woven and raw reads alternate, so both see the same load on a shared machine; their
            # ratio is the median of the per-round ratios.
            w_times, raw_times, pair = [], [], []
            for _ in range(reps_w):
                wm, _, w = timed(lambda: recover(s, "p0", at), 1)
                rm, _, raw = timed(lambda: pq.read_table(files, columns=["key", "value"]), 1)
                w_times.append(wm)
                raw_times.append(rm)
                pair.append(wm / rm)
            w_ms, raw_ms = statistics.median(w_times), statistics.median(raw_times)
            s_ms, s_times, st = timed(lambda: recover(s, "p0", at, prefer="standard"),
                                      reps_s if tail >= 100_000 else reps_w)
            assert w.path == "woven" and st.path == "standard"
            assert w.changes_replayed == WOVEN_TAIL and st.changes_replayed == tail, (w.changes_replayed,
                                                                                    st.changes_replayed)
            assert w.table.equals(st.table) and w.table.equals(expected), f"rows differ at tail {tail}"
            figures["tails"][str(tail)] = {
                "woven_ms": round(w_ms, 2), "standard_ms": round(s_ms, 2), "raw_parquet_ms": round(raw_ms, 2),
                "woven_changes_replayed": w.changes_replayed, "standard_changes_replayed": st.changes_replayed,
                "rows": w.rows, "woven_source": w.source, "standard_source": st.source,
                "woven_min_ms": round(min(w_times), 2), "raw_parquet_min_ms": round(min(raw_times), 2),
                "woven_runs_ms": [round(x, 2) for x in w_times], "raw_runs_ms": [round(x, 2) for x in raw_times],
                "standard_runs_ms": [round(x, 2) for x in s_times],
                "raw_parquet_bytes": sum(Path(f).stat().st_size for f in files)}
            ratios[f"woven_vs_standard_{_label(tail)}"] = round(s_ms / w_ms, 2)
            ratios[f"woven_vs_raw_read_{_label(tail)}"] = round(statistics.median(pair), 2)
            print(f"tail {tail:>9,}: woven {w_ms:8.1f} ms  standard {s_ms:9.1f} ms  raw {raw_ms:6.1f} ms  "
                  f"standard/woven {s_ms / w_ms:7.1f}x  woven/raw {statistics.median(pair):4.2f}x", flush=True)
        big = max(tails)
        at_big = ts_of(ROWS + big)
        expected_big = state_at(env["raw"], ROWS + big)
        figures["as_of"] = as_of_bench(s, env, tails, reps_w, ratios)
        http = http_bench(s, at_big, expected_big, http_n)
        figures["http"] = http
        raw_big = figures["tails"][str(big)]["raw_parquet_ms"]
        ratios["http_woven_p50_vs_raw_read"] = round(http["http_recover_woven"]["p50_ms"] / raw_big, 2)
        ratios["http_woven_vs_standard_p50"] = round(http["http_recover_standard"]["p50_ms"]
                                                     / http["http_recover_woven"]["p50_ms"], 2)
        print(f"http p50: woven recovery {http['http_recover_woven']['p50_ms']} ms (p95 "
              f"{http['http_recover_woven']['p95_ms']}), standard {http['http_recover_standard']['p50_ms']} ms, "
              f"woven snapshot {http['http_woven_snapshot']['p50_ms']} ms", flush=True)
        # Control: a base snapshot as close to T as the woven one -> equal tails.
        add_base_snapshot(s, env["raw"], ROWS + big - WOVEN_TAIL)
        c_ms, _, c = timed(lambda: recover(s, "p0", at_big, prefer="standard"), reps_w)
        assert c.changes_replayed == WOVEN_TAIL and c.table.equals(expected_big)
        figures["standard_same_tail_ms"] = round(c_ms, 2)
        ratios["woven_vs_standard_same_tail"] = round(c_ms / figures["tails"][str(big)]["woven_ms"], 2)
        print(f"control: standard with a base snapshot {WOVEN_TAIL} changes before T: {c_ms:.1f} ms", flush=True)
        result = {
            "bench": "recovery",
            "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params": {"rows": ROWS, "tails": list(tails), "woven_tail": WOVEN_TAIL, "value_bytes": VALUE_BYTES,
                       "changelog_commit_rows": COMMIT, "repeats_woven": reps_w, "repeats_standard": reps_s,
                       "http_requests": http_n, "quick": args.quick,
                       "targets": {"woven_vs_standard_1M": ">= 50", "woven_vs_raw_read_1M": "<= 2"}},
            "ratios": ratios,
            "figures": figures,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(json.dumps(ratios, indent=2))
    finally:
        if args.keep:
            print(f"lake kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def as_of_bench(s: Settings, env: dict, tails: tuple[int, ...], reps: int, ratios: dict) -> dict:
    """Transaction time: a recovery with the woven tier as it stood at a Delta version or instant,
    alternating with the same recovery on the current tier. At the largest tail as of the latest
    version and as of now (the same snapshot as the current path), and at the smallest tail as of
    version 0 (the tier after its first weaving run, which held that timepoint only); every
    answer is checked against the brute-force state."""
    from deltalake import DeltaTable

    latest = DeltaTable(storage.uri_for(s, storage.WOVEN_SNAPSHOTS)).version()
    now = datetime.now(timezone.utc)
    small, big = min(tails), max(tails)
    cases = [(f"version_{latest}_{_label(big)}", big, {"as_of_version": latest}),
             (f"now_{_label(big)}", big, {"as_of": now}),
             (f"version_0_{_label(small)}", small, {"as_of_version": 0})]
    out = {}
    for name, tail, kw in cases:
        at = ts_of(ROWS + tail)
        expected = state_at(env["raw"], ROWS + tail)
        recover(s, "p0", at, **kw)  # warm caches
        cur, old, pair = [], [], []
        for _ in range(reps):
            cm, _, c = timed(lambda: recover(s, "p0", at), 1)
            am, _, a = timed(lambda: recover(s, "p0", at, **kw), 1)
            cur.append(cm)
            old.append(am)
            pair.append(am / cm)
        assert a.path == "woven" and a.source == c.source and a.changes_replayed == WOVEN_TAIL, (a.path, a.source)
        assert a.table.equals(expected) and c.table.equals(expected), f"as-of rows differ ({name})"
        out[name] = {"as_of_ms": round(statistics.median(old), 2), "current_ms": round(statistics.median(cur), 2),
                     "as_of_runs_ms": [round(x, 2) for x in old], "current_runs_ms": [round(x, 2) for x in cur]}
        ratios[f"as_of_{name}_vs_current"] = round(statistics.median(pair), 2)
        print(f"as of {name}: {statistics.median(old):7.1f} ms, current tier {statistics.median(cur):7.1f} ms, "
              f"ratio {statistics.median(pair):4.2f}x", flush=True)
    return out


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


if __name__ == "__main__":
    main()
