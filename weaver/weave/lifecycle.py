"""The woven sequences' lifecycle: confirmed, refuted, expired; and the woven tier's vacuum."""

from __future__ import annotations

import re
from datetime import datetime

import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.ids import ACTIVE, CONFIRMED, EXPIRED, MANUAL, REFUTED, UNPUBLISHED
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint
from weaver.log.changelog import history_end
from weaver.log.lineage import UNPREDICTABLE_REASONS
from weaver.weave.catalog import COMPRESSION, read_woven_catalog, write_woven_catalog


def reconcile(settings: Settings, *, at: datetime) -> dict:
    """Move sequences through their lifecycle as of `at` (one delta-rs MERGE on woven_catalog).

    ``confirmed``: a real split of the same parent with split_ts in [window_start, window_end]
    and <= at (records actual_split_key/ts; timing error = actual_split_ts - split_ts);
    ``refuted``: the window closed (at >= window_end) without one and the outcome is known (the
    change log or the splits history reaches window_end; until then the window is censored and
    the sequence stays active, as backtests leave such windows unscored); ``expired``: confirmed or
    refuted sequences once ``at >= window_end + woven_retention``. Manual weaves (origin
    'manual') stay active until they expire the same way. Returns counts per transition,
    the statuses after it, and the confirmed sequences' timing errors in seconds.

    A real split by an operator (``splits.reason`` ``manual``) confirms like any other: the status
    says the partition really split in the window (it drives extension and expiry; what is served
    does not depend on it - woven rows are the source's restore cut at the woven key either way).
    But no model forecasts an operator's decision, so such a sequence has no timing error (a model
    quality figure, as the backtest leaves the window unscored): it is counted in
    ``timing_excluded_manual`` instead.
    """
    at = parse_timepoint(at)
    catalog = read_woven_catalog(settings)
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS, missing_ok=True)
    by_parent: dict[str, list[dict]] = {}
    for s in sorted(splits.to_pylist(), key=lambda r: (r["split_ts"], r["split_seq"])):
        by_parent.setdefault(s["parent_id"], []).append(s)
    end: list = []  # how far the known history reaches, read once, when first needed

    def known_until(t: datetime) -> bool:
        if not end:
            end.append(history_end(settings, splits, missing_ok=True))
        return end[0] is not None and end[0] >= t

    manual = {(s["parent_id"], s["split_ts"]) for s in splits.to_pylist() if s["reason"] in UNPREDICTABLE_REASONS}
    counts = {CONFIRMED: 0, REFUTED: 0, EXPIRED: 0}
    timing: dict[str, float] = {}
    timing_excluded_manual = 0
    changed = []
    statuses: dict[str, int] = {}
    for r in catalog.to_pylist():
        status = r["status"]
        if r["origin"] == MANUAL:
            # A what-if is a hypothesis by intent: reality neither confirms nor refutes it; it
            # stays servable until its span plus the tier's retention has passed. A staged or
            # quarantined one never expires: `expired` is servable as of an old version, and its
            # rows never passed the audit (`weaver quarantine clear` removes it).
            if status not in UNPUBLISHED and at >= r["window_end"] + settings.woven_retention:
                status = EXPIRED
        elif status == ACTIVE:
            real = [s for s in by_parent.get(r["source_partition_id"], [])
                    if r["window_start"] <= s["split_ts"] <= r["window_end"] and s["split_ts"] <= at]
            if real:
                r["actual_split_key"], r["actual_split_ts"] = real[0]["split_key"], real[0]["split_ts"]
                status = CONFIRMED
            elif at >= r["window_end"] and known_until(r["window_end"]):
                # Refuted is final, so only once the outcome is known: the change log (or the
                # splits history) has reached window_end - the backtests' censoring rule. Before
                # that the window stays open (active), however late `at` is.
                status = REFUTED
        if status in (CONFIRMED, REFUTED) and at >= r["window_end"] + settings.woven_retention:
            status = EXPIRED
        if status == CONFIRMED and r["actual_split_ts"] is not None:
            if (r["source_partition_id"], r["actual_split_ts"]) in manual:
                timing_excluded_manual += 1  # an operator's split: no forecast to time
            else:
                timing[r["weave_id"]] = (r["actual_split_ts"] - r["split_ts"]).total_seconds()
        if status != r["status"]:
            counts[status] += 1
            r["status"], r["updated_at"] = status, at
            changed.append(r)
        statuses[status] = statuses.get(status, 0) + 1
    write_woven_catalog(settings, changed)
    return {"at": at.isoformat(), "confirmed": counts[CONFIRMED], "refuted": counts[REFUTED],
            "expired": counts[EXPIRED], "statuses": statuses, "timing_error_s": timing,
            "timing_excluded_manual": timing_excluded_manual}


def vacuum_woven(settings: Settings, *, now: datetime) -> dict:
    """Bring the lifecycle up to `now`, delete the rows of expired sequences, and vacuum files the
    woven tier no longer references after its retention (settings.woven_retention).

    Rows of active, confirmed and refuted sequences are never deleted (the delete is scoped to the
    expired weave ids, i.e. to whole weave_id partitions). Time travel reaches back at most the
    retention after this.
    """
    now = parse_timepoint(now)
    storage.check_woven_root(settings, what="woven root (WEAVER_WOVEN_ROOT / --woven-root)")
    rec = reconcile(settings, at=now)
    catalog = read_woven_catalog(settings)
    expired = sorted(w for w, s in zip(catalog.column("weave_id").to_pylist(), catalog.column("status").to_pylist())
                     if s == EXPIRED)
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    deleted, removed = 0, 0
    # Rounded UP to whole hours (delta-rs vacuums by hours): rounding down would delete files a
    # reader of a version inside the retention still needs (30m would vacuum with 0 h).
    retention_h = -(-int(settings.woven_retention.total_seconds()) // 3600)
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
        removed += len(dt.vacuum(retention_hours=_vacuum_hours(dt, retention_h), dry_run=False,
                                 enforce_retention_duration=False))
    cat_uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    if storage.is_table(cat_uri):
        cat = storage.open_table(cat_uri)
        removed += len(cat.vacuum(retention_hours=_vacuum_hours(cat, retention_h), dry_run=False,
                                  enforce_retention_duration=False))
    return {"now": now.isoformat(), "expired_sequences": len(expired), "newly_expired": rec["expired"],
            "rows_deleted": deleted, "files_removed": removed}


_UNIT_SECONDS = {"microsecond": 1e-6, "millisecond": 1e-3, "second": 1, "minute": 60, "hour": 3600, "day": 86400,
                 "week": 604800}


def _vacuum_hours(dt, retention_h: int) -> int:
    """`retention_h`, but never below the table's own ``delta.deletedFileRetentionDuration`` (rounded
    up to hours): a tier created with a longer retention keeps it when the setting shrinks."""
    raw = (dt.metadata().configuration or {}).get("delta.deletedFileRetentionDuration")
    m = re.fullmatch(r"\s*interval\s+(\d+)\s+([a-z]+?)s?\s*", raw or "", re.IGNORECASE)
    if m is None or m.group(2).lower() not in _UNIT_SECONDS:
        return retention_h
    secs = int(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    return max(retention_h, -(-int(secs) // 3600))
