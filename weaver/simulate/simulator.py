"""A deterministic workload that produces a contract-conforming lake (DESIGN §3).

Keys ``k00000000`` ... are range-partitioned. Each hour every live partition receives a Poisson
number of writes whose rate follows its own growth trend and a daily cycle; updates pick keys
with Zipf-like popularity (older keys are hotter), inserts add new keys, a few writes delete.
A simulated data manager checks every partition at each hour's end and really splits one that
crossed the size threshold (at the size median key) or the write threshold (at the key that
balances the hour's writes), writing `splits` and `partitions` lineage. One partition may get
a burst of writes on a few hot keys, which shows up as a throughput split.

``SimConfig.shape`` picks a workload family (``SHAPES``); ``default`` is the original workload,
byte for byte. The others draw their extra randomness from a second generator seeded from
(seed, shape), so each is deterministic per seed:

- ``steady``  - smooth growth (no daily cycle); the lowest key range is update-heavy and its
  write rate climbs steadily toward the write threshold;
- ``bursty``  - the default growth plus random multi-hour write bursts on hot keys, any day;
- ``diurnal`` - a strong daily cycle (amplitude 0.9): thresholds are crossed at the daily peak;
- ``shrink``  - insert-heavy growth for 60 % of the span, then deletes outnumber inserts: sizes fall;
- ``drift``   - a hot spot (x5 writes, insert-heavy) whose centre sweeps the key space.

Nothing in the pipeline depends on this module: it runs on any lake that follows §3.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from weaver.core import objstore, storage
from weaver.core.errors import InvalidParameterError
from weaver.core.settings import is_remote, lake_policy_path

KEY_SPACE = 100_000_000  # keys k00000000 .. k99999999
SHAPES = ("default", "steady", "bursty", "diurnal", "shrink", "drift")


#: Changes per Arrow batch streamed to the change log while the simulation runs.
CHUNK_ROWS = 250_000
_FINGERPRINT = "weaver.simulation"  # commit metadata key: which simulation wrote the change log


def key_name(i: int) -> str:
    """The i-th key of the simulated key space (zero-padded, so string order is numeric order)."""
    return f"k{i:08d}"


@dataclass(frozen=True)
class SimConfig:
    """Workload parameters; defaults give a small lake with real splits in a few days."""

    seed: int = 7
    partitions: int = 4
    days: int = 3
    start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base_rate: float = 150.0  # writes per hour per initial partition at t=0
    daily_growth: tuple[float, float] = (1.05, 1.55)  # per-partition trend multiplier per day
    seasonality: float = 0.5  # amplitude of the daily cycle
    insert_share: float = 0.35
    delete_share: float = 0.06
    value_bytes_mean: float = 400.0
    size_threshold_bytes: int = 1_500_000
    write_threshold_per_s: float = 0.5  # 1800 writes/hour
    burst: bool = True  # one partition gets a few hours of hot-key writes on the last day
    extra: dict = field(default_factory=dict)
    shape: str = "default"  # one of SHAPES

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise InvalidParameterError(f"--shape {self.shape!r} is unknown; choose one of {', '.join(SHAPES)}")
        if self.partitions < 1 or self.partitions > 1000:
            raise InvalidParameterError("--partitions must be in [1, 1000]")
        if self.days < 1 or self.days > 365:
            raise InvalidParameterError("--days must be in [1, 365]")
        if self.start.tzinfo is None:
            raise InvalidParameterError("start must carry a timezone")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass
class _Part:
    pid: str
    lo: int
    hi: int  # exclusive int bound of the key space
    key_lo: str
    key_hi: str | None
    parent: str | None
    created_seq: int
    created_ts: datetime
    rate: float
    growth: float
    live: dict = field(default_factory=dict)  # key int -> value bytes
    order: list = field(default_factory=list)  # insertion order (popularity rank)
    retired_seq: int | None = None
    retired_ts: datetime | None = None
    update_heavy: bool = False  # shape 'steady': a range written mostly by updates

    @property
    def size(self) -> int:
        return sum(self.live.values()) + 9 * len(self.live)


@dataclass
class SimResult:
    changes: int
    partitions: int
    splits: int
    start: datetime
    end: datetime
    lake: str


def simulate(lake: str, config: SimConfig = SimConfig()) -> SimResult:
    """Generate the workload and write `changelog`, `partitions`, `splits`, `access_log`.

    Tables are replaced whole, so rerunning with the same config writes the same rows once.
    """
    rng = np.random.default_rng(config.seed)
    span = KEY_SPACE // config.partitions
    parts: dict[str, _Part] = {}
    next_id = 0

    def new_id() -> str:
        nonlocal next_id
        pid = f"p{next_id:04d}"
        next_id += 1
        return pid

    for i in range(config.partitions):
        lo, hi = i * span, (KEY_SPACE if i == config.partitions - 1 else (i + 1) * span)
        pid = new_id()
        parts[pid] = _Part(pid, lo, hi, "" if i == 0 else key_name(lo),
                           None if i == config.partitions - 1 else key_name(hi), None, 0, config.start,
                           config.base_rate, float(rng.uniform(*config.daily_growth)))
    burst_hours = set(range((config.days - 1) * 24 + 9, (config.days - 1) * 24 + 12)) if config.days >= 2 else set()
    shape = _Shape(config)
    if config.shape == "steady":
        parts["p0000"].update_heavy = True
        parts["p0000"].rate *= 5.0

    cols: dict[str, list] = {k: [] for k in ("seq", "ts", "partition_id", "key", "op", "value", "value_bytes")}
    acc: dict[str, list] = {"ts": [], "partition_id": [], "key": []}
    split_rows: list[dict] = []
    schema = storage.SCHEMAS[storage.CHANGELOG]
    total = [0]

    access: list[pa.RecordBatch] = []
    acc_schema = storage.SCHEMAS[storage.ACCESS_LOG]

    def changes():
        # The log leaves as Arrow batches while it is generated: memory follows CHUNK_ROWS, not the log.
        # The read log (a fifth of the changes) is kept as Arrow batches, not as Python objects.
        for _ in _hours(config, rng, parts, shape, burst_hours, cols, acc, split_rows, new_id, total):
            if len(cols["seq"]) >= CHUNK_ROWS:
                access.append(_flush(acc, acc_schema))
                yield _flush(cols, schema)
        if cols["seq"]:
            yield _flush(cols, schema)
        access.append(_flush(acc, acc_schema))

    _write_changelog(lake, config, pa.RecordBatchReader.from_batches(schema, changes()))
    _write(lake, config, pa.Table.from_batches(access, schema=acc_schema), parts, split_rows)
    return SimResult(total[0], len(parts), len(split_rows), config.start, config.end, lake)


def _flush(cols: dict[str, list], schema: pa.Schema) -> pa.RecordBatch:
    batch = pa.RecordBatch.from_pydict(cols, schema=schema)
    for v in cols.values():
        v.clear()
    return batch


def _hours(config, rng, parts, shape, burst_hours, cols, acc, split_rows, new_id, total):
    """Simulate hour after hour, appending each hour's changes to `cols` (yields after each hour)."""
    seq = 0
    hours = config.days * 24
    for h in range(hours):
        t0 = config.start + timedelta(hours=h)
        events: list[tuple[int, str, int, str, int]] = []  # (usec offset, pid, key, op, bytes)
        hour_writes: dict[str, list[int]] = {}
        # The burst hits whichever live partition holds the top of the key space at the time.
        burst_pid = max((p for p in parts.values() if p.retired_seq is None), key=lambda p: p.lo).pid \
            if config.burst and h in burst_hours and config.shape in ("default", "diurnal") else None
        shape.start_hour(h, parts)
        for p in sorted(parts.values(), key=lambda p: p.pid):
            if p.retired_seq is not None:
                continue
            day = h / 24.0
            cycle = 1.0 + shape.seasonality * np.sin(2 * np.pi * ((h % 24) - 6) / 24.0)
            lam = p.rate * (shape.growth(p, day) if shape.custom else p.growth ** day) * cycle
            hot = p.pid == burst_pid or p.pid in shape.bursting
            if p.pid == burst_pid:
                lam *= 6.0
            lam *= shape.multiplier(p, h)
            n = int(rng.poisson(max(lam, 0.0)))
            offs = np.sort(rng.integers(0, 3_600_000_000, size=n))
            kinds = rng.random(n)
            for j in range(n):
                k_int, op, nbytes = _pick(p, rng, float(kinds[j]), shape.mix(p, h), hot)
                events.append((int(offs[j]), p.pid, k_int, op, nbytes))
                hour_writes.setdefault(p.pid, []).append(k_int)
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        for off, pid, k_int, op, nbytes in events:
            seq += 1
            key = key_name(k_int)
            ts = t0 + timedelta(microseconds=off)
            cols["seq"].append(seq)
            cols["ts"].append(ts)
            cols["partition_id"].append(pid)
            cols["key"].append(key)
            cols["op"].append(op)
            if op == "PUT":
                cols["value"].append(_value(key, seq, nbytes))
                cols["value_bytes"].append(nbytes)
            else:
                cols["value"].append(None)
                cols["value_bytes"].append(0)
            if (seq % 5) == 0:  # a sparse read log for the metrics' `reads`
                acc["ts"].append(ts)
                acc["partition_id"].append(pid)
                acc["key"].append(key)
        # The data manager looks at each live partition at the end of the hour.
        t1 = t0 + timedelta(hours=1)
        for p in sorted(parts.values(), key=lambda p: p.pid):
            if p.retired_seq is not None or len(p.live) < 4:
                continue
            writes = hour_writes.get(p.pid, [])
            reason = None
            if p.size > config.size_threshold_bytes:
                reason, k = "size", _size_median(p)
            elif len(writes) / 3600.0 > config.write_threshold_per_s:
                reason, k = "throughput", _write_median(p, writes)
            if reason is None or k is None:
                continue
            left, right = _split(p, k, new_id(), new_id(), seq, t1)
            parts[left.pid], parts[right.pid] = left, right
            split_rows.append({"parent_id": p.pid, "split_seq": seq, "split_ts": t1, "split_key": key_name(k),
                               "left_id": left.pid, "right_id": right.pid, "reason": reason})
        total[0] = seq
        yield h


