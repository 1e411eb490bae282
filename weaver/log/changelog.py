"""The one change-log reader: seq at T, tails, contiguity, and validated segments.

:class:`ChangeLog` opens one version of the `changelog` table and prunes files on the Delta log's
per-file ``seq``/``ts`` statistics, so the cost of a read follows the segment, not the log.
Every "largest seq at or before T" of the project is :meth:`ChangeLog.seq_at` (or its batched
form :meth:`ChangeLog.seqs_at`).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.storage import filter_range, is_increasing
from weaver.core.deltafiles import DeltaFiles, delta_files
from weaver.core.errors import (
    CorruptTableError, InvalidTimepointError, NonMonotonicTimestampError, SeqGapError, WeaverError,
)
from weaver.core.time import MICROSECOND, to_us
from weaver.log.lineage import Lineage
from weaver.log.validate import NARROW, check_ownership, put_without_value, validate_changes

#: Table property on `changelog` recording the first seq vacuum kept (see weaver.pitr.retention).
LOG_START_PROPERTY = "weaver.logStartSeq"
#: Bytes (in memory) of the change-log window :func:`validate_segment` checks at once. Far below
#: pyarrow's 2 GiB offset limit of a binary column; tests lower it to cross windows on small logs.
SEGMENT_WINDOW_BYTES = 32 * 1024 * 1024
FIRST_WINDOW_SEQS = 16  # seqs in the first window, before its bytes per change are known (then x4 at most)
#: Above this many bytes a table is sorted through 64-bit offsets (a plain `take` concatenates
#: each binary column into one array, which fails past 2 GiB).
WIDE_SORT_BYTES = 1 << 30
#: Rows per batch of the one-pass scan (pieces of SEGMENT_WINDOW_BYTES are gathered from them).
STREAM_BATCH_ROWS = 8_192
#: Bytes of a data file the scan for PUTs without a value reads at a time (pages, not row groups).
VALUE_SCAN_BUFFER = 8 * 1024 * 1024
#: Most sorted runs merged at once (one batch of each is held); beyond, the seq windows read.
MAX_MERGE_RUNS = 64
_MS = timedelta(milliseconds=1)


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """A data file of the change log that is missing or not Parquet is a CorruptTableError (named,
    a 500 in the API), never a raw traceback."""
    try:
        yield
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"Delta table {storage.CHANGELOG} at {uri} cannot be read: {exc}; restore the "
                                "missing or damaged data file (or re-extract the change log)") from exc


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
        return storage.dataset(self.dt)

    def pruned(self, filters: list):
        """A dataset of only the files whose Delta min/max statistics may satisfy `filters`
        (tuple filters, pruned in delta-rs; files without statistics are kept)."""
        return storage.dataset(self.dt, file_pruning_predicate=filters)

    def seq_range(self, after_seq: int, upto_seq: int):
        return self.pruned([("seq", ">", int(after_seq)), ("seq", "<=", int(upto_seq))])

    def seq_at(self, at: datetime) -> int:
        """Largest seq with ts <= `at` (0 when none); files wholly before `at` answer from stats."""
        return self._seqs(DeltaFiles(self.uri, storage.CHANGELOG, self.dt), [at], at)[0]

    def seqs_at(self, tps: list[datetime]) -> tuple[datetime | None, list[int]]:
        """The log's latest ts (None: empty log) and, per sorted timepoint, :meth:`seq_at` of it.

        The latest ts is :func:`last_change_ts`'s, on this same version; the seqs are read as
        :meth:`_seqs` reads them, so the cost follows the timepoints, not the log's length.
        """
        files = DeltaFiles(self.uri, storage.CHANGELOG, self.dt)
        with _reading(self.uri):
            max_ts = _max_ts(files)
        if max_ts is None:
            return None, [0] * len(tps)
        return max_ts, self._seqs(files, tps, min(tps[-1], max_ts))

    def _seqs(self, files: DeltaFiles, tps: list[datetime], upto: datetime) -> list[int]:
        """Per sorted timepoint, the largest seq with ts <= it (0: none), reading no row after `upto`.

        Files wholly before the first timepoint give their `max.seq` statistic - with a millisecond
        to spare, since writers may keep timestamp statistics to the millisecond (Delta Spark
        truncates the maximum) - and only `seq`, `ts` of the other files that can hold a seq above
        it are read. The files are chosen here, and a local table's are read without delta-rs'
        statistics guarantees (:class:`DeltaFiles`): delta-rs' pyarrow dataset states
        ``ts >= null`` for a file without a `ts` statistic, which prunes it from any `ts` filter
        (a remote table is still read through it). seq grows with ts (DESIGN §4.5), so one sorted search
        answers every timepoint.
        """
        base = 0
        top_ts, top_seq, low_ts = files.column("max.ts"), files.column("max.seq"), files.column("min.ts")
        # At the earliest representable instants no millisecond lies before the first timepoint.
        if tps[0] - datetime.min.replace(tzinfo=tps[0].tzinfo) >= _MS:
            edge = tps[0] - _MS
            base = max((q for t, q in zip(top_ts, top_seq) if t is not None and q is not None and t <= edge), default=0)
        # Files that may hold a seq above `base` with ts <= upto (a missing statistic keeps a file;
        # a millisecond statistic may lie up to a millisecond either way).
        paths = [p for p, q, lo in zip(files.column("path"), top_seq, low_ts)
                 if (q is None or q > base) and (lo is None or lo <= upto + _MS)]
        if not paths:
            return [base] * len(tps)
        t = files.read(paths, ["seq", "ts"], (pc.field("seq") > base) & (pc.field("ts") <= pa.scalar(upto, storage.TS)),
                       use_threads=False)
        if t.num_rows == 0:
            return [base] * len(tps)
        t = t.sort_by([("seq", "ascending")])
        seq = t.column("seq").to_numpy()
        ts = pc.cast(t.column("ts"), pa.int64()).to_numpy()
        idx = np.searchsorted(ts, np.array([to_us(x) for x in tps], dtype=np.int64), side="right")
        return [int(seq[i - 1]) if i > 0 else base for i in idx]

    def seq_before(self, at: datetime) -> int:
        """Largest seq with ts < `at` (0 when none): the change just before an interval starting at `at`."""
        if at - datetime.min.replace(tzinfo=at.tzinfo) < MICROSECOND:
            return 0  # nothing is before the earliest instant
        return self.seq_at(at - MICROSECOND)

    def read(self, after_seq: int, upto_seq: int, key_lo: str | None = None, key_hi: str | None = None,
             columns: list[str] | None = None, *, ranges: list[tuple[str | None, str | None]] | None = None
             ) -> pa.Table:
        """Changes with after_seq < seq <= upto_seq (and key in [key_lo, key_hi), and in one of
        `ranges` when given: one scan for several key ranges), sorted by seq."""
        expr = (pc.field("seq") > after_seq) & (pc.field("seq") <= upto_seq)
        if key_lo:
            expr = expr & (pc.field("key") >= key_lo)
        if key_hi is not None:
            expr = expr & (pc.field("key") < key_hi)
        if ranges is not None:
            expr = expr & storage.key_ranges_expr(ranges)
        ds = self.seq_range(after_seq, upto_seq)
        with _reading(self.uri):
            try:
                t = ds.to_table(filter=expr, columns=columns)
            except pa.ArrowNotImplementedError:
                # Files rewritten by delta-rs MERGE/DELETE carry string_view, which pyarrow filters
                # cannot compare: read those files whole and filter in memory.
                t = ds.to_table(columns=columns)
                t = t.filter(expr)
        if columns is None:
            t = storage.conform(t, storage.CHANGELOG, where=f" at {self.uri}")
        if t.num_rows > 1 and not is_increasing(t.column("seq")):
            t = sort_by_seq(t)
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
        if n == upto_seq - after_seq and (n == 0 or is_increasing(col, strict=True)):
            return
        validate_segment(None, None, after_seq, upto_seq, log=self)  # window by window: names the seq
        # validate_changes found no gap inside the segment: the missing seqs are at its end.
        last = int(pc.max(col).as_py()) if n else after_seq
        raise SeqGapError(f"change log lacks seq {last + 1}..{upto_seq}; re-extract it before restoring",
                          seq=last + 1, partition_id=None)

    def check_owned(self, after_seq: int, upto_seq: int, lineage: Lineage) -> int:
        """Every change in (after_seq, upto_seq] filed under a partition that owned its key and its
        seq (DESIGN §4.5), else KeyOutOfRangeError naming the first offender of the first batch
        that holds one; returns the number of changes checked. Reads `seq, partition_id, key`
        batch by batch, about :data:`OWNED_BATCH_ROWS` rows at a time, so memory stays bounded
        whatever the segment's length; contiguity is :meth:`check_contiguous`'s."""
        if upto_seq <= after_seq:
            return 0
        cols = ["seq", "partition_id", "key"]
        expr = (pc.field("seq") > after_seq) & (pc.field("seq") <= upto_seq)
        ds = self.seq_range(after_seq, upto_seq)
        with _reading(self.uri):
            try:
                return _owned_pass(ds.to_batches(columns=cols, filter=expr), lineage)
            except pa.ArrowNotImplementedError:
                # string_view in files rewritten by delta-rs MERGE/DELETE: filter in memory (as read()).
                return _owned_pass((b.filter(pc.and_(pc.greater(b.column("seq"), after_seq),
                                                     pc.less_equal(b.column("seq"), upto_seq)))
                                    for b in ds.to_batches(columns=cols)), lineage)

    def ts_of(self, seq: int) -> datetime:
        t = self.read(seq - 1, seq, columns=["seq", "ts"])
        return t.column("ts")[0].as_py()


#: Changes checked together by :meth:`ChangeLog.check_owned` (3 narrow columns: some 30 MB).
OWNED_BATCH_ROWS = 1_000_000


def _owned_pass(batches, lineage: Lineage) -> int:
    """check_ownership over `batches`, about OWNED_BATCH_ROWS rows at a time; the rows checked."""
    n, buf, size = 0, [], 0
    for b in batches:
        if not b.num_rows:
            continue
        buf.append(b)
        size += b.num_rows
        if size >= OWNED_BATCH_ROWS:
            n += _owned_piece(buf, lineage)
            buf, size = [], 0
    return n + (_owned_piece(buf, lineage) if buf else 0)


def _owned_piece(batches: list, lineage: Lineage) -> int:
    t = pa.Table.from_batches(batches)
    check_ownership(t.cast(pa.schema([("seq", pa.int64()), ("partition_id", pa.string()), ("key", pa.string())])),
                    lineage)
    return t.num_rows


def sort_by_seq(t: pa.Table) -> pa.Table:
    """`t` sorted by seq, also when its binary/string columns hold more than 2 GiB.

    A plain `take` concatenates each binary column into one 32-bit-offset array. Past
    :data:`WIDE_SORT_BYTES` the batches are reordered as they are when each is sorted and their
    seq ranges do not overlap (files of an append-only log: no copy), else the rows are taken
    through large_binary/large_string and handed back in chunks of the table's own schema.
    """
    if t.nbytes <= WIDE_SORT_BYTES:
        return t.take(pc.sort_indices(t, sort_keys=[("seq", "ascending")]))
    batches = [b for b in t.to_batches() if b.num_rows]
    if all(is_increasing(b.column("seq"), strict=True) for b in batches):
        batches.sort(key=lambda b: b.column("seq")[0].as_py())
        if all(a.column("seq")[-1].as_py() < b.column("seq")[0].as_py() for a, b in zip(batches, batches[1:])):
            return pa.Table.from_batches(batches, t.schema)
    widen = {pa.binary(): pa.large_binary(), pa.string(): pa.large_string()}
    wide = t.cast(pa.schema([f.with_type(widen.get(f.type, f.type)) for f in t.schema]))
    out = wide.take(pc.sort_indices(wide, sort_keys=[("seq", "ascending")]))
    del wide
    rows = max(1, int(t.num_rows * (WIDE_SORT_BYTES / 2) // t.nbytes))
    # A slice keeps its parent's 64-bit offsets: take it afresh so that the cast sees small ones.
    return pa.Table.from_batches([b.take(pa.array(range(b.num_rows))).cast(t.schema)
                                  for b in out.to_batches(max_chunksize=rows)], t.schema)


def _int_or_none(v) -> int | None:
    return int(v) if v not in (None, "") else None


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


#: How far a file's `max.ts` statistic may lie from its real maximum: writers keep timestamp
#: statistics to the millisecond (delta-rs and Delta Spark truncate the maximum, weaver.core.filecommit
#: rounds it up), so less than a millisecond either way; twice that, to be safe.
_TS_STAT_SLACK = 2 * _MS


def last_change_ts(settings, *, missing_ok: bool = False) -> datetime | None:
    """The latest `ts` in the change log: how far the log's history reaches (None: an empty log,
    or no log and `missing_ok`; without it a missing log is a TableNotFoundError).

    The exact maximum over every row (not the ts of the largest seq), answered from the Delta file
    statistics without scanning the `ts` column: only files whose `max.ts` lies within
    :data:`_TS_STAT_SLACK` of the largest one - the only ones that can hold the maximum - and files
    without a `ts` statistic are read, and of them only the rows from that bound on. So the cost
    follows the newest files, not the log's length; a vacuumed prefix changes nothing.
    """
    log = delta_files(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG, missing_ok=missing_ok)
    return None if log is None else _max_ts(log)


def _max_ts(log: DeltaFiles) -> datetime | None:
    """:func:`last_change_ts` of one version of the log (its files and their statistics)."""
    paths, top = log.column("path"), log.column("max.ts")
    known = [m for m in top if m is not None]
    expr = None
    if known and max(known) - datetime.min.replace(tzinfo=max(known).tzinfo) > _TS_STAT_SLACK:
        edge = max(known) - _TS_STAT_SLACK
        paths = [p for p, m in zip(paths, top) if m is None or m >= edge]
        expr = pc.field("ts") >= pa.scalar(edge, storage.TS)
    if not paths:
        return None
    t = log.read(paths, ["ts"], expr, use_threads=False)
    return pc.max(t.column("ts")).as_py() if t.num_rows else None


def history_end(settings, splits: pa.Table, *, missing_ok: bool = False) -> datetime | None:
    """How far the known history reaches: the later of the change log's last `ts`
    (:func:`last_change_ts`) and the last `split_ts` of `splits` (None: neither holds a row).

    A window ending after it has an unknown outcome: backtests censor it, the woven lifecycle
    leaves it active instead of refuting it.
    """
    ts = splits.column("split_ts")
    last = pc.max(ts).as_py() if len(ts) else None
    log = last_change_ts(settings, missing_ok=missing_ok)
    if log is not None and (last is None or log > last):
        last = log
    return last


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
    before anything is written (a PUT without a value, found by a scan of its own, is named when its
    seq comes before that of the pass's error); a segment vacuum already cut is an
    InvalidTimepointError. The pass reads only the :data:`~weaver.log.validate.NARROW` columns
    (seq, ts, partition_id, key, op), in pieces of about :data:`SEGMENT_WINDOW_BYTES` (seq
    contiguity and ts order carried from one piece to the next), so a log of any size is checked
    in bounded memory: one pass over the files in seq order when their statistics say they do not
    overlap and each is stored sorted (an append-only log), else seq windows read by filter. "A
    PUT carries a value" is one filtered scan of `op` and `value` beside it, keeping only offenders.
    """
    if upto_seq <= after_seq:
        return 0
    log = log or ChangeLog(settings)
    log.check_start(after_seq)
    # A log never vacuumed may start at any seq; otherwise the segment must start right after the base.
    known_start = after_seq > 0 or log.start is not None
    first = after_seq + 1 if known_start else _next_seq(log, after_seq, upto_seq)
    if first is None:
        raise SeqGapError(f"change log lacks seq {after_seq + 1}..{upto_seq}; re-extract it",
                          seq=after_seq + 1, partition_id=None)
    # Values apart: one scan of `op`, `value` for a PUT without a value, and the pass below over
    # the narrow columns only (the values are most of a log's bytes: 18.8 of 21.1 GB in memory on a
    # simulated 44 M-change lake, and the pass copies each piece to sort and check it). The
    # earlier of the two seqs is named.
    bare = _first_put_without_value(log, first, upto_seq)
    try:
        got = _validate_in_file_order(log, lineage, first, upto_seq)
        n, prev = got if got is not None else _validate_in_windows(log, lineage, first, upto_seq, known_start)
        if n == 0 or prev[0] != upto_seq:
            lack = prev[0] + 1 if n else first
            raise SeqGapError(f"change log lacks seq {lack}..{upto_seq}; re-extract it", seq=lack, partition_id=None)
    except WeaverError as exc:
        at = getattr(exc, "seq", None)
        if bare is not None and at is not None and bare[0] < at:
            raise put_without_value(*bare) from None
        raise
    if bare is not None:
        raise put_without_value(*bare)
    return n


