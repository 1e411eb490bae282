"""Point-in-time restore (DESIGN §4.1): nearest base snapshot(s) plus replay of the change-log tail.

``restore(P, T)`` is the fold of every change with ``ts <= T`` whose key lies in P's range
``[key_lo, key_hi)``, for any P of the lineage (active or retired, before or after its creation).
Replay works by KEY RANGE, never by ``partition_id``, so lineage needs no special case: a change
written to a parent before a split and one written to a child after it are both simply changes
on a key of the range. Bases come from :func:`weaver.pitr.catalog.plan_restore`.
Single-partition restores go through delta-rs + Arrow only (no JVM); :func:`restore_table` uses Spark.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import faults, storage
from weaver.core.deltafiles import delta_files
from weaver.core.errors import InvalidParameterError
from weaver.core.scratch import scratch
from weaver.core.storage import STATE_SCHEMA, check_output_target, filter_range, write_parquet_atomic
from weaver.core.time import parse_timepoint
from weaver.log.changelog import ChangeLog, is_increasing, resolve_seq, sort_by_seq, validate_segment
from weaver.log.lineage import Lineage, Partition
from weaver.log.validate import validate_changes
from weaver.pitr.catalog import Piece, catalog_index, plan_restore, read_snapshot_catalog
from weaver.replay.arrow import empty_state, fold
from weaver.replay.spark import materialize_with_spark



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


def read_snapshot(settings, snapshot_id: str, dt=None) -> pa.Table:
    """Rows (key, value) of one base snapshot; reads only the files of that snapshot."""
    uri = storage.uri_for(settings, storage.SNAPSHOTS)
    dt = dt or storage.open_table(uri, storage.SNAPSHOTS)
    if "snapshot_id" in dt.metadata().partition_columns:
        # Partition pruning is exact here: no row filter, no partition column materialised.
        ds = storage.dataset(dt, file_pruning_predicate=[("snapshot_id", "=", snapshot_id)])
        t = ds.to_table(columns=["key", "value"])
    else:  # a snapshots table laid out otherwise (another producer): filter rows
        t = storage.read(uri, storage.SNAPSHOTS, filters=[("snapshot_id", "=", snapshot_id)], columns=["key", "value"])
    return t.cast(STATE_SCHEMA) if t.schema != STATE_SCHEMA else t


class SnapshotFiles:
    """Base snapshots read through ONE listing of the snapshots table ({snapshot id: its files},
    made on the first read), for runs that read many: :func:`restore_many` and the Arrow weave. A
    pruned dataset per snapshot (:func:`read_snapshot`) costs delta-rs a pass over every file's
    add action, 25 ms a read once the table held the scale lake's daily snapshots - a third of the
    woven check's restores. A local table is read file by file from its add actions
    (:class:`weaver.core.deltafiles.DeltaFiles`: no dataset of every file is built, 4.9 s at the
    scale lake's 12,000 snapshot files); any other through one delta-rs dataset. The same rows as
    :func:`read_snapshot`."""

    def __init__(self, settings):
        self.settings = settings
        self.files = delta_files(storage.uri_for(settings, storage.SNAPSHOTS), storage.SNAPSHOTS)
        self._ds = None
        self._by_id: dict | None = None

    def read(self, snapshot_id: str) -> pa.Table:
        f = self.files
        if "snapshot_id" not in f.partition_columns:
            return read_snapshot(self.settings, snapshot_id, f.dt)
        if self._by_id is None:
            # A file without a snapshot_id value (key None) is no snapshot's, as partition pruning has it.
            if f.native:
                by_id: dict = {}
                for path, sid in zip(f.column("path"), f.column("partition.snapshot_id")):
                    by_id.setdefault(sid, []).append(path)
                self._by_id = by_id
            else:
                self._ds = storage.dataset(f.dt)
                self._by_id = storage.by_partition_value(self._ds, "snapshot_id")
        mine = self._by_id.get(snapshot_id, [])
        if self._ds is not None:
            t = storage.of_fragments(self._ds, mine).to_table(columns=["key", "value"])
        elif mine:
            t = f.read(mine, ["key", "value"], None, use_threads=False)
        else:
            return STATE_SCHEMA.empty_table()
        return t.cast(STATE_SCHEMA) if t.schema != STATE_SCHEMA else t


def _read_snapshot_rows(settings, pieces: Iterable[Piece], dt=None,
                        files: SnapshotFiles | None = None) -> dict[str, pa.Table]:
    ids = sorted({p.snapshot_id for p in pieces if p.snapshot_id})
    if not ids:
        return {}
    if files is not None:
        return {sid: files.read(sid) for sid in ids}
    dt = dt or storage.open_table(storage.uri_for(settings, storage.SNAPSHOTS), storage.SNAPSHOTS)
    return {sid: read_snapshot(settings, sid, dt) for sid in ids}


def _intersect(lo: str, hi: str | None, key_lo: str, key_hi: str | None) -> tuple[str, str | None]:
    new_lo = max(lo, key_lo)
    if hi is None:
        return new_lo, key_hi
    if key_hi is None:
        return new_lo, hi
    return new_lo, min(hi, key_hi)


def restore_partition(settings, partition_id: str, at: datetime, *, lineage: Lineage | None = None) -> RestoreResult:
    """State (key, value sorted by key) of `partition_id`'s key range at instant `at`.

    Nearest base snapshot(s) <= seq_at(at) plus replay of the change-log tail, through delta-rs
    and Arrow only. Validates the tail before returning (named errors: see validate_changes).
    Raises UnknownPartitionError, InvalidTimepointError (naive or outside the recovery window).
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    lineage = lineage if lineage is not None else Lineage.load(settings)
    part = lineage.get(partition_id)
    log = ChangeLog(settings)
    seq_t = resolve_seq(settings, at, log)
    pieces = plan_restore(read_snapshot_catalog(settings), lineage, partition_id, seq_t)
    table, replayed = _materialize(settings, log, lineage, part.key_lo, part.key_hi, pieces, seq_t)
    ids = [p.snapshot_id for p in pieces if p.snapshot_id]
    return RestoreResult(partition_id=partition_id, at=at, as_of_seq=seq_t, table=table,
                         source_snapshot_id="+".join(ids) if ids else None, changes_replayed=replayed,
                         elapsed_ms=(time.perf_counter() - t0) * 1000.0)


def restore_series(settings, partition_id: str, ats: Iterable[datetime], *,
                   lineage: Lineage | None = None) -> list[RestoreResult]:
    """:func:`restore_partition` of `partition_id` at each instant of `ats` (sorted by instant),
    with the work shared as in :func:`restore_many`."""
    for _pid, results in restore_many(settings, {partition_id: ats}, lineage=lineage):
        return results
    return []


#: Partitions whose change-log tails :func:`restore_many` reads (one scan per seq span) and holds at once.
RESTORE_MANY_GROUP = 64


def restore_many(settings, instants: Mapping[str, Iterable[datetime]], *,
                 lineage: Lineage | None = None) -> Iterator[tuple[str, list[RestoreResult]]]:
    """(partition id, its restores at its instants, sorted by instant) for every partition of
    `instants`: the same rows, as_of_seq and base(s) as one :func:`restore_partition` per instant.

    The work is shared. The catalog, the log's Delta state and the lineage are read once. Per
    partition the sorted instants form runs one base serves: the first instant of a run is
    restored from its nearest base snapshot(s) (its own plan), the next ones advance that state
    (a later instant whose own plan has a base past the previous instant's seq starts a new run
    from that base, so no instant replays more than its own restore would). The change-log rows
    every run needs - seq in (run's oldest base, run's last instant], key in its partition's
    range - are read in ONE filtered scan per span of overlapping seq ranges for a group of up to
    :data:`RESTORE_MANY_GROUP` partitions (neighbours in key order; each change read once per
    group), checked contiguous and validated like any restore tail. Results are yielded partition
    by partition, so one group's tails and one partition's states are held at a time.
    """
    lineage = lineage if lineage is not None else Lineage.load(settings)
    log = ChangeLog(settings)
    idx = catalog_index(read_snapshot_catalog(settings))
    seq_of: dict[datetime, int] = {}
    plans: list[tuple[Partition, list[datetime], list[int], list[tuple[list[Piece], list[int]]]]] = []
    for pid, ats in instants.items():
        part = lineage.get(pid)
        points = sorted(parse_timepoint(a) for a in ats)
        for a in points:
            if a not in seq_of:
                seq_of[a] = resolve_seq(settings, a, log)
        seqs = [seq_of[a] for a in points]
        runs: list[tuple[list[Piece], list[int]]] = []  # (base pieces, indexes of the run's instants)
        for i, seq_t in enumerate(seqs):
            pieces = plan_restore(idx, lineage, pid, seq_t)
            if runs and min(p.base_seq for p in pieces) <= seqs[runs[-1][1][-1]]:
                runs[-1][1].append(i)  # the previous instant's state is at least as close as this base
            else:
                runs.append((pieces, [i]))
        plans.append((part, points, seqs, runs))
    # Partitions in key order, in groups of RESTORE_MANY_GROUP: one group's tails are held at once
    # (all sources' tails together reached 12.7 GB and pyarrow's 2 GiB offsets at 1,339 sources).
    plans.sort(key=lambda x: x[0].key_lo or "")
    groups = [plans[g:g + RESTORE_MANY_GROUP] for g in range(0, len(plans), RESTORE_MANY_GROUP)]
    files: list[SnapshotFiles] = []  # the snapshots table's listing, made once when a base needs it
    with scratch("restore") as folder:
        # Several groups: their tails come from one streaming pass over the log, not one scan each.
        shared = _GroupTails(log, groups, folder) if len(groups) > 1 else None
        for gi, group in enumerate(groups):
            tail_all = shared.read(gi, lineage) if shared is not None else _group_tail(log, lineage, group)
            yield from _restore_group(settings, log, lineage, group, tail_all, files)
            del tail_all


def _restore_group(settings, log: ChangeLog, lineage: Lineage, group: list, tail_all: pa.Table,
                   files: list) -> Iterator[tuple[str, list[RestoreResult]]]:
    """restore_many's results for one group of plans, from the group's change-log rows; `files`
    holds restore_many's one `SnapshotFiles` once a base snapshot was needed."""
    for part, points, seqs, runs in group:
        mine = filter_range(tail_all, part.key_lo or None, part.key_hi) if tail_all.num_rows else tail_all
        seq_col = mine.column("seq").to_numpy() if mine.num_rows else np.zeros(0, np.int64)
        out: list[RestoreResult] = []
        for pieces, members in runs:
            t0 = time.perf_counter()
            first = members[0]
            if not files and any(p.snapshot_id for p in pieces):
                files.append(SnapshotFiles(settings))
            table, replayed = _materialize(settings, log, lineage, part.key_lo, part.key_hi, pieces, seqs[first],
                                           tail=mine, snap_files=files[0] if files else None)
            ids = [p.snapshot_id for p in pieces if p.snapshot_id]
            source = "+".join(ids) if ids else None
            out.append(RestoreResult(part.partition_id, points[first], seqs[first], table, source, replayed,
                                     (time.perf_counter() - t0) * 1000.0))
            done = int(np.searchsorted(seq_col, seqs[first], side="right"))  # rows folded so far
            for i in members[1:]:
                t0 = time.perf_counter()
                upto = int(np.searchsorted(seq_col, seqs[i], side="right"))
                table = fold(table, mine.slice(done, upto - done), state_sorted=True)
                replayed += upto - done
                done = upto
                out.append(RestoreResult(part.partition_id, points[i], seqs[i], table, source, replayed,
                                         (time.perf_counter() - t0) * 1000.0))
        yield part.partition_id, out


def _merge_spans(spans: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Seq spans (after, upto] merged where they overlap or touch, sorted; empty ones dropped."""
    merged: list[list[int]] = []
    for lo, hi in sorted(spans):
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


def _group_spans(group: list) -> list[list[int]]:
    """The seq spans a group of plans replays: each run's oldest base to its last instant, merged."""
    return _merge_spans((min(p.base_seq for p in pieces), seqs[members[-1]])
                        for _part, _pts, seqs, runs in group for pieces, members in runs)


def _group_tail(log: ChangeLog, lineage: Lineage, group: list) -> pa.Table:
    """The change-log rows a group of restore_many plans needs: one filtered scan per span of
    overlapping seq ranges (each run's oldest base to its last instant), keys in the group's
    partition ranges, each span checked contiguous and validated."""
    merged = _group_spans(group)
    ranges = [(part.key_lo, part.key_hi) for part, *_ in group]
    tails = []
    for lo, hi in merged:
        log.check_contiguous(lo, hi)
        t = log.read(lo, hi, ranges=ranges)
        validate_changes(t, lineage, check_gaps=False)
        tails.append(t)
    return pa.concat_tables(tails) if tails else storage.empty(storage.CHANGELOG)


class _GroupTails:
    """The change-log rows of every group of restore_many plans, from ONE streaming pass over each
    span of the groups' merged seq spans (a scan per group decoded the same rows once per group:
    the woven check's 5 groups of 286 sources spent 88 of 110 s there). Each batch's rows that a
    group needs - seq in one of its spans, key in one of its partitions' ranges - are appended to
    that group's local Arrow file; a group's rows are read back, sorted by seq and validated, when
    its turn comes. Memory: one batch, then one group's rows. Each span is checked contiguous once."""

    def __init__(self, log: ChangeLog, groups: list[list], folder: str):
        self.spans = [np.array(_group_spans(g), np.int64).reshape(-1, 2) for g in groups]
        raw = [[(part.key_lo or "", part.key_hi) for part, *_ in g] for g in groups]
        self.ranges = [_disjoint(r) for r in raw]
        # numpy's fixed-width strings drop trailing NULs: a key or bound holding one is compared
        # exactly, by Arrow (a rare user key; a batch without one takes the vectorised search).
        nul_bounds = any("\x00" in (b or "") for r in raw for rng in r for b in rng)
        self.paths: list[str | None] = [None] * len(groups)
        writers: list = [None] * len(groups)
        try:
            for lo, hi in _merge_spans((int(a), int(b)) for sp in self.spans for a, b in sp):
                log.check_contiguous(lo, hi)
                expr = (pc.field("seq") > lo) & (pc.field("seq") <= hi)
                # Little read-ahead: a few batches of values in flight, not whole files of them.
                for rb in log.seq_range(lo, hi).to_batches(filter=expr, fragment_readahead=1, batch_readahead=2):
                    if not rb.num_rows:
                        continue
                    t = storage.conform(pa.Table.from_batches([rb]), storage.CHANGELOG, where=f" at {log.uri}")
                    seq = t.column("seq").to_numpy()
                    key = t.column("key")
                    exact = nul_bounds or bool(pc.any(pc.match_substring(key, "\x00")).as_py())
                    keys = None if exact else np.asarray(key.to_numpy(zero_copy_only=False), dtype=str)
                    for g in range(len(groups)):
                        inside = _in_ranges_exact(key, raw[g]) if exact else _in_ranges(keys, self.ranges[g])
                        m = _in_spans(seq, self.spans[g]) & inside
                        if not m.any():
                            continue
                        if writers[g] is None:
                            self.paths[g] = os.path.join(folder, f"group-{g}.arrow")
                            writers[g] = pa.ipc.new_file(self.paths[g], t.schema)
                        writers[g].write_table(t.filter(pa.array(m)))
        finally:
            for w in writers:
                if w is not None:
                    w.close()

    def read(self, g: int, lineage: Lineage) -> pa.Table:
        if self.paths[g] is None:
            return storage.empty(storage.CHANGELOG)
        t = pa.ipc.open_file(pa.memory_map(self.paths[g])).read_all()
        if t.num_rows > 1 and not is_increasing(t.column("seq")):
            t = sort_by_seq(t)
        validate_changes(t, lineage, check_gaps=False)
        return t


def _disjoint(ranges: list[tuple[str, str | None]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key ranges [lo, hi) (hi None: unbounded) merged into sorted disjoint ones: (los, his, bounded)."""
    out: list[list] = []
    for lo, hi in sorted(ranges, key=lambda r: r[0]):
        if out and (out[-1][1] is None or lo <= out[-1][1]):
            if out[-1][1] is not None and (hi is None or hi > out[-1][1]):
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    los = np.array([r[0] for r in out], dtype=str)
    his = np.array([r[1] or "" for r in out], dtype=str)
    return los, his, np.array([r[1] is not None for r in out], dtype=bool)


def _in_ranges(keys: np.ndarray, ranges: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Whether each key lies in one of the disjoint sorted ranges (`_disjoint`)."""
    los, his, bounded = ranges
    i = np.searchsorted(los, keys, side="right") - 1
    ok = i >= 0
    j = np.maximum(i, 0)
    return ok & (~bounded[j] | (keys < his[j]))


def _in_ranges_exact(keys: pa.ChunkedArray, ranges: list[tuple[str, str | None]]) -> np.ndarray:
    """`_in_ranges` by Arrow's byte-wise string comparison (any key, trailing NULs included)."""
    inside = np.zeros(len(keys), dtype=bool)
    for lo, hi in ranges:
        m = pc.greater_equal(keys, lo)
        if hi is not None:
            m = pc.and_(m, pc.less(keys, hi))
        inside |= pc.fill_null(m, False).to_numpy(zero_copy_only=False)
    return inside


def _in_spans(seq: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Whether each seq lies in one of the sorted disjoint spans (after, upto]."""
    i = np.searchsorted(spans[:, 0], seq, side="left") - 1  # the last span with after < seq
    j = np.maximum(i, 0)
    return (i >= 0) & (seq <= spans[j, 1]) if len(spans) else np.zeros(len(seq), bool)


def _materialize(settings, log: ChangeLog, lineage: Lineage, key_lo: str, key_hi: str | None,
                 pieces: list[Piece], seq_t: int, *, tail: pa.Table | None = None,
                 snap_files: SnapshotFiles | None = None) -> tuple[pa.Table, int]:
    """The range's state at seq_t from `pieces`; `tail`: the range's changes already read, checked
    and validated over a span covering (oldest base, seq_t] (sorted by seq), else read here."""
    base_seq = min(p.base_seq for p in pieces)
    if seq_t <= base_seq:
        tail = storage.empty(storage.CHANGELOG)
    elif tail is not None:
        s = tail.column("seq").to_numpy() if tail.num_rows else np.zeros(0, np.int64)
        lo, hi = int(np.searchsorted(s, base_seq, side="right")), int(np.searchsorted(s, seq_t, side="right"))
        tail = tail.slice(lo, hi - lo)
    else:
        log.check_contiguous(base_seq, seq_t)
        tail = log.read(base_seq, seq_t, key_lo or None, key_hi)
        validate_changes(tail, lineage, check_gaps=False)
    snaps = _read_snapshot_rows(settings, pieces, files=snap_files)
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


def check_output_file(settings, out: str, *, what: str = "--out") -> str:
    """:func:`weaver.core.storage.check_outside_lake` for an output *file*, which must not lie
    inside any other lake either (:func:`weaver.core.storage.check_not_in_a_lake`: another lake's
    data files are its tables), nor be an existing folder or lie under a file. An existing file
    elsewhere is replaced whole (a rerun writes the same rows), so it is not refused."""
    target = storage.check_outside_lake(settings, out, what=what)
    storage.check_not_in_a_lake(settings, out, target, what=what)
    storage.check_local_parent(out, target, what=what)
    if "://" not in out and Path(target).is_dir():
        raise InvalidParameterError(f"{what} {out!r} is a folder; name a new .parquet file")
    return out


def check_restore_out(settings, out: str) -> str:
    """The checks of :func:`write_restore`, run before any work: a .parquet name outside the lake's tables."""
    if not out.endswith(".parquet"):
        raise InvalidParameterError(f"--out {out!r} must name a .parquet file")
    return check_output_file(settings, out)


def write_restore(result: RestoreResult, out: str, settings) -> str:
    """Write a restored state as one Parquet file (columns key, value); returns the path.

    `out` must end in .parquet and lie outside the lake's own tables (:func:`check_output_file`)."""
    check_restore_out(settings, out)
    return write_parquet_atomic(out, result.table)


def restore_id_for(settings, as_of_seq: int) -> str:
    """The deterministic id of a whole-table restore: sha1 of ``"restore-table|{lake}|{seq}"``, first
    16 hex digits. A rerun at any instant resolving to the same seq of the same lake has the same id."""
    lake = settings.lake.rstrip("/") if "://" in settings.lake else str(Path(settings.lake).resolve())
    return hashlib.sha1(f"restore-table|{lake}|{as_of_seq}".encode("utf-8")).hexdigest()[:16]


def _held_rows(out_uri: str, restore_id: str) -> int | None:
    """Rows of the table at `out_uri` when its last commit is the restore `restore_id` (from the
    commit's add-action statistics, no scan), else None."""
    if not storage.is_table(out_uri):
        return None
    dt = storage.open_table(out_uri)
    last = dt.history(1)
    meta = last[0].get("userMetadata") if last else None
    try:
        held_id = json.loads(meta).get("weaver.restore_id") if isinstance(meta, str) else None
    except (ValueError, AttributeError):
        held_id = None
    if held_id != restore_id:
        return None
    adds = pa.table(dt.get_add_actions(flatten=True)).column("num_records").to_pylist()
    return int(sum(n or 0 for n in adds))


def _same_rows(spark, df, out_uri: str, held: int) -> bool:
    """Whether the restore `df` (persisted by the caller) has exactly the rows of the table at
    `out_uri` (as a multiset: the same count, and none of df's rows missing there)."""
    if df.count() != held:
        return False
    return df.exceptAll(spark.read.format("delta").load(out_uri).select(*df.columns)).isEmpty()


def restore_table(spark, settings, at: datetime, out_uri: str) -> dict:
    """Restore the whole table at `at` with Spark, written as a new Delta table at `out_uri`.

    Every partition alive at seq_at(at) is planned on its own (bases taken at different times)
    and replayed to the same seq, so the result is one common point in time. Columns:
    partition_id, key, value. Source tables are only read. `out_uri` must be new (or an empty
    folder) or an earlier restore-table output (:func:`weaver.core.storage.check_output_target`;
    each commit carries the restore's id in its ``userMetadata``). A rerun whose restore id
    (lake and seq) is the one `out_uri` holds, with the same rows, commits nothing (no new
    version, no data file; ``written`` is False); any other rerun replaces the table whole.
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    check_output_target(settings, out_uri, kind=storage.RESTORE_TABLE_OUTPUT)
    lineage = Lineage.load(settings)
    log = ChangeLog(settings)
    seq_t = resolve_seq(settings, at, log)
    catalog = read_snapshot_catalog(settings)
    idx = catalog_index(catalog)
    targets = lineage.active(seq_t) if seq_t > 0 else [p for p in lineage if p.created_seq == 0]
    plans = {p.partition_id: plan_restore(idx, lineage, p.partition_id, seq_t) for p in targets}
    base = min((pc_.base_seq for ps in plans.values() for pc_ in ps), default=0)
    validate_segment(settings, lineage, base, seq_t, log)
    df = materialize_with_spark(spark, settings, lineage, plans, seq_t).select("partition_id", "key", "value")
    rid = restore_id_for(settings, seq_t)
    held = _held_rows(out_uri, rid)
    written = True
    if held is not None:  # a rerun of the restore the table holds: compare before committing
        df = df.persist()
        written = not _same_rows(spark, df, out_uri, held)
    if written:
        meta = {storage.OUTPUT_KEY: storage.RESTORE_TABLE_OUTPUT, "weaver.restore_id": rid,
                "weaver.at": at.isoformat(), "weaver.as_of_seq": seq_t}
        storage.claim_output(out_uri, storage.RESTORE_TABLE_OUTPUT)
        faults.point("restore_table.before_write")
        (df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
           .option("userMetadata", json.dumps(meta, sort_keys=True)).save(out_uri))
        storage.release_output(out_uri)
    if held is not None:
        df.unpersist()
    adds = pa.table(storage.open_table(out_uri).get_add_actions(flatten=True)).column("num_records").to_pylist()
    rows = int(sum(n or 0 for n in adds))  # from the commit's own statistics: no second scan
    bases = sorted({pc_.base_seq for ps in plans.values() for pc_ in ps})
    return {"out": out_uri, "at": at.isoformat(), "as_of_seq": seq_t, "partitions": len(targets), "rows": rows,
            "base_seqs": bases, "sources": sorted({pc_.snapshot_id for ps in plans.values() for pc_ in ps
                                                   if pc_.snapshot_id}),
            "restore_id": rid, "written": written, "elapsed_ms": (time.perf_counter() - t0) * 1000.0}
