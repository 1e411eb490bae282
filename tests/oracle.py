"""Independent oracles for tests: brute-force folds of the change log in plain Python.

Nothing here imports weaver's replay/restore code: expectations are derived from the raw rows.
"""

from __future__ import annotations

from datetime import datetime


def fold(changes: list[dict], *, key_lo: str | None = None, key_hi: str | None = None,
         at: datetime | None = None, upto_seq: int | None = None) -> dict[str, bytes]:
    """State {key: value} after applying, in seq order, every change with ts <= at (and seq <=
    upto_seq) whose key lies in [key_lo, key_hi)."""
    state: dict[str, bytes] = {}
    for c in sorted(changes, key=lambda c: c["seq"]):
        if at is not None and c["ts"] > at:
            continue
        if upto_seq is not None and c["seq"] > upto_seq:
            continue
        k = c["key"]
        if key_lo and k < key_lo:
            continue
        if key_hi is not None and k >= key_hi:
            continue
        if c["op"] == "PUT":
            state[k] = c["value"]
        else:
            state.pop(k, None)
    return state


def rows_to_dict(table) -> dict[str, bytes]:
    """A (key, value) Arrow table / pandas frame / list of dicts as {key: value}, refusing duplicates."""
    if hasattr(table, "to_pylist"):
        rows = table.select(["key", "value"]).to_pylist()
    elif hasattr(table, "to_dict"):
        rows = table[["key", "value"]].to_dict("records")
    else:
        rows = list(table)
    out: dict[str, bytes] = {}
    for r in rows:
        assert r["key"] not in out, f"duplicate key {r['key']!r} in a restored state"
        out[r["key"]] = bytes(r["value"]) if r["value"] is not None else None
    return out