class _Shape:
    """Per-hour modifiers of a workload shape. For ``default`` every modifier is neutral and no
    random number is drawn, so the default lake stays byte-identical to the pre-shape simulator."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.custom = cfg.shape != "default"
        self.seasonality = {"steady": 0.0, "diurnal": 0.9}.get(cfg.shape, cfg.seasonality)
        self.rng = np.random.default_rng([cfg.seed, SHAPES.index(cfg.shape)])
        self.bursting: dict[str, float] = {}  # pid -> multiplier this hour
        self._bursts: list[tuple[int, int, float, float]] = []  # (start h, hours, key position, multiplier)
        if cfg.shape == "bursty":
            hours = cfg.days * 24
            for _ in range(max(1, int(round(cfg.days * 0.8)))):
                self._bursts.append((int(self.rng.integers(12, hours)), int(self.rng.integers(1, 5)),
                                     float(self.rng.random()), float(self.rng.uniform(4.0, 9.0))))
        self._centre = float(self.rng.random())
        self._speed = float(self.rng.uniform(0.15, 0.3)) * (1 if self.rng.random() < 0.5 else -1)  # key space/day

    def start_hour(self, h: int, parts: dict) -> None:
        self.bursting = {}
        for start, length, pos, mult in self._bursts:
            if start <= h < start + length:
                k = int(pos * KEY_SPACE)
                for p in parts.values():
                    if p.retired_seq is None and p.lo <= k < p.hi:
                        self.bursting[p.pid] = mult

    def growth(self, p: _Part, day: float) -> float:
        if self.cfg.shape == "shrink":
            return p.growth ** min(day, self.cfg.days * 0.6)  # writes stay busy; the op mix turns to deletes
        return p.growth ** day

    def _hot_pos(self, h: int) -> float:
        x = (self._centre + self._speed * h / 24.0) % 2.0
        return x if x <= 1.0 else 2.0 - x  # bounce between the ends of the key space

    def _in_hot(self, p: _Part, h: int) -> bool:
        k = int(self._hot_pos(h) * (KEY_SPACE - 1))
        return p.lo <= k < p.hi

    def multiplier(self, p: _Part, h: int) -> float:
        if not self.custom:
            return 1.0
        if self.cfg.shape == "drift" and self._in_hot(p, h):
            return 5.0
        return self.bursting.get(p.pid, 1.0)

    def mix(self, p: _Part, h: int) -> tuple[float, float, float]:
        """(delete share, insert share, mean value bytes) of the partition's writes this hour."""
        c = self.cfg
        if not self.custom:
            return c.delete_share, c.insert_share, c.value_bytes_mean
        if p.update_heavy:
            return 0.02, 0.04, c.value_bytes_mean
        if c.shape == "shrink":
            # Insert-heavy growth for 60 % of the span, then deletes outnumber inserts.
            return (0.55, 0.15, c.value_bytes_mean) if h >= c.days * 24 * 0.6 else (0.03, 0.55, c.value_bytes_mean)
        if c.shape == "drift" and self._in_hot(p, h):
            return 0.02, 0.6, c.value_bytes_mean
        return c.delete_share, c.insert_share, c.value_bytes_mean


