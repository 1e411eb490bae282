"""Partition metrics per time bucket (DESIGN §3 `partition_metrics`), folded from the change log.

For every partition alive during a bucket ``[bucket_start, bucket_start + settings.bucket)``:

- ``size_bytes``  - key bytes (UTF-8) + value bytes of the live items in the partition's key
  range at the bucket's end (or at the partition's retirement, when it retires inside the bucket);
- ``item_count``  - number of those live items;
- ``writes``      - changes the partition owns (its ``partition_id``) with ``ts`` in the bucket;
- ``write_bytes`` - key bytes + value bytes of those changes (a DELETE counts its key bytes);
- ``reads``       - rows of the optional ``access_log`` table in the bucket (0 without one).

Buckets sit on a UTC grid anchored at the Unix epoch, so every run agrees on them. Only complete
buckets are computed (``bucket_start + bucket <= end``): a bucket is never written from partial
data, and a bucket's values depend only on changes with ``ts`` before its end, which is what
makes metrics safe to use for a prediction at any later instant (no look-ahead, DESIGN §4.4).

A run for ``[start, end)`` continues from the state at ``start``: the live-key state is re-derived
by folding a narrow projection of the log (seq, ts, key, op, value_bytes; never the values) up
to ``start``, then advanced bucket by bucket with numpy over a sorted key universe. Rows are
MERGEd on ``(partition_id, bucket_start)``, so reruns of an interval write the same rows once.

Incremental cost: a run that covered every bucket up to ``B = floor(end)`` also stores the fold's
state at ``B`` (the live keys and their item bytes, one row per active partition) in the
`metrics_state` table - a checkpoint. The next run starts from the latest checkpoint at or before
the first bucket it needs and reads only the change log after the checkpoint's seq
(:func:`increment_log`), so its cost follows the increment, not the history. A checkpoint past the
run's start (a backfill, a backtest at a past instant) is never used: an earlier one is, or the
run folds from the log's start. A checkpoint is also refused when the log changed under it (a
change after its seq with ts before its instant, or vacuum removed changes after its seq): the
run then folds from scratch and replaces the checkpoints the late change invalidated.
"""

from __future__ import annotations

import os
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401  (pa.ipc)
import pyarrow.parquet as pq

from weaver.core import filecommit, objstore, storage
from weaver.core.ids import metrics_state_id
from weaver.core.time import bucket_floor, bucket_us, from_us, parse_timepoint, to_us
from weaver.log.changelog import ChangeLog, log_start_seq, validate_segment
from weaver.log.lineage import Lineage, Partition
from weaver.pitr import restore_partition
from weaver.replay.sizes import KeyState, LogView
from weaver.core.retry import retry_commit
from weaver.core.scratch import scratch
from weaver.core.errors import CorruptTableError, InvalidParameterError, NonMonotonicTimestampError, SchemaMismatchError


def _column(t: pa.Table, name: str, typ: pa.DataType) -> pa.ChunkedArray:
    if name not in t.column_names:
        raise SchemaMismatchError(f"table 'changelog' lacks column {name!r}; found {t.column_names}")
    col = t.column(name)
    if col.type.equals(typ):
        return col
    try:
        if pa.types.is_timestamp(typ) and (not pa.types.is_timestamp(col.type) or col.type.tz is None):
            raise pa.ArrowInvalid("not a timezone-aware timestamp")
        return pc.cast(col, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatchError(f"table 'changelog': column {name!r} is {col.type}, the contract says {typ}") from exc


def read_log(settings, *, before: datetime | None = None, upto: datetime | None = None,
             ranges: Sequence[tuple[str, str | None]] | None = None) -> LogView:
    """The narrow change log with ``ts < before`` and/or ``ts <= upto`` (both optional), and with
    `ranges` only the changes (and base items) whose key lies in one of those key ranges.

    On a log whose prefix `weaver vacuum` removed, the view starts from a base: the state at the
    first retained change's instant, restored from base snapshots (weaver.pitr) and cached under
    ``<lake>/_weaver/metrics_base/``; changes up to the base's seq are left out.
    """
    uri = storage.uri_for(settings, storage.CHANGELOG)
    dt = storage.open_table(uri, storage.CHANGELOG)
    base = _vacuum_base(settings)
    expr = None if base is None else pc.field("seq") > base[2]
    if before is not None:
        e = pc.field("ts") < pa.scalar(before, storage.TS)
        expr = e if expr is None else expr & e
    if upto is not None:
        e = pc.field("ts") <= pa.scalar(upto, storage.TS)
        expr = e if expr is None else expr & e
    if ranges is not None:
        return _view_of(_ranged_read(storage.dataset(dt), expr, ranges, uri), base=_clip_base(base, ranges))
    return _narrow(storage.dataset(dt), expr, uri, base=base)


def _clip_base(base, ranges: Sequence[tuple[str, str | None]]):
    """A view base (keys, item bytes, seq, ts) cut to the keys in `ranges`."""
    if base is None:
        return None
    keys = base[0]
    mask = np.zeros(len(keys), dtype=bool)
    for lo, hi in ranges:
        m = pc.greater_equal(keys, lo or "")
        if hi is not None:
            m = pc.and_(m, pc.less(keys, hi))
        mask |= pc.fill_null(m, False).to_numpy(zero_copy_only=False)
    return (keys.filter(pa.array(mask)), np.asarray(base[1])[mask], base[2], base[3])


def _narrow(ds, expr, uri: str, base=None) -> LogView:
    """The narrow LogView of the rows of `ds` matching `expr` (on top of `base` when given)."""
    return _view_of(_narrow_table(ds, expr, uri), base=base)


def _narrow_table(ds, expr, uri: str) -> pa.Table:
    """The narrow columns (seq, ts, partition_id, key, op, value_bytes) of the rows of `ds`
    matching `expr`, value_bytes measured from the values where the log leaves it empty."""
    cols = ["seq", "ts", "partition_id", "key", "op", "value_bytes"]
    try:
        try:
            t = ds.to_table(columns=[c for c in cols if c in ds.schema.names], filter=expr)
        except pa.ArrowNotImplementedError:
            # Files rewritten by delta-rs MERGE/DELETE carry string_view, which pyarrow filters
            # cannot compare (a key-range filter): read those whole and filter in memory.
            t = ds.to_table(columns=[c for c in cols if c in ds.schema.names])
            t = t.filter(expr) if expr is not None else t
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"change log at {uri} cannot be read: {exc}") from exc
    vb = _column(t, "value_bytes", pa.int64()) if "value_bytes" in t.column_names else None
    if vb is None or vb.null_count:
        # A user's log may leave value_bytes empty: measure the values themselves, only then.
        vt = ds.to_table(columns=["seq", "value"], filter=expr)
        vt = vt.take(pc.sort_indices(vt, [("seq", "ascending")]))
        t = t.take(pc.sort_indices(t, [("seq", "ascending")]))
        measured = pc.cast(pc.binary_length(vt.column("value")), pa.int64())
        vb = measured if vb is None else pc.coalesce(_column(t, "value_bytes", pa.int64()), measured)
    t = t.drop_columns(["value_bytes"]) if "value_bytes" in t.column_names else t
    return t.append_column("value_bytes", vb)


def _view_of(t: pa.Table, base=None) -> LogView:
    return _view(_column(t, "seq", pa.int64()), _column(t, "ts", storage.TS), _column(t, "partition_id", pa.string()),
                 _column(t, "key", pa.string()), _column(t, "op", pa.string()), t.column("value_bytes"), base=base)


