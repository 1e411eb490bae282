"""Where to cut a partition at an instant: the size median, the load-balancing key, and which is better.

Both candidates come from :mod:`weaver.predict.splitkey` (the same rules a predicted split uses).
Which one "balances the load better" is judged by the children's *peak utilization*: for each
child, the larger of its size over the size threshold and its recent write rate over the write
threshold; a key is better when its busier child is further from splitting again. A partition
that splits for size has a size median with the lower peak; one that splits for a hot end of its
key space has a load-balancing key with the lower peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np

from weaver.core.settings import Settings
from weaver.core.time import to_us
from weaver.log.lineage import Partition
from weaver.predict import read_log, size_split_key, throughput_split_key
from weaver.replay import KeyState, LogView

SIZE, LOAD = "size", "load"
KEY_BY = ("auto", SIZE, LOAD)


@dataclass(frozen=True)
class Cut:
    """What a split at `key` would give each child at the instant (bytes, items, recent writes)."""

    key: str
    by: str  # 'size' | 'load' | 'given'
    left_bytes: int
    right_bytes: int
    left_items: int
    right_items: int
    left_writes: int
    right_writes: int
    peak_utilization: float  # max over children of max(bytes / size threshold, rate / write threshold)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KeyChoice:
    """The candidate cuts of a partition at an instant and the chosen one (None: < 2 live items)."""

    partition_id: str
    at: datetime
    size_bytes: int
    items: int
    recent_writes: int
    cuts: dict[str, Cut]  # by 'size' / 'load' (absent when undefined)
    chosen: Cut | None

    def as_dict(self) -> dict:
        return {"partition_id": self.partition_id, "at": self.at.isoformat(), "size_bytes": self.size_bytes,
                "items": self.items, "recent_writes": self.recent_writes,
                "cuts": {k: c.as_dict() for k, c in self.cuts.items()},
                "chosen": self.chosen.as_dict() if self.chosen else None}


def cut_at(settings: Settings, log: LogView, state: KeyState, p: Partition, recent: np.ndarray, key: str,
           by: str) -> Cut:
    """The children's bytes, items and recent writes if `p` were split at `key` (state as advanced)."""
    i0, i1, ik = log.key_index(p.key_lo), log.key_index(p.key_hi, upper=True), log.key_index(key)
    lb, li = state.totals(i0, ik)
    rb, ri = state.totals(ik, i1)
    lw = int(np.count_nonzero((recent >= i0) & (recent < ik)))
    rw = int(np.count_nonzero((recent >= ik) & (recent < i1)))
    secs = settings.bucket.total_seconds()

    def util(b: int, w: int) -> float:
        return max(b / settings.size_threshold_bytes, (w / secs) / settings.write_threshold_per_s)

    return Cut(key, by, lb, rb, li, ri, lw, rw, round(max(util(lb, lw), util(rb, rw)), 6))


def split_candidates(settings: Settings, p: Partition, at: datetime, *, log: LogView | None = None,
                     state: KeyState | None = None) -> KeyChoice:
    """Size-median and load-balancing cuts of `p` at `at` (writes of the last bucket up to `at`),
    and the one with the lower peak utilization (ties: the size median). Reads data with ts <= at only.

    `log` must hold the live items at `at` and every change of the last bucket up to `at` (a
    checkpoint-based view does); `state`, a fold of `log` already advanced to `at`, is reused
    instead of folding again (advice cuts many partitions of one run)."""
    log = log if log is not None else read_log(settings, upto=at)
    at_us = to_us(at)
    upto = log.pos_before_ts(at_us + 1)
    if state is None or state.log is not log or state.pos != upto:
        state = KeyState(log)
        state.advance(upto)
    i0, i1 = log.key_index(p.key_lo), log.key_index(p.key_hi, upper=True)
    keys, item_bytes = state.items(i0, i1)
    lo_pos = log.pos_before_ts(at_us - int(settings.bucket.total_seconds() * 1e6) + 1)
    recent_all = log.kidx[lo_pos:upto]
    recent = recent_all[(recent_all >= i0) & (recent_all < i1)]
    cuts: dict[str, Cut] = {}
    k_size = size_split_key(list(keys), list(item_bytes))
    if k_size is not None:
        cuts[SIZE] = cut_at(settings, log, state, p, recent, k_size, SIZE)
    k_load = throughput_split_key(log.universe[np.sort(recent)], list(keys)) if len(recent) else None
    if k_load is not None:
        cuts[LOAD] = cut_at(settings, log, state, p, recent, k_load, LOAD)
    chosen = None
    if cuts:
        chosen = min(cuts.values(), key=lambda c: (c.peak_utilization, c.by != SIZE))
    size, items = state.totals(i0, i1)
    return KeyChoice(p.partition_id, at, size, items, int(len(recent)), cuts, chosen)