def _pick(p: _Part, rng, u: float, mix: tuple[float, float, float], hot: bool) -> tuple[int, str, int]:
    delete_share, insert_share, value_mean = mix
    n = len(p.order)
    if n and u < delete_share and not hot:
        i = _zipf_rank(rng, n)
        k = p.order[i]
        if k in p.live:
            del p.live[k]
            p.order.pop(i)
            return k, "DELETE", 0
    nbytes = int(max(16, rng.lognormal(np.log(value_mean), 0.5)))
    if hot and n:
        k = p.order[int(rng.integers(0, min(n, 8)))]  # a handful of hot keys
    elif n == 0 or u < delete_share + insert_share:
        for _ in range(16):
            k = int(rng.integers(p.lo, p.hi))
            if k not in p.live:
                break
        if k not in p.live:
            p.order.append(k)
    else:
        k = p.order[_zipf_rank(rng, n)]
    p.live[k] = nbytes
    return k, "PUT", nbytes


def _zipf_rank(rng, n: int) -> int:
    # Log-uniform rank: P(rank r) ~ 1/r, so the oldest keys are the hottest (Zipf, s = 1).
    return min(n - 1, int(np.exp(rng.random() * np.log(n + 1))) - 1)


def _size_median(p: _Part) -> int | None:
    keys = sorted(p.live)
    sizes = np.cumsum([p.live[k] + 9 for k in keys])
    i = int(np.searchsorted(sizes, sizes[-1] / 2.0))
    i = min(max(i, 1), len(keys) - 1)
    return keys[i]