def _first_put_without_value(log: ChangeLog, first: int, upto_seq: int) -> tuple[int, str | None] | None:
    """(seq, partition_id) of the first PUT without a value in [first, upto_seq], None if none.

    One scan of `seq, partition_id, op, value` over the files that can hold the segment, keeping
    only the offending rows. Files whose Delta statistics show `value` never null are skipped, and
    so are row groups whose Parquet statistics put them outside the segment (or after an offender
    already found) or show `value` never null. Memory follows the batch, not the segment or a
    file's row group: one file and one batch of :data:`STREAM_BATCH_ROWS` at a time, its pages
    through a buffered stream of :data:`VALUE_SCAN_BUFFER` bytes, no read-ahead (the dataset
    scanner, even with its read-ahead turned down, held about a GB of values for one hour's
    segment in bench/log_check.py). Batches are filtered in memory: files delta-rs rewrote carry
    `string_view`, which pyarrow's pushed-down filters cannot compare.
    """
    import posixpath
    from urllib.parse import unquote

    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    files = delta_files(log.uri, storage.CHANGELOG)
    # Data files are named uniquely (part-...-<uuid>), so their base names identify them.
    never_null = {posixpath.basename(unquote(p)) for p, nulls in zip(files.column("path"),
                                                                    files.column("null_count.value")) if nulls == 0}
    best = None

    def look(batches) -> None:
        nonlocal best
        for b in batches:
            seq = b.column("seq")
            bare = pc.and_(pc.and_(pc.greater_equal(seq, first), pc.less_equal(seq, upto_seq)),
                           pc.and_(pc.equal(b.column("op").cast(pa.string()), "PUT"), pc.is_null(b.column("value"))))
            if not pc.any(bare).as_py():
                continue
            at = int(pc.min(pc.filter(seq, bare)).as_py())  # (no take of string_view columns)
            if best is None or at < best[0]:
                i = pc.index(pc.if_else(bare, seq, None), at).as_py()
                best = (at, b.column("partition_id")[i].as_py())

    with _reading(log.uri):
        ds = log.seq_range(first - 1, upto_seq)
        for fr in ds.get_fragments():
            if posixpath.basename(unquote(fr.path)) in never_null:
                continue
            try:
                with fr.filesystem.open_input_file(fr.path) as f:
                    pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=VALUE_SCAN_BUFFER)
                    hi = upto_seq if best is None else min(upto_seq, best[0] - 1)
                    groups = [g for g in range(pf.num_row_groups)
                              if _group_may_hold(pf.metadata.row_group(g), first, hi)]
                    if groups:
                        look(pf.iter_batches(batch_size=STREAM_BATCH_ROWS, row_groups=groups, columns=_VALUE_SCAN,
                                             use_threads=False))
            except (KeyError, ValueError, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                # A file that is not the table's columns as stored (a Delta partition column kept
                # in the path, a column the file lacks or stores as another type): read through
                # the table's dataset, which fills and casts them, with no read-ahead. (Hits
                # already taken from it are taken again: the earliest is kept.)
                look(fr.to_batches(schema=ds.schema, columns=_VALUE_SCAN, batch_size=STREAM_BATCH_ROWS,
                                   batch_readahead=0, use_threads=False,
                                   fragment_scan_options=pds.ParquetFragmentScanOptions(
                                       pre_buffer=False, use_buffered_stream=True, buffer_size=VALUE_SCAN_BUFFER)))
    return best


#: The columns of the scan for a PUT without a value.
_VALUE_SCAN = ["seq", "partition_id", "op", "value"]


def _group_may_hold(rg, first: int, upto_seq: int) -> bool:
    """Whether a row group's Parquet statistics leave room for a PUT without a value in
    [first, upto_seq] (no statistics: it may)."""
    stats = {rg.column(i).path_in_schema: rg.column(i).statistics for i in range(rg.num_columns)}
    seq, value = stats.get("seq"), stats.get("value")
    if seq is not None and seq.has_min_max and (seq.max < first or seq.min > upto_seq):
        return False
    return not (value is not None and value.has_null_count and value.null_count == 0)


def _check_piece(piece: pa.Table, lineage, cur: int, prev) -> tuple[int, tuple]:
    """Check one piece of a segment that must start at seq `cur`, after the change `prev` (seq, ts)
    of the previous piece; return its size and its own last (seq, ts)."""
    piece = piece if is_increasing(piece.column("seq")) else sort_by_seq(piece)
    head_seq = int(piece.column("seq")[0].as_py())
    head_pid = piece.column("partition_id")[0].as_py()
    if head_seq != cur:
        # The same messages as inside one batch: a gap is named by its neighbours.
        if prev is None:
            raise SeqGapError(f"change log resumes at seq {head_seq} but seq {cur} was expected "
                              f"(a gap before {head_seq})", seq=cur, partition_id=head_pid)
        raise SeqGapError(f"gap in seq after {cur - 1}: next is {head_seq} (partition {head_pid}); "
                          "the change log is incomplete - re-extract it before running",
                          seq=cur, partition_id=head_pid)
    if prev is not None:
        head_ts = piece.column("ts")[0].as_py()
        if head_ts < prev[1]:
            raise NonMonotonicTimestampError(
                f"ts goes backwards at seq {head_seq} (partition {head_pid}): {head_ts} < {prev[1]}",
                seq=head_seq, partition_id=head_pid)
    n = validate_changes(piece, lineage, expected_first_seq=cur, values=False)
    return n, (int(piece.column("seq")[-1].as_py()), piece.column("ts")[-1].as_py())


def _validate_in_file_order(log: ChangeLog, lineage, first: int, upto_seq: int):
    """One pass over the segment's files, merged in seq order, checked in pieces of about
    SEGMENT_WINDOW_BYTES; None (nothing concluded) when the table is not a plain local one, a
    file lacks statistics, or two files hold the same seq - then the seq windows decide."""
    files = delta_files(log.uri, storage.CHANGELOG)
    if not files.native:
        return None
    spans = [(lo, hi, path) for path, lo, hi in zip(files.column("path"), files.column("min.seq"),
                                                    files.column("max.seq"))
             if lo is None or hi is None or (hi >= first and lo <= upto_seq)]
    if not spans or any(lo is None or hi is None for lo, hi, _ in spans):
        return None
    try:
        return _merge_pass(_merged(files, sorted(spans), first, upto_seq), lineage, first)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError, OSError, _Unmergeable):
        return None  # a file off the contract's schema (or unreadable): the windows' read names it
    except WeaverError:
        # A file found unsorted later in the pass can hold what looked missing: the windows,
        # which read by seq, name the error for sure.
        return None


