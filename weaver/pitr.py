"""Point-in-time restore (DESIGN §4.1): nearest base snapshot(s) plus replay of the change-log tail.

``restore(P, T)`` is the fold of every change with ``ts <= T`` whose key lies in P's range
``[key_lo, key_hi)``, for any P of the lineage (active or retired, before or after its creation).
Replay works by KEY RANGE, never by ``partition_id``, so lineage needs no special case: a change
written to a parent before a split and one written to a child after it are both simply changes
on a key of the range.

The base is chosen by :func:`plan_restore` from the snapshot catalog:

* the nearest snapshot (``as_of_seq <= seq_at(T)``) of P itself or of an ancestor (its range
  is a superset: rows are filtered to P's range), or
* for a retired P restored after its split, a cover of P's range by its descendants' snapshots
  (each piece replays its own tail from its own ``as_of_seq``), or
* nothing: the tail is the whole log up to T (T before the first snapshot).

The plan with the latest *oldest* base wins (that bounds the tail to replay). Single-partition
restores go through delta-rs + Arrow only (no JVM); :func:`restore_table` uses Spark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from weaver import storage
from weaver.changelog import Lineage, Partition, validate_changes
from weaver.errors import (
    DuplicateSeqError,
    InvalidParameterError,
    InvalidTimepointError,
    SeqGapError,
)
from weaver.replay import empty_state, filter_range
from weaver.storage import STATE_SCHEMA

#: Table property on `changelog` recording the first seq vacuum kept (see weaver.retention).
LOG_START_PROPERTY = "weaver.logStartSeq"


@dataclass
class RestoreResult:
    """One partition's state at an instant, and how it was obtained."""

    partition_id: str
    at: datetime
    as_of_seq: int
    table: pa.Table  # key, value sorted by key
    source_snapshot_id: str | None
    changes_replayed: int
    elapsed_ms: float


@dataclass(frozen=True)
class Piece:
    """A sub-range of the restored range with its own base (a snapshot, or empty at seq 0)."""

    key_lo: str
    key_hi: str | None
    snapshot_id: str | None
    snapshot_partition_id: str | None
    base_seq: int


# --- time and sequence ---------------------------------------------------------------------------
def check_at(at: datetime) -> datetime:
    """A timezone-aware instant in UTC, or InvalidTimepointError."""
    if not isinstance(at, datetime):
        raise InvalidTimepointError(f"timepoint {at!r} is not a datetime; pass e.g. 2026-01-02T12:00:00Z")
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise InvalidTimepointError(
            f"timepoint {at.isoformat()} has no timezone; pass an aware datetime (e.g. tzinfo=timezone.utc)")
    return at.astimezone(timezone.utc)


