"""The impact of a woven split (predicted or manual), from the woven sequence and the change log.

Per child over the sequence's timepoints: size and items (read from the woven rows themselves),
write rate, read rate (when the lake has an access log) and the share of the hottest key (from
the change log over the cadence interval ending at each timepoint); the children's balance; the
forecast of when each child would cross a threshold again (the prediction stage's own models on
each child's key-range history, as a run would fit it had the split happened: `child_jobs`); the
largest partition before and after (restore time in DynamoDB-style systems grows with it);
recovery latency at the last timepoint with and without the woven snapshot (measured now, on this
machine); the woven-tier bytes the sequence costs.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import NoDataError
from weaver.core.ids import EXPIRED
from weaver.core.time import bucket_us, from_us, to_us
from weaver.log import Lineage
from weaver.log.lineage import Partition
from weaver.predict import gather_batched, read_log, run_params
from weaver.predict.forecasting import range_context, run_horizon
from weaver.predict.metrics import range_history
from weaver.predict.models import DEFAULT_MODEL, Job, run_job, seed_for
from weaver.recover import recover
from weaver.replay import KeyState, LogView
from weaver.weave import find_weave, read_woven_catalog


def _woven_rows(settings, weave_id: str) -> pa.Table:
    t = storage.read(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS,
                     filters=[("weave_id", "=", weave_id)], columns=["woven_partition_id", "timepoint", "key", "value"],
                     missing_ok=True)
    size = pc.add(pc.binary_length(pc.cast(t.column("key"), pa.binary())),
                  pc.fill_null(pc.binary_length(t.column("value")), 0))
    return t.append_column("item_bytes", pc.cast(size, pa.int64()))


def child_series(rows: pa.Table, child_id: str, tps: list[datetime]) -> tuple[list[int], list[int]]:
    """(size bytes, items) of one woven child at each timepoint (key + value bytes per item)."""
    t = rows.filter(pc.equal(rows.column("woven_partition_id"), child_id))
    g = {r["timepoint"]: (r["item_bytes_sum"], r["item_bytes_count"])
         for r in t.group_by("timepoint").aggregate([("item_bytes", "sum"), ("item_bytes", "count")]).to_pylist()}
    return [int(g.get(tp, (0, 0))[0]) for tp in tps], [int(g.get(tp, (0, 0))[1]) for tp in tps]


def _interval_keys(log: LogView, tp: datetime, cadence: timedelta) -> np.ndarray:
    """Universe indexes of the keys written in (tp - cadence, tp]."""
    hi = to_us(tp)
    return log.kidx[log.pos_before_ts(hi - bucket_us(cadence) + 1):log.pos_before_ts(hi + 1)]


def _reads(settings, start: datetime, end: datetime) -> pa.Table | None:
    uri = storage.uri_for(settings, storage.ACCESS_LOG)
    if not storage.is_table(uri):
        return None
    return storage.read(uri, storage.ACCESS_LOG, columns=["ts", "key"],
                        filters=[("ts", ">", pa.scalar(start, storage.TS)), ("ts", "<=", pa.scalar(end, storage.TS))])


def _in_range(keys: pa.Array, lo: str, hi: str | None) -> int:
    m = pc.greater_equal(keys, lo)
    if hi is not None:
        m = pc.and_(m, pc.less(keys, hi))
    return int(pc.sum(pc.cast(m, pa.int64())).as_py() or 0)


def child_jobs(settings, log: LogView, source: Partition, ranges: dict[str, tuple[str, str | None]],
               at: datetime, *, model: str, name: str) -> dict[str, Job | str]:
    """Per child (`ranges`: id -> [lo, hi) of the source's range) the forecast job a prediction run
    at `at` would fit for a partition holding that range if the split had happened (or why none:
    too little history): over the buckets that run reads, with the run-wide context its jobs get
    (the moving hot spot, the lake's first-day ratio: `weaver.predict.forecasting.range_context`),
    computed over the partitions live at `at` with the source's range held by the children."""
    params = run_params(settings, at=at, model=model)
    runs = gather_batched(settings, params)
    # The live partitions tile the key space: the source's range is the source itself or its real
    # descendants, each starting inside it.
    lo, hi = source.key_lo, source.key_hi
    others = [p for r in runs for p in r.partitions
              if not (lo <= p.partition.key_lo and (hi is None or p.partition.key_lo < hi))]
    bu = bucket_us(settings.bucket)
    end_us = (to_us(at) // bu) * bu
    # The run's buckets: from its partitions' first history bucket, never before the log began
    # (a range history from `forecast_history` back would start with empty buckets).
    firsts = [int(p.ds[0]) - bu for r in runs for p in r.partitions if len(p.ds)]
    start_us = min(firsts) if firsts else max(end_us - bucket_us(settings.forecast_history), 0)
    if log.n:
        start_us = max(start_us, log.first_bucket(bu))
    hist = range_history(log, list(ranges.values()), start=from_us(start_us), end=from_us(end_us),
                         bucket=settings.bucket)
    secs = settings.bucket.total_seconds()
    kids = [(cid, lo, hi, h["bucket_start"] + bu, h["size_bytes"].astype(float), h["writes"] / secs)
            for (cid, (lo, hi)), h in zip(ranges.items(), hist)]
    ctx = range_context([(p.partition.partition_id, p.partition.key_lo, p.partition.key_hi, p.ds, p.size, p.rate)
                         for p in others] + kids, settings.bucket) if model == "path" else {}
    out: dict[str, Job | str] = {}
    for cid, _, _, ds, size, rate in kids:
        if len(ds) < 3:
            out[cid] = f"{len(ds)} complete bucket(s) of history; 3 needed"
            continue
        out[cid] = Job(f"{name}|{cid}", ds, size, rate, run_horizon(params), params.size_threshold,
                       params.write_threshold, int(min(params.samples, 200)), seed_for(f"{name}|{cid}"), model, bu,
                       **ctx.get(cid, {}))
    return out


def child_forecast(job: Job | str, at: datetime) -> dict:
    """A `child_jobs` entry's forecast: probability within the window and first-crossing quantiles."""
    out = {"model": None, "probability": 0.0, "reason": None, "crosses_p10": None, "crosses_p50": None,
           "crosses_p90": None, "hours_until_p50": None, "skip_reason": None}
    if isinstance(job, str):
        out["skip_reason"] = job
        return out
    r = run_job(job)
    out.update(model=job.model, probability=r.probability, reason=r.reason, skip_reason=r.skip_reason)
    if r.p50 is not None:
        out.update(crosses_p10=from_us(r.p10), crosses_p50=from_us(r.p50), crosses_p90=from_us(r.p90),
                   hours_until_p50=round((r.p50 - to_us(at)) / 3.6e9, 3))
    return out


def largest_partition(log: LogView, state: KeyState, lineage: Lineage, at: datetime, source_id: str,
                      children: list[tuple[str, str | None]]) -> dict:
    """Largest real partition's bytes at `at`, and the same with the source replaced by the children."""
    def size(lo: str, hi: str | None) -> int:
        return state.totals(log.key_index(lo), log.key_index(hi, upper=True))[0]

    sizes = {p.partition_id: size(p.key_lo, p.key_hi) for p in lineage.active_at_ts(at)}
    return {"at": at, **largest_of(sizes, source_id, [size(lo, hi) for lo, hi in children])}


def largest_of(sizes: dict[str, int], source_id: str, child_bytes: list[int]) -> dict:
    """Largest of the partitions' `sizes` (bytes by id), and the same with the source replaced by
    children of `child_bytes` (unchanged when the source is not among them)."""
    before = max(sizes.values(), default=0)
    after_sizes = dict(sizes)
    replaced = source_id in after_sizes
    if replaced:
        del after_sizes[source_id]
        for i, b in enumerate(child_bytes):
            after_sizes[f"child{i}"] = b
    return {"before_bytes": int(before), "after_bytes": int(max(after_sizes.values(), default=0)),
            "before_partition": max(sizes, key=sizes.get) if sizes else None, "source_active": replaced,
            "partitions": len(sizes)}


def woven_bytes(settings, weave_id: str) -> int:
    """Bytes of the Parquet files the sequence occupies in the woven tier (its weave_id partition)."""
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    if not storage.is_table(uri):
        return 0
    acts = pa.table(storage.open_table(uri).get_add_actions(flatten=True))
    if "partition.weave_id" not in acts.column_names:
        return 0
    mine = acts.filter(pc.equal(acts.column("partition.weave_id"), weave_id))
    return int(pc.sum(mine.column("size_bytes")).as_py() or 0)


def measure_recovery(settings, partition_id: str, at: datetime, confidence: float) -> dict:
    """Recover `partition_id` at `at` via the woven snapshot and via the standard path (timed now)."""
    w = recover(settings, partition_id, at, confidence_threshold=confidence)
    s = recover(settings, partition_id, at, confidence_threshold=confidence, prefer="standard")
    return {"partition_id": partition_id, "at": at, "woven_path": w.path, "woven_ms": round(w.elapsed_ms, 3),
            "woven_changes_replayed": w.changes_replayed, "standard_ms": round(s.elapsed_ms, 3),
            "standard_changes_replayed": s.changes_replayed, "rows": s.rows,
            "rows_equal": w.table.equals(s.table)}


def _no_timepoints(row: dict) -> NoDataError:
    """Why a weave has no woven rows to measure: not woven yet (weaving later fills it), or expired
    (the woven vacuum deleted its rows past the tier's retention; no later weave restores them)."""
    wid = row["weave_id"]
    if row["status"] == EXPIRED:
        return NoDataError(f"weave {wid} has expired: its window closed more than the woven retention ago and the "
                           "woven vacuum (`weaver woven-vacuum` / `weaver maintain`) deleted its rows; weaving again "
                           "will not bring it back. Measure a weave that is still active, confirmed or refuted, or "
                           f"weave the same split as a what-if (`weaver whatif weave --partition "
                           f"{row['source_partition_id']} --at {row['split_ts'].isoformat()} "
                           f"--split-key {shlex.quote(row['split_key'])}`)")
    return NoDataError(f"weave {wid} has no woven timepoints yet; run `weaver weave` once data past "
                       f"{row['split_ts'].isoformat()} has arrived")


def impact(settings, weave_id: str, *, model: str = DEFAULT_MODEL, recovery: bool = True) -> dict:
    """The impact of woven sequence `weave_id` (see the module docstring). Reads only."""
    row = find_weave(read_woven_catalog(settings), weave_id)
    wid, k = row["weave_id"], row["split_key"]
    lineage = Lineage.load(settings)
    p = lineage.get(row["source_partition_id"])
    left_id, right_id = row["child_ids"]
    ranges = {left_id: (p.key_lo, k), right_id: (k, p.key_hi)}
    rows = _woven_rows(settings, wid)
    tps = sorted(set(rows.column("timepoint").to_pylist()))
    if not tps:
        raise _no_timepoints(row)
    cadence = settings.woven_cadence
    log = read_log(settings, upto=tps[-1])
    reads = _reads(settings, tps[0] - cadence, tps[-1])
    secs = cadence.total_seconds()
    jobs = child_jobs(settings, log, p, ranges, tps[-1], model=model, name=wid)
    children = {}
    for cid, (lo, hi) in ranges.items():
        size, items = child_series(rows, cid, tps)
        i0, i1 = log.key_index(lo), log.key_index(hi, upper=True)
        series = []
        for j, tp in enumerate(tps):
            ks = _interval_keys(log, tp, cadence)
            ks = ks[(ks >= i0) & (ks < i1)]
            hottest = float(np.bincount(ks - i0).max() / len(ks)) if len(ks) else None
            rr = None
            if reads is not None:
                m = pc.and_(pc.greater(reads.column("ts"), pa.scalar(tp - cadence, storage.TS)),
                            pc.less_equal(reads.column("ts"), pa.scalar(tp, storage.TS)))
                rr = _in_range(reads.column("key").filter(m).combine_chunks(), lo, hi) / secs
            series.append({"timepoint": tp, "size_bytes": size[j], "items": items[j], "writes": int(len(ks)),
                           "write_rate": len(ks) / secs, "read_rate": rr, "hottest_key_share": hottest})
        children[cid] = {"key_lo": lo, "key_hi": hi, "series": series,
                         "forecast": {**child_forecast(jobs[cid], tps[-1]), "model": model}}
    balance = []
    for j, tp in enumerate(tps):
        a, b = (children[c]["series"][j] for c in (left_id, right_id))
        balance.append({"timepoint": tp,
                        "size": min(a["size_bytes"], b["size_bytes"]) / max(a["size_bytes"], b["size_bytes"], 1),
                        "writes": min(a["writes"], b["writes"]) / max(a["writes"], b["writes"], 1)})
    state = KeyState(log)
    state.advance(log.n)
    out = {"weave_id": wid, "origin": row["origin"], "source_partition_id": p.partition_id, "split_key": k,
           "split_ts": row["split_ts"], "confidence": row["confidence"], "timepoints": tps,
           "thresholds": {"size_bytes": settings.size_threshold_bytes,
                          "writes_per_s": settings.write_threshold_per_s},
           "children": children, "balance": balance,
           "largest_partition": largest_partition(log, state, lineage, tps[-1], p.partition_id, list(ranges.values())),
           "woven_bytes": woven_bytes(settings, wid), "recovery": None}
    if recovery:
        out["recovery"] = measure_recovery(settings, right_id, tps[-1], float(row["confidence"]))
    return out