class _Unmergeable(Exception):
    """The files are too far from seq order for the one-pass merge."""


def _merge_pass(parts, lineage, first: int):
    n, cur, prev, buf, size, last = 0, first, None, [], 0, first - 1
    for part in parts:
        seq = part.column("seq")
        if int(seq[0].as_py()) <= last or not is_increasing(seq, strict=True):
            return None  # a seq in two files: the windows name the duplicate
        last = int(seq[-1].as_py())
        buf.append(part)
        size += part.nbytes
        if size >= SEGMENT_WINDOW_BYTES:
            k, prev = _check_piece(pa.concat_tables(buf), lineage, cur, prev)
            n, cur, buf, size = n + k, prev[0] + 1, [], 0
    if buf:
        k, prev = _check_piece(pa.concat_tables(buf), lineage, cur, prev)
        n += k
    if n == 0:
        return None
    return n, prev


def _merged(files, spans: list, first: int, upto_seq: int):
    """Tables of the files' rows in [first, upto_seq], in seq order, one batch per sorted run
    held at a time: a k-way merge of the runs (a parallel writer interleaves files, and a row
    group may hold more than one run). Runs are found from the `seq` column alone."""
    import pyarrow.parquet as pq

    runs = []  # (path, row group, first row, end row) each sorted by seq
    for lo, hi, path in spans:
        pf = pq.ParquetFile(files.local_path(path), pre_buffer=False)
        for g in range(pf.num_row_groups):
            seq = pf.read_row_group(g, columns=["seq"], use_threads=False).column("seq")
            if not len(seq):
                continue
            arr = seq.combine_chunks()
            down = pc.less_equal(arr.slice(1), arr.slice(0, len(arr) - 1))
            cuts = [0] + [i + 1 for i in pc.indices_nonzero(down).to_pylist()] + [len(arr)]
            runs += [(path, g, a, b) for a, b in zip(cuts, cuts[1:])]

    if len(runs) > MAX_MERGE_RUNS:
        raise _Unmergeable  # a file stored out of order: each run would re-read its row group

    def batches(path, g, a, b):
        # One row group, batch by batch, no read-ahead: memory follows the batch size.
        pf = pq.ParquetFile(files.local_path(path), pre_buffer=False)
        row = 0
        for batch in pf.iter_batches(batch_size=STREAM_BATCH_ROWS, row_groups=[g], columns=list(NARROW),
                                     use_threads=False):
            lo, hi = max(a - row, 0), min(b - row, batch.num_rows)
            row += batch.num_rows
            if hi <= lo:
                if row >= b:
                    return
                continue
            batch = batch.slice(lo, hi - lo)
            seq = batch.column("seq")
            batch = batch.filter(pc.and_(pc.greater_equal(seq, first), pc.less_equal(seq, upto_seq)))
            if batch.num_rows:
                yield pa.Table.from_batches([batch])

    live = [[batches(*r), None] for r in runs]  # [iterator, pending table]
    while True:
        for s in live:
            while s[1] is None or s[1].num_rows == 0:
                s[1] = next(s[0], None)
                if s[1] is None:
                    break
        live = [s for s in live if s[1] is not None]
        if not live:
            return
        # Every row at or below the smallest pending tail is already pending in its run.
        bound = min(s[1].column("seq")[-1].as_py() for s in live)
        out = []
        for s in live:
            k = int(pc.sum(pc.less_equal(s[1].column("seq"), bound)).as_py())
            out.append(s[1].slice(0, k))
            s[1] = s[1].slice(k)
        part = pa.concat_tables([t for t in out if t.num_rows], promote_options="permissive")
        yield part if len(out) == 1 else part.take(pc.sort_indices(part, sort_keys=[("seq", "ascending")]))


