"""CLI commands: snapshot, restore, restore-table, vacuum (PITR)."""

from __future__ import annotations

from typing import Optional

import typer

from weaver.cli._app import JsonOpt, LakeOpt, app, console, emit, reported, settings_for, timepoint
from weaver.core.spark import get_spark
from weaver.core.storage import RESTORE_TABLE_OUTPUT, check_output_target
from weaver.pitr import check_restore_out, restore_partition, restore_table, take_snapshots, write_restore
from weaver.pitr import vacuum as vacuum_lake


@app.command()
def snapshot(
    at: str = typer.Option(..., "--at", help="Instant (ISO-8601 with timezone) the snapshots are taken as of."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Take base snapshots of every partition alive at --at (log-applied, idempotent)."""
    with reported(as_json):
        s, t = settings_for(lake), timepoint(at)
        with console.status("taking snapshots with Spark..."):
            r = take_snapshots(get_spark(s, "weaver-snapshot"), s, t)
    emit(r, as_json, f"as_of_seq {r['as_of_seq']}: took {len(r['taken'])} snapshot(s) ({r['rows']} rows, "
                     f"{r['bytes']} bytes), {len(r['skipped'])} already present")


@app.command()
def restore(
    partition: str = typer.Option(..., "--partition", help="Partition id (active or retired)."),
    at: str = typer.Option(..., "--at", help="Instant (ISO-8601 with timezone) to restore."),
    out: str = typer.Option(..., "--out", help="Output Parquet file (columns key, value)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Restore one partition's key range at --at (nearest snapshot + log replay; no JVM)."""
    with reported(as_json):
        s, t = settings_for(lake), timepoint(at)
        check_restore_out(s, out)  # before any work: never into the lake's own tables
        r = restore_partition(s, partition, t)
        path = write_restore(r, out, s)
    obj = {"partition_id": r.partition_id, "at": r.at, "as_of_seq": r.as_of_seq, "path": "standard",
           "source": r.source_snapshot_id, "changes_replayed": r.changes_replayed, "rows": r.table.num_rows,
           "elapsed_ms": round(r.elapsed_ms, 3), "out": path}
    emit(obj, as_json, f"restored {r.partition_id} at {r.at.isoformat()} (seq {r.as_of_seq}): {r.table.num_rows} rows "
                       f"from {r.source_snapshot_id or 'the change log alone'} + {r.changes_replayed} changes "
                       f"in {r.elapsed_ms:.1f} ms -> {path}")


@app.command("restore-table")
def restore_table_cmd(
    at: str = typer.Option(..., "--at", help="Instant (ISO-8601 with timezone) to restore."),
    out: str = typer.Option(..., "--out", help="URI of the new Delta table to write."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Restore the whole table at --at with Spark into a new Delta table (sources untouched)."""
    with reported(as_json):
        s, t = settings_for(lake), timepoint(at)
        check_output_target(s, out, kind=RESTORE_TABLE_OUTPUT)  # before Spark starts: refusing needs no session
        with console.status("restoring the table with Spark..."):
            r = restore_table(get_spark(s, "weaver-restore-table"), s, t, out)
    done = (f"restored {r['partitions']} partitions at seq {r['as_of_seq']}: {r['rows']} rows -> {r['out']}"
            if r.get("written", True) else
            f"{r['out']} already holds the {r['rows']} rows of the {r['partitions']} partitions at seq "
            f"{r['as_of_seq']}: nothing written")
    emit(r, as_json, done)


@app.command()
def vacuum(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be removed."),
    now: Optional[str] = typer.Option(None, "--now", help="Reference instant (default: the current time)."),
    recovery_window: Optional[str] = typer.Option(None, "--recovery-window",
                                                  help="Override settings.recovery_window (e.g. 35d)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Expire snapshots and change-log prefixes no restore inside the recovery window needs."""
    from datetime import datetime, timezone

    with reported(as_json):
        t = timepoint(now, "--now") if now else datetime.now(timezone.utc)
        s = settings_for(lake, recovery_window=recovery_window)
        r = vacuum_lake(s, t, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    emit(r, as_json, f"{verb} {r['snapshots_expired']} snapshot(s) and {r['log_rows_deleted']} change(s) "
                     f"before seq {r['log_start_seq']}; window starts {r['window_start']}")
