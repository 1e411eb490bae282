"""The snapshot catalog and restore planning: which base snapshots serve (partition, seq).

The base is chosen by :func:`plan_restore`:

* the nearest snapshot (``as_of_seq <= seq_at(T)``) of P itself or of an ancestor (its range
  is a superset: rows are filtered to P's range), or
* for a retired P restored after its split, a cover of P's range by its descendants' snapshots
  (each piece replays its own tail from its own ``as_of_seq``), or
* nothing: the tail is the whole log up to T (T before the first snapshot).

The plan with the latest *oldest* base wins (that bounds the tail to replay).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.log.lineage import Lineage, Partition


@dataclass(frozen=True)
class Piece:
    """A sub-range of the restored range with its own base (a snapshot, or empty at seq 0)."""

    key_lo: str
    key_hi: str | None
    snapshot_id: str | None
    snapshot_partition_id: str | None
    base_seq: int


def read_snapshot_catalog(settings) -> pa.Table:
    """The whole snapshot catalog (small: one row per snapshot), empty if none was taken."""
    return storage.read(storage.uri_for(settings, storage.SNAPSHOT_CATALOG), storage.SNAPSHOT_CATALOG,
                        missing_ok=True)


def catalog_index(catalog: pa.Table) -> dict[str, list[tuple[int, str]]]:
    """partition_id -> [(as_of_seq, snapshot_id)] sorted by as_of_seq."""
    idx: dict[str, list[tuple[int, str]]] = {}
    if catalog.num_rows:
        for pid, s, sid in zip(catalog.column("partition_id").to_pylist(), catalog.column("as_of_seq").to_pylist(),
                               catalog.column("snapshot_id").to_pylist()):
            idx.setdefault(pid, []).append((int(s), sid))
    for v in idx.values():
        v.sort()
    return idx


def _own(idx: dict, pid: str, upto_seq: int) -> tuple[int, str] | None:
    best = None
    for s, sid in idx.get(pid, ()):
        if s <= upto_seq:
            best = (s, sid)
        else:
            break
    return best


def _score(pieces: list[Piece]) -> tuple[int, int]:
    # The oldest base bounds the tail every piece shares; fewer pieces read fewer snapshots.
    return (min(p.base_seq for p in pieces), -len(pieces))


def plan_restore(catalog: pa.Table | dict, lineage: Lineage, partition_id: str, upto_seq: int) -> list[Piece]:
    """Choose base snapshots for restoring `partition_id` at `upto_seq`; pieces sorted by key.

    Candidates: the nearest snapshot of the partition or an ancestor (one piece, P's range), or a
    cover of P's range by descendants' snapshots (a retired P after its split), or empty (seq 0).
    """
    idx = catalog if isinstance(catalog, dict) else catalog_index(catalog)
    p = lineage.get(partition_id)
    up: list[Piece] = [Piece(p.key_lo, p.key_hi, None, None, 0)]
    for a in [p, *lineage.ancestors(partition_id)]:
        own = _own(idx, a.partition_id, upto_seq)
        if own and own[0] > up[0].base_seq:
            up = [Piece(p.key_lo, p.key_hi, own[1], a.partition_id, own[0])]
    best = up
    down = _down_children(idx, lineage, p, upto_seq)
    if down is not None and _score(down) > _score(best):
        best = down
    return best


def _down(idx: dict, lineage: Lineage, x: Partition, upto_seq: int) -> list[Piece]:
    own = _own(idx, x.partition_id, upto_seq)
    best = [Piece(x.key_lo, x.key_hi, own[1], x.partition_id, own[0])] if own else \
        [Piece(x.key_lo, x.key_hi, None, None, 0)]
    kids = _down_children(idx, lineage, x, upto_seq)
    if kids is not None and _score(kids) > _score(best):
        best = kids
    return best


def _down_children(idx: dict, lineage: Lineage, x: Partition, upto_seq: int) -> list[Piece] | None:
    kids = [lineage.by_id[c] for c in lineage.children.get(x.partition_id, [])]
    if not kids or any(k.created_seq > upto_seq for k in kids):
        return None  # no split of x yet at upto_seq: no descendant snapshot can qualify
    out: list[Piece] = []
    for k in kids:
        out.extend(_down(idx, lineage, k, upto_seq))
    return sorted(out, key=lambda pc_: pc_.key_lo)


def latest_snapshot(settings, partition_id: str, upto_seq: int) -> dict | None:
    """The catalog row of `partition_id`'s own latest snapshot with as_of_seq <= upto_seq, or None."""
    cat = read_snapshot_catalog(settings)
    if cat.num_rows == 0:
        return None
    mask = pc.and_(pc.equal(cat.column("partition_id"), partition_id), pc.less_equal(cat.column("as_of_seq"), upto_seq))
    rows = cat.filter(mask)
    if rows.num_rows == 0:
        return None
    i = pc.index(rows.column("as_of_seq"), pc.max(rows.column("as_of_seq"))).as_py()
    return rows.slice(i, 1).to_pylist()[0]
