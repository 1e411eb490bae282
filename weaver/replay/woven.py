"""The Arrow woven fold: many woven sequences' states at many timepoints from ONE seq-ordered pass.

The Spark engine (:func:`weaver.replay.spark.woven_rows`) and this one produce the same rows.
Here the change log between the run's lowest base and its last timepoint is read once, in seq
windows cut at every timepoint seq (so a window never straddles a timepoint) and at most
:data:`WINDOW_BYTES` of changes each; every window is routed by key range to the sequences'
pieces, and a sequence emits its rows when the pass reaches one of its timepoint seqs. What is
held at once: the states of the sequences of one pass (the caller bounds that), one window, and
each piece's changes since its last fold (folded early past :data:`PENDING_BYTES`). Binary
columns never reach the 2 GiB offset limit: every table concatenated is bounded by those sizes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.storage import is_increasing
from weaver.core.time import to_us
from weaver.log.changelog import ChangeLog
from weaver.replay.arrow import _SortedKeys, fold
from weaver.replay.spark import WovenPlan

#: Bytes of changes (in memory) one window of the pass holds; far below the 2 GiB offset limit.
WINDOW_BYTES = 64 * 1024 * 1024
#: A piece's unfolded changes past this many bytes are folded into its state before the next
#: timepoint: the fold is associative, so folding early only bounds memory.
PENDING_BYTES = 64 * 1024 * 1024
#: A piece's changes are spliced into its sorted state when the state has this many times more
#: rows; otherwise the vectorised hash fold (plus a sort) is faster.
SPLICE_RATIO = 16
#: A state is made one chunk after a fold below this size (above, its binary column could pass
#: the 2 GiB offset limit of one array: it stays chunked).
COMBINE_MAX_BYTES = 1 << 30
#: Rows per output record batch.
OUT_BATCH_ROWS = 64 * 1024
_FIRST_WINDOW_ROWS = 16 * 1024
_COLUMNS = ["seq", "key", "op", "value"]
SCHEMA = storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]


@dataclass
class _Track:
    """One (sequence, base piece): its key range, base seq, current state and unfolded changes."""

    lo: str
    hi: str | None
    base_seq: int
    state: pa.Table
    pending: list = field(default_factory=list)
    pending_bytes: int = 0

    def add(self, changes: pa.Table) -> None:
        if changes.num_rows:
            self.pending.append(changes)
            self.pending_bytes += changes.nbytes
            if self.pending_bytes > PENDING_BYTES:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            changes = pa.concat_tables(self.pending)
            # The splice (binary search per touched key, in Python) pays off only when few keys of
            # a large state change; a woven state is often small next to an hour of changes.
            splice = changes.num_rows * SPLICE_RATIO < self.state.num_rows
            self.state = fold(self.state, changes, state_sorted=splice)
            self.pending, self.pending_bytes = [], 0
            if self.state.column(0).num_chunks > 1 and self.state.nbytes < COMBINE_MAX_BYTES:
                # A splice leaves a chunk per touched key: one chunk keeps the next splice's
                # key index and the emitted batches few and large.
                self.state = self.state.combine_chunks()


@dataclass
class WovenStats:
    """What a pass did: change-log rows read, changes replayed (routed to a piece), rows emitted."""

    changes_read: int = 0
    changes_replayed: int = 0
    rows: int = 0


def woven_batches(log: ChangeLog, todo: list[WovenPlan], base_of: Callable[[WovenPlan, object], pa.Table],
                  stats: WovenStats | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches (woven_snapshots' contract schema) of every (sequence, timepoint) of `todo`.

    `base_of(seq, piece)` gives a piece's base rows (key, value) sorted by key, already cut to the
    piece's range; changes with seq <= the piece's base_seq are not applied to it. The pass reads
    the log once over (min base seq, max timepoint seq]; contiguity is the caller's check.
    """
    stats = stats if stats is not None else WovenStats()
    tracks = {s.weave_id: [_Track(p.key_lo, p.key_hi, int(p.base_seq), base_of(s, p))
                           for p in sorted(s.pieces, key=lambda p: p.key_lo)] for s in todo}
    every = [t for ts in tracks.values() for t in ts]
    nxt = {s.weave_id: 0 for s in todo}
    lo = min(t.base_seq for t in every)
    cuts = sorted({int(q) for s in todo for q in s.tp_seqs if int(q) > lo})
    for window, pos in _windows(log, lo, cuts, stats):
        if window is not None and window.num_rows:
            _route(window, every, stats)
        for s in todo:
            i = nxt[s.weave_id]
            while i < len(s.tp_seqs) and int(s.tp_seqs[i]) <= pos:
                yield from _emit(s, tracks[s.weave_id], i, stats)
                i += 1
            nxt[s.weave_id] = i


