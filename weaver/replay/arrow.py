"""The single-process fold (pyarrow.compute): a state plus changes, the last op per key winning.

State is an Arrow table ``key (string), value (binary)`` sorted by key. Folding changes keeps, per
key, the last op by `seq`: a PUT sets the value, a DELETE removes the key. :func:`fold` is the one
Arrow fold of the project; it picks one of two strategies with the same result:

* a short tail on a sorted state: binary-search the few touched keys and splice zero-copy slices
  (cost grows with the tail, not with the partition: recovery's hot path);
* otherwise: each key's last change by a hash aggregation, then one sort if the result is not
  already in key order (million-change tails: restores and snapshots).
"""

from __future__ import annotations

import bisect

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core.storage import STATE_SCHEMA, is_increasing

#: Above this many touched keys the splice costs more than a hash aggregation plus sort.
SPLICE_MAX_KEYS = 4096



def empty_state() -> pa.Table:
    """An empty state (key, value)."""
    return STATE_SCHEMA.empty_table()


def last_per_key(changes: pa.Table) -> pa.Table:
    """The last change (highest seq) of every key in `changes`."""
    if changes.num_rows == 0:
        return changes
    order = pc.sort_indices(changes, sort_keys=[("key", "ascending"), ("seq", "ascending")])
    c = changes.take(order)
    keys = c.column("key").combine_chunks()
    n = len(keys)
    if n == 1:
        return c
    # A row is the last of its key when the next row's key differs.
    differs = pc.not_equal(keys.slice(0, n - 1), keys.slice(1))
    is_last = pa.concat_arrays([differs, pa.array([True])])
    return c.filter(is_last)


class _SortedKeys:
    """Random access to the keys of a sorted (key, value) table as UTF-8 bytes, across chunks,
    without copying: Arrow compares strings bytewise, and so do Python bytes (UTF-8 order is
    code point order)."""

    def __init__(self, keys: pa.ChunkedArray):
        self._starts, self._offsets, self._data = [], [], []
        n = 0
        for chunk in keys.chunks:
            if len(chunk) == 0:
                continue
            if chunk.null_count or not pa.types.is_string(chunk.type):
                raise TypeError("keys must be non-null utf8")
            bufs = chunk.buffers()
            self._starts.append(n)
            # memoryview indexing yields Python ints/bytes without numpy's per-item overhead.
            self._offsets.append(memoryview(bufs[1]).cast("i")[chunk.offset:chunk.offset + len(chunk) + 1])
            self._data.append(memoryview(bufs[2]))
            n += len(chunk)
        self._n = n
        self._one = len(self._starts) == 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        if self._one:
            off, data = self._offsets[0], self._data[0]
            return bytes(data[off[i]:off[i + 1]])
        c = bisect.bisect_right(self._starts, i) - 1
        off = self._offsets[c]
        j = i - self._starts[c]
        return bytes(self._data[c][off[j]:off[j + 1]])


def fold(state: pa.Table | None, changes: pa.Table, *, state_sorted: bool = False) -> pa.Table:
    """`state` (key, value) with `changes` (seq, key, op, value) applied; returns the state sorted by key.

    `state_sorted` promises `state` is already in key order (a woven snapshot, a previous fold):
    a short tail is then spliced in without touching the other rows.
    """
    base = empty_state() if state is None else state.select(["key", "value"]).cast(STATE_SCHEMA)
    if changes.num_rows == 0:
        return base if state_sorted else _sorted(base)
    if state_sorted:
        last = last_per_key(changes.select(["seq", "key", "op", "value"]))
        if last.num_rows <= SPLICE_MAX_KEYS:
            return _splice(base, last)
    return _sorted(_hash_fold(base, changes))


def _hash_fold(base: pa.Table, changes: pa.Table) -> pa.Table:
    # Each key's last change by row position: a hash aggregation instead of a (key, seq) sort,
    # which matters for million-change tails. Position order is seq order once sorted by seq.
    if not is_increasing(changes.column("seq")):
        changes = changes.take(pc.sort_indices(changes, sort_keys=[("seq", "ascending")]))
    idx = pa.table({"key": changes.column("key"), "_i": pa.array(range(changes.num_rows), pa.int64())})
    last_i = idx.group_by("key", use_threads=False).aggregate([("_i", "max")]).column("_i_max")
    last = changes.select(["key", "op", "value"]).take(last_i)
    kept = base.filter(pc.invert(pc.is_in(base.column("key"), value_set=last.column("key").combine_chunks())))
    puts = last.filter(pc.equal(last.column("op"), "PUT")).select(["key", "value"]).cast(STATE_SCHEMA)
    return pa.concat_tables([kept, puts])


def _splice(rows: pa.Table, last: pa.Table) -> pa.Table:
    """Apply each key's last change (`last`, sorted by key) to sorted `rows` by binary search."""
    view = _SortedKeys(rows.column("key"))
    n = len(view)
    puts = last.select(["key", "value"]).cast(STATE_SCHEMA)
    ops = last.column("op").to_pylist()
    pieces, prev = [], 0
    for j, k in enumerate(last.column("key").to_pylist()):
        kb = k.encode()
        pos = bisect.bisect_left(view, kb, lo=prev)
        pieces.append(rows.slice(prev, pos - prev))
        if ops[j] == "PUT":
            pieces.append(puts.slice(j, 1))
        prev = pos + 1 if pos < n and view[pos] == kb else pos  # drop the old row of a touched key
    pieces.append(rows.slice(prev))
    return pa.concat_tables([p for p in pieces if p.num_rows] or [rows.slice(0, 0)])


def _sorted(state: pa.Table) -> pa.Table:
    state = state.combine_chunks()
    if state.num_rows > 1 and not is_increasing(state.column("key")):
        state = state.take(pc.sort_indices(state, sort_keys=[("key", "ascending")]))
    return state
