"""Retention of the PITR framework: expire base snapshots and change-log prefixes (``weaver vacuum``).

Guarantee: every restore at a timepoint inside the recovery window ``[now - recovery_window, now]``
stays correct. Let ``c = seq_at(now - recovery_window)``. For every partition P of the lineage
the restore planner's choice at ``c`` is kept, as is every snapshot with ``as_of_seq > c``. A
restore at any T in the window plans at ``seq_at(T) >= c``; each candidate it had at ``c`` is
still there, and the planner's score (its oldest base seq) only grows with the seq, so it never
needs a base older than ``L = min over P of score(plan(P, c))``. The change log keeps every seq
``>= L`` (the change at L itself too, so ``seq_at`` of any instant in the window still resolves)
and records ``L`` as the table property ``weaver.logStartSeq``; a restore that would need more
gets a clear "outside the recovery window" error instead of a silently wrong answer.

Order is crash-safe: catalog rows go first (readers stop using a snapshot before its rows go),
the log's start property is raised before its prefix is deleted.
"""

from __future__ import annotations

import time
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import faults, storage
from weaver.core.errors import CorruptTableError
from weaver.core.retry import retry_commit
from weaver.core.time import parse_timepoint, span_start
from weaver.log.changelog import LOG_START_PROPERTY, ChangeLog, log_start_seq
from weaver.log.lineage import Lineage
from weaver.pitr.catalog import catalog_index, plan_restore, read_snapshot_catalog


def retention_plan(settings, now: datetime, *, lineage: Lineage | None = None) -> dict:
    """What vacuum at `now` would expire and keep (reads only)."""
    now = parse_timepoint(now)
    cutoff = span_start(now, settings.recovery_window, "the recovery window")
    lineage = lineage if lineage is not None else Lineage.load(settings)
    catalog = read_snapshot_catalog(settings)
    cutoff_seq = ChangeLog(settings).seq_at(cutoff)
    out = {"now": now.isoformat(), "window_start": cutoff.isoformat(), "window_start_seq": cutoff_seq,
           "expire": [], "keep": sorted(catalog.column("snapshot_id").to_pylist()) if catalog.num_rows else [],
           "log_start_seq": None}
    if cutoff_seq == 0 or catalog.num_rows == 0:
        return out  # the window starts before the log (or nothing was snapshotted): all needed
    idx = catalog_index(catalog)
    plans = [plan_restore(idx, lineage, p.partition_id, cutoff_seq) for p in lineage]
    needed = {pc_.snapshot_id for ps in plans for pc_ in ps if pc_.snapshot_id}
    ids = catalog.column("snapshot_id").to_pylist()
    seqs = catalog.column("as_of_seq").to_pylist()
    keep = {i for i, s in zip(ids, seqs) if s > cutoff_seq or i in needed}
    out["expire"] = sorted(set(ids) - keep)
    out["keep"] = sorted(keep)
    low = min((min(pc_.base_seq for pc_ in ps) for ps in plans), default=0)
    out["log_start_seq"] = low if low > 0 else None
    return out


def vacuum(settings, now: datetime, *, dry_run: bool = False) -> dict:
    """Expire snapshots and the change-log prefix no restore inside the recovery window needs.

    Returns the plan plus what was removed (`snapshots_expired`, `log_rows_deleted`); with
    `dry_run` nothing is written. Rerunning removes nothing more.
    """
    t0 = time.perf_counter()
    plan = retention_plan(settings, now)
    expire = plan["expire"]
    start = plan["log_start_seq"]
    current = log_start_seq(settings) if storage.is_table(storage.uri_for(settings, storage.CHANGELOG)) else None
    log_uri = storage.uri_for(settings, storage.CHANGELOG)
    cut = start is not None and (current is None or start > current)
    # Rows below the recorded start are deleted even when the start was raised earlier: a vacuum
    # killed between raising it and deleting the prefix is finished by the next one.
    floor = start if cut else current
    log_rows = _count_below(log_uri, floor) if floor is not None else 0
    result = {**plan, "dry_run": dry_run, "snapshots_expired": len(expire), "snapshots_kept": len(plan["keep"]),
              "log_rows_deleted": log_rows, "recovery_window": settings.recovery_window.total_seconds()}
    if dry_run:
        result["elapsed_ms"] = (time.perf_counter() - t0) * 1000.0
        return result
    # Deletes are replaceWhere commits with no new rows (write_deltalake keeps plain string/binary
    # Parquet types; delta-rs DELETE would rewrite files as string_view, which pyarrow filters
    # cannot compare).
    # Data of snapshots a killed vacuum already uncataloged (catalog first, data second) goes too.
    orphans = _orphans(settings, set(plan["keep"]) | set(expire), plan["window_start_seq"])
    result["orphans_removed"] = len(orphans)
    for name, ids in ((storage.SNAPSHOT_CATALOG, expire), (storage.SNAPSHOTS, sorted(set(expire) | orphans))):
        if ids:
            pred = "snapshot_id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + ")"
            storage.overwrite(storage.uri_for(settings, name), name, storage.empty(name), predicate=pred)
            faults.point(f"vacuum.after_{name}")
    if cut:
        retry_commit(lambda: storage.open_table(log_uri, storage.CHANGELOG).alter.set_table_properties(
            {LOG_START_PROPERTY: str(start)}, raise_if_not_exists=False), what="vacuum: raise the log start")
        faults.point("vacuum.after_log_start")
    if log_rows:
        storage.overwrite(log_uri, storage.CHANGELOG, storage.empty(storage.CHANGELOG),
                          predicate=f"seq < {int(floor)}")
    result["elapsed_ms"] = (time.perf_counter() - t0) * 1000.0
    return result


def _orphans(settings, cataloged: set[str], window_start_seq: int) -> set[str]:
    """Snapshot ids with data but no catalog row, taken at or before the window start (a snapshot
    being written right now is newer, so its not-yet-cataloged data is never touched)."""
    import pyarrow as pa

    uri = storage.uri_for(settings, storage.SNAPSHOTS)
    if not storage.is_table(uri):
        return set()
    adds = pa.table(storage.open_table(uri).get_add_actions(flatten=True))
    if "partition.snapshot_id" not in adds.column_names:
        return set()
    out = set()
    for sid in set(adds.column("partition.snapshot_id").to_pylist()):
        seq = sid.rsplit("@", 1)[-1] if sid else ""
        if sid not in cataloged and seq.isdigit() and int(seq) <= window_start_seq:
            out.add(sid)
    return out


def _count_below(uri: str, seq: int) -> int:
    """Change-log rows below `seq`. Read before anything is written, so a damaged data file stops
    the vacuum here by name (CorruptTableError), with the lake as it was."""
    ds = storage.dataset(storage.open_table(uri, storage.CHANGELOG))
    try:
        return ds.to_table(columns=["seq"], filter=pc.field("seq") < seq).num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"Delta table {storage.CHANGELOG} at {uri} cannot be read: {exc}") from exc