class ChangeLog:
    """One opened version of the `changelog` table, read with file pruning on Delta statistics.

    A restore touches a short seq range of a long log: per-file min/max of `seq` and `ts` in the
    Delta log select the few files that can hold it, so the cost follows the tail, not the log.
    Files without statistics are always read.
    """

    def __init__(self, settings):
        self.uri = storage.uri_for(settings, storage.CHANGELOG)
        self.dt = storage.open_table(self.uri, storage.CHANGELOG)
        # Projected reads bypass storage.read: check the contract on the schema first.
        schema = pa.schema(self.dt.schema().to_arrow())
        storage.conform(schema.empty_table(), storage.CHANGELOG, where=f" at {self.uri}")
        self.start = _int_or_none(self.dt.metadata().configuration.get(LOG_START_PROPERTY))

    @property
    def ds(self):
        """The whole table as a pyarrow dataset (every file)."""
        return self.dt.to_pyarrow_dataset()

    def pruned(self, filters: list):
        """A dataset of only the files whose Delta min/max statistics may satisfy `filters`
        (tuple filters, pruned in delta-rs; files without statistics are kept)."""
        return self.dt.to_pyarrow_dataset(file_pruning_predicate=filters)

    def seq_range(self, after_seq: int, upto_seq: int):
        return self.pruned([("seq", ">", int(after_seq)), ("seq", "<=", int(upto_seq))])

    def seq_at(self, at: datetime) -> int:
        """Largest seq with ts <= `at` (0 when none); files wholly before `at` answer from stats."""
        adds = pa.table(self.dt.get_add_actions(flatten=True))  # arro3 -> pyarrow
        best = 0
        if {"max.ts", "max.seq"} <= set(adds.column_names) and adds.num_rows:
            # Writers may truncate timestamp stats to milliseconds (Delta Spark does): trust a
            # file to lie wholly before `at` only with a millisecond to spare; the rest is read.
            edge = pa.scalar(at - timedelta(milliseconds=1), storage.TS)
            whole = adds.filter(pc.fill_null(pc.less_equal(adds.column("max.ts"), edge), False))
            if whole.num_rows:
                best = int(pc.max(whole.column("max.seq")).as_py() or 0)
        ds = self.pruned([("seq", ">", best), ("ts", "<=", at)])
        t = ds.to_table(columns=["seq"], filter=(pc.field("seq") > best) & (pc.field("ts") <= pa.scalar(at, storage.TS)))
        if t.num_rows:
            best = max(best, int(pc.max(t.column("seq")).as_py()))
        return best

    def read(self, after_seq: int, upto_seq: int, key_lo: str | None = None, key_hi: str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """Changes with after_seq < seq <= upto_seq (and key in [key_lo, key_hi)), sorted by seq."""
        expr = (pc.field("seq") > after_seq) & (pc.field("seq") <= upto_seq)
        if key_lo:
            expr = expr & (pc.field("key") >= key_lo)
        if key_hi is not None:
            expr = expr & (pc.field("key") < key_hi)
        ds = self.seq_range(after_seq, upto_seq)
        try:
            t = ds.to_table(filter=expr, columns=columns)
        except pa.ArrowNotImplementedError:
            # Files rewritten by delta-rs MERGE/DELETE carry string_view, which pyarrow filters
            # cannot compare: read those files whole and filter in memory.
            t = ds.to_table(columns=columns)
            t = t.filter(expr)
        if columns is None:
            t = storage.conform(t, storage.CHANGELOG, where=f" at {self.uri}")
        if t.num_rows > 1 and not _increasing(t.column("seq")):
            t = t.take(pc.sort_indices(t, sort_keys=[("seq", "ascending")]))
        return t

    def check_start(self, after_seq: int) -> None:
        if self.start is not None and after_seq + 1 < self.start:
            raise InvalidTimepointError(
                f"this needs changes from seq {after_seq + 1}, but vacuum removed the change log before seq "
                f"{self.start} (outside the recovery window); pick a later timepoint")

    def check_contiguous(self, after_seq: int, upto_seq: int) -> None:
        """Every seq in (after_seq, upto_seq] exactly once (reads only `seq`), else a named error."""
        if upto_seq <= after_seq:
            return
        self.check_start(after_seq)
        col = self.read(after_seq, upto_seq, columns=["seq"]).column("seq")  # sorted by read()
        n = len(col)
        if after_seq == 0 and self.start is None and n:
            # A log never vacuumed may start at any seq (a user's LSN); it begins where it begins.
            after_seq = int(col[0].as_py()) - 1
        # n values strictly increasing inside (after_seq, upto_seq], n == its length: each seq once.
        if n == upto_seq - after_seq and (n == 0 or _increasing(col, strict=True)):
            return
        validate_changes(self.read(after_seq, upto_seq), expected_first_seq=after_seq + 1)
        # validate_changes found no gap inside the segment: the missing seqs are at its end.
        last = int(pc.max(col).as_py()) if n else after_seq
        raise SeqGapError(f"change log lacks seq {last + 1}..{upto_seq}; re-extract it before restoring",
                          seq=last + 1, partition_id=None)

    def ts_of(self, seq: int) -> datetime:
        t = self.read(seq - 1, seq, columns=["seq", "ts"])
        return t.column("ts")[0].as_py()


def _increasing(col: pa.ChunkedArray | pa.Array, strict: bool = False) -> bool:
    """Whether `col` is sorted ascending (strictly: no repeats) - a cheap check that saves a sort."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n < 2:
        return True
    cmp = pc.greater if strict else pc.greater_equal
    return bool(pc.all(cmp(arr.slice(1), arr.slice(0, n - 1))).as_py())


def fold(base: pa.Table | None, tail: pa.Table) -> pa.Table:
    """`base` (key, value) with `tail` (seq-ordered changes) applied; sorted by key.

    Same result as weaver.replay.apply_changes; picks each key's last change with a hash
    aggregation instead of a (key, seq) sort, which matters for million-change tails.
    """
    if base is None:
        base = empty_state()
    else:
        base = base.select(["key", "value"]).cast(STATE_SCHEMA)
    if tail.num_rows:
        idx = pa.table({"key": tail.column("key"), "_i": pa.array(range(tail.num_rows), pa.int64())})
        last_i = idx.group_by("key", use_threads=False).aggregate([("_i", "max")]).column("_i_max")
        last = tail.select(["key", "op", "value"]).take(last_i)
        kept = base.filter(pc.invert(pc.is_in(base.column("key"), value_set=last.column("key").combine_chunks())))
        puts = last.filter(pc.equal(last.column("op"), "PUT")).select(["key", "value"]).cast(STATE_SCHEMA)
        base = pa.concat_tables([kept, puts])
    base = base.combine_chunks()
    if base.num_rows > 1 and not _increasing(base.column("key")):
        base = base.take(pc.sort_indices(base, sort_keys=[("key", "ascending")]))
    return base


def _int_or_none(v) -> int | None:
    return int(v) if v not in (None, "") else None


def _log_dataset(settings):
    return ChangeLog(settings).ds


def seq_at_fast(settings, at: datetime) -> int:
    """Largest seq with ts <= `at` (0 when none): like changelog.seq_at, pruned by file statistics."""
    return ChangeLog(settings).seq_at(at)


def resolve_seq(settings, at: datetime, log: ChangeLog | None = None) -> int:
    """seq_at(`at`), refusing an instant before the part of the change log vacuum retained."""
    log = log or ChangeLog(settings)
    seq_t = log.seq_at(at)
    if log.start is not None and seq_t < log.start:
        raise InvalidTimepointError(
            f"{at.isoformat()} is before the retained change log (vacuum kept seq >= {log.start}, i.e. the "
            "recovery window); pick a later timepoint")
    return seq_t


def log_start_seq(settings) -> int | None:
    """First seq vacuum kept in the change log (None if vacuum never cut a prefix)."""
    dt = storage.open_table(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG)
    return _int_or_none(dt.metadata().configuration.get(LOG_START_PROPERTY))


def check_contiguous(settings, after_seq: int, upto_seq: int) -> None:
    """Check the log holds every seq in (after_seq, upto_seq] exactly once (reads only `seq`).

    On failure, re-reads that segment whole and lets validate_changes name the offending seq and
    partition; a prefix removed by vacuum is reported as a timepoint outside the recovery window.
    """
    ChangeLog(settings).check_contiguous(after_seq, upto_seq)


def validate_segment(settings, lineage: Lineage | None, after_seq: int, upto_seq: int,
                     log: ChangeLog | None = None) -> int:
    """Validate the change-log segment (after_seq, upto_seq] a write will depend on; return its size.

    Raises the named errors of validate_changes (gap, duplicate, ts order, op, key range, schema)
    before anything is written; a segment vacuum already cut is an InvalidTimepointError.
    """
    if upto_seq <= after_seq:
        return 0
    log = log or ChangeLog(settings)
    log.check_start(after_seq)
    seg = log.read(after_seq, upto_seq)
    # A log never vacuumed may start at any seq; otherwise the segment must start right after the base.
    expected = after_seq + 1 if (after_seq > 0 or log.start is not None) else None
    n = validate_changes(seg, lineage, expected_first_seq=expected)
    if n == 0 or int(pc.max(seg.column("seq")).as_py()) != upto_seq:
        raise SeqGapError(f"change log lacks seq {upto_seq} although a change was found at it; re-extract it",
                          seq=upto_seq, partition_id=None)
    return n


# --- snapshot catalog and planning ---------------------------------------------------------------
def read_catalog(settings) -> pa.Table:
    """The whole snapshot catalog (small: one row per snapshot), empty if none was taken."""
    return storage.read(storage.uri_for(settings, storage.SNAPSHOT_CATALOG), storage.SNAPSHOT_CATALOG,
                        missing_ok=True)


def catalog_index(catalog: pa.Table) -> dict[str, list[tuple[int, str]]]:
    """partition_id -> [(as_of_seq, snapshot_id)] sorted by as_of_seq."""
    idx: dict[str, list[tuple[int, str]]] = {}
    if catalog.num_rows:
        for pid, s, sid in zip(catalog.column("partition_id").to_pylist(), catalog.column("as_of_seq").to_pylist(),
                               catalog.column("snapshot_id").to_pylist()):
            idx.setdefault(pid, []).append((int(s), sid))
    for v in idx.values():
        v.sort()
    return idx


def _own(idx: dict, pid: str, upto_seq: int) -> tuple[int, str] | None:
    best = None
    for s, sid in idx.get(pid, ()):
        if s <= upto_seq:
            best = (s, sid)
        else:
            break
    return best


def _score(pieces: list[Piece]) -> tuple[int, int]:
    # The oldest base bounds the tail every piece shares; fewer pieces read fewer snapshots.
    return (min(p.base_seq for p in pieces), -len(pieces))


def plan_restore(catalog: pa.Table | dict, lineage: Lineage, partition_id: str, upto_seq: int) -> list[Piece]:
    """Choose base snapshots for restoring `partition_id` at `upto_seq`; pieces sorted by key.

    Candidates: the nearest snapshot of the partition or an ancestor (one piece, P's range), or a
    cover of P's range by descendants' snapshots (a retired P after its split), or empty (seq 0).
    """
    idx = catalog if isinstance(catalog, dict) else catalog_index(catalog)
    p = lineage.get(partition_id)
    up: list[Piece] = [Piece(p.key_lo, p.key_hi, None, None, 0)]
    for a in [p, *lineage.ancestors(partition_id)]:
        own = _own(idx, a.partition_id, upto_seq)
        if own and own[0] > up[0].base_seq:
            up = [Piece(p.key_lo, p.key_hi, own[1], a.partition_id, own[0])]
    best = up
    down = _down_children(idx, lineage, p, upto_seq)
    if down is not None and _score(down) > _score(best):
        best = down
    return best


def _down(idx: dict, lineage: Lineage, x: Partition, upto_seq: int) -> list[Piece]:
    own = _own(idx, x.partition_id, upto_seq)
    best = [Piece(x.key_lo, x.key_hi, own[1], x.partition_id, own[0])] if own else \
        [Piece(x.key_lo, x.key_hi, None, None, 0)]
    kids = _down_children(idx, lineage, x, upto_seq)
    if kids is not None and _score(kids) > _score(best):
        best = kids
    return best


def _down_children(idx: dict, lineage: Lineage, x: Partition, upto_seq: int) -> list[Piece] | None:
    kids = [lineage.by_id[c] for c in lineage.children.get(x.partition_id, [])]
    if not kids or any(k.created_seq > upto_seq for k in kids):
        return None  # no split of x yet at upto_seq: no descendant snapshot can qualify
    out: list[Piece] = []
    for k in kids:
        out.extend(_down(idx, lineage, k, upto_seq))
    return sorted(out, key=lambda pc_: pc_.key_lo)


def read_snapshot(settings, snapshot_id: str, dt=None) -> pa.Table:
    """Rows (key, value) of one base snapshot; reads only the files of that snapshot."""
    uri = storage.uri_for(settings, storage.SNAPSHOTS)
    dt = dt or storage.open_table(uri, storage.SNAPSHOTS)
    if "snapshot_id" in dt.metadata().partition_columns:
        # Partition pruning is exact here: no row filter, no partition column materialised.
        ds = dt.to_pyarrow_dataset(file_pruning_predicate=[("snapshot_id", "=", snapshot_id)])
        t = ds.to_table(columns=["key", "value"])
    else:  # a snapshots table laid out otherwise (another producer): filter rows
        t = storage.read(uri, storage.SNAPSHOTS, filters=[("snapshot_id", "=", snapshot_id)], columns=["key", "value"])
    return t.cast(STATE_SCHEMA) if t.schema != STATE_SCHEMA else t


def _read_snapshot_rows(settings, pieces: Iterable[Piece]) -> dict[str, pa.Table]:
    ids = sorted({p.snapshot_id for p in pieces if p.snapshot_id})
    if not ids:
        return {}
    dt = storage.open_table(storage.uri_for(settings, storage.SNAPSHOTS), storage.SNAPSHOTS)
    return {sid: read_snapshot(settings, sid, dt) for sid in ids}


def _intersect(lo: str, hi: str | None, key_lo: str, key_hi: str | None) -> tuple[str, str | None]:
    new_lo = max(lo, key_lo)
    if hi is None:
        return new_lo, key_hi
    if key_hi is None:
        return new_lo, hi
    return new_lo, min(hi, key_hi)


# --- restore -------------------------------------------------------------------------------------
def restore_partition(settings, partition_id: str, at: datetime, *, lineage: Lineage | None = None) -> RestoreResult:
    """State (key, value sorted by key) of `partition_id`'s key range at instant `at`.

    Nearest base snapshot(s) <= seq_at(at) plus replay of the change-log tail, through delta-rs
    and Arrow only. Validates the tail before returning (named errors: see validate_changes).
    Raises UnknownPartitionError, InvalidTimepointError (naive or outside the recovery window).
    """
    t0 = time.perf_counter()
    at = check_at(at)
    lineage = lineage if lineage is not None else Lineage.load(settings)
    part = lineage.get(partition_id)
    log = ChangeLog(settings)
    seq_t = resolve_seq(settings, at, log)
    pieces = plan_restore(read_catalog(settings), lineage, partition_id, seq_t)
    table, replayed = _materialize(settings, log, lineage, part.key_lo, part.key_hi, pieces, seq_t)
    ids = [p.snapshot_id for p in pieces if p.snapshot_id]
    return RestoreResult(partition_id=partition_id, at=at, as_of_seq=seq_t, table=table,
                         source_snapshot_id="+".join(ids) if ids else None, changes_replayed=replayed,
                         elapsed_ms=(time.perf_counter() - t0) * 1000.0)


def _materialize(settings, log: ChangeLog, lineage: Lineage, key_lo: str, key_hi: str | None,
                 pieces: list[Piece], seq_t: int) -> tuple[pa.Table, int]:
    base_seq = min(p.base_seq for p in pieces)
    if seq_t > base_seq:
        log.check_contiguous(base_seq, seq_t)
        tail = log.read(base_seq, seq_t, key_lo or None, key_hi)
        validate_changes(tail, lineage, check_gaps=False)
    else:
        tail = storage.empty(storage.CHANGELOG)
    snaps = _read_snapshot_rows(settings, pieces)
    parts: list[pa.Table] = []
    replayed = 0
    whole = len(pieces) == 1
    for piece in pieces:
        lo, hi = _intersect(piece.key_lo, piece.key_hi, key_lo, key_hi)
        # An ancestor's snapshot is cut to this range; a piece's own range needs no filter.
        base = filter_range(snaps[piece.snapshot_id], lo or None, hi) if piece.snapshot_id else None
        c = tail if whole else filter_range(tail, lo or None, hi)
        if piece.base_seq > base_seq:
            c = c.filter(pc.greater(c.column("seq"), piece.base_seq))
        replayed += c.num_rows
        parts.append(fold(base, c))
    table = pa.concat_tables(parts).combine_chunks() if parts else empty_state()
    return table, replayed


def write_restore(result: RestoreResult, out: str) -> str:
    """Write a restored state as one Parquet file (columns key, value); returns the path."""
    import pyarrow.parquet as pq
    from pathlib import Path

    if not out.endswith(".parquet"):
        raise InvalidParameterError(f"--out {out!r} must name a .parquet file")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(result.table, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return str(path)


def restore_table(spark, settings, at: datetime, out_uri: str) -> dict:
    """Restore the whole table at `at` with Spark, written as a new Delta table at `out_uri`.

    Every partition alive at seq_at(at) is planned on its own (bases taken at different times)
    and replayed to the same seq, so the result is one common point in time. Columns:
    partition_id, key, value. Source tables are only read; rerunning overwrites `out_uri` with
    the same rows.
    """
    from weaver.snapshots import materialize_with_spark

    t0 = time.perf_counter()
    at = check_at(at)
    _refuse_lake_target(settings, out_uri)
    lineage = Lineage.load(settings)
    log = ChangeLog(settings)
    seq_t = resolve_seq(settings, at, log)
    catalog = read_catalog(settings)
    idx = catalog_index(catalog)
    targets = lineage.active(seq_t) if seq_t > 0 else [p for p in lineage if p.created_seq == 0]
    plans = {p.partition_id: plan_restore(idx, lineage, p.partition_id, seq_t) for p in targets}
    base = min((pc_.base_seq for ps in plans.values() for pc_ in ps), default=0)
    validate_segment(settings, lineage, base, seq_t, log)
    df = materialize_with_spark(spark, settings, lineage, plans, seq_t)
    (df.select("partition_id", "key", "value").write.format("delta").mode("overwrite")
       .option("overwriteSchema", "true").save(out_uri))
    adds = pa.table(storage.open_table(out_uri).get_add_actions(flatten=True)).column("num_records").to_pylist()
    rows = int(sum(n or 0 for n in adds))  # from the commit's own statistics: no second scan
    bases = sorted({pc_.base_seq for ps in plans.values() for pc_ in ps})
    return {"out": out_uri, "at": at.isoformat(), "as_of_seq": seq_t, "partitions": len(targets), "rows": rows,
            "base_seqs": bases, "sources": sorted({pc_.snapshot_id for ps in plans.values() for pc_ in ps
                                                   if pc_.snapshot_id}),
            "elapsed_ms": (time.perf_counter() - t0) * 1000.0}


def _refuse_lake_target(settings, out_uri: str) -> None:
    for name in storage.SCHEMAS:
        if storage.uri_for(settings, name).rstrip("/") == _norm(out_uri):
            raise InvalidParameterError(
                f"--out {out_uri!r} is the lake's own {name!r} table; restore into a new location")


def _norm(uri: str) -> str:
    if "://" in uri:
        return uri.rstrip("/")
    from pathlib import Path

    return str(Path(uri).resolve())
