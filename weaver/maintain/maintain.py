"""One maintenance pass (the `weaver_maintenance` DAG, ``weaver maintain``).

1. Snapshot vacuum inside the recovery window (``weaver.pitr.vacuum``: every restore at an instant
   in ``[now - recovery_window, now]`` stays correct).
2. Woven vacuum (``weaver.weave.vacuum_woven``): the lifecycle brought up to ``now`` (refuted and
   confirmed sequences expire ``woven_retention`` after their window), expired sequences' rows
   deleted, unreferenced files removed after the tier's retention.
3. Compaction (delta-rs ``optimize.compact``) and a Delta log checkpoint (``create_checkpoint``)
   for every table written by small MERGEs, so reads open few files and replay a short log.
   Compaction rewrites files without changing a row (a new version with ``dataChange = false``);
   the files it replaces stay for time travel until the table's own file retention passes.
4. Calibration maps (``weaver.predict.calibration.prune``): the stored maps of forecast runs older
   than ``calibration_retention`` are deleted (each run refits its own; a deleted one can be
   refitted from the predictions and splits it was fitted on).

Each step is idempotent; a crash between steps is finished by the next pass.
"""

from __future__ import annotations

import time
from datetime import datetime

from weaver.core import faults, objstore, storage
from weaver.core.errors import CorruptTableError, TableNotFoundError
from weaver.core.retry import retry_commit
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint, span_start
from weaver.pitr import vacuum
from weaver.predict import calibration
from weaver.weave import vacuum_woven

#: Tables written by delta-rs MERGEs keyed on deterministic ids (many small commits each), and
#: the metrics checkpoints.
MERGE_TABLES = (storage.PARTITION_METRICS, storage.PREDICTIONS, storage.PREDICTIONS_STAGED,
                storage.SNAPSHOT_CATALOG, storage.BACKTEST_RESULTS, storage.WOVEN_CATALOG, storage.QUARANTINE,
                storage.METRICS_STATE)
#: Only their log is checkpointed: a metrics checkpoint is written once, in files of up to 32 MiB
#: with one row group per 64 partitions (metrics reads a few rows at a time); delta-rs' compaction
#: would rewrite every live key into large row groups with a writer whose memory grows with them.
_LOG_ONLY = frozenset({storage.METRICS_STATE})


def compact_tables(settings: Settings, names: tuple[str, ...] = MERGE_TABLES, *,
                   min_files: int = 2) -> dict[str, dict]:
    """Compact small files and write a checkpoint for each existing table in `names`.

    A table with fewer than `min_files` data files is only checkpointed. Returns per table: files
    before/after, versions before/after, whether a checkpoint was written.
    """
    from deltalake import WriterProperties

    out: dict[str, dict] = {}
    for name in names:
        uri = storage.uri_for(settings, name)
        if not storage.is_table(uri):
            continue
        compression = "ZSTD" if name in storage.WOVEN_TABLES else "SNAPPY"
        before = storage.open_table(uri)
        files_before, v_before = len(before.file_uris()), before.version()

        def compact() -> dict:
            dt = storage.open_table(uri)
            return dt.optimize.compact(writer_properties=WriterProperties(compression=compression))

        metrics = (retry_commit(compact, what=f"compact {name}")
                   if files_before >= min_files and name not in _LOG_ONLY else {})
        faults.point("maintain.before_checkpoint")
        after = storage.open_table(uri)
        after.create_checkpoint()
        out[name] = {"files_before": files_before, "files_after": len(after.file_uris()),
                     "version_before": v_before, "version_after": after.version(),
                     "files_removed": int((metrics or {}).get("numFilesRemoved", 0)), "checkpoint": True}
    return out


#: The tables that make a folder a lake (DESIGN §3): its change log and the partitions' lineage.
LAKE_TABLES = (storage.CHANGELOG, storage.PARTITIONS)


def check_lake(settings: Settings) -> None:
    """Refuse a lake root that is no lake, before anything is read or written.

    Maintenance (and the woven vacuum and quarantine commands) read their tables with
    ``missing_ok``: pointed at a wrong ``--lake`` they would find nothing to do and report zero
    counts, and a change log whose Delta log was lost would look absent, so its snapshot vacuum
    would be skipped in silence. A missing table is TableNotFoundError; one that holds files but
    no readable Delta log is CorruptTableError.
    """
    for name in LAKE_TABLES:
        uri = storage.uri_for(settings, name)
        if storage.is_table(uri):
            storage.open_table(uri, name)  # an unreadable log is a CorruptTableError
            continue
        opts = storage.options(uri)
        if objstore.list_folder(uri, opts) or objstore.list_folder(uri, opts, folders=True):
            raise CorruptTableError(f"{uri} holds files but no readable Delta log (its _delta_log was lost or "
                                    "damaged); restore the _delta_log (or the lake) before maintaining it")
        raise TableNotFoundError(f"no {name} table at {uri}: {settings.lake} is not a lake; point --lake "
                                 "(WEAVER_LAKE) at the lake's root (`weaver simulate` or `weaver ingest` makes one)")


def check_spans(settings: Settings, now: datetime) -> None:
    """Each retention measured back from `now` starts inside the calendar (InvalidParameterError
    otherwise), checked before the first step writes."""
    for what, span in (("the recovery window", settings.recovery_window),
                       ("the woven retention", settings.woven_retention),
                       ("the calibration retention", settings.calibration_retention)):
        span_start(now, span, what)


def maintain(settings: Settings, *, now: datetime, compact: bool = True) -> dict:
    """Run one maintenance pass as of `now`; returns what each step did. A root that is no lake,
    a retention reaching before the year 1, or a woven root inside a lake, is refused before any
    step (:func:`check_lake`, :func:`weaver.core.storage.check_woven_root`)."""
    now = parse_timepoint(now)
    check_spans(settings, now)
    check_lake(settings)
    # The woven vacuum refuses a root inside a lake; checked here too, before the snapshot vacuum writes.
    storage.check_woven_root(settings, what="woven root (WEAVER_WOVEN_ROOT)")
    t0 = time.perf_counter()
    result: dict = {"now": now.isoformat(), "recovery_window_s": settings.recovery_window.total_seconds(),
                    "woven_retention_s": settings.woven_retention.total_seconds(),
                    "calibration_retention_s": settings.calibration_retention.total_seconds()}
    v = vacuum(settings, now)
    result["snapshots"] = {k: v[k] for k in ("snapshots_expired", "snapshots_kept", "log_rows_deleted",
                                             "log_start_seq", "window_start")}
    faults.point("maintain.after_snapshot_vacuum")
    result["woven"] = vacuum_woven(settings, now=now)
    if compact:
        result["compacted"] = compact_tables(settings)
    result["calibration"] = calibration.prune(settings, now)
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return result
