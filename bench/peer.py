"""The alternative a Delta user would build instead: a mirror table kept by MERGE, read with time travel.

The peer (what a team with Delta Lake and no Weaver would build): a Delta table ``mirror`` with one
row per live key (``key, value``), unpartitioned, kept by **one delta-rs MERGE per change-log
commit** (PUT -> upsert, DELETE -> delete; within one commit the last change of a key wins).
A commit groups the changes of one minute, ``(b - 60 s, b]`` with ``b`` a whole minute (a
streaming job with a one-minute trigger; a minute with no change commits nothing). Its Delta commit
is stamped at ``b`` (the commit file's mtime, which is what delta-rs ``load_as_version(datetime)``
and Spark ``TIMESTAMP AS OF`` resolve against), i.e. the mirror is assumed to commit with zero lag,
the best case for it. The mirror's version 0 is an initial load of the state at the start of the
measured day (the log is folded up to then), as a team would bootstrap it from a dump. Every
version is kept (no VACUUM): time travel needs them. A read of partition P at T is
``load_as_version(T)`` (TIMESTAMP AS OF), the rows in P's key range, sorted by key; the same read by
``DeltaTable(uri, version=v)`` (VERSION AS OF) and, for a few instants, by Spark ``versionAsOf``.

Weaver on the same lake: ``weaver simulate`` (4 initial partitions, 2 days, seed 7); the change
log re-appended hour by hour (one delta-rs append per hour of changes, as an extractor or
``weaver ingest`` writes it); the daily base snapshot at the start of day 2 (``take_snapshots``,
Spark); one manual weave (``whatif`` sequence, automatic split key) per measured partition,
extended by one weaving run per hour of day 2 (``weave_sequences``, Spark local[2], hourly
timepoints). Recovery: woven = ``weaver.recover.recover`` (latest hourly woven snapshot + tail),
standard = ``weaver.pitr.restore_partition`` (the daily base + replay).

Measured over day 2, for the partitions active all day: read latency at commit boundaries (whole
minutes) and between them (a random second inside a minute); the mirror's staleness between
boundaries (seconds since its watermark, and the changes in P's range it misses); correctness of
every answer against the brute-force oracle (tests/oracle.py ``fold``): at boundaries all three
must equal the fold at T; between them Weaver's must equal the fold at T and the mirror's the fold
at its watermark. Storage after the day; write cost per hour of changes.

Run: ``.venv/bin/python bench/peer.py [--quick]`` -> bench/results/peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import _common  # noqa: E402  (bench/_common.py, beside this script)

COMMIT_S = 60  # the mirror's commit granularity (one MERGE per minute of changes)
PARTITIONS = 4
DAYS = 2  # day 1 is history before the daily base snapshot; day 2 is measured
KEEP_ALL_VERSIONS = {"delta.enableExpiredLogCleanup": "false", "delta.logRetentionDuration": "interval 36500 days",
                     "delta.deletedFileRetentionDuration": "interval 36500 days"}
MIRROR_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])


# --- the mirror builder (also used by tests/test_peer_mirror.py) ---------------------------------
def commit_groups(changes: pa.Table, commit_s: int = COMMIT_S) -> list[tuple[datetime, pa.Table]]:
    """The change log cut into commits: (boundary b, changes with ts in (b - commit_s, b]), in order.

    `changes` has at least seq, ts, key, op, value; boundaries are multiples of `commit_s` since the
    epoch, so a change at exactly b belongs to the commit at b (the mirror as of b holds every
    change with ts <= b, as the oracle fold at b does).
    """
    changes = changes.sort_by("seq")
    us = pc.cast(changes.column("ts"), pa.int64()).to_numpy()
    step = commit_s * 1_000_000
    bound = -(-us // step) * step  # ceil to the commit boundary
    out = []
    if len(bound) == 0:
        return out
    cuts = np.flatnonzero(np.diff(bound)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(bound)]])
    for s, e in zip(starts, ends):
        b = datetime.fromtimestamp(int(bound[s]) / 1e6, tz=timezone.utc)
        out.append((b, changes.slice(int(s), int(e - s))))
    return out


def last_per_key(chunk: pa.Table) -> pa.Table:
    """One source row per key (its last change by seq): a MERGE refuses two source rows per target row."""
    chunk = chunk.sort_by("seq")
    keys = chunk.column("key").to_pylist()
    last: dict[str, int] = {}
    for i, k in enumerate(keys):
        last[k] = i
    idx = pa.array(sorted(last.values()), pa.int64())
    return chunk.take(idx).select(["key", "op", "value"])


def state_of(changes: pa.Table) -> pa.Table:
    """The (key, value) state after `changes` (the mirror's initial load), sorted by key."""
    if changes.num_rows == 0:
        return MIRROR_SCHEMA.empty_table()
    src = last_per_key(changes)
    src = src.filter(pc.equal(src.column("op"), "PUT")).select(["key", "value"])
    return src.cast(MIRROR_SCHEMA).sort_by("key")


def _stamp(uri: str, version: int, at: datetime) -> None:
    """Date the commit file of `version` at `at`: the mirror's commit happened at its boundary."""
    t = at.timestamp()
    os.utime(Path(uri) / "_delta_log" / f"{version:020d}.json", (t, t))


def create_mirror(uri: str, initial: pa.Table, start: datetime) -> int:
    """Version 0: the initial load (state at `start`), dated `start`."""
    from deltalake import CommitProperties, write_deltalake

    # Keep every version: by default a checkpoint also deletes commit files older than 30 days
    # (by mtime), which would silently end time travel to them.
    write_deltalake(uri, initial.cast(MIRROR_SCHEMA), mode="error", configuration=KEEP_ALL_VERSIONS,
                    commit_properties=CommitProperties(custom_metadata={"peer.watermark": start.isoformat()}))
    _stamp(uri, 0, start)
    return 0


def apply_commit(uri: str, chunk: pa.Table, boundary: datetime) -> tuple[int, dict]:
    """One MERGE of a commit's changes (PUT upserts, DELETE deletes); returns (version, metrics)."""
    from deltalake import CommitProperties, DeltaTable

    src = last_per_key(chunk)
    dt = DeltaTable(uri)
    metrics = (dt.merge(source=src, predicate="t.key = s.key", source_alias="s", target_alias="t",
                        commit_properties=CommitProperties(custom_metadata={"peer.watermark": boundary.isoformat()}))
               .when_matched_update(updates={"value": "s.value"}, predicate="s.op = 'PUT'")
               .when_matched_delete(predicate="s.op = 'DELETE'")
               .when_not_matched_insert(updates={"key": "s.key", "value": "s.value"}, predicate="s.op = 'PUT'")
               .execute())
    version = DeltaTable(uri).version()
    _stamp(uri, version, boundary)
    return version, metrics


def build_mirror(uri: str, before: pa.Table, changes: pa.Table, start: datetime,
                 commit_s: int = COMMIT_S) -> list[dict]:
    """Initial load of `before`'s state at `start`, then one MERGE per commit of `changes`.

    Returns one record per version: version, watermark (the boundary it is dated at), upto_seq,
    changes (in the commit), merge_s (wall time of the MERGE).
    """
    create_mirror(uri, state_of(before), start)
    upto = int(pc.max(before.column("seq")).as_py()) if before.num_rows else 0
    out = [{"version": 0, "watermark": start, "upto_seq": upto, "changes": before.num_rows, "merge_s": None}]
    for b, chunk in commit_groups(changes, commit_s):
        t = time.perf_counter()
        v, _ = apply_commit(uri, chunk, b)
        out.append({"version": v, "watermark": b, "upto_seq": int(pc.max(chunk.column("seq")).as_py()),
                    "changes": chunk.num_rows, "merge_s": time.perf_counter() - t})
    return out


def in_range(t: pa.Table, key_lo: str | None, key_hi: str | None) -> pa.Table:
    """Rows of `t` with key_lo <= key < key_hi (string columns compared after the read: see docs/api.md)."""
    k = t.column("key").cast(pa.string())
    m = pc.greater_equal(k, key_lo or "")
    if key_hi is not None:
        m = pc.and_(m, pc.less(k, key_hi))
    return t.filter(m)


def mirror_at(uri: str, at: datetime, key_lo: str | None = None, key_hi: str | None = None) -> tuple[pa.Table, int]:
    """TIMESTAMP AS OF `at`: the mirror's rows in [key_lo, key_hi), sorted by key, and the version read."""
    from deltalake import DeltaTable

    dt = DeltaTable(uri)
    dt.load_as_version(at)
    t = in_range(dt.to_pyarrow_table(columns=["key", "value"]), key_lo, key_hi)
    return t.cast(MIRROR_SCHEMA).sort_by("key"), dt.version()


def mirror_version(uri: str, version: int, key_lo: str | None = None, key_hi: str | None = None) -> pa.Table:
    """VERSION AS OF `version`: the mirror's rows in [key_lo, key_hi), sorted by key."""
    from deltalake import DeltaTable

    t = in_range(DeltaTable(uri, version=version).to_pyarrow_table(columns=["key", "value"]), key_lo, key_hi)
    return t.cast(MIRROR_SCHEMA).sort_by("key")


def as_dict(t: pa.Table) -> dict[str, bytes]:
    """{key: value} of a (key, value) table, refusing duplicate keys."""
    out: dict[str, bytes] = {}
    for k, v in zip(t.column("key").to_pylist(), t.column("value").to_pylist()):
        assert k not in out, f"duplicate key {k!r}"
        out[k] = v
    return out


# --- the benchmark -------------------------------------------------------------------------------
def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (data and Delta log)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))]


