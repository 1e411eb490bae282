"""Change log and partition lineage: reading, validating (DESIGN §4.5) and ownership rules.

Ownership convention (documented in docs/design.md): a split of P after change ``split_seq``
retires P with ``retired_seq = split_seq`` and creates its children with
``created_seq = split_seq``. Partition X owns change c iff
``X.created_seq < c.seq <= X.retired_seq`` (``retired_seq`` null = still active) and
``X.key_lo <= c.key < X.key_hi``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from weaver import storage
from weaver.errors import (
    DuplicateSeqError,
    KeyOutOfRangeError,
    NonMonotonicTimestampError,
    SeqGapError,
    UnknownOpError,
    UnknownPartitionError,
)

PARTITION_ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


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

    def contains(self, key: str) -> bool:
        return key >= self.key_lo and (self.key_hi is None or key < self.key_hi)

    def owns_seq(self, seq: int) -> bool:
        return self.created_seq < seq and (self.retired_seq is None or seq <= self.retired_seq)

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
        return cls(storage.read(storage.uri_for(settings, storage.PARTITIONS), storage.PARTITIONS))

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

    def leaves_under(self, partition_id: str, at_seq: int | None = None) -> list[Partition]:
        """Descendants of `partition_id` (itself included) alive after `at_seq`."""
        out: list[Partition] = []
        stack = [partition_id]
        while stack:
            pid = stack.pop()
            p = self.by_id[pid]
            alive = p.created_seq <= (at_seq if at_seq is not None else p.created_seq) and (
                p.retired_seq is None or (at_seq is not None and at_seq < p.retired_seq)
            )
            if alive:
                out.append(p)
            else:
                stack.extend(self.children.get(pid, []))
        return sorted(out, key=lambda p: p.key_lo)

    def ancestors(self, partition_id: str) -> list[Partition]:
        out = []
        p = self.get(partition_id)
        while p.parent_id:
            p = self.by_id[p.parent_id]
            out.append(p)
        return out


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
    return t.take(pc.sort_indices(t, sort_keys=[("seq", "ascending")])) if t.num_rows > 1 else t


def seq_at(settings, ts: datetime) -> int:
    """Largest seq with ts <= `ts` (0 when the log starts later)."""
    t = storage.read(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG,
                     filters=[("ts", "<=", pa.scalar(ts, storage.TS))], columns=["seq"])
    if t.num_rows == 0:
        return 0
    return int(pc.max(t.column("seq")).as_py())


def validate_changes(changes: pa.Table, lineage: Lineage | None = None, *, expected_first_seq: int | None = None,
                     check_gaps: bool = True) -> int:
    """Check DESIGN §4.5 on a batch of changes; return the number checked.

    Raises, naming the first offending seq and partition: SeqGapError, DuplicateSeqError,
    NonMonotonicTimestampError, UnknownOpError, KeyOutOfRangeError (also for a change whose
    partition is unknown or did not own that seq), SchemaMismatchError (via storage.conform).
    ``check_gaps=False`` skips the gap check, for a batch filtered by key range (a restore tail),
    whose seq are legitimately not contiguous; the caller then checks contiguity separately.
    """
    changes = storage.conform(changes, storage.CHANGELOG)
    n = changes.num_rows
    if n == 0:
        return 0
    t = changes.take(pc.sort_indices(changes, sort_keys=[("seq", "ascending")]))
    seq = t.column("seq").combine_chunks()
    pids = t.column("partition_id").combine_chunks()
    if expected_first_seq is not None and seq[0].as_py() != expected_first_seq:
        first = seq[0].as_py()
        raise SeqGapError(
            f"change log resumes at seq {first} but seq {expected_first_seq} was expected (a gap before {first})",
            seq=expected_first_seq, partition_id=pids[0].as_py())
    if n > 1:
        step = pc.subtract(seq.slice(1), seq.slice(0, n - 1))
        dup = pc.equal(step, 0)
        if pc.any(dup).as_py():
            i = pc.index(dup, True).as_py()
            raise DuplicateSeqError(f"seq {seq[i].as_py()} appears more than once (partition {pids[i + 1].as_py()})",
                                    seq=seq[i].as_py(), partition_id=pids[i + 1].as_py())
        gap = pc.greater(step, 1)
        if check_gaps and pc.any(gap).as_py():
            i = pc.index(gap, True).as_py()
            raise SeqGapError(
                f"gap in seq after {seq[i].as_py()}: next is {seq[i + 1].as_py()} (partition {pids[i + 1].as_py()}); "
                "the change log is incomplete - re-extract it before running",
                seq=seq[i].as_py() + 1, partition_id=pids[i + 1].as_py())
        ts = t.column("ts").combine_chunks()
        back = pc.less(ts.slice(1), ts.slice(0, n - 1))
        if pc.any(back).as_py():
            i = pc.index(back, True).as_py() + 1
            raise NonMonotonicTimestampError(
                f"ts goes backwards at seq {seq[i].as_py()} (partition {pids[i].as_py()}): {ts[i].as_py()} < {ts[i - 1].as_py()}",
                seq=seq[i].as_py(), partition_id=pids[i].as_py())
    op = t.column("op").combine_chunks()
    bad_op = pc.invert(pc.is_in(op, value_set=pa.array(storage.OPS)))
    if pc.any(bad_op).as_py():
        i = pc.index(bad_op, True).as_py()
        raise UnknownOpError(f"unknown op {op[i].as_py()!r} at seq {seq[i].as_py()} (partition {pids[i].as_py()}); expected PUT or DELETE",
                             seq=seq[i].as_py(), partition_id=pids[i].as_py())
    put_null = pc.and_(pc.equal(op, "PUT"), pc.is_null(t.column("value").combine_chunks()))
    if pc.any(put_null).as_py():
        i = pc.index(put_null, True).as_py()
        raise UnknownOpError(f"PUT without a value at seq {seq[i].as_py()} (partition {pids[i].as_py()})",
                             seq=seq[i].as_py(), partition_id=pids[i].as_py())
    if lineage is not None:
        _check_ownership(t, lineage)
    return n


def _check_ownership(t: pa.Table, lineage: Lineage) -> None:
    parts = pa.table({
        "partition_id": [p.partition_id for p in lineage],
        "_lo": pa.array([p.key_lo for p in lineage], pa.string()),
        "_hi": pa.array([p.key_hi for p in lineage], pa.string()),  # typed: all-null (+inf) is not `null`
        "_created": pa.array([p.created_seq for p in lineage], pa.int64()),
        "_retired": pa.array([p.retired_seq for p in lineage], pa.int64()),
    })
    j = t.select(["seq", "partition_id", "key"]).join(parts, "partition_id", join_type="left outer")
    key = j.column("key")
    unknown = pc.is_null(j.column("_lo"))
    below = pc.less(key, pc.fill_null(j.column("_lo"), ""))
    above = pc.and_(pc.invert(pc.is_null(j.column("_hi"))), pc.greater_equal(key, pc.fill_null(j.column("_hi"), "")))
    early = pc.less_equal(j.column("seq"), pc.fill_null(j.column("_created"), 0))
    late = pc.and_(pc.invert(pc.is_null(j.column("_retired"))),
                   pc.greater(j.column("seq"), pc.fill_null(j.column("_retired"), 0)))
    bad = pc.or_(pc.or_(unknown, pc.or_(below, above)), pc.or_(early, late))
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        rows = j.filter(bad)
        rows = rows.take(pc.sort_indices(rows, sort_keys=[("seq", "ascending")]))
        r = rows.slice(0, 1).to_pylist()[0]
        pid, s, k = r["partition_id"], r["seq"], r["key"]
        if r["_lo"] is None:
            why = f"partition {pid!r} is not in the partitions lineage"
        elif not (k >= r["_lo"] and (r["_hi"] is None or k < r["_hi"])):
            why = f"key {k!r} is outside [{r['_lo']!r}, {r['_hi']!r})"
        else:
            why = f"the partition did not own seq {s} (created after {r['_created']}, retired at {r['_retired']})"
        raise KeyOutOfRangeError(f"change seq {s} of partition {pid!r}: {why}", seq=s, partition_id=pid)
