"""Recovery that prefers woven snapshots (DESIGN §4.3).

``recover(P, T)`` returns the state of partition P (a real partition or a woven child id
``"<P>~<weave_id[:8]>~L|R"``) at instant T. Two paths give the same rows:

* **woven** — the woven snapshot with ``confidence >= c`` whose range covers P and whose
  timepoint is the latest one ``<= T``; its rows (filtered to P's range) are read through
  delta-rs and only the tail of changes ``(as_of_seq, T]`` on P's key range is replayed;
* **standard** — the PITR framework's base snapshot + replay (:func:`weaver.pitr.restore_partition`).

``mode="rollback"`` writes the recovered state as a *new* Delta table (default
``<lake>/recoveries/<recovery_id>``) and refuses any location inside a contract table, so the
source tables are never mutated.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from weaver.core import storage
from weaver.core.errors import InvalidParameterError, NoDataError, WeaverError
from weaver.core.ids import recovery_id_for
from weaver.core.settings import Settings
from weaver.core.storage import check_output_target, filter_range, write_parquet_atomic
from weaver.core.time import parse_timepoint
from weaver.log.changelog import read_tail
from weaver.log.lineage import Lineage
from weaver.pitr import check_output_file, restore_partition
from weaver.recover.target import resolve
from weaver.recover.woven import find_woven_snapshot, read_woven_rows, woven_snapshot_as_of
from weaver.replay.arrow import fold
from weaver.weave import WovenTable, read_woven_catalog

MODES = ("point_in_time", "rollback")
PATHS = ("woven", "standard")
RECOVERIES_DIR = "recoveries"
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="weaver-recovery")


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


def default_rollback_uri(settings: Settings, recovery_id: str) -> str:
    """Where a rollback lands unless told otherwise: ``<lake>/recoveries/<recovery_id>``."""
    return storage.table_uri(storage.table_uri(settings.lake, RECOVERIES_DIR), recovery_id)


def recover(settings: Settings, partition_id: str, at: datetime | str, *, confidence_threshold: float | None = None,
            mode: str = "point_in_time", out: str | None = None, lineage: Lineage | None = None,
            prefer: str = "woven", as_of_version: int | None = None, as_of: datetime | str | None = None
            ) -> RecoveryResult:
    """Recover partition `partition_id` (real or woven child) at `at`, woven snapshot first.

    `prefer="standard"` skips the woven lookup (used to compare both paths). In point-in-time
    mode, `out` (optional) receives a Parquet file ``key, value``; in rollback mode the state is
    written as a new Delta table at `out` (default ``<lake>/recoveries/<recovery_id>``).
    `as_of_version` / `as_of` choose the woven snapshot from the woven tier as it stood at that
    Delta version / transaction time (the rows are the same either way, DESIGN §4.3; the path
    and source say what was available then).
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    c = settings.confidence(confidence_threshold)
    if mode not in MODES:
        raise InvalidParameterError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if prefer not in PATHS:
        raise InvalidParameterError(f"prefer {prefer!r} is not one of {', '.join(PATHS)}")
    lineage = lineage if lineage is not None else Lineage.load(settings)
    catalog = read_woven_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    target.check_exists_at(at)
    rid = recovery_id_for(target.partition_id, at)
    if mode == "rollback":
        out = check_output_target(settings, out or default_rollback_uri(settings, rid), what="rollback target",
                                  kind=storage.ROLLBACK_OUTPUT)
    elif out:
        out = check_output_file(settings, out)

    snap = woven = rows = None
    if as_of_version is not None and as_of is not None:
        raise InvalidParameterError("give an as-of version or an as-of timestamp, not both")
    if prefer == "woven" and (as_of_version is not None or as_of is not None):
        try:
            found = woven_snapshot_as_of(settings, target, at, c, lineage=lineage, catalog=catalog,
                                         version=as_of_version,
                                         timestamp=parse_timepoint(as_of) if as_of is not None else None)
        except NoDataError:
            found = None  # the woven tier did not exist yet then: nothing woven was available
        snap, rows = found if found is not None else (None, None)
    elif prefer == "woven":
        woven = WovenTable.open(settings)
        snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog, woven=woven)
    if snap is not None:
        # The tail (change log) and the rows (woven tier) are independent reads: overlap them.
        # The standard path validates the source partition's tail (a woven child is cut from it): so does this one.
        src = lineage.by_id[target.source_partition_id]
        check = (src.key_lo, src.key_hi) if target.is_woven_child else None
        pending = _POOL.submit(read_tail, settings, snap.as_of_seq, at, target.key_lo, target.key_hi, lineage, check)
        rows = rows if rows is not None else read_woven_rows(settings, snap, woven)
        tail = pending.result()
        table = fold(rows, tail, state_sorted=True)
        res = RecoveryResult(target.partition_id, at, "woven", snap.source, tail.num_rows, table.num_rows, 0.0,
                             table, snap.weave_id, snap.timepoint, mode, snap.confidence, rid)
    else:
        r = restore_partition(settings, target.source_partition_id, at, lineage=lineage)
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
        res.output = write_parquet_atomic(out, res.table)
    return res


def _write_rollback(uri: str, res: RecoveryResult) -> str:
    """Write the recovered state as the Delta table `uri`, unless it already holds exactly these rows.

    The recovery id is deterministic (partition and instant), so a rerun lands on the same table;
    with the same rows it commits nothing (no new version, no new data file). The rows can differ
    for one id only when the change log gained changes at or before the instant since the last
    run (an instant at or after the log's end): then the table is overwritten with the state as it
    is now. Any other existing table was refused before (`storage.check_output_target`: only an
    earlier rollback's table is replaced).
    """
    from deltalake import CommitProperties, write_deltalake

    if _holds(uri, res.table):
        return uri
    meta = {storage.OUTPUT_KEY: storage.ROLLBACK_OUTPUT, "weaver.recovery_id": res.recovery_id or "",
            "weaver.partition_id": res.partition_id,
            "weaver.at": res.at.isoformat(), "weaver.path": res.path, "weaver.source": res.source}
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Overwrite keyed on the deterministic recovery id: a rerun with other rows replaces them.
    write_deltalake(uri, res.table, mode="overwrite", schema_mode="overwrite",
                    description=f"Temporal Weaver rollback of {res.partition_id} at {res.at.isoformat()}",
                    commit_properties=CommitProperties(custom_metadata=meta), storage_options=storage.options(uri))
    return uri


def _holds(uri: str, table: pa.Table) -> bool:
    """Whether the Delta table at `uri` holds exactly `table` (columns key, value; rows in key order).

    A location that is not a readable table of those columns holds something else (False)."""
    if not storage.is_table(uri):
        return False
    try:
        dt = storage.open_table(uri)
        if [f.name for f in pa.schema(dt.schema().to_arrow())] != ["key", "value"]:
            return False
        held = storage.dataset(dt).to_table(columns=["key", "value"])
        if held.num_rows != table.num_rows:
            return False
        held = held.cast(storage.STATE_SCHEMA).sort_by([("key", "ascending")])
    except (WeaverError, OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return held.equals(table.cast(storage.STATE_SCHEMA))