def summary(xs: list[float]) -> dict:
    return {"p50_ms": round(pct(xs, 0.5), 2), "p95_ms": round(pct(xs, 0.95), 2), "n": len(xs)}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000.0, out


def main() -> None:  # noqa: C901, PLR0915 - one linear script, read top to bottom
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="measure only the first 3 hours of day 2 (dry run)")
    ap.add_argument("--instants", type=int, default=16, help="boundary instants per partition (as many between)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "peer.json"))
    ap.add_argument("--keep", action="store_true", help="keep the generated lake")
    args = ap.parse_args()

    from deltalake import DeltaTable, write_deltalake

    from oracle import fold  # tests/oracle.py: the brute-force fold, independent of weaver's replay
    from weaver.core import storage
    from weaver.core.ids import EXTENDABLE
    from weaver.core.settings import load_settings
    from weaver.core.spark import get_spark
    from weaver.log import Lineage
    from weaver.pitr import restore_partition, take_snapshots
    from weaver.recover import recover
    from weaver.simulate import SimConfig, simulate
    from weaver.weave import read_woven_catalog, sequence_from_row, weave_sequences
    from weaver.whatif import plan_whatif

    hours = 3 if args.quick else 24
    rng = random.Random(11)
    tmp = Path(tempfile.mkdtemp(prefix="weaver-bench-peer-"))
    lake, mirror_uri = tmp / "lake", str(tmp / "mirror")
    figures: dict = {}
    try:
        cfg = SimConfig(partitions=PARTITIONS, days=DAYS)
        t = time.perf_counter()
        sim = simulate(str(lake), cfg)
        figures["simulate_s"] = round(time.perf_counter() - t, 1)
        s = load_settings(lake=str(lake))
        d2 = cfg.start + timedelta(days=1)
        end = d2 + timedelta(hours=hours)
        log_uri = storage.uri_for(s, storage.CHANGELOG)
        log = storage.read(log_uri, storage.CHANGELOG).sort_by("seq")
        ts_us = pc.cast(log.column("ts"), pa.int64()).to_numpy()

        def us(x: datetime) -> int:
            return int(x.timestamp() * 1_000_000)

        # Weaver's change log, re-appended one hour at a time (as an extractor writes it).
        shutil.rmtree(log_uri)
        append_s: dict[int, float] = {}
        for h in range(DAYS * 24):
            lo, hi = np.searchsorted(ts_us, [us(cfg.start + timedelta(hours=h)), us(cfg.start + timedelta(hours=h + 1))],
                                     side="right")
            if h == 0:
                lo = 0
            chunk = log.slice(int(lo), int(hi - lo))
            t = time.perf_counter()
            write_deltalake(log_uri, chunk, mode="append")
            append_s[h] = time.perf_counter() - t
        n_before = int(np.searchsorted(ts_us, us(d2), side="right"))
        n_upto = int(np.searchsorted(ts_us, us(end), side="right"))
        before, day = log.slice(0, n_before), log.slice(n_before, n_upto - n_before)
        print(f"lake: {sim.changes:,} changes over {DAYS} days, {sim.partitions} partitions "
              f"({sim.splits} split); measured span {d2:%Y-%m-%d %H:%M} .. {end:%H:%M} UTC: {day.num_rows:,} changes",
              flush=True)

        # The peer: initial load at d2, then one MERGE per minute of changes.
        t = time.perf_counter()
        versions = build_mirror(mirror_uri, before, day, d2)
        figures["mirror_build_s"] = round(time.perf_counter() - t, 1)
        print(f"mirror: {len(versions) - 1} MERGEs in {figures['mirror_build_s']} s", flush=True)

        # Weaver: the daily base snapshot at d2, then one weaving run per hour.
        # The session and a first Delta read are timed apart: the DAG's spark-submit pays them on
        # every run, this one process pays them once (so Weaver's hourly cost here is the lower bound).
        t = time.perf_counter()
        spark = get_spark(s, "bench-peer")
        spark.read.format("delta").load(log_uri).count()
        figures["spark_start_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        snap = take_snapshots(spark, s, d2)
        snapshot_s = time.perf_counter() - t
        lineage = Lineage.load(s)
        parts = [p for p in lineage
                 if p.created_ts <= d2 and (p.retired_ts is None or p.retired_ts > end + timedelta(hours=1))]
        parts = sorted(parts, key=lambda p: p.partition_id)
        seqs = [plan_whatif(s, p.partition_id, d2, until=d2 + timedelta(days=1), lineage=lineage).sequence
                for p in parts]
        weave_s: dict[int, float] = {}
        woven_uri = storage.uri_for(s, storage.WOVEN_SNAPSHOTS)
        for h in range(1, hours + 1):
            t = time.perf_counter()
            if h > 1:  # as the hourly weave() does: extend what the catalog says is extendable
                seqs = [sequence_from_row(r, lineage) for r in read_woven_catalog(s).to_pylist()
                        if r["status"] in EXTENDABLE]
            weave_sequences(spark, s, lineage, seqs, at=d2 + timedelta(hours=h))
            weave_s[h] = time.perf_counter() - t
        print(f"weaver: snapshot {snapshot_s:.1f} s, {hours} weaving runs {sum(weave_s.values()):.1f} s "
              f"({', '.join(p.partition_id for p in parts)})", flush=True)

        # --- reads ---------------------------------------------------------------------------
        changes = [{"seq": r["seq"], "ts": r["ts"], "key": r["key"], "op": r["op"], "value": r["value"]}
                   for r in log.slice(0, n_upto).select(["seq", "ts", "key", "op", "value"]).to_pylist()]
        boundaries = [v["watermark"] for v in versions[1:]]
        ver_of = {v["watermark"]: v["version"] for v in versions}
        lat = {k: {"boundary": [], "between": []} for k in ("mirror_ts", "mirror_version", "woven", "standard")}
        stale_s, missed, checks = [], [], 0
        paths = {"woven": set(), "standard": set()}
        recover(s, parts[0].partition_id, boundaries[len(boundaries) // 2])  # warm handles once
        mirror_at(mirror_uri, boundaries[len(boundaries) // 2])
        for p in parts:
            picks = rng.sample(boundaries[:-1], min(args.instants, len(boundaries) - 1))
            for b in sorted(picks):
                nxt = boundaries[boundaries.index(b) + 1]
                between = b + timedelta(seconds=rng.randint(1, int((nxt - b).total_seconds()) - 1)) \
                    if (nxt - b).total_seconds() > 1 else None
                for kind, at in (("boundary", b), ("between", between)):
                    if at is None:
                        continue
                    ms_m, (m_rows, v) = timed(lambda: mirror_at(mirror_uri, at, p.key_lo, p.key_hi))
                    ms_v, mv_rows = timed(lambda: mirror_version(mirror_uri, v, p.key_lo, p.key_hi))
                    ms_w, w = timed(lambda: recover(s, p.partition_id, at))
                    ms_s, st = timed(lambda: restore_partition(s, p.partition_id, at))
                    for k, ms in (("mirror_ts", ms_m), ("mirror_version", ms_v), ("woven", ms_w), ("standard", ms_s)):
                        lat[k][kind].append(ms)
                    paths["woven"].add(w.path)
                    paths["standard"].add(st.source_snapshot_id or "changelog")
                    want = fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=at)
                    assert as_dict(w.table) == want, f"woven differs from the oracle at {p.partition_id} {at}"
                    assert as_dict(st.table) == want, f"standard differs from the oracle at {p.partition_id} {at}"
                    wm = next(x["watermark"] for x in versions if x["version"] == v)
                    assert as_dict(m_rows) == as_dict(mv_rows)
                    if kind == "boundary":
                        assert v == ver_of[b], (v, ver_of[b])
                        assert as_dict(m_rows) == want, f"mirror differs from the oracle at {p.partition_id} {at}"
                    else:
                        assert wm == b, (wm, b)
                        assert as_dict(m_rows) == fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=wm), \
                            "mirror differs from the oracle at its watermark"
                        stale_s.append((at - wm).total_seconds())
                        missed.append(sum(1 for c in changes if wm < c["ts"] <= at and c["key"] >= (p.key_lo or "")
                                          and (p.key_hi is None or c["key"] < p.key_hi)))
                    checks += 1
        assert paths["woven"] == {"woven"}, paths
        print(f"reads: {checks} (partition, instant) answers checked against the oracle fold", flush=True)

        # Spark VERSION AS OF / TIMESTAMP AS OF on the mirror, for completeness (a few instants).
        spark_ms, p = [], parts[0]
        for b in rng.sample(boundaries, 4):
            def sread(opt: str, val: str):
                df = spark.read.format("delta").option(opt, val).load(mirror_uri)
                df = df.where(df.key >= (p.key_lo or ""))
                if p.key_hi is not None:
                    df = df.where(df.key < p.key_hi)
                return {r["key"]: bytes(r["value"]) for r in df.collect()}
            sread("versionAsOf", str(ver_of[b]))  # warm
            ms, got = timed(lambda: sread("versionAsOf", str(ver_of[b])))
            want = fold(changes, key_lo=p.key_lo, key_hi=p.key_hi, at=b)
            assert got == want, "Spark VERSION AS OF differs from the oracle"
            got_ts = sread("timestampAsOf", b.strftime("%Y-%m-%d %H:%M:%S"))
            assert got_ts == want, "Spark TIMESTAMP AS OF differs from the oracle"
            spark_ms.append(ms)

        # --- storage -------------------------------------------------------------------------
        adds = pa.table(DeltaTable(log_uri).get_add_actions(flatten=True)).to_pylist()
        log_day = sum(a["size_bytes"] for a in adds
                      if a["min.ts"] is not None and a["min.ts"] > d2 and a["min.ts"] <= end)
        storage_b = {
            "mirror": dir_bytes(Path(mirror_uri)),
            "mirror_data_files": sum(1 for f in Path(mirror_uri).glob("*.parquet")),
            "mirror_versions": len(versions),
            "mirror_live_version_bytes": sum(a["size_bytes"] for a in
                                             pa.table(DeltaTable(mirror_uri).get_add_actions(flatten=True)).to_pylist()),
            "weaver_changelog_span": log_day,
            "weaver_changelog_all": dir_bytes(Path(log_uri)),
            "weaver_snapshots": dir_bytes(Path(storage.uri_for(s, storage.SNAPSHOTS)))
            + dir_bytes(Path(storage.uri_for(s, storage.SNAPSHOT_CATALOG))),
            "weaver_woven": dir_bytes(Path(woven_uri)) + dir_bytes(Path(storage.uri_for(s, storage.WOVEN_CATALOG))),
        }
        storage_b["weaver_total_span"] = (storage_b["weaver_changelog_span"] + storage_b["weaver_snapshots"]
                                          + storage_b["weaver_woven"])

        # --- write cost per hour of changes ------------------------------------------------
        per_hour = []
        for h in range(1, hours + 1):
            lo, hi = d2 + timedelta(hours=h - 1), d2 + timedelta(hours=h)
            m = [x for x in versions[1:] if lo < x["watermark"] <= hi]
            per_hour.append({"hour": h, "changes": sum(x["changes"] for x in m), "mirror_merges": len(m),
                             "mirror_s": round(sum(x["merge_s"] for x in m), 3),
                             "weaver_append_s": round(append_s[24 + h - 1], 3), "weaver_weave_s": round(weave_s[h], 3),
                             "weaver_snapshot_share_s": round(snapshot_s / 24, 3)})
        for r in per_hour:
            r["weaver_s"] = round(r["weaver_append_s"] + r["weaver_weave_s"] + r["weaver_snapshot_share_s"], 3)
        mirror_h = statistics.median(r["mirror_s"] for r in per_hour)
        weaver_h = statistics.median(r["weaver_s"] for r in per_hour)
        weaver_nospark_h = statistics.median(r["weaver_append_s"] for r in per_hour)

        lat_s = {k: {kind: summary(v) for kind, v in d.items() if v} for k, d in lat.items()}
        ratios = {
            "mirror_vs_woven_p50_boundary": round(lat_s["mirror_ts"]["boundary"]["p50_ms"]
                                                  / lat_s["woven"]["boundary"]["p50_ms"], 2),
            "mirror_vs_woven_p50_between": round(lat_s["mirror_ts"]["between"]["p50_ms"]
                                                 / lat_s["woven"]["between"]["p50_ms"], 2),
            "mirror_vs_standard_p50_boundary": round(lat_s["mirror_ts"]["boundary"]["p50_ms"]
                                                     / lat_s["standard"]["boundary"]["p50_ms"], 2),
            "mirror_stale_s_p50_between": round(pct(stale_s, 0.5), 1),
            "mirror_missed_changes_p50_between": pct(missed, 0.5),
            "mirror_missed_changes_max_between": max(missed),
            "mirror_vs_weaver_storage": round(storage_b["mirror"] / storage_b["weaver_total_span"], 2),
            "mirror_vs_weaver_write_s_per_hour": round(mirror_h / weaver_h, 2),
            "mirror_vs_weaver_append_only_write_s_per_hour": round(mirror_h / weaver_nospark_h, 2),
        }
        figures.update({
            "changes_total": sim.changes, "changes_measured_span": day.num_rows, "changes_before_span": n_before,
            "partitions_measured": [p.partition_id for p in parts], "mirror_commits": len(versions) - 1,
            "latency": lat_s, "spark_version_as_of_ms": summary(spark_ms),
            "mirror_staleness_between": {"stale_s": {"p50": round(pct(stale_s, 0.5), 1),
                                                     "p95": round(pct(stale_s, 0.95), 1), "max": round(max(stale_s), 1)},
                                         "missed_changes": {"p50": pct(missed, 0.5), "p95": pct(missed, 0.95),
                                                            "max": max(missed), "zero_share": round(
                                                                sum(1 for x in missed if x == 0) / len(missed), 2)}},
            "answers_checked": checks, "standard_base": sorted(paths["standard"]),
            "storage_bytes": storage_b,
            "write_s_per_hour": {"mirror_p50": round(mirror_h, 3), "weaver_p50": round(weaver_h, 3),
                                 "weaver_append_p50": round(weaver_nospark_h, 3),
                                 "weaver_weave_p50": round(statistics.median(weave_s.values()), 3),
                                 "weaver_snapshot_s": round(snapshot_s, 2), "hours": per_hour},
            "snapshot": {"rows": snap.get("rows"), "taken": len(snap.get("taken", []))},
        })
        result = {
            "bench": "peer",
            "machine": _common.machine("deltalake", "pyarrow", "pyspark"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "params": {"partitions": PARTITIONS, "days": DAYS, "seed": cfg.seed, "measured_hours": hours,
                       "mirror_commit_s": COMMIT_S, "mirror_layout": "unpartitioned (key, value), all versions kept",
                       "mirror_commit_lag_s": 0, "woven_cadence": "1h", "base_snapshot": "daily, at the span's start",
                       "instants_per_partition": args.instants, "spark_master": s.spark_master, "quick": args.quick},
            "ratios": ratios,
            "figures": figures,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"{'':34}{'mirror':>12}{'woven':>12}{'standard':>12}")
        for kind in ("boundary", "between"):
            print(f"read p50 ms at {kind:<19}{lat_s['mirror_ts'][kind]['p50_ms']:>12}"
                  f"{lat_s['woven'][kind]['p50_ms']:>12}{lat_s['standard'][kind]['p50_ms']:>12}")
            print(f"read p95 ms at {kind:<19}{lat_s['mirror_ts'][kind]['p95_ms']:>12}"
                  f"{lat_s['woven'][kind]['p95_ms']:>12}{lat_s['standard'][kind]['p95_ms']:>12}")
        print(f"storage bytes: mirror {storage_b['mirror']:,}  weaver {storage_b['weaver_total_span']:,}")
        print(f"write s per hour (p50): mirror {mirror_h:.2f}  weaver {weaver_h:.2f} (append {weaver_nospark_h:.3f})")
        print(json.dumps(ratios, indent=2))
    finally:
        if args.keep:
            print(f"lake kept at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
