"""Validation of change-log batches against DESIGN §4.5 (nothing lost, nothing out of place)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import (
    DuplicateSeqError,
    KeyOutOfRangeError,
    NonMonotonicTimestampError,
    SeqGapError,
    UnknownOpError,
)
from weaver.log.lineage import Lineage



#: The columns a change-log check reads when the values are checked apart (validate_segment):
#: every §4.5 rule but "a PUT carries a value" needs only these.
NARROW = ("seq", "ts", "partition_id", "key", "op")


def validate_changes(changes: pa.Table, lineage: Lineage | None = None, *, expected_first_seq: int | None = None,
                     check_gaps: bool = True, values: bool = True) -> int:
    """Check DESIGN §4.5 on a batch of changes; return the number checked.

    Raises, naming the first offending seq and partition: SeqGapError, DuplicateSeqError,
    NonMonotonicTimestampError, UnknownOpError, KeyOutOfRangeError (also for a change whose
    partition is unknown or did not own that seq), SchemaMismatchError (via storage.conform).
    ``check_gaps=False`` skips the gap check, for a batch filtered by key range (a restore tail),
    whose seq are legitimately not contiguous; the caller then checks contiguity separately.
    ``values=False`` takes a batch of the :data:`NARROW` columns only and leaves "a PUT carries a
    value" to the caller (validate_segment checks it in one scan of `op` and `value`).
    """
    changes = storage.conform(changes, storage.CHANGELOG, columns=None if values else NARROW)
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
    put_null = pc.and_(pc.equal(op, "PUT"), pc.is_null(t.column("value").combine_chunks())) if values else None
    if put_null is not None and pc.any(put_null).as_py():
        i = pc.index(put_null, True).as_py()
        raise put_without_value(seq[i].as_py(), pids[i].as_py())
    if lineage is not None:
        check_ownership(t, lineage)
    return n


def put_without_value(seq: int, partition_id: str | None) -> UnknownOpError:
    """The error naming a PUT that carries no value."""
    return UnknownOpError(f"PUT without a value at seq {seq} (partition {partition_id})", seq=seq,
                          partition_id=partition_id)


def check_ownership(t: pa.Table, lineage: Lineage) -> None:
    """KeyOutOfRangeError naming the first change of `t` (columns seq, partition_id, key) whose
    partition is unknown, did not own its key, or did not own its seq; else nothing."""
    if _owned(t, lineage):
        return
    # A violation (or too many partitions to check one by one): the join names the first offender.
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


def _owned(t: pa.Table, lineage: Lineage, *, max_partitions: int = 16) -> bool:
    """True when every change's partition owned its key and its seq, decided per partition on the
    min and max of key and seq (a batch or a restore tail holds a few partitions): no join on the
    common path. False means "not shown here": `check_ownership`'s join then decides and names."""
    pids = t.column("partition_id")
    if pids.null_count or t.column("key").null_count:
        return False
    uniq = pc.unique(pids)
    if len(uniq) > max_partitions:
        return False
    for pid in uniq.to_pylist():
        p = lineage.by_id.get(pid)
        if p is None:
            return False
        part = t if len(uniq) == 1 else t.filter(pc.equal(pids, pid))
        keys, seqs = pc.min_max(part.column("key")), pc.min_max(part.column("seq"))
        if keys["min"].as_py() < (p.key_lo or "") or (p.key_hi is not None and keys["max"].as_py() >= p.key_hi):
            return False
        if seqs["min"].as_py() <= (p.created_seq or 0) or (p.retired_seq is not None
                                                            and seqs["max"].as_py() > p.retired_seq):
            return False
    return True
