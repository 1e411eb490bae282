"""Single-process log replay with pyarrow.compute: the fold every restore path shares.

State is an Arrow table ``key (string), value (binary)`` sorted by key. Applying changes keeps,
per key, the last op by `seq`: a PUT sets the value, a DELETE removes the key.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from weaver.storage import STATE_SCHEMA


def empty_state() -> pa.Table:
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


def apply_changes(state: pa.Table | None, changes: pa.Table) -> pa.Table:
    """Fold `changes` (seq, key, op, value) onto `state` (key, value); returns sorted state."""
    base = empty_state() if state is None else state.select(["key", "value"]).cast(STATE_SCHEMA)
    if changes.num_rows == 0:
        return _sorted(base)
    last = last_per_key(changes.select(["seq", "key", "op", "value"]))
    touched = last.column("key")
    kept = base.filter(pc.invert(pc.is_in(base.column("key"), value_set=touched.combine_chunks())))
    puts = last.filter(pc.equal(last.column("op"), "PUT")).select(["key", "value"]).cast(STATE_SCHEMA)
    return _sorted(pa.concat_tables([kept, puts]))


def _sorted(state: pa.Table) -> pa.Table:
    if state.num_rows <= 1:
        return state.combine_chunks()
    return state.take(pc.sort_indices(state, sort_keys=[("key", "ascending")])).combine_chunks()


def filter_range(table: pa.Table, key_lo: str | None, key_hi: str | None) -> pa.Table:
    """Rows with key_lo <= key < key_hi (None = unbounded)."""
    mask = None
    k = table.column("key")
    if key_lo:
        mask = pc.greater_equal(k, key_lo)
    if key_hi is not None:
        m = pc.less(k, key_hi)
        mask = m if mask is None else pc.and_(mask, m)
    return table if mask is None else table.filter(mask)
