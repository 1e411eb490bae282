"""Recovery that prefers woven snapshots (DESIGN §4.3).

``recover(P, T)`` returns the state of partition P (a real partition or a woven child id
``"<P>~<weave_id[:8]>~L|R"``) at instant T. Two paths give the same rows:

* **woven** — the woven snapshot with ``confidence >= c`` whose range covers P and whose
  timepoint is the latest one ``<= T``; its rows (filtered to P's range) are read through
  delta-rs and only the tail of changes ``(as_of_seq, T]`` on P's key range is replayed;
* **standard** — the PITR framework's base snapshot + replay (``weaver.pitr.restore_partition``).

A woven snapshot of source partition S at timepoint tp is restore(S, tp) cut at the weave's
split key; the union of its L and R rows is S's whole range. Because restore is defined by key
range, it can serve any target whose range lies inside S's (S itself, either child, or a real
descendant of S after a real split). Snapshots below the confidence threshold are never read.

``mode="rollback"`` writes the recovered state as a *new* Delta table (default
``<lake>/recoveries/<recovery_id>``) and refuses any location inside a contract table, so the
source tables are never mutated.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from weaver import storage
from weaver.changelog import PARTITION_ID_RE, Lineage, read_changes
from weaver.errors import (
    InvalidParameterError,
    InvalidTimepointError,
    UnknownWeaveError,
)
from weaver.replay import apply_changes, filter_range
from weaver.settings import Settings, check_confidence, parse_timepoint

MODES = ("point_in_time", "rollback")
PATHS = ("woven", "standard")
WOVEN_CHILD_RE = re.compile(r"^(?P<source>[A-Za-z0-9_.\-]{1,64})~(?P<wid>[0-9a-f]{8})~(?P<side>[LR])$")
# Weaves whose snapshots may have been vacuumed are not trusted as a recovery source.
UNUSABLE_STATUSES = frozenset({"expired"})
RECOVERIES_DIR = "recoveries"


def woven_child_id(source_partition_id: str, weave_id: str, side: str) -> str:
    """The id of a woven child: ``f"{P}~{weave_id[:8]}~L"`` (keys < split_key) or ``~R``."""
    if side not in ("L", "R"):
        raise InvalidParameterError(f"side must be 'L' or 'R', not {side!r}")
    return f"{source_partition_id}~{weave_id[:8]}~{side}"


def weave_id_for(prediction_id: str) -> str:
    """The deterministic weave id of a prediction: sha1(prediction_id)[:16]."""
    return hashlib.sha1(prediction_id.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    """What a partition id names: a key range, the real partition containing it, its weave."""

    partition_id: str
    source_partition_id: str  # the real partition this id is (or is cut from)
    key_lo: str
    key_hi: str | None
    weave_id: str | None = None  # set for a woven child
    side: str | None = None
    split_key: str | None = None
    split_ts: datetime | None = None

    @property
    def is_woven_child(self) -> bool:
        return self.weave_id is not None


@dataclass(frozen=True)
class WovenSnapshot:
    """One woven snapshot chosen to serve a target: the rows of `children` at `timepoint`."""

    weave_id: str
    prediction_id: str
    source_partition_id: str
    split_key: str
    timepoint: datetime
    as_of_seq: int
    confidence: float
    status: str
    children: tuple[str, ...]  # woven_partition_ids whose rows cover the target
    key_lo: str  # the target's range, applied to the rows
    key_hi: str | None

    @property
    def source(self) -> str:
        return f"{self.weave_id}@{self.timepoint.isoformat()}"


@dataclass
class RecoveryResult:
    """The recovered state and how it was obtained."""

    partition_id: str
    at: datetime
    path: str  # 'woven' | 'standard'
    source: str  # weave id @ timepoint, or the base snapshot id (or 'changelog' without one)
    changes_replayed: int
    rows: int
    elapsed_ms: float
    table: pa.Table = field(repr=False)
    weave_id: str | None = None
    timepoint: datetime | None = None
    mode: str = "point_in_time"
    confidence: float | None = None
    recovery_id: str | None = None
    output: str | None = None  # Parquet file (point_in_time) or Delta table URI (rollback)

    def summary(self) -> dict[str, Any]:
        """The machine-readable summary (CLI --json, API)."""
        return {
            "partition_id": self.partition_id,
            "at": self.at.isoformat(),
            "path": self.path,
            "source": self.source,
            "changes_replayed": self.changes_replayed,
            "rows": self.rows,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "weave_id": self.weave_id,
            "timepoint": self.timepoint.isoformat() if self.timepoint else None,
            "confidence": self.confidence,
            "mode": self.mode,
            "recovery_id": self.recovery_id,
            "output": self.output,
        }


# --- catalogs ------------------------------------------------------------------------------------
def load_catalog(settings: Settings) -> pa.Table:
    """The woven catalog (empty when nothing was woven yet)."""
    return storage.read(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)


def _catalog_rows(catalog: pa.Table) -> list[dict]:
    return catalog.select(["weave_id", "prediction_id", "source_partition_id", "split_key", "split_ts",
                           "confidence", "child_ids", "status"]).to_pylist()


def find_weave(catalog: pa.Table, weave_id: str) -> dict:
    """The catalog row of `weave_id` (full id or its 8-character prefix), else UnknownWeaveError."""
    if not isinstance(weave_id, str) or not re.fullmatch(r"[0-9a-f]{8,16}", weave_id or ""):
        raise UnknownWeaveError(f"{weave_id!r} is not a weave id (16 hex characters, or their first 8)")
    hits = [r for r in _catalog_rows(catalog) if r["weave_id"].startswith(weave_id)]
    if not hits:
        raise UnknownWeaveError(f"unknown weave {weave_id!r}; list weaves with GET /v1/partitions?kind=woven "
                                "or run `weaver weave` first")
    if len({r["weave_id"] for r in hits}) > 1:
        raise UnknownWeaveError(f"weave id prefix {weave_id!r} is ambiguous; give all 16 characters")
    return hits[0]


def resolve(settings: Settings, partition_id: str, *, lineage: Lineage | None = None,
            catalog: pa.Table | None = None) -> Target:
    """Map a partition id (real or woven child) to its key range, validated against the catalogs."""
    lineage = lineage if lineage is not None else Lineage.load(settings)
    if isinstance(partition_id, str):
        m = WOVEN_CHILD_RE.match(partition_id)
    else:
        m = None
    if m is None:
        p = lineage.get(partition_id)  # UnknownPartitionError for anything else
        return Target(p.partition_id, p.partition_id, p.key_lo, p.key_hi)
    catalog = catalog if catalog is not None else load_catalog(settings)
    source = m.group("source")
    hits = [r for r in _catalog_rows(catalog)
            if r["source_partition_id"] == source and r["weave_id"].startswith(m.group("wid"))]
    if not hits:
        raise UnknownWeaveError(
            f"{partition_id!r} names weave {m.group('wid')!r} of {source!r}, which is not in woven_catalog; "
            "list woven children with GET /v1/partitions?kind=woven")
    row = hits[0]
    src = lineage.get(source)
    side = m.group("side")
    k = row["split_key"]
    if not (src.key_lo < k and (src.key_hi is None or k < src.key_hi)):
        raise UnknownWeaveError(f"weave {row['weave_id']} splits {source!r} at {k!r}, outside its range")
    lo, hi = (src.key_lo, k) if side == "L" else (k, src.key_hi)
    return Target(partition_id, source, lo, hi, row["weave_id"], side, k, row["split_ts"])


# --- woven lookup --------------------------------------------------------------------------------
def _covers(s_lo: str, s_hi: str | None, lo: str, hi: str | None) -> bool:
    return s_lo <= lo and (s_hi is None or (hi is not None and hi <= s_hi))


def find_woven_snapshot(settings: Settings, target: Target, at: datetime, confidence_threshold: float, *,
                        lineage: Lineage, catalog: pa.Table, weave_id: str | None = None) -> WovenSnapshot | None:
    """The woven snapshot with confidence >= threshold, covering `target`'s range, whose timepoint
    is the latest one <= `at` (ties: the target's own weave, then higher confidence); None if none.

    """
    candidates: dict[str, tuple[dict, tuple[str, ...]]] = {}
    for r in _catalog_rows(catalog):
        if weave_id is not None and r["weave_id"] != weave_id:
            continue
        if r["confidence"] < confidence_threshold or r["status"] in UNUSABLE_STATUSES:
            continue
        src = lineage.by_id.get(r["source_partition_id"])
        if src is None or not _covers(src.key_lo, src.key_hi, target.key_lo, target.key_hi):
            continue
        left, right = r["child_ids"][0], r["child_ids"][1]
        k = r["split_key"]
        need = []
        if target.key_lo < k:
            need.append(left)
        if target.key_hi is None or target.key_hi > k:
            need.append(right)
        candidates[r["weave_id"]] = (r, tuple(need))
    if not candidates:
        return None
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    if not storage.is_table(uri):
        return None
    # Any row of a (weave, timepoint) proves that timepoint was woven (both children in one commit),
    # so the child a target needs may be empty there. A timepoint whose whole source range is empty
    # leaves no row and is not seen: that costs only a longer tail, never wrong rows.
    meta = _scan(uri, ["weave_id", "timepoint", "as_of_seq"], pc.field("timepoint") <= pa.scalar(at, storage.TS))
    meta = meta.filter(pc.is_in(meta.column("weave_id"), value_set=pa.array(sorted(candidates), pa.string())))
    if meta.num_rows == 0:
        return None
    g = meta.group_by(["weave_id", "timepoint"]).aggregate([("as_of_seq", "max")]).to_pylist()

    def rank(row: dict) -> tuple:
        r = candidates[row["weave_id"]][0]
        return (row["timepoint"], r["weave_id"] == target.weave_id, r["confidence"], r["weave_id"])

    best = max(g, key=rank)
    r, need = candidates[best["weave_id"]]
    return WovenSnapshot(r["weave_id"], r["prediction_id"], r["source_partition_id"], r["split_key"],
                         best["timepoint"], int(best["as_of_seq_max"]), float(r["confidence"]), r["status"],
                         need, target.key_lo, target.key_hi)


def _scan(uri: str, columns: list[str], expr: pc.Expression) -> pa.Table:
    """Projected, filtered read of a few columns (file and row-group skipping via Delta stats).

    Only non-string predicates are pushed down: files a delta-rs MERGE wrote hold string_view
    columns, and pyarrow cannot bind a string predicate against their stats guarantee (string vs
    string_view kernels); string columns are filtered after the read.
    """
    dt = storage.open_table(uri)
    return dt.to_pyarrow_dataset().to_table(columns=columns, filter=expr)


def check_tail(settings: Settings, after_seq: int, at: datetime) -> int:
    """Check the change log holds every seq of the tail (after_seq, seq_at(at)] exactly once.

    Reads only `seq` of the tail (file skipping on seq keeps it short); on a hole, the PITR check
    names the offending seq. Returns the number of changes in the tail (all keys).
    """
    uri = storage.uri_for(settings, storage.CHANGELOG)
    seqs = _scan(uri, ["seq"], (pc.field("seq") > after_seq) & (pc.field("ts") <= pa.scalar(at, storage.TS)))
    n = seqs.num_rows
    if n == 0:
        return 0
    top = int(pc.max(seqs.column("seq")).as_py())
    if n != top - after_seq or pc.count_distinct(seqs.column("seq")).as_py() != n:
        from weaver import pitr

        pitr.check_contiguous(settings, after_seq, top)  # raises the named error
    return n


def read_woven_rows(settings: Settings, snap: WovenSnapshot) -> pa.Table:
    """The rows (key, value) of a woven snapshot restricted to the target's range, sorted by key."""
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    t = _scan(uri, ["weave_id", "woven_partition_id", "key", "value"],
              pc.field("timepoint") == pa.scalar(snap.timepoint, storage.TS))
    mask = pc.and_(pc.equal(t.column("weave_id"), snap.weave_id),
                   pc.is_in(t.column("woven_partition_id"), value_set=pa.array(list(snap.children), pa.string())))
    t = filter_range(t.filter(mask).select(["key", "value"]).cast(storage.STATE_SCHEMA), snap.key_lo or None, snap.key_hi)
    if t.num_rows > 1:
        t = t.take(pc.sort_indices(t, sort_keys=[("key", "ascending")]))
    return t.combine_chunks()


# --- recovery ------------------------------------------------------------------------------------
def recovery_id_for(partition_id: str, at: datetime) -> str:
    """Deterministic id of a recovery: the same (partition, instant) gives the same rows and id."""
    return hashlib.sha1(f"{partition_id}|{at.isoformat()}".encode()).hexdigest()[:16]


def default_rollback_uri(settings: Settings, recovery_id: str) -> str:
    """Where a rollback lands unless told otherwise: ``<lake>/recoveries/<recovery_id>``."""
    return storage.table_uri(storage.table_uri(settings.lake, RECOVERIES_DIR), recovery_id)


def _check_rollback_target(settings: Settings, out: str) -> str:
    """Refuse a rollback location that is (or lies inside) a contract table or a lake root."""
    remote = "://" in out

    def norm(u: str) -> str:
        return u.rstrip("/") if "://" in u else str(Path(u).resolve())

    target = norm(out)
    protected = [norm(storage.uri_for(settings, name)) for name in storage.SCHEMAS]
    roots = {norm(settings.lake), norm(settings.woven)}
    for p in protected:
        if target == p or target.startswith(p + "/"):
            raise InvalidParameterError(f"rollback target {out!r} is inside the contract table {p!r}; "
                                        "a rollback writes a new table and never touches the source tables")
    if target in roots:
        raise InvalidParameterError(f"rollback target {out!r} is a lake root; choose a new folder")
    if not remote and Path(target).exists() and not storage.is_table(target) and any(Path(target).iterdir()):
        raise InvalidParameterError(f"rollback target {out!r} exists and is not a Delta table; choose a new folder")
    return out


def recover(settings: Settings, partition_id: str, at: datetime | str, *, confidence_threshold: float | None = None,
            mode: str = "point_in_time", out: str | None = None, lineage: Lineage | None = None,
            prefer: str = "woven") -> RecoveryResult:
    """Recover partition `partition_id` (real or woven child) at `at`, woven snapshot first.

    `prefer="standard"` skips the woven lookup (used to compare both paths). In point-in-time
    mode, `out` (optional) receives a Parquet file ``key, value``; in rollback mode the state is
    written as a new Delta table at `out` (default ``<lake>/recoveries/<recovery_id>``).
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    c = check_confidence(settings.confidence_threshold if confidence_threshold is None else confidence_threshold)
    if mode not in MODES:
        raise InvalidParameterError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if prefer not in PATHS:
        raise InvalidParameterError(f"prefer {prefer!r} is not one of {', '.join(PATHS)}")
    lineage = lineage if lineage is not None else Lineage.load(settings)
    catalog = load_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    if target.is_woven_child and at < target.split_ts:
        raise InvalidTimepointError(
            f"woven child {partition_id!r} exists only from its split at {target.split_ts.isoformat()}; "
            f"recover it at or after that instant, or recover {target.source_partition_id!r}")
    rid = recovery_id_for(target.partition_id, at)
    if mode == "rollback":
        out = _check_rollback_target(settings, out or default_rollback_uri(settings, rid))

    snap = None
    if prefer == "woven":
        snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog)
    if snap is not None:
        rows = read_woven_rows(settings, snap)
        check_tail(settings, snap.as_of_seq, at)
        tail = read_changes(settings, after_seq=snap.as_of_seq, upto_ts=at, key_lo=target.key_lo or None,
                            key_hi=target.key_hi)
        table = apply_changes(rows, tail)
        res = RecoveryResult(target.partition_id, at, "woven", snap.source, tail.num_rows, table.num_rows, 0.0,
                             table, snap.weave_id, snap.timepoint, mode, snap.confidence, rid)
    else:
        from weaver import pitr

        r = pitr.restore_partition(settings, target.source_partition_id, at, lineage=lineage)
        table = r.table.select(["key", "value"]).cast(storage.STATE_SCHEMA)
        if target.is_woven_child:
            table = filter_range(table, target.key_lo or None, target.key_hi)
        table = table.combine_chunks()
        res = RecoveryResult(target.partition_id, at, "standard", r.source_snapshot_id or "changelog",
                             int(r.changes_replayed), table.num_rows, 0.0, table, None, None, mode, None, rid)
    res.elapsed_ms = (time.perf_counter() - t0) * 1000.0
    if mode == "rollback":
        res.output = _write_rollback(out, res)
    elif out:
        res.output = _write_parquet(out, res.table)
    return res


def _write_parquet(out: str, table: pa.Table) -> str:
    import pyarrow.parquet as pq

    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(p)  # a reader never sees a half-written file
    return str(p)


def _write_rollback(uri: str, res: RecoveryResult) -> str:
    from deltalake import CommitProperties, write_deltalake

    meta = {"weaver.recovery_id": res.recovery_id or "", "weaver.partition_id": res.partition_id,
            "weaver.at": res.at.isoformat(), "weaver.path": res.path, "weaver.source": res.source}
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Overwrite keyed on the deterministic recovery id: a rerun writes the same rows once.
    write_deltalake(uri, res.table, mode="overwrite", schema_mode="overwrite",
                    description=f"Temporal Weaver rollback of {res.partition_id} at {res.at.isoformat()}",
                    commit_properties=CommitProperties(custom_metadata=meta))
    return uri


def woven_snapshot(settings: Settings, partition_id: str, at: datetime | str, *,
                   confidence_threshold: float | None = None, weave_id: str | None = None
                   ) -> tuple[Target, WovenSnapshot, pa.Table]:
    """The rows of one woven snapshot (no tail replay) serving `partition_id` at `at`.

    Raises NoDataError when no woven snapshot with enough confidence covers it at or before `at`.
    """
    from weaver.errors import NoDataError

    at = parse_timepoint(at)
    c = check_confidence(settings.confidence_threshold if confidence_threshold is None else confidence_threshold)
    lineage = Lineage.load(settings)
    catalog = load_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    wid = None
    if weave_id is not None:
        wid = find_weave(catalog, weave_id)["weave_id"]
    snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog, weave_id=wid)
    if snap is None:
        raise NoDataError(
            f"no woven snapshot covers {partition_id!r} at or before {at.isoformat()} with confidence >= {c}; "
            "lower the confidence threshold, pick a later timepoint, or recover it (POST /v1/recoveries)")
    return target, snap, read_woven_rows(settings, snap)


def is_partition_id(text: str) -> bool:
    """Syntactic check only (real or woven child id); the catalogs decide whether it exists."""
    return bool(isinstance(text, str) and (PARTITION_ID_RE.match(text) or WOVEN_CHILD_RE.match(text)))


__all__ = ["MODES", "RecoveryResult", "Target", "WovenSnapshot", "find_weave", "find_woven_snapshot", "load_catalog",
           "read_woven_rows", "recover", "resolve", "woven_child_id", "woven_snapshot"]