def _windows(log: ChangeLog, lo: int, cuts: list[int], stats: WovenStats):
    """(changes, pos): the log's changes in (lo, cuts[-1]] in seq order, in pieces that end at a
    cut or hold at most WINDOW_BYTES, each with the seq it reaches (first: (None, lo)).

    One streaming scan in file order serves an append-only log (files and rows in seq order: each
    batch continues the previous one); at the first batch that does not, the rest is read in seq
    windows by filter, whatever the layout."""
    pos = lo
    yield None, pos
    if not cuts:
        return
    hi = cuts[-1]
    ci = 0  # cuts[ci] is the next cut > pos
    buf, size = [], 0
    ds = log.seq_range(lo, hi)
    for batch in ds.to_batches(columns=_COLUMNS, filter=(pc.field("seq") > lo) & (pc.field("seq") <= hi)):
        n = batch.num_rows
        if not n:
            continue
        seq = batch.column(0)
        if seq[0].as_py() != pos + 1 or seq[n - 1].as_py() != pos + n or not is_increasing(seq, strict=True):
            break  # out of seq order: fall back to filtered windows from pos
        stats.changes_read += n
        a = 0
        while a < n:
            take = min(n - a, cuts[ci] - pos)
            piece = batch.slice(a, take)
            buf.append(piece)
            size += piece.nbytes
            a, pos = a + take, pos + take
            if pos == cuts[ci] or size >= WINDOW_BYTES:
                yield pa.Table.from_batches(buf), pos
                buf, size = [], 0
                while ci < len(cuts) and cuts[ci] <= pos:
                    ci += 1
                if ci == len(cuts):
                    return
    if buf:
        yield pa.Table.from_batches(buf), pos
    rows_per_window = _FIRST_WINDOW_ROWS
    for cut in cuts:
        while pos < cut:
            end = min(cut, pos + rows_per_window)
            window = log.read(pos, end, columns=_COLUMNS)
            stats.changes_read += window.num_rows
            if window.num_rows:
                # The log is gap-free: rows per window follow from its bytes per change.
                rows_per_window = max(1024, int(WINDOW_BYTES * window.num_rows / max(1, window.nbytes)))
            pos = end
            yield window, pos


def _route(window: pa.Table, tracks: list[_Track], stats: WovenStats) -> None:
    """Hand each track the window's changes on its key range after its base seq."""
    seqs = window.column("seq")
    first, last = seqs[0].as_py(), seqs[-1].as_py()  # sorted by ChangeLog.read
    live = [t for t in tracks if last > t.base_seq]
    if not live:
        return
    if len(live) > 2:
        # Sorted by (key, seq) once, each range is a slice found by binary search.
        window = window.take(pc.sort_indices(window, sort_keys=[("key", "ascending"), ("seq", "ascending")]))
        view = _SortedKeys(window.column("key"))
        for t in live:
            a = bisect.bisect_left(view, t.lo.encode()) if t.lo else 0
            b = bisect.bisect_left(view, t.hi.encode(), lo=a) if t.hi is not None else len(view)
            _give(t, window.slice(a, b - a), first, stats)
    else:
        for t in live:
            _give(t, storage.filter_range(window, t.lo or None, t.hi), first, stats)


def _give(t: _Track, part: pa.Table, first_seq: int, stats: WovenStats) -> None:
    if first_seq <= t.base_seq:
        part = part.filter(pc.greater(part.column("seq"), t.base_seq))
    stats.changes_replayed += part.num_rows
    t.add(part)


def _emit(s: WovenPlan, tracks: list[_Track], i: int, stats: WovenStats) -> Iterator[pa.RecordBatch]:
    """The rows of sequence `s` at its i-th timepoint: each piece's state, routed by split key."""
    left, right = s.child_ids
    ts = pa.scalar(to_us(s.timepoints[i]), pa.int64()).cast(storage.TS)
    for t in tracks:
        t.flush()
        for b in t.state.to_batches(max_chunksize=OUT_BATCH_ROWS):
            n = b.num_rows
            if not n:
                continue
            key = b.column(0)
            stats.rows += n
            yield pa.RecordBatch.from_arrays([
                pa.repeat(pa.scalar(s.weave_id, pa.string()), n),
                pc.if_else(pc.less(key, s.split_key), left, right),
                pa.repeat(pa.scalar(s.source_partition_id, pa.string()), n),
                pa.repeat(ts, n),
                pa.repeat(pa.scalar(int(s.tp_seqs[i]), pa.int64()), n),
                key, b.column(1)], schema=SCHEMA)


def chunked(items: list, size: int) -> Iterable[list]:
    """`items` in consecutive groups of at most `size`."""
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]
