"""Small real lakes for the tests: ONE writer of the contract tables, and the row makers test files share.

A lake here is a dict {"changes", "partitions", "splits"} of rows following DESIGN §3, built by
hand or from a seeded generator, and written with :func:`write_lake` (delta-rs). What a test
expects is never derived here from weaver's replay: the base snapshots and woven rows built below
come from the brute-force fold of tests/oracle.py, and :func:`assert_matches_oracle` compares
woven output with that fold.

Sections: the writer; random logs with real splits (restore, vacuum, snapshots, CLI);
the weaving lake (make_log, predictions); the recovery lake (standard_lake); hourly lakes for
the forecast stage (their own T0).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from tests.oracle import fold, rows_to_dict
from weaver.core import storage

if TYPE_CHECKING:
    from weaver.core.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
H = timedelta(hours=1)
US = timedelta(microseconds=1)


# --- the one lake writer -------------------------------------------------------------------------
def write_lake(root: str | Path, log: dict, snap_seqs: list[int] = (), *, snapshot_ids: set[str] | None = None,
               log_chunk: int | None = None, policy: dict | None = None) -> str:
    """Write changelog, partitions and splits of `log` under `root` as Delta tables; return the lake path.

    `snap_seqs` adds base snapshots + their catalog, folded by the oracle for every partition
    alive at each seq (`snapshot_ids` keeps only those ids). `log_chunk` appends the change log
    in commits of that many changes (one file each), as an extractor would, so restores exercise
    file pruning on Delta statistics. `policy` is the split policy a producer records in
    `_weaver/lake.json` (read by load_settings).
    """
    from deltalake import write_deltalake

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lake = str(root)
    for name, rows in ((storage.CHANGELOG, log["changes"]), (storage.PARTITIONS, log["partitions"]),
                       (storage.SPLITS, log["splits"])):
        table = pa.Table.from_pylist(list(rows), schema=storage.SCHEMAS[name])
        if name == storage.CHANGELOG and log_chunk and table.num_rows:
            for i in range(0, table.num_rows, log_chunk):
                write_deltalake(storage.table_uri(lake, name), table.slice(i, log_chunk), mode="append")
        else:
            write_deltalake(storage.table_uri(lake, name), table, mode="overwrite")
    if snap_seqs:
        rows, cat = oracle_snapshots(log, list(snap_seqs))
        if snapshot_ids is not None:
            rows = [r for r in rows if r["snapshot_id"] in snapshot_ids]
            cat = [r for r in cat if r["snapshot_id"] in snapshot_ids]
        write_deltalake(storage.table_uri(lake, storage.SNAPSHOTS),
                        pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.SNAPSHOTS]),
                        mode="overwrite", partition_by=["snapshot_id"])
        write_deltalake(storage.table_uri(lake, storage.SNAPSHOT_CATALOG),
                        pa.Table.from_pylist(cat, schema=storage.SCHEMAS[storage.SNAPSHOT_CATALOG]), mode="overwrite")
    if policy:
        p = root / "_weaver" / "lake.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(policy))
    return lake


def alive_at(p: dict, seq: int) -> bool:
    return p["created_seq"] <= seq and (p["retired_seq"] is None or seq < p["retired_seq"])


def oracle_snapshots(log: dict, snap_seqs: list[int]) -> tuple[list[dict], list[dict]]:
    """Snapshot rows and catalog rows built from the oracle for every partition alive at each seq."""
    by_seq = {c["seq"]: c for c in log["changes"]}
    rows, cat = [], []
    for s in sorted(set(snap_seqs)):
        for p in log["partitions"]:
            if not alive_at(p, s):
                continue
            sid = f"{p['partition_id']}@{s}"
            state = fold(log["changes"], key_lo=p["key_lo"], key_hi=p["key_hi"], upto_seq=s)
            for k, v in sorted(state.items()):
                rows.append({"snapshot_id": sid, "partition_id": p["partition_id"], "as_of_seq": s,
                             "as_of_ts": by_seq[s]["ts"], "key": k, "value": v})
            cat.append({"snapshot_id": sid, "partition_id": p["partition_id"], "as_of_seq": s,
                        "as_of_ts": by_seq[s]["ts"], "rows": len(state),
                        "bytes": sum(len(k) + len(v) for k, v in state.items()), "created_at": T0})
    return rows, cat


# --- random logs with real splits (restore, vacuum, snapshots, CLI) ------------------------------
def build_log(events: list[tuple], n_parts: int) -> dict:
    """Interpret `events` (key, op, dt_ms, split_roll, split_key) as a log with real splits."""
    bounds = {1: [""], 2: ["", "k50"], 3: ["", "k33", "k66"]}[n_parts]
    parts: list[dict] = []
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] if i + 1 < len(bounds) else None
        parts.append({"partition_id": f"p{i:04d}", "key_lo": lo, "key_hi": hi, "parent_id": None, "created_seq": 0,
                      "created_ts": T0, "retired_seq": None, "retired_ts": None})
    changes: list[dict] = []
    splits: list[dict] = []
    seq = 0
    now = T0
    for key_i, op, dt_ms, roll, split_i in events:
        now = now + timedelta(milliseconds=dt_ms)
        key = f"k{key_i:02d}"
        owner = next(p for p in parts if p["retired_seq"] is None and key >= p["key_lo"]
                     and (p["key_hi"] is None or key < p["key_hi"]))
        if roll == 0 and seq > 0:
            sk = f"k{split_i:02d}"
            if sk > owner["key_lo"] and (owner["key_hi"] is None or sk < owner["key_hi"]):
                owner["retired_seq"], owner["retired_ts"] = seq, now
                ids = [f"p{len(parts):04d}", f"p{len(parts) + 1:04d}"]
                for pid, lo, hi in ((ids[0], owner["key_lo"], sk), (ids[1], sk, owner["key_hi"])):
                    parts.append({"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": owner["partition_id"],
                                  "created_seq": seq, "created_ts": now, "retired_seq": None, "retired_ts": None})
                splits.append({"parent_id": owner["partition_id"], "split_seq": seq, "split_ts": now, "split_key": sk,
                               "left_id": ids[0], "right_id": ids[1], "reason": "manual"})
                continue
        seq += 1
        changes.append({"seq": seq, "ts": now, "partition_id": owner["partition_id"], "key": key, "op": op,
                        "value": f"{key}@{seq}".encode() if op == "PUT" else None,
                        "value_bytes": len(f"{key}@{seq}") if op == "PUT" else 0})
    return {"changes": changes, "partitions": parts, "splits": splits}


def split_log() -> tuple[dict, list[int]]:
    """p0000 [ , ) gets 6 changes, splits at k50 after seq 6 into p0001/p0002; 6 more changes.
    Returns the log and its snapshot seqs [3, 9]."""
    ev = [(10, "PUT", 1000, 1, 1), (60, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1), (70, "PUT", 1000, 1, 1),
          (10, "DELETE", 1000, 1, 1), (80, "PUT", 1000, 1, 1),
          (55, "PUT", 1000, 0, 50),  # split at k50 after seq 6 (this event is the split, no change)
          (55, "PUT", 1000, 1, 1), (20, "PUT", 1000, 1, 1), (90, "PUT", 1000, 1, 1), (60, "DELETE", 1000, 1, 1),
          (15, "PUT", 1000, 1, 1), (95, "PUT", 1000, 1, 1)]
    log = build_log(ev, 1)
    assert [p["partition_id"] for p in log["partitions"]] == ["p0000", "p0001", "p0002"]
    assert log["splits"][0]["split_seq"] == 6
    return log, [3, 9]


def instants(log: dict, snap_seqs=()) -> list[datetime]:
    """Interesting timepoints: every change, split and snapshot instant, a microsecond before, the ends."""
    by_seq = {c["seq"]: c["ts"] for c in log["changes"]}
    pts = {T0 - timedelta(seconds=1)}
    for t in [c["ts"] for c in log["changes"]] + [s["split_ts"] for s in log["splits"]] + \
             [by_seq[s] for s in snap_seqs]:
        pts.update({t, t - US})
    pts.add(max(by_seq.values(), default=T0) + timedelta(seconds=1))
    return sorted(pts)


events_st = st.lists(
    st.tuples(st.integers(0, 99), st.sampled_from(["PUT", "PUT", "PUT", "DELETE"]), st.sampled_from([0, 1, 250, 1000]),
              st.integers(0, 6), st.integers(1, 99)),
    min_size=3, max_size=45)


@st.composite
def random_lakes(draw):
    """(log, snapshot seqs, log_chunk) for write_lake: a random log over 1-3 roots with real splits."""
    log = build_log(draw(events_st), draw(st.integers(1, 3)))
    n = len(log["changes"])
    snaps = sorted(set(draw(st.lists(st.integers(1, max(n, 1)), max_size=4)))) if n else []
    return log, snaps, draw(st.sampled_from([None, 1, 4, 9]))


# --- the weaving lake: two roots, a real split of p0, predictions --------------------------------
def make_log(seed: int, n: int = 160, *, keys: int = 40, span: timedelta = timedelta(hours=10),
             split_at: int | None = 90, split_key: str = "k10", first_seq: int = 1) -> dict:
    """A random change log on two root partitions p0 ['', k20) and p1 [k20, +inf); p0 really
    splits at key `split_key` after change `split_at` into p2/p3 (None: no real split).

    Returns {"changes", "partitions", "splits"} as lists of dicts following DESIGN §3.
    """
    rng = random.Random(seed)
    gaps = sorted(rng.uniform(0, span.total_seconds()) for _ in range(n))
    changes = []
    live: set[str] = set()
    split_seq = first_seq + split_at - 1 if split_at is not None else None
    split_ts = None
    for i in range(n):
        seq = first_seq + i
        ts = T0 + timedelta(seconds=gaps[i])
        ts = ts.replace(microsecond=(ts.microsecond // 1000) * 1000)
        if changes and ts <= changes[-1]["ts"]:
            ts = changes[-1]["ts"] + timedelta(milliseconds=1)
        k = f"k{rng.randrange(keys):02d}"
        op = "DELETE" if (k in live and rng.random() < 0.25) else "PUT"
        value = f"{k}@{seq}".encode() if op == "PUT" else None
        if op == "PUT":
            live.add(k)
        else:
            live.discard(k)
        if k >= "k20":
            pid = "p1"
        elif split_seq is not None and seq > split_seq:
            pid = "p2" if k < split_key else "p3"
        else:
            pid = "p0"
        changes.append({"seq": seq, "ts": ts, "partition_id": pid, "key": k, "op": op, "value": value,
                        "value_bytes": len(value) if value else 0})
        if seq == split_seq:
            split_ts = ts + timedelta(milliseconds=1)  # the data manager acts right after the change
    parts = [
        {"partition_id": "p0", "key_lo": "", "key_hi": "k20", "parent_id": None, "created_seq": first_seq - 1,
         "created_ts": T0, "retired_seq": split_seq, "retired_ts": split_ts},
        {"partition_id": "p1", "key_lo": "k20", "key_hi": None, "parent_id": None, "created_seq": first_seq - 1,
         "created_ts": T0, "retired_seq": None, "retired_ts": None},
    ]
    splits = []
    if split_seq is not None:
        for pid, lo, hi in (("p2", "", split_key), ("p3", split_key, "k20")):
            parts.append({"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": "p0",
                          "created_seq": split_seq, "created_ts": split_ts, "retired_seq": None, "retired_ts": None})
        splits.append({"parent_id": "p0", "split_seq": split_seq, "split_ts": split_ts, "split_key": split_key,
                       "left_id": "p2", "right_id": "p3", "reason": "size"})
    return {"changes": changes, "partitions": parts, "splits": splits}


def weave_settings(lake: str, **overrides) -> Settings:
    """Settings for a weaving test: no environment, 2 shuffle partitions, `overrides` on top."""
    from weaver.core.settings import load_settings

    return load_settings(env={}, lake=str(lake), spark_shuffle_partitions=2, **overrides)


def prediction(partition_id: str = "p0", *, run_ts: datetime = T0 + 2 * H, split_key: str = "k07",
               split_ts: datetime = T0 + 3 * H + timedelta(minutes=30), window: timedelta = timedelta(hours=6),
               probability: float = 0.9, model: str = "path") -> dict:
    # "path": the default model, the one a weaving run weaves unless told another (weaver.weave.weave).
    pid = hashlib.sha1(f"{run_ts.isoformat()}|{partition_id}|{model}".encode()).hexdigest()[:16]
    return {"prediction_id": pid, "run_ts": run_ts, "partition_id": partition_id, "model": model,
            "window_start": run_ts, "window_end": run_ts + window, "probability": probability,
            "reason": "size", "predicted_split_ts": split_ts, "split_ts_p10": split_ts - H,
            "split_ts_p90": split_ts + H, "split_key": split_key, "threshold": 1000.0, "skip_reason": None}


def put_predictions(settings, rows: list[dict]) -> None:
    """Predictions written the way the forecast stage does: storage.merge keyed on prediction_id."""
    storage.merge(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                  pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS]), ["prediction_id"])


def woven_table(settings) -> pa.Table:
    return storage.read(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS, missing_ok=True)


def expected_timepoints(split_ts: datetime, window_end: datetime, cadence: timedelta, at: datetime,
                        max_ts: datetime) -> list[datetime]:
    """Timepoints on the cadence from split_ts, up to window_end and `at`, strictly before the log's
    last ts (a change may still arrive at exactly that ts: DESIGN §4.2, weaver.weave.plan)."""
    out, t = [], split_ts
    while t <= min(window_end, at) and t < max_ts:
        out.append(t)
        t += cadence
    return out


def assert_matches_oracle(settings, data: dict, preds: list[dict], *, at: datetime, cadence: timedelta = H,
                          key_ranges: dict | None = None) -> int:
    """Every woven snapshot equals the oracle's fold cut at split_key; the timepoints are exactly
    those whose data had arrived by `at`. Returns the number of snapshots checked."""
    key_ranges = key_ranges or {p["partition_id"]: (p["key_lo"], p["key_hi"]) for p in data["partitions"]}
    changes = data["changes"]
    max_ts = max(c["ts"] for c in changes)
    woven = woven_table(settings).to_pylist()
    checked = 0
    for p in preds:
        wid = hashlib.sha1(p["prediction_id"].encode()).hexdigest()[:16]
        src = p["partition_id"]
        left_id, right_id = f"{src}~{wid[:8]}~L", f"{src}~{wid[:8]}~R"
        lo, hi = key_ranges[src]
        k = p["split_key"]
        tps = expected_timepoints(p["predicted_split_ts"], p["window_end"], cadence, at, max_ts)
        mine = [w for w in woven if w["weave_id"] == wid]
        assert sorted({w["timepoint"] for w in mine}) == [t for t in tps if fold(changes, key_lo=lo, key_hi=hi, at=t)], \
            f"timepoints of {wid}"
        for t in tps:
            rows = [w for w in mine if w["timepoint"] == t]
            left = fold(changes, key_lo=lo, key_hi=k, at=t)
            right = fold(changes, key_lo=k, key_hi=hi, at=t)
            whole = fold(changes, key_lo=lo, key_hi=hi, at=t)
            got_l = rows_to_dict([w for w in rows if w["woven_partition_id"] == left_id])
            got_r = rows_to_dict([w for w in rows if w["woven_partition_id"] == right_id])
            assert got_l == left, f"left child of {wid} at {t}"
            assert got_r == right, f"right child of {wid} at {t}"
            assert {**got_l, **got_r} == whole and len(got_l) + len(got_r) == len(whole)
            assert all(w["woven_partition_id"] in (left_id, right_id) for w in rows)
            seq_t = max((c["seq"] for c in changes if c["ts"] <= t), default=0)
            assert {w["as_of_seq"] for w in rows} <= {seq_t}
            assert all(w["source_partition_id"] == src for w in rows)
            checked += 1
    return checked


# --- the recovery lake: P1 really splits, woven rows from the oracle fold ------------------------
KEYS = [f"k{d}{x}" for d in range(10) for x in "abc"]

# P0 ["", "k4"), P1 ["k4", +inf) split at seq SPLIT_SEQ into P2 ["k4", "k7") and P3 ["k7", +inf).
PARTS = [
    ("P0", "", "k4", None),
    ("P1", "k4", None, None),
    ("P2", "k4", "k7", "P1"),
    ("P3", "k7", None, "P1"),
]


def weave_id_of(prediction_id: str) -> str:
    return hashlib.sha1(prediction_id.encode()).hexdigest()[:16]


@dataclass
class Lake:
    """A small lake: its settings, its raw changes (for the oracle) and its partitions."""

    settings: Settings
    changes: list[dict]
    ranges: dict[str, tuple[str, str | None]]
    weaves: dict[str, dict] = field(default_factory=dict)

    def ts_of(self, seq: int) -> datetime:
        return self.changes[seq - 1]["ts"]

    def seq_at(self, at: datetime) -> int:
        return max((c["seq"] for c in self.changes if c["ts"] <= at), default=0)

    def expected(self, partition_id: str, at: datetime) -> dict[str, bytes]:
        lo, hi = self.ranges[partition_id]
        return fold(self.changes, key_lo=lo, key_hi=hi, at=at)


def random_changes(rng: random.Random, n: int, split_seq: int | None) -> list[dict]:
    """`n` changes, seq 1..n, ts non-decreasing (ties happen), owned by the right partition."""
    out, ts, live = [], T0, set()
    for seq in range(1, n + 1):
        ts = ts + timedelta(minutes=rng.choice([0, 1, 1, 2, 5]))
        key = rng.choice(KEYS)
        op = "DELETE" if key in live and rng.random() < 0.25 else "PUT"
        value = None if op == "DELETE" else f"{key}@{seq}".encode()
        (live.discard if op == "DELETE" else live.add)(key)
        out.append({"seq": seq, "ts": ts, "partition_id": owner(key, seq, split_seq), "key": key, "op": op,
                    "value": value, "value_bytes": None if value is None else len(value)})
    return out


def owner(key: str, seq: int, split_seq: int | None) -> str:
    if key < "k4":
        return "P0"
    if split_seq is None or seq <= split_seq:
        return "P1"
    return "P2" if key < "k7" else "P3"


def build_lake(root, changes: list[dict], split_seq: int | None, *, api_token: str | None = None) -> Lake:
    """Write changelog, partitions and splits under `root` (woven tier at root/woven)."""
    from weaver.core.settings import Settings

    rows = []
    for pid, lo, hi, parent in PARTS:
        if split_seq is None and pid in ("P2", "P3"):
            continue
        split_ts = changes[split_seq - 1]["ts"] if split_seq else None
        rows.append({"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": parent,
                     "created_seq": split_seq if parent else 0, "created_ts": split_ts if parent else T0,
                     "retired_seq": split_seq if (pid == "P1" and split_seq) else None,
                     "retired_ts": split_ts if (pid == "P1" and split_seq) else None})
    splits = []
    if split_seq:
        splits.append({"parent_id": "P1", "split_seq": split_seq, "split_ts": changes[split_seq - 1]["ts"],
                       "split_key": "k7", "left_id": "P2", "right_id": "P3", "reason": "size"})
    write_lake(root, {"changes": changes, "partitions": rows, "splits": splits})
    ranges = {pid: (lo, hi) for pid, lo, hi, parent in PARTS if split_seq or pid in ("P0", "P1")}
    return Lake(Settings(lake=str(root), api_token=api_token), changes, ranges)


def add_weave(lake: Lake, source: str, split_key: str, confidence: float, timepoints: list[datetime], *,
              prediction_id: str | None = None, status: str = "active", corrupt: bool = False) -> dict:
    """Catalog a weave of `source` at `split_key` and write its snapshots from the oracle fold.

    `corrupt=True` writes wrong values, so a test can tell whether these rows were read.
    Returns the weave's catalog row (plus 'left'/'right' child ranges registered in lake.ranges).
    """
    timepoints = sorted(set(timepoints))  # equal ts happen in random logs; a timepoint is woven once
    pid = prediction_id or f"pred-{source}-{split_key}-{confidence}"
    wid = weave_id_of(pid)
    lo, hi = lake.ranges[source]
    left, right = f"{source}~{wid[:8]}~L", f"{source}~{wid[:8]}~R"
    split_ts = min(timepoints)
    row = {"weave_id": wid, "prediction_id": pid, "source_partition_id": source, "split_key": split_key,
           "split_ts": split_ts, "confidence": confidence, "window_start": split_ts,
           "window_end": max(timepoints) + timedelta(hours=1), "child_ids": [left, right], "status": status,
           "created_at": T0, "last_timepoint": max(timepoints), "last_seq": lake.seq_at(max(timepoints)),
           "actual_split_key": None, "actual_split_ts": None, "updated_at": T0}
    s = lake.settings
    storage.merge(storage.uri_for(s, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG,
                  pa.Table.from_pylist([row], schema=storage.SCHEMAS[storage.WOVEN_CATALOG]), ["weave_id"])
    snap_rows = []
    for tp in timepoints:
        seq = lake.seq_at(tp)
        for child, (clo, chi) in ((left, (lo, split_key)), (right, (split_key, hi))):
            for k, v in fold(lake.changes, key_lo=clo, key_hi=chi, at=tp).items():
                snap_rows.append({"weave_id": wid, "woven_partition_id": child, "source_partition_id": source,
                                  "timepoint": tp, "as_of_seq": seq, "key": k,
                                  "value": b"WRONG" if corrupt else v})
    if snap_rows:
        storage.merge(storage.uri_for(s, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS,
                      pa.Table.from_pylist(snap_rows, schema=storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]),
                      ["weave_id", "woven_partition_id", "timepoint", "key"])
    lake.ranges[left] = (lo, split_key)
    lake.ranges[right] = (split_key, hi)
    row["left"], row["right"] = left, right
    lake.weaves[wid] = row
    return row


def standard_lake(root, *, n: int = 120, seed: int = 3, api_token: str | None = None) -> Lake:
    """A deterministic lake with a real split of P1 at seq n//2 and a weave of P0 (conf 0.9) and P2 (conf 0.5)."""
    rng = random.Random(seed)
    split_seq = n // 2
    lake = build_lake(root, random_changes(rng, n, split_seq), split_seq, api_token=api_token)
    t = [lake.ts_of(s) for s in (n // 4, n // 2, 3 * n // 4)]
    add_weave(lake, "P0", "k2", 0.9, t, prediction_id="pred-P0")
    add_weave(lake, "P2", "k5", 0.5, [lake.ts_of(3 * n // 4)], prediction_id="pred-P2")
    return lake


# --- hourly lakes for the forecast stage (their own T0) ------------------------------------------
# Every expected figure follows from the construction: 1000-byte items, so a partition that gains
# 10 items an hour grows by exactly 10 000 bytes an hour.
FORECAST_T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
ITEM = 1000  # bytes per item: 9-byte key + 991-byte value
VALUE = ITEM - 9
WRITE_T = 100 / 3600.0  # 100 writes an hour
SPLIT_H = 40  # forecast_split_lake: p splits at FORECAST_T0 + 40 h


def key(prefix: str, i: int) -> str:
    return f"{prefix}{i:08d}"  # 9 bytes


def event_log(partitions: list[dict], events: list[tuple], splits: list[dict] = ()) -> dict:
    """A log for write_lake from `events` (ts, partition_id, key, op, value_bytes); seq follows ts."""
    events = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    changes = [{"seq": i, "ts": ts, "partition_id": pid, "key": k, "op": op,
                "value": b"v" * nb if op == "PUT" else None, "value_bytes": nb if op == "PUT" else 0}
               for i, (ts, pid, k, op, nb) in enumerate(events, start=1)]
    return {"changes": changes, "partitions": list(partitions), "splits": list(splits)}


def part(pid: str, lo: str, hi: str | None, *, created: datetime = FORECAST_T0, parent: str | None = None,
         created_seq: int = 0, retired: datetime | None = None, retired_seq: int | None = None) -> dict:
    return {"partition_id": pid, "key_lo": lo, "key_hi": hi, "parent_id": parent, "created_seq": created_seq,
            "created_ts": created, "retired_seq": retired_seq, "retired_ts": retired}


def spread(hour: int, n: int, start: datetime = FORECAST_T0) -> list[datetime]:
    """n instants spread evenly inside hour `hour` (never on the boundary)."""
    base = start + hour * H
    return [base + timedelta(seconds=(j + 0.5) * 3600.0 / n) for j in range(n)] if n else []


def growing(pid: str, prefix: str, hours: int, per_hour: int = 10, start: datetime = FORECAST_T0) -> list[tuple]:
    """Inserts `per_hour` new 1000-byte items every hour: size = 10 000 * hours exactly."""
    ev, i = [], 0
    for h in range(hours):
        for ts in spread(h, per_hour, start):
            ev.append((ts, pid, key(prefix, i), "PUT", VALUE))
            i += 1
    return ev


def flat(pid: str, prefix: str, hours: int, items: int = 50, seed: int = 3) -> list[tuple]:
    """`items` keys written once, then 2..8 same-size updates an hour: size constant."""
    rng = np.random.default_rng(seed)
    ev = [(FORECAST_T0 + timedelta(seconds=1 + j), pid, key(prefix, j), "PUT", VALUE) for j in range(items)]
    for h in range(1, hours):
        for ts in spread(h, int(rng.integers(2, 9))):
            ev.append((ts, pid, key(prefix, int(rng.integers(0, items))), "PUT", VALUE))
    return ev


def forecast_split_lake(root: Path) -> str:
    """p inserts 10 items an hour, spread over its key range, for 40 h, then splits at 'a00000200'.

    After the split r keeps gaining 5 items an hour (as its range did inside p) and l only gets
    updates; c is constant (two same-size updates every hour). Size threshold 400 000 B.
    """
    split_ts = FORECAST_T0 + SPLIT_H * H
    ev = []
    for h in range(SPLIT_H):  # keys a000 .. a399 in a scattered order: both halves grow 5 000 B/h
        for j, ts in enumerate(spread(h, 10)):
            ev.append((ts, "p", key("a", ((h * 10 + j) * 7919) % 400), "PUT", VALUE))
    rng = np.random.default_rng(1)
    for h in range(SPLIT_H, 60):
        for j, ts in enumerate(spread(h, 5)):
            ev.append((ts, "r", key("a", 400 + (h - SPLIT_H) * 5 + j), "PUT", VALUE))
        for ts in spread(h, 3):
            ev.append((ts, "l", key("a", int(rng.integers(0, 200))), "PUT", VALUE))
    ev += [(FORECAST_T0 + timedelta(seconds=5 + j), "c", key("z", j), "PUT", VALUE) for j in range(10)]
    for h in range(1, 60):
        ev += [(ts, "c", key("z", h % 10), "PUT", VALUE) for ts in spread(h, 2)]
    n_before = sum(1 for e in ev if e[0] < split_ts)
    parts = [part("p", "", "z", retired=split_ts, retired_seq=n_before),
             part("l", "", "a00000200", created=split_ts, parent="p", created_seq=n_before),
             part("r", "a00000200", "z", created=split_ts, parent="p", created_seq=n_before),
             part("c", "z", None)]
    splits = [{"parent_id": "p", "split_seq": n_before, "split_ts": split_ts, "split_key": "a00000200",
               "left_id": "l", "right_id": "r", "reason": "size"}]
    return write_lake(root, event_log(parts, ev, splits),
                      policy={"size_threshold_bytes": 400_000, "write_threshold_per_s": WRITE_T, "bucket": "1h"})


MANUAL_HOURS = 40
# manual_split_lake: s splits for size at 16 h, m is split by an operator at 20 h
MANUAL_S_SPLIT, MANUAL_M_SPLIT = FORECAST_T0 + 16 * H, FORECAST_T0 + 20 * H


def manual_split_lake(root) -> str:
    """s = ['', 'm') splits for size at 16 h at 'h' (into s1, s2); m = ['m', 't') is split by an
    operator (reason 'manual') at 20 h at 'p' (into m1, m2); c = ['t', +inf) never splits. Every range
    gets two writes every hour for 40 h (the log reaches ~40 h)."""
    owner = {"a": ("s", "s1", MANUAL_S_SPLIT), "h": ("s", "s2", MANUAL_S_SPLIT),
             "n": ("m", "m1", MANUAL_M_SPLIT), "q": ("m", "m2", MANUAL_M_SPLIT), "x": ("c", "c", None)}
    ev = []
    for h in range(MANUAL_HOURS):
        for prefix, (parent, child, split_ts) in owner.items():
            for j, ts in enumerate(spread(h, 2)):
                pid = child if split_ts is not None and ts > split_ts else parent
                ev.append((ts, pid, key(prefix, 2 * h + j), "PUT", VALUE))
    n_s = sum(1 for e in ev if e[0] < MANUAL_S_SPLIT)
    n_m = sum(1 for e in ev if e[0] < MANUAL_M_SPLIT)
    parts = [part("s", "", "m", retired=MANUAL_S_SPLIT, retired_seq=n_s),
             part("s1", "", "h", created=MANUAL_S_SPLIT, parent="s", created_seq=n_s),
             part("s2", "h", "m", created=MANUAL_S_SPLIT, parent="s", created_seq=n_s),
             part("m", "m", "t", retired=MANUAL_M_SPLIT, retired_seq=n_m),
             part("m1", "m", "p", created=MANUAL_M_SPLIT, parent="m", created_seq=n_m),
             part("m2", "p", "t", created=MANUAL_M_SPLIT, parent="m", created_seq=n_m),
             part("c", "t", None)]
    splits = [{"parent_id": "s", "split_seq": n_s, "split_ts": MANUAL_S_SPLIT, "split_key": "h",
               "left_id": "s1", "right_id": "s2", "reason": "size"},
              {"parent_id": "m", "split_seq": n_m, "split_ts": MANUAL_M_SPLIT, "split_key": "p",
               "left_id": "m1", "right_id": "m2", "reason": "manual"}]
    return write_lake(root, event_log(parts, ev, splits),
                      policy={"size_threshold_bytes": 10_000_000, "write_threshold_per_s": 1.0, "bucket": "1h"})


def manual_lake_history(*, last_h: float = 32, window_h: float = 8, model: str = "path") -> list[dict]:
    """Hand-made prediction rows for manual_split_lake: a run every half hour from 0 h to `last_h`,
    window `window_h`, one row per partition live at the run by hand (s, m, c before 16 h; s1, s2, m,
    c in [16 h, 20 h); s1, s2, m1, m2, c after). Raw probability (= probability) 0.9 where s's window
    holds its size split, 0.5 where m's window holds the manual split, 0.1 elsewhere."""
    from weaver.core.ids import prediction_id

    rows = []
    for k in range(int(last_h * 2) + 1):
        h = k / 2
        t = FORECAST_T0 + k * H / 2
        live = ["s", "m", "c"] if h < 16 else ["s1", "s2", "m", "c"] if h < 20 else ["s1", "s2", "m1", "m2", "c"]
        for pid in live:
            raw = 0.9 if pid == "s" and h + window_h >= 16 else 0.5 if pid == "m" and h + window_h >= 20 else 0.1
            rows.append({"prediction_id": prediction_id(t, pid, model), "run_ts": t, "partition_id": pid,
                         "model": model, "window_start": t, "window_end": t + window_h * H, "probability": raw,
                         "reason": None, "predicted_split_ts": None, "split_ts_p10": None, "split_ts_p90": None,
                         "split_key": None, "threshold": 0.75, "skip_reason": None, "probability_raw": raw})
    return rows


def forecast_settings(root, **kw) -> Settings:
    """Settings for a forecast test: one worker, 200 samples (the environment still applies)."""
    from weaver.core.settings import load_settings

    return load_settings(lake=str(root), forecast_workers=1, forecast_samples=200, **kw)


# --- what-if lakes (issue 13): known split keys and known advice ---------------------------------
HOT_WRITE_T = 300 / 3600.0  # 300 writes an hour
WHATIF_SIZE_T = 10_000_000


def hot_end_lake(root: Path, hours: int = 17) -> str:
    """h ['', +inf): 200 keys b0..b199 of 1000 B loaded in hour 0, then same-size updates growing
    by 15 an hour (20 + 15 h), 90 % of them on the 20 keys at the top end (b180..b199).

    Size never changes after hour 0, so the size median is b100; the writes balance near b190:
    the load-balancing key differs from the size median, and a throughput split is coming
    (the rate crosses 300 writes/h around hour 19).
    """
    ev = [(FORECAST_T0 + timedelta(seconds=1 + j), "h", key("b", j), "PUT", VALUE) for j in range(200)]
    for h in range(1, hours):
        for j, ts in enumerate(spread(h, 20 + 15 * h)):
            k = 180 + (j % 20) if j % 10 else (j * 37) % 180
            ev.append((ts, "h", key("b", k), "PUT", VALUE))
    return write_lake(root, event_log([part("h", "", None)], ev),
                      policy={"size_threshold_bytes": WHATIF_SIZE_T, "write_threshold_per_s": HOT_WRITE_T,
                              "bucket": "1h"})


def grow_shrink_lake(root: Path) -> str:
    """g ['', +inf): 20 new 1000-byte items an hour for 8 h, then 18 deletes an hour for 8 h.

    Writes stay at 20 (then 18) an hour, far below 300/h, and the size peaks at 160 kB, far below
    10 MB and falling: no split is coming.
    """
    ev = growing("g", "c", 8, per_hour=20)
    for h in range(8, 16):
        for j, ts in enumerate(spread(h, 18)):
            ev.append((ts, "g", key("c", (h - 8) * 18 + j), "DELETE", 0))
    return write_lake(root, event_log([part("g", "", None)], ev),
                      policy={"size_threshold_bytes": WHATIF_SIZE_T, "write_threshold_per_s": HOT_WRITE_T,
                              "bucket": "1h"})


def writes_balancing_key(changes: list[dict], lo_ts: datetime, hi_ts: datetime, live: list[str]) -> str:
    """Brute force: the key k (a written key, clamped into the live interior) minimising
    |writes(< k) - writes(>= k)| over changes with lo_ts < ts <= hi_ts."""
    from collections import Counter

    c = Counter(ch["key"] for ch in changes if lo_ts < ch["ts"] <= hi_ts)
    keys = sorted(c)
    total = sum(c.values())
    best = min(range(1, len(keys)), key=lambda i: (abs(2 * sum(c[k] for k in keys[:i]) - total), i))
    live = sorted(live)
    return min(max(keys[best], live[1]), live[-1])