def _validate_in_windows(log: ChangeLog, lineage, first: int, upto_seq: int, known_start: bool):
    """Check the segment in seq windows read by filter, whatever the file layout."""
    n, cur, width, prev = 0, first, FIRST_WINDOW_SEQS, (first - 1, None)  # last (seq, ts) checked
    while cur <= upto_seq:
        end = min(upto_seq, cur + width - 1)
        win = log.read(cur - 1, end, columns=list(NARROW))
        if win.num_rows == 0:
            nxt = _next_seq(log, end, upto_seq)
            if nxt is None:
                if n == 0 and not known_start:
                    break
                raise SeqGapError(f"change log lacks seq {cur}..{upto_seq}; re-extract it", seq=cur,
                                  partition_id=None)
            win = log.read(nxt - 1, nxt, columns=list(NARROW))
        k, prev = _check_piece(win, lineage, cur, prev if n else None)
        n += k
        # Size the next window from the bytes this one took, to stay near the budget.
        width = max(1, min(width * 4, int(SEGMENT_WINDOW_BYTES * win.num_rows / max(1, win.nbytes))))
        cur = prev[0] + 1
    return n, prev


def _next_seq(log: ChangeLog, after_seq: int, upto_seq: int) -> int | None:
    """Smallest seq in (after_seq, upto_seq], scanning `seq` batch by batch (None: no change)."""
    best = None
    expr = (pc.field("seq") > after_seq) & (pc.field("seq") <= upto_seq)
    with _reading(log.uri):
        for b in log.seq_range(after_seq, upto_seq).to_batches(columns=["seq"], filter=expr):
            if b.num_rows:
                m = int(pc.min(b.column(0)).as_py())
                best = m if best is None else min(best, m)
    return best