def _vacuum_base(settings) -> tuple[pa.Array, np.ndarray, int, int] | None:
    """(keys, item bytes, base seq, base ts us) of a vacuumed log's retained start, else None."""
    start = log_start_seq(settings)
    if not start or start <= 1:
        return None
    uri = storage.uri_for(settings, storage.CHANGELOG)
    first = storage.dataset(storage.open_table(uri, storage.CHANGELOG)).to_table(
        columns=["ts"], filter=pc.field("seq") == start)
    if first.num_rows == 0:
        return None
    at = first.column("ts")[0].as_py()
    base_seq = ChangeLog(settings).seq_at(at)
    cache = objstore.lake_file(settings.lake, "metrics_base", f"base-{base_seq}.parquet")
    t = objstore.read_parquet(cache, storage.options(cache), missing_ok=True)
    if t is None:
        lineage = Lineage.load(settings)
        parts = [restore_partition(settings, p.partition_id, at, lineage=lineage).table
                 for p in lineage.active(at_seq=base_seq)]
        t = pa.concat_tables(parts) if parts else storage.STATE_SCHEMA.empty_table()
        size = pc.add(pc.binary_length(pc.cast(t.column("key"), pa.binary())), pc.binary_length(t.column("value")))
        t = pa.table({"key": t.column("key"), "item_bytes": pc.cast(size, pa.int64())})
        t = t.take(pc.sort_indices(t, [("key", "ascending")]))
        storage.write_parquet_atomic(cache, t)
    return t.column("key").combine_chunks(), t.column("item_bytes").to_numpy(), base_seq, to_us(at)


def _view(seq, ts, pid, key, op, vb, base=None) -> LogView:
    seq_np = seq.to_numpy()
    order = np.argsort(seq_np, kind="stable")
    seq_np = seq_np[order]
    ts_np = pc.cast(ts, pa.int64()).to_numpy()[order]
    if ts_np.shape[0] > 1 and np.any(np.diff(ts_np) < 0):
        i = int(np.argmax(np.diff(ts_np) < 0)) + 1
        raise NonMonotonicTimestampError(
            f"ts goes backwards at seq {int(seq_np[i])}; the change log must be ordered by seq and ts",
            seq=int(seq_np[i]))
    key_c = key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key
    universe = pc.unique(key_c if base is None else pa.concat_arrays([key_c.cast(pa.string()), base[0].cast(pa.string())]))
    universe = universe.take(pc.sort_indices(universe))
    kidx = pc.index_in(key_c, value_set=universe).to_numpy(zero_copy_only=False).astype(np.int64)[order]
    is_put = pc.equal(op, "PUT").to_numpy(zero_copy_only=False).astype(bool)[order]
    kb = pc.cast(pc.binary_length(pc.cast(key_c, pa.binary())), pa.int64()).to_numpy()[order]
    vb_np = pc.fill_null(vb, 0).to_numpy()[order].astype(np.int64)
    item = np.where(is_put, kb + vb_np, kb).astype(np.int64)
    view = LogView(seq_np, ts_np, pid.to_numpy()[order] if hasattr(pid, "to_numpy") else np.asarray(pid)[order],
                   kidx, is_put, item, kb.astype(np.int64), universe.to_numpy(zero_copy_only=False))
    if base is not None:
        view.base_idx = pc.index_in(base[0], value_set=universe).to_numpy(zero_copy_only=False).astype(np.int64)
        view.base_bytes, view.base_seq, view.base_ts = np.asarray(base[1], np.int64), int(base[2]), int(base[3])
    return view


# --- metric computation --------------------------------------------------------------------------
def _alive(p: Partition, bs: datetime, be: datetime) -> bool:
    return p.created_ts < be and (p.retired_ts is None or p.retired_ts > bs) and (
        p.retired_ts is None or p.retired_ts > p.created_ts)


