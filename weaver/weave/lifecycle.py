"""The woven sequences' lifecycle: confirmed, refuted, expired; and the woven tier's vacuum."""

from __future__ import annotations

from datetime import datetime

import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.ids import ACTIVE, CONFIRMED, EXPIRED, MANUAL, REFUTED
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint
from weaver.weave.catalog import COMPRESSION, read_woven_catalog, write_woven_catalog


def reconcile(settings: Settings, *, at: datetime) -> dict:
    """Move sequences through their lifecycle as of `at` (one delta-rs MERGE on woven_catalog).

    ``confirmed``: a real split of the same parent with split_ts in [window_start, window_end]
    and <= at (records actual_split_key/ts; timing error = actual_split_ts - split_ts);
    ``refuted``: the window closed (at >= window_end) without one; ``expired``: confirmed or
    refuted sequences once ``at >= window_end + woven_retention``. Manual weaves (origin
    'manual') stay active until they expire the same way. Returns counts per transition,
    the statuses after it, and the confirmed sequences' timing errors in seconds.
    """
    at = parse_timepoint(at)
    catalog = read_woven_catalog(settings)
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS, missing_ok=True)
    by_parent: dict[str, list[dict]] = {}
    for s in sorted(splits.to_pylist(), key=lambda r: (r["split_ts"], r["split_seq"])):
        by_parent.setdefault(s["parent_id"], []).append(s)
    counts = {CONFIRMED: 0, REFUTED: 0, EXPIRED: 0}
    timing: dict[str, float] = {}
    changed = []
    statuses: dict[str, int] = {}
    for r in catalog.to_pylist():
        status = r["status"]
        if r["origin"] == MANUAL:
            # A what-if is a hypothesis by intent: reality neither confirms nor refutes it; it
            # stays servable until its span plus the tier's retention has passed.
            if at >= r["window_end"] + settings.woven_retention:
                status = EXPIRED
        elif status == ACTIVE:
            real = [s for s in by_parent.get(r["source_partition_id"], [])
                    if r["window_start"] <= s["split_ts"] <= r["window_end"] and s["split_ts"] <= at]
            if real:
                r["actual_split_key"], r["actual_split_ts"] = real[0]["split_key"], real[0]["split_ts"]
                status = CONFIRMED
            elif at >= r["window_end"]:
                status = REFUTED
        if status in (CONFIRMED, REFUTED) and at >= r["window_end"] + settings.woven_retention:
            status = EXPIRED
        if status == CONFIRMED and r["actual_split_ts"] is not None:
            timing[r["weave_id"]] = (r["actual_split_ts"] - r["split_ts"]).total_seconds()
        if status != r["status"]:
            counts[status] += 1
            r["status"], r["updated_at"] = status, at
            changed.append(r)
        statuses[status] = statuses.get(status, 0) + 1
    write_woven_catalog(settings, changed)
    return {"at": at.isoformat(), "confirmed": counts[CONFIRMED], "refuted": counts[REFUTED],
            "expired": counts[EXPIRED], "statuses": statuses, "timing_error_s": timing}


def vacuum_woven(settings: Settings, *, now: datetime) -> dict:
    """Bring the lifecycle up to `now`, delete the rows of expired sequences, and vacuum files the
    woven tier no longer references after its retention (settings.woven_retention).

    Rows of active, confirmed and refuted sequences are never deleted (the delete is scoped to the
    expired weave ids, i.e. to whole weave_id partitions). Time travel reaches back at most the
    retention after this.
    """
    now = parse_timepoint(now)
    rec = reconcile(settings, at=now)
    catalog = read_woven_catalog(settings)
    expired = sorted(w for w, s in zip(catalog.column("weave_id").to_pylist(), catalog.column("status").to_pylist())
                     if s == EXPIRED)
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    deleted, removed = 0, 0
    retention_h = int(settings.woven_retention.total_seconds() // 3600)
    if storage.is_table(uri):
        dt = storage.open_table(uri, storage.WOVEN_SNAPSHOTS)
        present = set()
        if expired:
            meta = storage.dataset(dt).to_table(columns=["weave_id"], filter=pc.field("weave_id").isin(expired))
            present = set(meta.column("weave_id").to_pylist())
            deleted = meta.num_rows
        if present:
            from deltalake import WriterProperties

            ids = ", ".join(f"'{w}'" for w in sorted(present))
            dt.delete(f"weave_id IN ({ids})", writer_properties=WriterProperties(compression=COMPRESSION))
        removed += len(dt.vacuum(retention_hours=retention_h, dry_run=False, enforce_retention_duration=False))
    cat_uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    if storage.is_table(cat_uri):
        removed += len(storage.open_table(cat_uri).vacuum(retention_hours=retention_h, dry_run=False,
                                                          enforce_retention_duration=False))
    return {"now": now.isoformat(), "expired_sequences": len(expired), "newly_expired": rec["expired"],
            "rows_deleted": deleted, "files_removed": removed}