def read_changes(
    settings,
    *,
    after_seq: int | None = None,
    upto_seq: int | None = None,
    upto_ts: datetime | None = None,
    partition_ids: list[str] | None = None,
    key_lo: str | None = None,
    key_hi: str | None = None,
) -> pa.Table:
    """Changes sorted by seq, filtered with predicates pushed down to delta-rs."""
    filters: list = []
    if after_seq is not None:
        filters.append(("seq", ">", after_seq))
    if upto_seq is not None:
        filters.append(("seq", "<=", upto_seq))
    if upto_ts is not None:
        filters.append(("ts", "<=", pa.scalar(upto_ts, storage.TS)))
    if partition_ids is not None:
        filters.append(("partition_id", "in", list(partition_ids)))
    if key_lo:
        filters.append(("key", ">=", key_lo))
    if key_hi is not None:
        filters.append(("key", "<", key_hi))
    t = storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG, filters=filters or None)
    return sort_by_seq(t) if t.num_rows > 1 else t


def read_tail(settings, after_seq: int, at: datetime, key_lo: str | None, key_hi: str | None,
              lineage: Lineage | None = None, check_range: tuple[str | None, str | None] | None = None
              ) -> pa.Table:
    """Changes with seq > `after_seq` and ts <= `at` on keys in [key_lo, key_hi), sorted by seq
    (columns seq, ts, key, op, value).

    Only files whose seq/ts stats overlap the tail are read. The whole tail (all keys) is checked
    to hold every seq once - on a hole the PITR check names the offending seq - and the key range
    is applied in memory: the tail is short by design. The tail on `check_range` (default: the
    key range) is then validated as the standard path validates its own (validate_changes: ts
    order, op, a PUT's value, key ownership against `lineage`), so both paths refuse the same bad
    log (DESIGN §4.3, §4.5).
    """
    cols = list(storage.SCHEMAS[storage.CHANGELOG].names)
    log = delta_files(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG)
    hi_seq, lo_ts = log.column("max.seq"), log.column("min.ts")
    paths = [p for p, mx, t0 in zip(log.column("path"), hi_seq, lo_ts)
             if (mx is None or mx > after_seq) and (t0 is None or t0 - _MS <= at)]
    t = log.read(paths, cols,
                 (pc.field("seq") > after_seq) & (pc.field("ts") <= pa.scalar(at, storage.TS)),
                 use_threads=False) if paths else storage.empty(storage.CHANGELOG)
    n = t.num_rows
    if n:
        seqs = t.column("seq")
        top = int(pc.max(seqs).as_py())
        if n != top - after_seq or pc.count_distinct(seqs).as_py() != n:
            check_contiguous(settings, after_seq, top)  # raises the named error
    lo, hi = check_range if check_range is not None else (key_lo, key_hi)
    t = filter_range(t, lo or None, hi)
    if t.num_rows > 1:
        t = sort_by_seq(t)
    validate_changes(t, lineage, check_gaps=False)
    if check_range is not None:
        t = filter_range(t, key_lo or None, key_hi)
    return t.select(["seq", "ts", "key", "op", "value"])
