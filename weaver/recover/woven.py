"""Serving from the woven tier: choose the woven snapshot for (target, T), read its rows.

A woven snapshot of source partition S at timepoint tp is restore(S, tp) cut at the weave's
split key; the union of its L and R rows is S's whole range. Because restore is defined by key
range, it can serve any target whose range lies inside S's (S itself, either child, or a real
descendant of S after a real split). Snapshots below the confidence threshold are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import InvalidParameterError, NoDataError
from weaver.core.ids import UNPUBLISHED, UNUSABLE
from weaver.core.settings import Settings
from weaver.core.storage import filter_range
from weaver.core.time import parse_timepoint
from weaver.log.lineage import Lineage
from weaver.recover.target import Target, resolve
from weaver.weave import WovenTable, catalog_rows, find_weave, read_woven_catalog


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


def _covers(s_lo: str, s_hi: str | None, lo: str, hi: str | None) -> bool:
    return s_lo <= lo and (s_hi is None or (hi is not None and hi <= s_hi))


def candidate_weaves(catalog: pa.Table, lineage: Lineage, target: Target, confidence_threshold: float, *,
                     weave_id: str | None = None, usable_only: bool = True) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """Weaves that may serve `target`: confidence >= threshold, source range covering the target,
    published (never staged or quarantined, DESIGN §7) and, when `usable_only`, not expired (a
    look back at an old version may serve a weave expired since); each with the woven children
    whose rows it needs."""
    excluded = UNUSABLE if usable_only else UNPUBLISHED
    candidates: dict[str, tuple[dict, tuple[str, ...]]] = {}
    for r in catalog_rows(catalog):
        if weave_id is not None and r["weave_id"] != weave_id:
            continue
        if r["confidence"] < confidence_threshold or r["status"] in excluded:
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
    return candidates


def find_woven_snapshot(settings: Settings, target: Target, at: datetime, confidence_threshold: float, *,
                        lineage: Lineage, catalog: pa.Table, weave_id: str | None = None,
                        woven: "WovenTable | None" = None, not_before: datetime | None = None
                        ) -> WovenSnapshot | None:
    """The woven snapshot with confidence >= threshold, covering `target`'s range, whose timepoint
    is the latest one <= `at` (ties: the target's own weave, then higher confidence); None if none.
    `not_before` drops earlier timepoints (a woven child's rows as such exist only from its split).
    """
    candidates = candidate_weaves(catalog, lineage, target, confidence_threshold, weave_id=weave_id)
    if not candidates:
        return None
    woven = woven if woven is not None else WovenTable.open(settings)
    return None if woven is None else _latest_snapshot(woven, candidates, target, at, not_before)


def _latest_snapshot(woven: WovenTable, candidates: dict, target: Target, at: datetime,
                     not_before: datetime | None) -> WovenSnapshot | None:
    """:func:`find_woven_snapshot`'s choice among `candidates` (:func:`candidate_weaves`) in `woven`."""
    # Any row of a (weave, timepoint) proves that timepoint was woven (both children in one commit),
    # so the child a target needs may be empty there. A timepoint whose whole source range is empty
    # leaves no row and is not seen: that costs only a longer tail, never wrong rows.
    meta = woven.timepoints(woven.files_for_lookup(set(candidates), at), at)
    meta = meta.filter(pc.is_in(meta.column("weave_id"), value_set=pa.array(sorted(candidates), pa.string())))
    if not_before is not None:
        meta = meta.filter(pc.greater_equal(meta.column("timepoint"), pa.scalar(not_before, storage.TS)))
    if meta.num_rows == 0:
        return None
    tp_col = meta.column("timepoint")
    best_tp = pc.max(tp_col)
    at_best = meta.filter(pc.equal(tp_col, best_tp))
    weaves = [w for w in pc.unique(at_best.column("weave_id")).to_pylist()]

    def rank(w: str) -> tuple:
        r = candidates[w][0]
        return (w == target.weave_id, r["confidence"], w)

    wid = max(weaves, key=rank)
    seq = pc.max(at_best.filter(pc.equal(at_best.column("weave_id"), wid)).column("as_of_seq")).as_py()
    r, need = candidates[wid]
    return WovenSnapshot(r["weave_id"], r["prediction_id"], r["source_partition_id"], r["split_key"],
                         best_tp.as_py(), int(seq), float(r["confidence"]), r["status"], need, target.key_lo,
                         target.key_hi)


def read_woven_rows(settings: Settings, snap: WovenSnapshot, woven: WovenTable | None = None) -> pa.Table:
    """The rows (key, value) of a woven snapshot restricted to the target's range, sorted by key."""
    woven = woven if woven is not None else WovenTable.open(settings)
    both = len(snap.children) == 2
    t = woven.rows_at(snap.weave_id, snap.timepoint, ([] if both else ["woven_partition_id"]) + ["key", "value"])
    if not both:
        t = t.filter(pc.equal(t.column("woven_partition_id"), snap.children[0]))
    t = filter_range(t.select(["key", "value"]).cast(storage.STATE_SCHEMA), snap.key_lo or None, snap.key_hi)
    t = t.combine_chunks()
    if t.num_rows > 1:
        k = t.column("key")
        # Woven files are usually written in key order: check (cheap) before sorting (not cheap).
        if not pc.all(pc.less(k.slice(0, t.num_rows - 1), k.slice(1))).as_py():
            t = t.take(pc.sort_indices(t, sort_keys=[("key", "ascending")]))
    return t


def woven_snapshot(settings: Settings, partition_id: str, at: datetime | str, *,
                   confidence_threshold: float | None = None, weave_id: str | None = None,
                   as_of_version: int | None = None, as_of: datetime | str | None = None,
                   with_version: bool = False) -> tuple:
    """The rows of one woven snapshot (no tail replay) serving `partition_id` at `at` (valid
    time), optionally as the woven tier stood at Delta version `as_of_version` or at transaction
    time `as_of` (what was believed then).

    A woven child exists only from its weave's split_ts (the rule `recover` applies): before it,
    InvalidTimepointError; and its rows are never taken from a timepoint before it (another weave
    covering its range may have one), since they would be the child at an instant it did not exist.

    Raises NoDataError when no woven snapshot with enough confidence covers it at or before `at`
    (and, for a woven child, at or after its split_ts). `with_version` appends the woven_snapshots
    version the rows were read at (`as_of_version` when given; a paged API walk pins it).
    """
    at = parse_timepoint(at)
    c = settings.confidence(confidence_threshold)
    lineage = Lineage.load(settings)
    catalog = read_woven_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    target.check_exists_at(at)
    since = (f" and at or after its split at {target.exists_from.isoformat()}"
             if target.exists_from is not None else "")
    wid = None
    if weave_id is not None:
        wid = find_weave(catalog, weave_id)["weave_id"]
    if as_of_version is not None or as_of is not None:
        if as_of_version is not None and as_of is not None:
            raise InvalidParameterError("give an as-of version or an as-of timestamp, not both")
        found = woven_snapshot_as_of(settings, target, at, c, lineage=lineage, catalog=catalog, weave_id=wid,
                                     version=as_of_version,
                                     timestamp=parse_timepoint(as_of) if as_of is not None else None,
                                     not_before=target.exists_from)
        if found is None:
            raise NoDataError(
                f"no woven snapshot covered {partition_id!r} at or before {at.isoformat()}{since} with confidence >= {c} "
                f"in woven_snapshots as of {as_of_version if as_of_version is not None else as_of}; pick a later "
                "as-of or timepoint")
        return (target, *found, as_of_version) if with_version else (target, *found)
    woven = WovenTable.open(settings)
    snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog, weave_id=wid, woven=woven,
                               not_before=target.exists_from)
    if snap is None:
        raise NoDataError(
            f"no woven snapshot covers {partition_id!r} at or before {at.isoformat()}{since} with confidence >= {c}; "
            "lower the confidence threshold, pick a later timepoint, or recover it (POST /v1/recoveries)")
    rows = read_woven_rows(settings, snap, woven)
    return (target, snap, rows, woven.table.version) if with_version else (target, snap, rows)


def woven_snapshot_as_of(settings: Settings, target: Target, at: datetime, confidence_threshold: float, *,
                         lineage: Lineage, catalog: pa.Table, version: int | None = None,
                         timestamp: datetime | None = None, weave_id: str | None = None,
                         not_before: datetime | None = None) -> tuple[WovenSnapshot, pa.Table] | None:
    """Like :func:`find_woven_snapshot` + :func:`read_woven_rows`, but on woven_snapshots as it stood
    at Delta `version` or at transaction time `timestamp` ("what did we believe then"), through the
    same file index: the look-up reads the candidates' timepoints from footers and the rows of the
    one snapshot it serves.

    Weave metadata (split key, children, confidence) never changes after a weave is registered,
    so the current catalog describes old rows too; a weave expired since then is still served
    from the old version (that is the point of looking back). `not_before`: as in
    :func:`find_woven_snapshot`.
    """
    candidates = candidate_weaves(catalog, lineage, target, confidence_threshold, weave_id=weave_id,
                                  usable_only=False)
    if not candidates:
        return None  # nothing to look for: the old version is not even opened
    woven = WovenTable.as_of(settings, version=version, timestamp=timestamp)
    snap = _latest_snapshot(woven, candidates, target, at, not_before)
    return None if snap is None else (snap, read_woven_rows(settings, snap, woven))