def compute_metrics(log: LogView, lineage: Iterable[Partition], *, start: datetime, end: datetime, bucket: timedelta,
                    access: pa.Table | None = None) -> pa.Table:
    """Metric rows of the complete buckets with start in [floor(start), end) (no I/O)."""
    bu = bucket_us(bucket)
    b_first = to_us(start) // bu
    if log.base_ts is not None:  # a vacuumed log measures nothing before its base
        b_first = max(b_first, log.first_bucket(bu) // bu)
    b_stop = to_us(end) // bu  # bucket b is complete iff (b + 1) * bu <= end
    rows: dict[str, list] = {f.name: [] for f in storage.SCHEMAS[storage.PARTITION_METRICS]}
    if b_stop <= b_first:
        return storage.empty(storage.PARTITION_METRICS)
    parts = sorted(lineage, key=lambda p: p.key_lo)
    bounds = {p.partition_id: (log.key_index(p.key_lo), log.key_index(p.key_hi, upper=True)) for p in parts}
    state = KeyState(log)
    state.advance(log.pos_before_ts(b_first * bu))
    writes = _group_counts(log, log.pos_before_ts(b_first * bu), log.pos_before_ts(b_stop * bu), bu)
    reads = _group_reads(access, bu) if access is not None else {}
    for b in range(b_first, b_stop):
        bs, be = from_us(b * bu), from_us((b + 1) * bu)
        # A partition that owns a change in the bucket is in it, whatever the lineage's times say
        # (every extracted change is accounted for in exactly one metrics row).
        alive = [p for p in parts if _alive(p, bs, be) or (b, p.partition_id) in writes]
        if not alive:
            state.advance(log.pos_before_ts((b + 1) * bu))
            continue
        end_pos = log.pos_before_ts((b + 1) * bu)
        # A partition retiring inside the bucket is measured at its retirement (seq cut).
        cuts: dict[int, list[Partition]] = {}
        for p in alive:
            cut = end_pos
            if p.retired_ts is not None and p.retired_ts < be and p.retired_seq is not None:
                cut = min(end_pos, max(state.pos, log.pos_upto_seq(p.retired_seq)))
            cuts.setdefault(cut, []).append(p)
        for cut in sorted(cuts):
            state.advance(cut)
            for p in cuts[cut]:
                size, items = state.totals(*bounds[p.partition_id])
                w, wb = writes.get((b, p.partition_id), (0, 0))
                rows["partition_id"].append(p.partition_id)
                rows["bucket_start"].append(bs)
                rows["size_bytes"].append(size)
                rows["item_count"].append(items)
                rows["writes"].append(w)
                rows["write_bytes"].append(wb)
                rows["reads"].append(reads.get((b, p.partition_id), 0))
        state.advance(end_pos)
    t = pa.table(rows, schema=storage.SCHEMAS[storage.PARTITION_METRICS])
    return t.take(pc.sort_indices(t, [("bucket_start", "ascending"), ("partition_id", "ascending")]))


def _group_counts(log: LogView, lo: int, hi: int, bu: int) -> dict[tuple[int, str], tuple[int, int]]:
    if hi <= lo:
        return {}
    t = pa.table({"b": log.ts[lo:hi] // bu, "pid": log.pid[lo:hi], "wb": log.item_bytes[lo:hi]})
    g = t.group_by(["b", "pid"]).aggregate([("wb", "count"), ("wb", "sum")])
    return {(b, p): (int(c), int(s)) for b, p, c, s in zip(g.column("b").to_pylist(), g.column("pid").to_pylist(),
                                                         g.column("wb_count").to_pylist(), g.column("wb_sum").to_pylist())}


def _group_reads(access: pa.Table, bu: int) -> dict[tuple[int, str], int]:
    if access.num_rows == 0:
        return {}
    b = pc.divide(pc.cast(pc.cast(access.column("ts"), storage.TS), pa.int64()), bu)
    t = pa.table({"b": b, "pid": access.column("partition_id")})
    g = t.group_by(["b", "pid"]).aggregate([("pid", "count")])
    return {(int(b), p): int(c) for b, p, c in zip(g.column("b").to_pylist(), g.column("pid").to_pylist(),
                                                   g.column("pid_count").to_pylist())}


def range_history(log: LogView, ranges: Sequence[tuple[str, str | None]], *, start: datetime, end: datetime,
                  bucket: timedelta) -> list[dict[str, np.ndarray]]:
    """Per key range, what a partition holding exactly that range would have measured per bucket.

    Used to give a young partition the history of its key range from before it was born
    (the keys were in its ancestors then). Returns, per range, arrays ``bucket_start`` (us),
    ``size_bytes``, ``item_count`` and ``writes`` (changes on keys in the range) over the
    complete buckets in [floor(start), end).
    """
    bu = bucket_us(bucket)
    b_first, b_stop = to_us(start) // bu, to_us(end) // bu
    if log.base_ts is not None:
        b_first = max(b_first, log.first_bucket(bu) // bu)
    nb = max(0, b_stop - b_first)
    idx = [(log.key_index(lo), log.key_index(hi, upper=True)) for lo, hi in ranges]
    out = [{"bucket_start": (np.arange(b_first, b_first + nb, dtype=np.int64) * bu),
            "size_bytes": np.zeros(nb, np.int64), "item_count": np.zeros(nb, np.int64),
            "writes": np.zeros(nb, np.int64)} for _ in ranges]
    if nb == 0:
        return out
    state = KeyState(log)
    state.advance(log.pos_before_ts(b_first * bu))
    for j, b in enumerate(range(b_first, b_stop)):
        lo_pos, hi_pos = state.pos, log.pos_before_ts((b + 1) * bu)
        bucket_keys = np.sort(log.kidx[lo_pos:hi_pos])
        state.advance(hi_pos)
        for r, (i0, i1) in enumerate(idx):
            size, items = state.totals(i0, i1)
            out[r]["size_bytes"][j] = size
            out[r]["item_count"][j] = items
            out[r]["writes"][j] = int(np.searchsorted(bucket_keys, i1) - np.searchsorted(bucket_keys, i0))
    return out


def read_access(settings, *, start: datetime, end: datetime) -> pa.Table | None:
    """Access-log rows with ts in [start, end), or None when the lake has no access log."""
    uri = storage.uri_for(settings, storage.ACCESS_LOG)
    if not storage.is_table(uri):
        return None
    return storage.read(uri, storage.ACCESS_LOG, columns=["ts", "partition_id"],
                        filters=[("ts", ">=", pa.scalar(start, storage.TS)), ("ts", "<", pa.scalar(end, storage.TS))])


# --- checkpoints of the fold (incremental runs) --------------------------------------------------
_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Checkpoint:
    """A stored state of the fold: every change with ts < ``as_of_us`` (a bucket boundary) applied."""

    as_of_us: int
    as_of_seq: int
    first_us: int  # the first bucket the log fully knew when the checkpoint was taken


def checkpoints(settings, ds=None) -> list[Checkpoint]:
    """The stored checkpoints, oldest first (none when checkpoints are off or never written)."""
    ds = ds if ds is not None else _state_dataset(settings)
    if ds is None:
        return []
    # Projected: the key lists stay on disk.
    t = ds.to_table(columns=["as_of_ts", "as_of_seq", "log_first_ts"])
    seen = {(int(a), int(q), int(f)) for a, q, f in zip(_us(t.column("as_of_ts")), t.column("as_of_seq").to_pylist(),
                                                        _us(t.column("log_first_ts")))}
    return [Checkpoint(a, q, f) for a, q, f in sorted(seen)]


def _state_dataset(settings):
    uri = storage.uri_for(settings, storage.METRICS_STATE)
    if settings.metrics_checkpoints <= 0 or not storage.is_table(uri):
        return None
    try:
        return storage.dataset(storage.open_table(uri, storage.METRICS_STATE))
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"Delta table {storage.METRICS_STATE} at {uri} cannot be read: {exc}") from exc


def _us(col) -> list[int]:
    return pc.cast(pc.cast(col, storage.TS), pa.int64()).to_pylist()


def increment_log(settings, ck: Checkpoint, *, before: datetime | None = None,
                  upto: datetime | None = None, log: ChangeLog | None = None, state_ds=None,
                  ranges: Sequence[tuple[str, str | None]] | None = None) -> LogView | None:
    """The checkpoint's state plus the change log after its seq (``ts < before`` / ``ts <= upto``;
    with `ranges`, only keys in those key ranges).

    None when the checkpoint no longer describes the log: vacuum removed changes after its seq,
    or a change after its seq has a ts before its instant (it arrived late).
    """
    log = log or ChangeLog(settings)
    if not _fresh(ck, log):
        return None
    filters: list = [("seq", ">", int(ck.as_of_seq))]
    expr = pc.field("seq") > ck.as_of_seq
    if before is not None:
        filters.append(("ts", "<", before))
        expr = expr & (pc.field("ts") < pa.scalar(before, storage.TS))
    if upto is not None:
        filters.append(("ts", "<=", upto))
        expr = expr & (pc.field("ts") <= pa.scalar(upto, storage.TS))
    keys, nbytes = _state_items(state_ds if state_ds is not None else _state_dataset(settings), ck, ranges,
                                uri=storage.uri_for(settings, storage.METRICS_STATE))
    # The state's instant is just before the boundary: the first bucket it fully knows starts there.
    base = (keys, nbytes, ck.as_of_seq, ck.as_of_us - 1)
    if ranges is not None:
        return _view_of(_ranged_read(log.pruned(filters), expr, ranges, log.uri), base=base)
    return _narrow(log.pruned(filters), expr, log.uri, base=base)


def _fresh(ck: Checkpoint, log: ChangeLog) -> bool:
    """Whether the checkpoint still describes the log: vacuum removed no change after its seq,
    and no change after its seq has a ts before its instant (none arrived late)."""
    if log.start is not None and ck.as_of_seq + 1 < log.start:
        return False
    head = log.pruned([("seq", ">", int(ck.as_of_seq)), ("ts", "<", from_us(ck.as_of_us))]).to_table(
        columns=["seq"], filter=(pc.field("seq") > ck.as_of_seq) & (pc.field("ts") < pa.scalar(from_us(ck.as_of_us),
                                                                                               storage.TS)))
    return head.num_rows == 0


def _state_filter(ck: Checkpoint):
    return (pc.field("as_of_ts") == pa.scalar(from_us(ck.as_of_us), storage.TS)) & (pc.field("as_of_seq") == ck.as_of_seq)


#: Checkpoint rows (one per partition) decoded at a time, and per row group of a written checkpoint.
_STATE_ROWS_PER_BATCH = 64
#: Largest checkpoint file written (delta-rs holds a file in memory until it is written out).
_STATE_FILE_BYTES = 32 * 2**20


def _state_items(state_ds, ck: Checkpoint, ranges: Sequence[tuple[str, str | None]] | None = None, *,
                 uri: str = "") -> tuple[pa.Array, np.ndarray]:
    """The checkpoint's live keys and item bytes; with `ranges` only keys in them, read a few
    checkpoint rows at a time (memory follows the ranges), or inside :func:`local_copies` from the
    run's local copy of the checkpoint (time follows the ranges too)."""
    if ranges is None:
        t = state_ds.to_table(columns=["keys", "item_bytes"], filter=_state_filter(ck))
        if not t.num_rows:
            return pa.array([], pa.string()), np.zeros(0, np.int64)
        return (pc.list_flatten(t.column("keys")).combine_chunks().cast(pa.string()),
                np.asarray(pc.list_flatten(t.column("item_bytes")).to_numpy(), np.int64))
    if _LOCAL:
        return _local_state(state_ds, ck, uri).read(ranges)
    keys, nbytes = [], []
    for rb in state_ds.to_batches(columns=["keys", "item_bytes"], filter=_state_filter(ck),
                                  batch_size=_STATE_ROWS_PER_BATCH):
        if rb.num_rows:
            k, b, _, _ = _clip_base((pc.list_flatten(rb.column("keys")).cast(pa.string()),
                                     np.asarray(pc.list_flatten(rb.column("item_bytes")).to_numpy(), np.int64), 0, 0),
                                    ranges)
            keys.append(k)
            nbytes.append(b)
    if not keys:
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    return pa.concat_arrays(keys), np.concatenate(nbytes)


class _LocalState:
    """A checkpoint's key lists in a local Parquet file, one row group per stored row (a
    partition's keys, sorted), so a key-range read decodes only the row groups whose key span
    meets the ranges. Written in one pass over the checkpoint, a few rows at a time."""

    _SCHEMA = pa.schema([("key", pa.string()), ("item_bytes", pa.int64())])

    def __init__(self, state_ds, ck: Checkpoint, path: str):
        self.path = path
        self.spans: list[tuple[str, str]] = []  # (first key, last key) per row group
        with pq.ParquetWriter(self.path, self._SCHEMA) as w:
            for rb in state_ds.to_batches(columns=["keys", "item_bytes"], filter=_state_filter(ck),
                                          batch_size=_STATE_ROWS_PER_BATCH):
                keys, nbytes = rb.column("keys"), rb.column("item_bytes")
                for i in range(rb.num_rows):
                    k = keys[i].values.cast(pa.string())
                    if not len(k):
                        continue
                    w.write_table(pa.table({"key": k, "item_bytes": nbytes[i].values}, schema=self._SCHEMA),
                                  row_group_size=len(k))
                    self.spans.append((pc.min(k).as_py(), pc.max(k).as_py()))

    def read(self, ranges: Sequence[tuple[str, str | None]]) -> tuple[pa.Array, np.ndarray]:
        groups = [g for g, (a, b) in enumerate(self.spans)
                  if any((hi is None or a < hi) and b >= (lo or "") for lo, hi in ranges)]
        if not groups:
            return pa.array([], pa.string()), np.zeros(0, np.int64)
        t = pq.ParquetFile(self.path).read_row_groups(groups)
        keys, nbytes, _, _ = _clip_base((t.column("key").combine_chunks(), t.column("item_bytes").to_numpy(), 0, 0),
                                        ranges)
        return keys, nbytes


class _LocalLog:
    """The narrow change-log rows of one read (a dataset and a filter, no key range) copied to
    local Arrow IPC files, one per key range of the scope's (disjoint, sorted) ranges, in one
    streaming pass: a later read of keys inside one of those ranges maps that range's file only."""

    _SCHEMA = pa.schema([("seq", pa.int64()), ("ts", storage.TS), ("partition_id", pa.string()),
                         ("key", pa.string()), ("op", pa.string()), ("value_bytes", pa.int64())])

    class Unsupported(Exception):
        """The log leaves value_bytes empty: reads measure values, which the copy does not keep."""

    def __init__(self, ds, expr, ranges: list[tuple[str, str | None]], folder: str, uri: str):
        self.ranges = ranges
        self.paths: list[str | None] = [None] * len(ranges)
        if "value_bytes" not in ds.schema.names:
            raise self.Unsupported()
        writers: list = [None] * len(ranges)
        bounds = [lo for lo, _ in ranges[1:]]
        his = pa.array([hi for _, hi in ranges], pa.string())
        try:
            for rb in ds.to_batches(columns=self._SCHEMA.names, filter=expr):
                if not rb.num_rows:
                    continue
                if rb.column("value_bytes").null_count:
                    raise self.Unsupported()
                t = pa.Table.from_batches([rb])
                t = pa.table({f.name: _column(t, f.name, f.type) for f in self._SCHEMA}, schema=self._SCHEMA)
                key = t.column("key").combine_chunks()
                gi = _group_of(key, bounds)
                # inside its group's range: at or above the first range's start, below its own end
                hi = his.take(pa.array(gi))
                inside = pc.and_(pc.greater_equal(key, ranges[0][0] or ""),
                                 pc.or_(pc.is_null(hi), pc.less(key, pc.fill_null(hi, ""))))
                gi = np.where(pc.fill_null(inside, False).to_numpy(zero_copy_only=False), gi, -1)
                order = np.argsort(gi, kind="stable")
                cuts = np.searchsorted(gi[order], np.arange(-1, len(ranges) + 1))
                t = t.take(pa.array(order))
                for g in range(len(ranges)):
                    lo_, hi_ = int(cuts[g + 1]), int(cuts[g + 2])
                    if hi_ <= lo_:
                        continue
                    if writers[g] is None:
                        self.paths[g] = os.path.join(folder, f"range-{g}.arrow")
                        writers[g] = pa.ipc.new_file(self.paths[g], self._SCHEMA)
                    writers[g].write_table(t.slice(lo_, hi_ - lo_))
        except (OSError, pa.ArrowInvalid) as exc:
            raise CorruptTableError(f"change log at {uri} cannot be read: {exc}") from exc
        finally:
            for w in writers:
                if w is not None:
                    w.close()

    def holds(self, ranges: Sequence[tuple[str, str | None]]) -> list[int] | None:
        """The copy's ranges that hold `ranges` (each inside one of them), else None."""
        out = set()
        for lo, hi in ranges:
            for g, (a, b) in enumerate(self.ranges):
                if (lo or "") >= (a or "") and (b is None or (hi is not None and hi <= b)):
                    out.add(g)
                    break
            else:
                return None
        return sorted(out)

    def read(self, groups: list[int], ranges: Sequence[tuple[str, str | None]]) -> pa.Table:
        parts = [pa.ipc.open_file(pa.memory_map(self.paths[g])).read_all() for g in groups if self.paths[g]]
        t = pa.concat_tables(parts) if parts else self._SCHEMA.empty_table()
        return t.filter(storage.key_ranges_expr(ranges))


class _Scope:
    """What `local_copies` keeps for one run: its folder, checkpoint copies and log copies."""

    def __init__(self, folder: str, ranges: list[tuple[str, str | None]] | None):
        self.folder = folder
        self.ranges = ranges
        self.states: dict[tuple, _LocalState] = {}
        self.logs: dict[tuple, _LocalLog | None] = {}
        self.n = 0

    def path(self, what: str) -> str:
        self.n += 1
        path = os.path.join(self.folder, f"{what}-{self.n}")
        os.makedirs(path, exist_ok=True)
        return path


#: The scope of `local_copies` (innermost last).
_LOCAL: list[_Scope] = []


@contextmanager
def local_copies(ranges: Sequence[tuple[str, str | None]] | None = None):
    """A scope for a run that reads many key ranges (the forecast's batches, the metrics fold's
    groups): a checkpoint is copied once to a local temporary folder and read from there by key
    range; with `ranges` (the run's disjoint key ranges, sorted), a narrow change-log read over
    some of them (the same filter, different ranges) is copied once per range too. The folder is
    removed when the scope ends. Yields the scope (`_Scope.path` makes a folder in it)."""
    with scratch("run") as folder:
        _LOCAL.append(_Scope(folder, sorted(ranges, key=lambda r: r[0]) if ranges else None))
        try:
            yield _LOCAL[-1]
        finally:
            _LOCAL.pop()


def _local_state(state_ds, ck: Checkpoint, uri: str) -> _LocalState:
    """The scope's local copy of a checkpoint (checkpoints never change once written)."""
    scope = _LOCAL[-1]
    key = (uri, ck.as_of_us, ck.as_of_seq)
    if key not in scope.states:
        scope.states[key] = _LocalState(state_ds, ck, os.path.join(scope.path("state"), "state.parquet"))
    return scope.states[key]


def _ranged_read(ds, expr, ranges: Sequence[tuple[str, str | None]], uri: str) -> pa.Table:
    """The narrow rows of `ds` matching `expr` with a key in `ranges`: from the scope's local copy
    of that read when one applies (made on first use), else read directly."""
    scope = _LOCAL[-1] if _LOCAL else None
    if scope is not None and scope.ranges:
        files = tuple(sorted(ds.files)) if hasattr(ds, "files") else None
        key = (uri, str(expr), files)
        if files is not None and key not in scope.logs:
            try:
                scope.logs[key] = _LocalLog(ds, expr, scope.ranges, scope.path("log"), uri)
            except _LocalLog.Unsupported:
                scope.logs[key] = None
        copy = scope.logs.get(key)
        groups = copy.holds(ranges) if copy is not None else None
        if groups is not None:
            return copy.read(groups, ranges)
    within = storage.key_ranges_expr(ranges)
    return _narrow_table(ds, within if expr is None else expr & within, uri)


def late_change_ts(settings, ck: Checkpoint) -> int | None:
    """Earliest ts (us) of a change after the checkpoint's seq that is older than its instant."""
    log = ChangeLog(settings)
    at = pa.scalar(from_us(ck.as_of_us), storage.TS)
    t = log.pruned([("seq", ">", int(ck.as_of_seq)), ("ts", "<", from_us(ck.as_of_us))]).to_table(
        columns=["ts"], filter=(pc.field("seq") > ck.as_of_seq) & (pc.field("ts") < at))
    return int(pc.cast(pc.min(t.column("ts")), pa.int64()).as_py()) if t.num_rows else None


def fold_from(settings, need_us: int, *, before: datetime | None = None, upto: datetime | None = None,
              ranges: Sequence[tuple[str, str | None]] | None = None
              ) -> tuple[LogView, Checkpoint | None, int | None]:
    """The narrow log a run needs from bucket `need_us` on: (view, checkpoint used, invalidated after).

    The latest checkpoint at or before `need_us` and the log after it; else the whole log
    (:func:`read_log`, a from-scratch fold). The third value is the instant (us) after which the
    stored checkpoints are stale (a late change), else None.
    """
    stale = None
    state_ds = _state_dataset(settings)
    fits = [c for c in checkpoints(settings, state_ds) if c.as_of_us <= need_us] if state_ds is not None else []
    if fits:
        ck, log = fits[-1], ChangeLog(settings)
        view = increment_log(settings, ck, before=before, upto=upto, log=log, state_ds=state_ds, ranges=ranges)
        if view is not None:
            return view, _after_vacuum(settings, ck, log), None
        stale = late_change_ts(settings, ck)
    return read_log(settings, before=before, upto=upto, ranges=ranges), None, stale


def check_fold_input(settings, need_us: int, *, before: datetime | None = None, upto: datetime | None = None,
                     lineage: Lineage | None = None) -> int:
    """Validate, before a run writes anything, the change log a fold from bucket `need_us` reads
    (``ts < before`` / ``ts <= upto``): DESIGN §4.5 on the changes after the latest checkpoint at
    or before `need_us` (the increment), or after the retained log's start without one. Named
    errors (:func:`weaver.log.validate_segment`: a gap in seq, a duplicate, ts going backwards, an
    unknown op, a key outside its partition's range); returns the number of changes checked.

    Only the increment: what came before a checkpoint was checked by the run that stored it, so
    the cost follows the increment, not the history (a run without a checkpoint - the first, a
    backtest, checkpoints off - folds the whole log anyway and checks it whole). The check reads
    the increment's narrow columns in bounded pieces and scans its values once for a PUT without
    one; the fold itself reads only its narrow columns.
    """
    log = ChangeLog(settings)
    state_ds = _state_dataset(settings)
    fits = [c for c in checkpoints(settings, state_ds) if c.as_of_us <= need_us] if state_ds is not None else []
    after = int(fits[-1].as_of_seq) if fits else 0
    if log.start is not None and log.start > 1:
        after = max(after, int(log.start) - 1)  # a vacuumed log: the fold starts from its base
    if before is not None:
        upto_seq = log.seq_before(before)
    elif upto is not None:
        upto_seq = log.seq_at(upto)
    else:
        raise InvalidParameterError("check_fold_input needs `before` or `upto`")
    if upto_seq <= after:
        return 0
    return validate_segment(settings, lineage if lineage is not None else Lineage.load(settings), after, upto_seq,
                            log=log)


def _after_vacuum(settings, ck: Checkpoint, log: ChangeLog) -> Checkpoint:
    """`ck` with its first bucket moved past a prefix vacuum removed after it was written."""
    if not log.start or log.start <= 1:
        return ck
    bu = bucket_us(settings.bucket)
    first = (to_us(log.ts_of(log.start)) // bu + 1) * bu  # as read_log's vacuum base sees it
    return ck if first <= ck.first_us else Checkpoint(ck.as_of_us, ck.as_of_seq, first)


def _write_checkpoint(settings, log: LogView, lineage: Lineage, at_us: int, first_us: int) -> bool:
    """Store the fold's state at bucket boundary `at_us` and prune old checkpoints; False if not newer."""
    existing = checkpoints(settings)
    if existing and existing[-1].as_of_us >= at_us:
        return False  # a backfill never moves the checkpoints back; a rerun finds its own
    pos = log.pos_before_ts(at_us)
    seq = int(log.seq[pos - 1]) if pos else int(log.base_seq)
    rows, loose = _checkpoint_rows(log, lineage.active(at_seq=seq), at_us, seq, first_us)
    _store_checkpoint(settings, lambda: iter([rows]), [loose], existing, at_us, seq, first_us)
    return True


def _checkpoint_rows(log: LogView, parts: Sequence[Partition], at_us: int, seq: int, first_us: int
                     ) -> tuple[pa.Table, tuple[pa.Array, pa.Array]]:
    """The checkpoint rows (one per partition in `parts`, sorted by key range) of the fold's state
    after every change of `log` with ts < `at_us`, and the live keys (and item bytes) no partition
    of `parts` covers."""
    state = KeyState(log)
    state.advance(log.pos_before_ts(at_us))
    live = np.flatnonzero(state.live)
    lo = np.array([log.key_index(p.key_lo) for p in parts], np.int64)
    hi = np.array([log.key_index(p.key_hi, upper=True) for p in parts], np.int64)
    j = np.searchsorted(lo, live, side="right") - 1
    ok = j >= 0
    ok[ok] = live[ok] < hi[j[ok]]
    owner = np.where(ok, j, -1)
    order = np.argsort(owner, kind="stable")
    live, owner = live[order], owner[order]
    counts = np.bincount(owner + 1, minlength=len(parts) + 1)
    n_loose = int(counts[0])
    offsets = np.concatenate([[0], np.cumsum(counts[1:])]).astype(np.int32)
    at = from_us(at_us)
    ids = [p.partition_id for p in parts]
    rows = pa.table({
        "state_id": [metrics_state_id(pid, at, seq) for pid in ids],
        "partition_id": ids,
        "as_of_ts": pa.array([at] * len(ids), storage.TS),
        "as_of_seq": pa.array([seq] * len(ids), pa.int64()),
        "log_first_ts": pa.array([from_us(first_us)] * len(ids), storage.TS),
        "keys": pa.ListArray.from_arrays(pa.array(offsets), pa.array(log.universe[live[n_loose:]], pa.string())),
        "item_bytes": pa.ListArray.from_arrays(pa.array(offsets), pa.array(state.bytes[live[n_loose:]], pa.int64())),
    }, schema=storage.SCHEMAS[storage.METRICS_STATE])
    loose = (pa.array(log.universe[live[:n_loose]], pa.string()), pa.array(state.bytes[live[:n_loose]], pa.int64()))
    return rows, loose


def _store_checkpoint(settings, pieces: Callable[[], Iterable[pa.Table]], loose: list[tuple[pa.Array, pa.Array]],
                      existing: list[Checkpoint], at_us: int, seq: int, first_us: int) -> None:
    """Write one checkpoint in one commit - one ``''`` row of the keys no active partition covers
    (when there are any), then the partitions' rows of every piece `pieces()` yields, streamed a
    piece at a time - replacing any rows of its instant; then prune old checkpoints."""
    uri = storage.uri_for(settings, storage.METRICS_STATE)
    at = from_us(at_us)
    keys = pa.concat_arrays([k for k, _ in loose]) if loose else pa.array([], pa.string())
    head = []
    if len(keys):
        nbytes = pa.concat_arrays([b for _, b in loose])
        head = [pa.table({
            "state_id": [metrics_state_id("", at, seq)], "partition_id": [""],
            "as_of_ts": pa.array([at], storage.TS), "as_of_seq": pa.array([seq], pa.int64()),
            "log_first_ts": pa.array([from_us(first_us)], storage.TS),
            "keys": pa.ListArray.from_arrays(pa.array([0, len(keys)], pa.int32()), keys),
            "item_bytes": pa.ListArray.from_arrays(pa.array([0, len(keys)], pa.int32()), nbytes),
        }, schema=storage.SCHEMAS[storage.METRICS_STATE])]
    # A checkpoint is written once per instant (a run whose instant is stored writes none), so
    # replacing the instant's rows is idempotent; unlike a MERGE of every live key (1.5 GB peak at
    # 6.6 M keys, bench/scale.py's 2H metrics) or delta-rs' own writer (whose memory grows with the
    # rows written), Arrow writes the files a piece at a time (filecommit).
    filecommit.replace_rows(uri, storage.METRICS_STATE, lambda: (t for part in (head, pieces()) for t in part),
                            match={"as_of_ts": at, "as_of_seq": seq},
                            row_group_rows=_STATE_ROWS_PER_BATCH, file_bytes=_STATE_FILE_BYTES)
    all_cks = existing + [Checkpoint(at_us, seq, first_us)]
    keep = _retained([c.as_of_us for c in all_cks], settings.metrics_checkpoints,
                     bucket_us(settings.forecast_history) + 2 * _DAY_US)
    _delete_checkpoints(uri, [c for c in all_cks if c.as_of_us not in keep])
    _vacuum_state(uri)


#: Files of pruned checkpoints are removed this long after their delete: a run that listed a
#: checkpoint just before the prune can still read it.
_STATE_FILE_GRACE_HOURS = 1


def _vacuum_state(uri: str) -> None:
    """Remove the files of pruned checkpoints (each holds every live key: they must not pile up),
    and, once as old as the grace, files no version references (a checkpoint write killed between
    its files and its commit: `full`)."""
    def vacuum(dry_run: bool):
        return storage.open_table(uri, storage.METRICS_STATE).vacuum(
            retention_hours=_STATE_FILE_GRACE_HOURS, enforce_retention_duration=False, dry_run=dry_run, full=True)

    if vacuum(True):
        retry_commit(lambda: vacuum(False), what=f"VACUUM {storage.METRICS_STATE}")


def _retained(instants: list[int], latest: int, horizon_us: int) -> set[int]:
    """The checkpoints to keep: the `latest` newest and, over the forecast history (`horizon_us`
    back from the newest), the earliest of each UTC day - a past run's history start needs one.
    Applying the rule to what it keeps keeps everything (pruning is idempotent)."""
    if not instants:
        return set()
    xs = sorted(instants)
    keep = set(xs[-latest:]) if latest > 0 else set()
    days: dict[int, int] = {}
    for x in xs:
        if x >= xs[-1] - horizon_us:
            days.setdefault(x // _DAY_US, x)
    return keep | set(days.values())


def _delete_checkpoints(uri: str, gone: list[Checkpoint]) -> None:
    filecommit.delete_rows(uri, storage.METRICS_STATE,
                           [{"as_of_ts": from_us(c.as_of_us), "as_of_seq": c.as_of_seq} for c in gone],
                           row_group_rows=_STATE_ROWS_PER_BATCH)


def build_metrics(settings, *, end: datetime, start: datetime | None = None) -> dict:
    """Compute and MERGE `partition_metrics` for the complete buckets in [start, end).

    ``start`` None continues from the latest checkpoint (see the module doc), or starts at the
    log's first bucket when there is none. With a checkpoint at or before ``start`` the run folds
    from the checkpoint and rebuilds the buckets from it (unchanged rows are not rewritten);
    without one the state at ``start`` is re-derived from the whole change log. Rerunning writes
    the same rows once and commits nothing. Returns counts over [start, end): buckets, rows,
    partitions, changes, reads; and ``checkpoint`` (the instant the run started from, or None).
    """
    end = parse_timepoint(end)
    start = parse_timepoint(start) if start is not None else None
    if start is not None and start >= end:
        raise InvalidParameterError(f"start {start.isoformat()} must be before end {end.isoformat()}")
    bu = bucket_us(settings.bucket)
    stop_us = (to_us(end) // bu) * bu
    need = to_us(bucket_floor(start, settings.bucket)) if start is not None else stop_us
    check_fold_input(settings, need, before=end)  # bad input: a named error, nothing written
    batched = _build_in_batches(settings, start=start, end=end, need=need)
    if batched is not None:
        return batched
    log, ck, stale = fold_from(settings, need, before=end)
    first = ck.first_us if ck is not None else log.first_bucket(bu)
    if ck is not None and start is None:
        start = from_us(ck.as_of_us)  # every bucket before the checkpoint is in the table
    if start is None:
        if first is None:
            return {"buckets": 0, "rows": 0, "partitions": 0, "changes": 0, "reads": 0, "start": None,
                    "end": end, "checkpoint": None}
        start = from_us(first)
    start = bucket_floor(start, settings.bucket)
    if first is not None and to_us(start) < first and (ck is not None or log.base_ts is not None):
        start = from_us(first)  # before the vacuumed log's base nothing can be measured
    # From a checkpoint the run rebuilds every bucket since it: the table then holds every bucket
    # up to `end`, which is what lets this run leave a checkpoint at `end` for the next one.
    fold_start = from_us(ck.as_of_us) if ck is not None else start
    if ck is None and settings.metrics_checkpoints > 0 and first is not None and first < to_us(start) < stop_us:
        latest = checkpoints(settings)
        if not latest or latest[-1].as_of_us < stop_us:
            # No checkpoint to continue from (the first run with one, or the DAG's first run after
            # a late change): the fold covers the whole log anyway, so rebuild every bucket once
            # (unchanged rows are not rewritten) and leave a checkpoint for the next run.
            fold_start = from_us(first)
    covered = ck is not None or (first is not None and to_us(fold_start) <= first)
    lineage = Lineage.load(settings)
    access = read_access(settings, start=fold_start, end=end)
    table = compute_metrics(log, lineage, start=fold_start, end=end, bucket=settings.bucket, access=access)
    uri = storage.uri_for(settings, storage.PARTITION_METRICS)
    if table.num_rows or not storage.is_table(uri):
        storage.merge(uri, storage.PARTITION_METRICS, table, keys=["partition_id", "bucket_start"])
    if stale is not None:  # a late change: every checkpoint after it is wrong, forget them
        _delete_checkpoints(storage.uri_for(settings, storage.METRICS_STATE),
                            [c for c in checkpoints(settings) if c.as_of_us > stale])
    if settings.metrics_checkpoints > 0 and covered and first is not None and stop_us > first:
        _write_checkpoint(settings, log, lineage, stop_us, first)
    changes = log.pos_before_ts(stop_us) - log.pos_before_ts(to_us(start))
    return _summary(table, start=start, end=end, bu=bu, changes=changes, ck=ck, batches=1)


def _summary(table: pa.Table, *, start: datetime, end: datetime, bu: int, changes: int, ck: Checkpoint | None,
             batches: int) -> dict:
    """build_metrics' counts over [start, end)."""
    mine = table.filter(pc.greater_equal(table.column("bucket_start"), pa.scalar(start, storage.TS)))
    n_buckets = max(0, to_us(end) // bu - to_us(start) // bu)
    return {"buckets": int(n_buckets), "rows": mine.num_rows,
            "partitions": len(set(mine.column("partition_id").to_pylist())),
            "changes": int(changes), "reads": int(pc.sum(mine.column("reads")).as_py() or 0),
            "start": start, "end": end, "checkpoint": from_us(ck.as_of_us) if ck is not None else None,
            "fold_batches": batches}


def _fold_groups(parts: Iterable[Partition], size: int) -> list[tuple[str, str | None, list[Partition]]]:
    """Key ranges ``[lo, hi)`` that cover the whole key space, each holding whole partitions of
    `parts` (about `size` neighbours; a range never cuts one, so a parent that retires inside the
    run stays with its children). One range when they cannot be cut."""
    ps = sorted(parts, key=lambda p: (p.key_lo, p.key_hi is None, p.key_hi or ""))
    groups: list[tuple[str, str | None, list[Partition]]] = []
    lo, cur, reach, unbounded = "", [], "", False  # reach: the largest key_hi in cur
    for p in ps:
        if len(cur) >= size and not unbounded and reach <= p.key_lo:
            groups.append((lo, p.key_lo, cur))
            lo, cur, reach = p.key_lo, [], ""
        cur.append(p)
        if p.key_hi is None:
            unbounded = True
        elif p.key_hi > reach:
            reach = p.key_hi
    groups.append((lo, None, cur))
    return groups


def _group_of(keys: pa.Array, bounds: list[str]) -> np.ndarray:
    """Index of the fold group (lower bounds `bounds` of groups 1..n) each key falls in."""
    gi = np.zeros(len(keys), np.int64)
    for b in bounds:
        gi += pc.fill_null(pc.greater_equal(keys, b), False).to_numpy(zero_copy_only=False)
    return gi


def log_first_bucket(settings, at: datetime, bu: int) -> int | None:
    """Start (us) of the first bucket of the whole change log with ``ts <= at`` (None: no change by
    then): what `LogView.first_bucket` says of an unclipped, unvacuumed view. A key-range view starts
    at its range's first change, so a batch asks the table. Read from the Delta file statistics
    (min ts over files); files without statistics are scanned for their ts column."""
    log = ChangeLog(settings)
    adds = pa.table(log.dt.get_add_actions(flatten=True))
    lo = None
    if "min.ts" in adds.column_names and adds.num_rows and not adds.column("min.ts").null_count:
        lo = to_us(pc.min(adds.column("min.ts")).as_py())
    else:
        edge = pa.scalar(at, storage.TS)
        for b in log.ds.to_batches(columns=["ts"], filter=pc.field("ts") <= edge):
            if b.num_rows:
                m = to_us(pc.min(b.column("ts")).as_py())
                lo = m if lo is None else min(lo, m)
    if lo is None or lo > to_us(at):
        return None
    return (lo // bu) * bu


class _Spill:
    """Tables of one schema spilled to a local Parquet file in the run's `local_copies` folder as
    they come (a row group each) and read back a few rows at a time: what a run writes last need
    not stay in memory meanwhile. The file goes with the scope's folder."""

    def __init__(self, scope: "_Scope", what: str, read_rows: int = 64):
        self._scope, self._what = scope, what
        self._path: str | None = None
        self._writer: pq.ParquetWriter | None = None
        self._read_rows = read_rows

    def add(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        if self._writer is None:
            self._path = os.path.join(self._scope.path(self._what), "spill.parquet")
            self._writer = pq.ParquetWriter(self._path, t.schema)
        self._writer.write_table(t, row_group_size=max(1, t.num_rows))

    def tables(self) -> Iterable[pa.Table]:
        """Everything added, in order."""
        self.close()
        if self._path is None:
            return
        for b in pq.ParquetFile(self._path).iter_batches(batch_size=self._read_rows):
            yield pa.Table.from_batches([b])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _build_in_batches(settings, *, start: datetime | None, end: datetime, need: int) -> dict | None:
    """build_metrics folding groups of neighbouring partitions one at a time.

    From a checkpoint the run reads the change log after it once (narrow columns) and the
    checkpoint's key lists once, a few rows at a time, spilling each group's keys to a local
    file. Without one (the first run, a backtest before every checkpoint) it folds the whole log
    from its first change: one streaming pass copies the narrow log to one local file per group
    (`local_copies`). Then each group's keys are folded and measured alone, so the fold's memory
    (key universe, hash tables, per-key state) follows `metrics_batch_partitions`, not the table.
    The partitions' rows and the next checkpoint are then written as the one-batch run writes
    them (one MERGE each).

    None - the caller runs the one-batch fold - when batching is off or useless (fewer than two
    groups), the checkpoint is not usable (a late change, vacuum), a log without a checkpoint was
    vacuumed (its fold starts from restored base snapshots), or a change belongs to a partition
    outside its key's group (the lineage's times disagree with the log's owners); both paths give
    the same rows.
    """
    n = settings.metrics_batch_partitions
    if n <= 0:
        return None
    lineage = Lineage.load(settings)
    if len(lineage) <= n:
        return None  # at most one group: nothing to read before the one fold
    state_ds = _state_dataset(settings)
    existing = checkpoints(settings, state_ds) if state_ds is not None else []
    fits = [c for c in existing if c.as_of_us <= need]
    log = ChangeLog(settings)
    bu = bucket_us(settings.bucket)
    stop_us = (to_us(end) // bu) * bu
    newer = not existing or existing[-1].as_of_us < stop_us  # a checkpoint at `end` would be new
    if fits:
        ck = fits[-1]
        if not _fresh(ck, log):
            return None
        first = _after_vacuum(settings, ck, log).first_us
        start = bucket_floor(from_us(ck.as_of_us) if start is None else start, settings.bucket)
        if to_us(start) < first:
            start = from_us(first)
        fold_start = from_us(ck.as_of_us)
        write_ck = stop_us > first and newer
    else:
        ck = None
        if log.start is not None and log.start > 1:
            return None
        first = log_first_bucket(settings, end - timedelta(microseconds=1), bu)
        if first is None:
            return None
        start = bucket_floor(start, settings.bucket) if start is not None else from_us(first)
        # As the one fold: with checkpoints on, a run that has none to continue from rebuilds
        # every bucket once (unchanged rows are not rewritten) and leaves one for the next run.
        fold_start = start
        if settings.metrics_checkpoints > 0 and first < to_us(start) < stop_us and newer:
            fold_start = from_us(first)
        write_ck = settings.metrics_checkpoints > 0 and to_us(fold_start) <= first and stop_us > first and newer
    # Without a checkpoint the fold replays every change since the log's first bucket: a group
    # must hold every partition that owned one, not only those alive from `fold_start`.
    since = fold_start if ck is not None else from_us(min(first, to_us(fold_start)))
    groups = _fold_groups([p for p in lineage if _alive(p, since, end)], n)
    if len(groups) < 2:
        return None
    bounds = [lo for lo, _, _ in groups[1:]]

    if ck is not None:
        inc = _narrow_table(log.pruned([("seq", ">", int(ck.as_of_seq)), ("ts", "<", end)]),
                            (pc.field("seq") > ck.as_of_seq) & (pc.field("ts") < pa.scalar(end, storage.TS)), log.uri)
        inc_group = _group_of(_column(inc, "key", pa.string()), bounds)
        group_of_pid = {p.partition_id: i for i, (_, _, ps) in enumerate(groups) for p in ps}
        pid_group = np.array([group_of_pid.get(p, -1) for p in _column(inc, "partition_id", pa.string()).to_pylist()],
                             np.int64)
        if np.any(pid_group != inc_group):
            return None
        seq_np = _column(inc, "seq", pa.int64()).to_numpy()
        ts_np = pc.cast(_column(inc, "ts", storage.TS), pa.int64()).to_numpy()
        before_stop = seq_np[ts_np < stop_us]
        ck_seq = int(before_stop.max()) if len(before_stop) else int(ck.as_of_seq)
        changes = int(np.count_nonzero((ts_np >= to_us(start)) & (ts_np < stop_us)))
    else:
        whole_log = log.pruned([("ts", "<", end)])
        log_expr = pc.field("ts") < pa.scalar(end, storage.TS)
        ck_seq = log.seq_before(from_us(stop_us))
        changes = 0
    # The checkpoint's partitions by key range: one created at `end` (a split at the run's last
    # change) is not in the run's window, but lies inside its parent's group.
    active = lineage.active(at_seq=ck_seq) if write_ck else []
    active_group = _group_of(pa.array([p.key_lo for p in active], pa.string()), bounds)
    for p, g in zip(active, active_group):
        hi = groups[g][1]
        if hi is not None and (p.key_hi is None or p.key_hi > hi):
            return None
    access = read_access(settings, start=fold_start, end=end)

    tables, loose = [], []
    # the checkpoint's rows, group by group, on local disk (the run's folder) until written
    with local_copies([(lo, hi) for lo, hi, _ in groups] if ck is None else None) as scope, \
            closing(_Spill(scope, "ck")) as pieces:
        local = _local_state(state_ds, ck, storage.uri_for(settings, storage.METRICS_STATE)) if ck is not None else None
        for i, (lo, hi, parts) in enumerate(groups):
            if ck is not None:
                keys, nbytes = local.read([(lo, hi)])
                view = _view_of(inc.filter(pa.array(inc_group == i)),
                                base=(keys, nbytes, ck.as_of_seq, ck.as_of_us - 1))
                del keys, nbytes
            else:
                rows = _ranged_read(whole_log, log_expr, [(lo, hi)], log.uri)  # a streaming pass on first use
                owners = pc.unique(_column(rows, "partition_id", pa.string())).to_pylist()
                if not set(owners) <= {p.partition_id for p in parts}:
                    return None
                view = _view_of(rows)
                del rows
                changes += int(np.count_nonzero((view.ts >= to_us(start)) & (view.ts < stop_us)))
            ids = pa.array([p.partition_id for p in parts], pa.string())
            acc = access.filter(pc.is_in(access.column("partition_id"), value_set=ids)) if access is not None else None
            tables.append(compute_metrics(view, parts, start=fold_start, end=end, bucket=settings.bucket, access=acc))
            if write_ck:
                mine = [p for p, g in zip(active, active_group) if g == i]
                rows_ck, free = _checkpoint_rows(view, mine, stop_us, ck_seq, first)
                pieces.add(rows_ck)
                loose.append(free)
                del rows_ck
            del view
        table = pa.concat_tables(tables)
        table = table.take(pc.sort_indices(table, [("bucket_start", "ascending"), ("partition_id", "ascending")]))
        uri = storage.uri_for(settings, storage.PARTITION_METRICS)
        if table.num_rows or not storage.is_table(uri):
            storage.merge(uri, storage.PARTITION_METRICS, table, keys=["partition_id", "bucket_start"])
        if write_ck:
            _store_checkpoint(settings, pieces.tables, loose, existing, stop_us, ck_seq, first)
    return _summary(table, start=start, end=end, bu=bu, changes=changes, ck=ck, batches=len(groups))


def read_metrics(settings, *, partition_ids: Iterable[str] | None = None, start: datetime | None = None,
                 end: datetime | None = None) -> pa.Table:
    """Stored metric rows (optionally of some partitions) with bucket_start in [start, end)."""
    uri = storage.uri_for(settings, storage.PARTITION_METRICS)
    filters: list = []
    if start is not None:
        filters.append(("bucket_start", ">=", pa.scalar(start, storage.TS)))
    if end is not None:
        filters.append(("bucket_start", "<", pa.scalar(end, storage.TS)))
    t = storage.read(uri, storage.PARTITION_METRICS, filters=filters or None, missing_ok=True)
    if partition_ids is not None:
        # In memory: delta-rs MERGE writes string_view columns that pyarrow cannot filter on.
        t = t.filter(pc.is_in(t.column("partition_id"), value_set=pa.array(list(partition_ids), pa.string())))
    return t
