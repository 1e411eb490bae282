"""Partition lineage: the `partitions` tree of a lake, indexed for lookups.

Ownership convention (docs/design.md): a split of P after change ``split_seq`` retires P with
``retired_seq = split_seq`` and creates its children with ``created_seq = split_seq``. Partition X
owns change c iff ``X.created_seq < c.seq <= X.retired_seq`` (``retired_seq`` null = still active)
and ``X.key_lo <= c.key < X.key_hi``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import pyarrow as pa

from weaver.core import storage
from weaver.core.deltafiles import delta_files
from weaver.core.errors import UnknownPartitionError
from weaver.core.ids import PARTITION_ID_RE

#: `splits.reason` values that are an operator's decision, not the data manager's (DESIGN §3): no
#: model can forecast one, and the split ends the partition, so a prediction window holding one has
#: no outcome. Everything that scores or learns from outcomes leaves such a window out - the
#: backtest (``excluded_manual``), the calibration fit, advice scoring, the woven lifecycle's timing
#: errors (docs/prediction.md §5). Size and throughput splits are the positives.
UNPREDICTABLE_REASONS = frozenset({"manual"})


def first_splits(splits) -> dict[str, dict]:
    """parent_id -> its first split row (a partition splits once; the earliest wins otherwise)."""
    first: dict[str, dict] = {}
    for s in splits:
        f = first.get(s["parent_id"])
        if f is None or s["split_ts"] < f["split_ts"]:
            first[s["parent_id"]] = s
    return first


def window_split(first: dict[str, dict], partition_id: str, run_ts: datetime,
                 window_end: datetime) -> tuple[bool | None, dict | None]:
    """The outcome of a prediction window (run_ts, window_end] against `first` (:func:`first_splits`):
    (True, split) when the data manager split the partition in it, (False, None) when it did not,
    (None, split) when an operator did (``UNPREDICTABLE_REASONS``: no outcome, not scored)."""
    s = first.get(partition_id)
    if s is None or not run_ts < s["split_ts"] <= window_end:
        return False, None
    return (None if s["reason"] in UNPREDICTABLE_REASONS else True), s


@dataclass(frozen=True)
class Partition:
    """One row of the `partitions` lineage."""

    partition_id: str
    key_lo: str
    key_hi: str | None
    parent_id: str | None
    created_seq: int
    created_ts: datetime
    retired_seq: int | None
    retired_ts: datetime | None

    def active_at_ts(self, ts: datetime) -> bool:
        return self.created_ts <= ts and (self.retired_ts is None or ts < self.retired_ts)


class Lineage:
    """The partition tree of a lake, indexed for lookups."""

    def __init__(self, partitions: pa.Table):
        rows = partitions.to_pylist()
        self.by_id: dict[str, Partition] = {r["partition_id"]: Partition(**r) for r in rows}
        self.children: dict[str, list[str]] = {}
        for p in self.by_id.values():
            if p.parent_id:
                self.children.setdefault(p.parent_id, []).append(p.partition_id)
        for kids in self.children.values():
            kids.sort(key=lambda pid: self.by_id[pid].key_lo)

    @classmethod
    def load(cls, settings) -> "Lineage":
        """The lake's lineage, built once per Delta version of `partitions` in this process."""
        snap = delta_files(storage.uri_for(settings, storage.PARTITIONS), storage.PARTITIONS)
        if "lineage" not in snap.memo:
            snap.memo["lineage"] = cls(storage.conform(snap.read(None, None, None), storage.PARTITIONS,
                                                       where=f" at {snap.uri}"))
        return snap.memo["lineage"]

    def __iter__(self) -> Iterator[Partition]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, partition_id: str) -> Partition:
        """The partition, or UnknownPartitionError listing a few known ids."""
        if not isinstance(partition_id, str) or not PARTITION_ID_RE.match(partition_id or ""):
            raise UnknownPartitionError(f"{partition_id!r} is not a valid partition id")
        try:
            return self.by_id[partition_id]
        except KeyError:
            known = ", ".join(sorted(self.by_id)[:8])
            raise UnknownPartitionError(
                f"unknown partition {partition_id!r}; known partitions include: {known} (see `weaver query` or GET /v1/partitions)"
            ) from None

    def active(self, at_seq: int | None = None) -> list[Partition]:
        """Partitions alive after change `at_seq` (None = now), sorted by key range."""
        out = [
            p
            for p in self.by_id.values()
            if (at_seq is None and p.retired_seq is None)
            or (at_seq is not None and p.created_seq <= at_seq and (p.retired_seq is None or at_seq < p.retired_seq))
        ]
        return sorted(out, key=lambda p: p.key_lo)

    def active_at_ts(self, ts: datetime) -> list[Partition]:
        return sorted((p for p in self.by_id.values() if p.active_at_ts(ts)), key=lambda p: p.key_lo)

    def ancestors(self, partition_id: str) -> list[Partition]:
        """Parent, grandparent, ... of `partition_id` (nearest first)."""
        out = []
        p = self.get(partition_id)
        while p.parent_id:
            p = self.by_id[p.parent_id]
            out.append(p)
        return out