def _write_median(p: _Part, writes: list[int]) -> int | None:
    ks = sorted(writes)
    k = ks[len(ks) // 2]
    live = sorted(p.live)
    # Both children must start non-empty: clamp into the live keys' interior.
    k = min(max(k, live[1]), live[-1])
    return k if live[0] < k else None


def _split(p: _Part, k: int, lid: str, rid: str, seq: int, ts: datetime) -> tuple[_Part, _Part]:
    p.retired_seq, p.retired_ts = seq, ts
    key = key_name(k)
    mk = lambda pid, lo, hi, klo, khi: _Part(pid, lo, hi, klo, khi, p.pid, seq, ts, p.rate / 2.0, p.growth,  # noqa: E731
                                             update_heavy=p.update_heavy)
    left = mk(lid, p.lo, k, p.key_lo, key)
    right = mk(rid, k, p.hi, key, p.key_hi)
    for kk in p.order:
        if kk in p.live:
            child = left if kk < k else right
            child.order.append(kk)
            child.live[kk] = p.live[kk]
    return left, right


def _value(key: str, seq: int, nbytes: int) -> bytes:
    head = f"{key}@{seq};".encode()
    return (head * (nbytes // len(head) + 1))[:nbytes]


def _write_changelog(lake: str, cfg: SimConfig, batches: pa.RecordBatchReader) -> None:
    """Stream the change log into Delta; a rerun of the same simulation drains it and writes nothing.

    The rows are not held to compare with the table: the commit records a fingerprint of the
    config and of this module's code instead, which fixes every row.
    """
    from deltalake import CommitProperties, write_deltalake

    if not is_remote(lake):
        Path(lake).mkdir(parents=True, exist_ok=True)
    uri = storage.table_uri(lake, storage.CHANGELOG)
    mark = hashlib.sha256(json.dumps(asdict(cfg), default=str, sort_keys=True).encode()
                          + Path(__file__).read_bytes()).hexdigest()
    if storage.is_table(uri):
        last = storage.open_table(uri).history(1)
        if last and last[0].get(_FINGERPRINT) == mark:
            for _ in batches:  # the other tables come from the same run
                pass
            return
    write_deltalake(uri, batches, mode="overwrite", schema_mode="overwrite", storage_options=storage.options(uri),
                    commit_properties=CommitProperties(custom_metadata={_FINGERPRINT: mark}))


def _write(lake: str, cfg: SimConfig, access: pa.Table, parts, split_rows) -> None:
    prows = [{"partition_id": p.pid, "key_lo": p.key_lo, "key_hi": p.key_hi, "parent_id": p.parent,
              "created_seq": p.created_seq, "created_ts": p.created_ts, "retired_seq": p.retired_seq,
              "retired_ts": p.retired_ts} for p in sorted(parts.values(), key=lambda p: p.pid)]
    partitions = pa.Table.from_pylist(prows, schema=storage.SCHEMAS[storage.PARTITIONS])
    splits = pa.Table.from_pylist(split_rows, schema=storage.SCHEMAS[storage.SPLITS])
    from deltalake import write_deltalake

    for name, t in ((storage.PARTITIONS, partitions),
                    (storage.SPLITS, splits), (storage.ACCESS_LOG, access)):
        uri = storage.table_uri(lake, name)
        if storage.is_table(uri) and _same(uri, name, t):
            continue  # a rerun with the same config adds no Delta version
        write_deltalake(uri, t, mode="overwrite", schema_mode="overwrite", storage_options=storage.options(uri))
    policy = lake_policy_path(lake)
    meta = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(cfg).items()
            if not (k == "shape" and v == "default")}  # the default lake's policy file is unchanged
    objstore.write_text(policy, json.dumps({
        "producer": "weaver simulate",
        "size_threshold_bytes": cfg.size_threshold_bytes,
        "write_threshold_per_s": cfg.write_threshold_per_s,
        "bucket": "1h",
        "simulation": meta,
        "end": cfg.end.isoformat(),
    }, indent=2, default=list), storage.options(policy))


def _same(uri: str, name: str, t: pa.Table) -> bool:
    try:
        return storage.read(uri, name).equals(t)
    except Exception:  # noqa: BLE001 - unreadable means rewrite
        return False
