"""The size fold (numpy): live items and their bytes over a sorted key universe, advanced in seq order.

Metrics need no values, only each key's liveness and item bytes at bucket ends, so the change log
is read as a narrow :class:`LogView` (seq, ts, key index, is_put, bytes) and folded by
:class:`KeyState` - the same last-op-per-key rule as the Arrow and Spark folds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np



@dataclass
class LogView:
    """A narrow, seq-sorted projection of the change log (no values) with numpy accessors.

    ``item_bytes`` is key bytes + value bytes of a PUT and key bytes of a DELETE.
    """

    seq: np.ndarray
    ts: np.ndarray  # int64 microseconds
    pid: np.ndarray  # object (partition_id)
    kidx: np.ndarray  # index of the key in `universe`
    is_put: np.ndarray
    item_bytes: np.ndarray
    key_bytes: np.ndarray
    universe: np.ndarray  # sorted distinct keys (object)
    # A vacuumed log starts after a base: the live items (universe index, item bytes) as of
    # `base_seq`, known from instant `base_ts` on. No base: the log is complete from seq 1.
    base_idx: np.ndarray | None = None
    base_bytes: np.ndarray | None = None
    base_seq: int = 0
    base_ts: int | None = None  # us

    def first_bucket(self, bu: int) -> int | None:
        """Start (us) of the first bucket whose writes and end state the log fully knows."""
        if self.base_ts is not None:
            return (self.base_ts // bu + 1) * bu
        return (int(self.ts[0]) // bu) * bu if self.n else None

    @property
    def n(self) -> int:
        return int(self.seq.shape[0])

    def key_index(self, key: str | None, *, upper: bool = False) -> int:
        """Position of a range bound in the key universe (None = +inf for an upper bound)."""
        if key is None:
            return len(self.universe) if upper else 0
        return int(np.searchsorted(self.universe, key, side="left"))

    def pos_before_ts(self, ts_us: int) -> int:
        """Number of changes with ts < ts_us."""
        return int(np.searchsorted(self.ts, ts_us, side="left"))

    def pos_upto_seq(self, seq: int) -> int:
        """Number of changes with seq <= `seq`."""
        return int(np.searchsorted(self.seq, seq, side="right"))


class KeyState:
    """Live items over a LogView's key universe, advanced by applying changes in seq order."""

    def __init__(self, log: LogView):
        self.log = log
        self.bytes = np.zeros(len(log.universe), dtype=np.int64)
        self.live = np.zeros(len(log.universe), dtype=bool)
        self.pos = 0  # changes [0, pos) are applied
        self._cs: tuple[np.ndarray, np.ndarray] | None = None
        if log.base_idx is not None:
            self.bytes[log.base_idx] = log.base_bytes
            self.live[log.base_idx] = True

    def advance(self, to_pos: int) -> None:
        """Apply changes [pos, to_pos)."""
        if to_pos <= self.pos:
            return
        sl = slice(self.pos, to_pos)
        idx = self.log.kidx[sl]
        # Only the last change of each key in the slice matters (PUT sets, DELETE removes).
        rev_first = np.unique(idx[::-1], return_index=True)[1]
        last = (to_pos - self.pos - 1) - rev_first
        put = self.log.is_put[sl][last]
        keys = idx[last]
        self.bytes[keys] = np.where(put, self.log.item_bytes[sl][last], 0)
        self.live[keys] = put
        self.pos = to_pos
        self._cs = None

    def totals(self, lo_idx: int, hi_idx: int) -> tuple[int, int]:
        """(bytes, items) of live keys with universe index in [lo_idx, hi_idx)."""
        if self._cs is None:
            self._cs = (np.concatenate([[0], np.cumsum(self.bytes)]),
                        np.concatenate([[0], np.cumsum(self.live.astype(np.int64))]))
        b, c = self._cs
        return int(b[hi_idx] - b[lo_idx]), int(c[hi_idx] - c[lo_idx])

    def items(self, lo_idx: int, hi_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, item bytes) of the live keys in [lo_idx, hi_idx), sorted by key."""
        live = self.live[lo_idx:hi_idx]
        return self.log.universe[lo_idx:hi_idx][live], self.bytes[lo_idx:hi_idx][live]
