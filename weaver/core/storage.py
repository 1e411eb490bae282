"""Table names, contract schemas (DESIGN §3) and paths; delta-rs reads and small-table writes.

Spark writes the heavy tables (snapshots, woven snapshots, whole-table restores) through
delta-spark; small control tables (partition metrics, predictions, catalogs, backtests) are
MERGEd through delta-rs. Both speak Delta protocol (1, 2), and every read for low latency goes
through delta-rs + Arrow here, without a JVM.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core.errors import (CorruptTableError, InvalidParameterError, SchemaMismatchError, TableNotFoundError,
                                 UnsupportedTableFeatureError)

TS = pa.timestamp("us", tz="UTC")

# --- table names ---------------------------------------------------------------------------------
CHANGELOG = "changelog"
PARTITIONS = "partitions"
SPLITS = "splits"
PARTITION_METRICS = "partition_metrics"
ACCESS_LOG = "access_log"
SNAPSHOTS = "snapshots"
SNAPSHOT_CATALOG = "snapshot_catalog"
PREDICTIONS = "predictions"
BACKTEST_RESULTS = "backtest_results"
WOVEN_CATALOG = "woven_catalog"
ADVICE = "advice"
WOVEN_SNAPSHOTS = "woven_snapshots"
INGEST_WATERMARKS = "ingest_watermarks"
INGEST_LOG = "ingest_log"
PREDICTIONS_STAGED = "predictions_staged"  # write-audit-publish: a run's rows before their check
QUARANTINE = "quarantine"  # what a failed check held back, with the validation result
METRICS_STATE = "metrics_state"  # checkpoints of the metrics fold: live keys per partition at a bucket boundary

WOVEN_TABLES = frozenset({WOVEN_CATALOG, WOVEN_SNAPSHOTS})

SCHEMAS: dict[str, pa.Schema] = {
    CHANGELOG: pa.schema(
        [
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("ts", TS, nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("op", pa.string(), nullable=False),
            pa.field("value", pa.binary()),
            pa.field("value_bytes", pa.int64()),
        ]
    ),
    PARTITIONS: pa.schema(
        [
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("key_lo", pa.string(), nullable=False),
            pa.field("key_hi", pa.string()),
            pa.field("parent_id", pa.string()),
            pa.field("created_seq", pa.int64(), nullable=False),
            pa.field("created_ts", TS, nullable=False),
            pa.field("retired_seq", pa.int64()),
            pa.field("retired_ts", TS),
        ]
    ),
    SPLITS: pa.schema(
        [
            pa.field("parent_id", pa.string(), nullable=False),
            pa.field("split_seq", pa.int64(), nullable=False),
            pa.field("split_ts", TS, nullable=False),
            pa.field("split_key", pa.string(), nullable=False),
            pa.field("left_id", pa.string(), nullable=False),
            pa.field("right_id", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
        ]
    ),
    PARTITION_METRICS: pa.schema(
        [
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("bucket_start", TS, nullable=False),
            pa.field("size_bytes", pa.int64(), nullable=False),
            pa.field("item_count", pa.int64(), nullable=False),
            pa.field("writes", pa.int64(), nullable=False),
            pa.field("write_bytes", pa.int64(), nullable=False),
            pa.field("reads", pa.int64(), nullable=False),
        ]
    ),
    ACCESS_LOG: pa.schema(
        [
            pa.field("ts", TS, nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
        ]
    ),
    SNAPSHOTS: pa.schema(
        [
            pa.field("snapshot_id", pa.string(), nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("as_of_seq", pa.int64(), nullable=False),
            pa.field("as_of_ts", TS, nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("value", pa.binary()),
        ]
    ),
    SNAPSHOT_CATALOG: pa.schema(
        [
            pa.field("snapshot_id", pa.string(), nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("as_of_seq", pa.int64(), nullable=False),
            pa.field("as_of_ts", TS, nullable=False),
            pa.field("rows", pa.int64(), nullable=False),
            pa.field("bytes", pa.int64(), nullable=False),
            pa.field("created_at", TS, nullable=False),
        ]
    ),
    PREDICTIONS: pa.schema(
        [
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("run_ts", TS, nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("window_start", TS, nullable=False),
            pa.field("window_end", TS, nullable=False),
            pa.field("probability", pa.float64(), nullable=False),
            pa.field("reason", pa.string()),  # 'size' | 'throughput' | null when no crossing
            pa.field("predicted_split_ts", TS),
            pa.field("split_ts_p10", TS),
            pa.field("split_ts_p90", TS),
            pa.field("split_key", pa.string()),
            pa.field("threshold", pa.float64(), nullable=False),
            pa.field("skip_reason", pa.string()),  # why no forecast was made (too little history, ...)
            pa.field("probability_raw", pa.float64()),  # the model's own probability before calibration
        ]
    ),
    BACKTEST_RESULTS: pa.schema(
        [
            pa.field("backtest_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("run_ts", TS, nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("probability", pa.float64(), nullable=False),
            pa.field("predicted_split_ts", TS),
            pa.field("actual_split", pa.bool_(), nullable=False),
            pa.field("actual_split_ts", TS),
            pa.field("actual_split_key", pa.string()),
            pa.field("timing_error_s", pa.float64()),
        ]
    ),
    WOVEN_CATALOG: pa.schema(
        [
            pa.field("weave_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("source_partition_id", pa.string(), nullable=False),
            pa.field("split_key", pa.string(), nullable=False),
            pa.field("split_ts", TS, nullable=False),
            pa.field("confidence", pa.float64(), nullable=False),
            pa.field("window_start", TS, nullable=False),
            pa.field("window_end", TS, nullable=False),
            pa.field("child_ids", pa.list_(pa.string()), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("created_at", TS, nullable=False),
            # Lifecycle bookkeeping (beyond DESIGN §3's list; see docs/design.md):
            pa.field("last_timepoint", TS),
            pa.field("last_seq", pa.int64()),
            pa.field("actual_split_key", pa.string()),
            pa.field("actual_split_ts", TS),
            pa.field("updated_at", TS),
            pa.field("origin", pa.string(), nullable=False),  # 'predicted' | 'manual' (issue 13)
        ]
    ),
    ADVICE: pa.schema(  # one row per (prediction run, partition): what to do before the split (issue 13)
        [
            pa.field("advice_id", pa.string(), nullable=False),
            pa.field("run_ts", TS, nullable=False),
            pa.field("partition_id", pa.string(), nullable=False),
            pa.field("prediction_id", pa.string(), nullable=False),
            pa.field("probability", pa.float64(), nullable=False),
            pa.field("reason", pa.string()),
            pa.field("predicted_split_ts", TS),
            pa.field("window_end", TS, nullable=False),
            pa.field("action", pa.string(), nullable=False),  # 'pre_split' | 'wait' | 'raise_capacity'
            pa.field("split_key", pa.string()),
            pa.field("key_by", pa.string()),  # 'size' | 'load'
            # Expected effect (at the predicted split instant, the parent at its threshold):
            pa.field("expected_left_share", pa.float64()),
            pa.field("expected_right_share", pa.float64()),
            pa.field("expected_peak_utilization", pa.float64()),
            pa.field("expected_hours_to_recross", pa.float64()),
            pa.field("largest_before_bytes", pa.int64()),
            pa.field("largest_after_bytes", pa.int64()),
            # Backtest: scored against what happened once the window closed (null until then).
            pa.field("backtest", pa.string()),  # 'avoided' | 'child_crossed' | 'split_happened' | 'no_split' | 'manual_split'
            pa.field("actual_split", pa.bool_()),
            pa.field("scored_at", TS),
        ]
    ),
    WOVEN_SNAPSHOTS: pa.schema(
        [
            pa.field("weave_id", pa.string(), nullable=False),
            pa.field("woven_partition_id", pa.string(), nullable=False),
            pa.field("source_partition_id", pa.string(), nullable=False),
            pa.field("timepoint", TS, nullable=False),
            pa.field("as_of_seq", pa.int64(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("value", pa.binary()),
        ]
    ),
    # One row per ingested batch of a source (weaver.ingest); the latest batch's row is the
    # source's watermark. Authoritative copy: the changelog commit's app transaction + commitInfo.
    INGEST_WATERMARKS: pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("batch", pa.int64(), nullable=False),
            pa.field("watermark", pa.string(), nullable=False),  # in the source's terms (LSN, version, time)
            pa.field("position", pa.string(), nullable=False),  # machine form, "a/b" of ints
            pa.field("complete_to", TS, nullable=False),  # the log holds every source change with ts <= this
            pa.field("committed_at", TS, nullable=False),
            pa.field("first_seq", pa.int64()),
            pa.field("last_seq", pa.int64()),
            pa.field("changes", pa.int64(), nullable=False),
            pa.field("fingerprint", pa.string(), nullable=False),
            pa.field("keys", pa.string()),  # the key attributes the source's keys were encoded from
            pa.field("identity", pa.string()),  # what the input was read from (Batch.identity); null: not told
            pa.field("full", pa.bool_()),  # the batch is a full snapshot (the source's state, not its changes)
        ]
    ),
    # The source's own timestamp and position of each ingested change (ts may be carried forward).
    INGEST_LOG: pa.schema(
        [
            pa.field("seq", pa.int64(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("position", pa.string(), nullable=False),
            pa.field("source_ts", TS, nullable=False),
        ]
    ),
}

#: Columns added to a table after it was first written: a table (or row) from before the column
#: existed reads with this value; the next MERGE evolves the table's schema (merge_schema).
ADDED_COLUMNS: dict[str, dict[str, object]] = {
    WOVEN_CATALOG: {"origin": "predicted"},
    # Predictions written before calibration existed: no raw probability was kept (null).
    PREDICTIONS: {"probability_raw": None},
    PREDICTIONS_STAGED: {"probability_raw": None},
    # Ledger rows written before identities and snapshot batches were recorded: identity unknown
    # (the source adopts the first one it sees), and whether the batch was a snapshot unknown (null).
    INGEST_WATERMARKS: {"identity": None, "full": None},
}

# Staged predictions: the contract's columns plus their audit status ('staged' | 'quarantined').
SCHEMAS[PREDICTIONS_STAGED] = pa.schema(list(SCHEMAS[PREDICTIONS]) + [pa.field("status", pa.string(), nullable=False)])
SCHEMAS[QUARANTINE] = pa.schema(
    [
        pa.field("item_kind", pa.string(), nullable=False),  # 'predictions' | 'weave' | 'changelog'
        pa.field("item_id", pa.string(), nullable=False),  # run ts iso | weave_id | interval id
        pa.field("run_ts", TS),
        pa.field("suite", pa.string(), nullable=False),
        pa.field("result", pa.string(), nullable=False),  # the failed expectations, as GX reported them
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("quarantined_at", TS, nullable=False),
    ]
)

# A checkpoint of the metrics fold (weaver.predict.metrics): the live keys and their item bytes
# after every change with ts < as_of_ts (a bucket boundary), one row per partition active then.
SCHEMAS[METRICS_STATE] = pa.schema(
    [
        pa.field("state_id", pa.string(), nullable=False),  # ids.metrics_state_id(partition_id, as_of_ts, as_of_seq)
        pa.field("partition_id", pa.string(), nullable=False),  # '' holds live keys no active partition covers
        pa.field("as_of_ts", TS, nullable=False),
        pa.field("as_of_seq", pa.int64(), nullable=False),
        pa.field("log_first_ts", TS, nullable=False),  # the first bucket the log knew fully (vacuum base)
        pa.field("keys", pa.list_(pa.string()), nullable=False),
        pa.field("item_bytes", pa.list_(pa.int64()), nullable=False),
    ]
)

OPS = ("PUT", "DELETE")
STATE_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])


# --- paths ---------------------------------------------------------------------------------------
def table_uri(root: str, name: str) -> str:
    """URI of table `name` under a root (a local folder or an object-store URI)."""
    if "://" in root:
        return root.rstrip("/") + "/" + name
    return str(Path(root).resolve() / name)


def uri_for(settings, name: str) -> str:  # settings: weaver.core.settings.Settings
    """URI of a contract table, choosing the woven tier's root for woven tables."""
    return table_uri(settings.woven if name in WOVEN_TABLES else settings.lake, name)


def check_outside_lake(settings, out: str, *, what: str = "--out") -> str:
    """Refuse an output location that is (or lies inside) a contract table or is a lake root: an
    output never touches the source tables. Returns the normalised target (a resolved local path,
    or the URI without a trailing slash)."""

    def norm(u: str) -> str:
        return u.rstrip("/") if "://" in u else str(Path(u).resolve())

    target = norm(out)
    for name in SCHEMAS:
        p = norm(uri_for(settings, name))
        if target == p or target.startswith(p + "/"):
            raise InvalidParameterError(f"{what} {out!r} is inside the lake's own {name!r} table ({p}); write into "
                                        "a new location: an output never touches the source tables")
    if target in {norm(settings.lake), norm(settings.woven)}:
        raise InvalidParameterError(f"{what} {out!r} is a lake root; choose a new location")
    return target


#: Commit-metadata key naming the kind of Weaver output a commit wrote (``"restore-table"``, ``"rollback"``).
#: delta-rs writers put it in the commit info itself; Spark writers, which can only add a
#: ``userMetadata`` string, put it in that string's JSON object.
OUTPUT_KEY = "weaver.output"
RESTORE_TABLE_OUTPUT, ROLLBACK_OUTPUT = "restore-table", "rollback"
#: Tables whose presence (two or more, as Delta tables) makes a folder a lake or woven root.
_ROOT_MIN_TABLES = 2


def output_commit_kind(commit: dict) -> str | None:
    """The kind of Weaver output a Delta commit (one entry of ``DeltaTable.history()``) wrote, or
    None for a commit Weaver did not write as an output. A rollback is known by its
    ``weaver.recovery_id`` (written before outputs named their kind)."""
    if commit.get(OUTPUT_KEY):
        return str(commit[OUTPUT_KEY])
    meta = commit.get("userMetadata")
    if isinstance(meta, str) and meta:
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
        if isinstance(meta, dict) and meta.get(OUTPUT_KEY):
            return str(meta[OUTPUT_KEY])
    return ROLLBACK_OUTPUT if "weaver.recovery_id" in commit else None


def _holds_contract_tables(root: str) -> list[str]:
    """Contract tables (by name, as Delta tables) directly under `root` - a lake or woven root holds several."""
    from weaver.core import objstore

    if "://" not in root:
        return [n for n in SCHEMAS if (Path(root) / n / "_delta_log").is_dir()]
    sub = set(objstore.list_folder(root, options(root), folders=True)) & set(SCHEMAS)
    return sorted(n for n in sub if "_delta_log" in objstore.list_folder(table_uri(root, n), options(root),
                                                                            folders=True))


def _ancestors(target: str) -> list[str]:
    """`target` and every folder above it (a normalised local path or an s3://bucket/key URI)."""
    if "://" not in target:
        p = Path(target)
        return [str(p), *map(str, p.parents)]
    scheme, _, rest = target.partition("://")
    parts = rest.split("/")
    return [f"{scheme}://" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def check_not_in_a_lake(settings, out: str, target: str, *, what: str = "--out") -> None:
    """Refuse `target` (normalised by :func:`check_outside_lake`) when it is, or lies inside,
    another lake's or woven tier's root: a folder holding contract tables. The current lake's
    own roots are left to :func:`check_outside_lake` (its ``recoveries/`` folder is where
    rollbacks land by default)."""
    own = {str(Path(u).resolve()) if "://" not in u else u.rstrip("/") for u in (settings.lake, settings.woven)}
    for folder in _ancestors(target):
        if folder in own:
            return  # inside this lake, not in a contract table of it (checked already): allowed
        try:
            held = _holds_contract_tables(folder)
        except OSError:
            continue  # an unreadable folder holds no table we could overwrite
        if len(held) >= _ROOT_MIN_TABLES:
            raise InvalidParameterError(f"{what} {out!r} is or lies inside a lake root ({folder} holds "
                                        f"{', '.join(held[:4])}); an output never touches a lake's tables: "
                                        "choose a location outside every lake")


def check_local_parent(out: str, target: str, *, what: str = "--out") -> None:
    """Refuse a local `target` under a regular file (nothing could ever be created there)."""
    if "://" in out:
        return
    for folder in map(Path, _ancestors(target)[1:]):
        if folder.exists():
            if not folder.is_dir():
                raise InvalidParameterError(f"{what} {out!r} lies under {str(folder)!r}, which is a file, not a "
                                            "folder; choose a location in a writable folder")
            return


def check_output_target(settings, out: str, *, kind: str, what: str = "--out") -> str:
    """Refuse an output table location Weaver may not write: inside this lake's tables or a lake
    root (:func:`check_outside_lake`), inside another lake (:func:`check_not_in_a_lake`), a file,
    a non-empty folder that is not weaver's own unfinished output, or an existing Delta table
    that is not an output of the same `kind` (every commit marked :func:`output_commit_kind`).
    Only such an output is overwritten by a rerun: any other table is someone's data."""
    target = check_outside_lake(settings, out, what=what)
    check_not_in_a_lake(settings, out, target, what=what)
    check_local_parent(out, target, what=what)
    if "://" not in out and Path(target).exists() and not Path(target).is_dir():
        raise InvalidParameterError(f"{what} {out!r} is a file, not a folder; name a new folder for the Delta table")
    if is_table(target):
        _check_own_output(out, target, kind, what)
    elif "://" not in out and Path(target).is_dir() and any(Path(target).iterdir()) \
            and not _unfinished_of(Path(target), kind):
        raise InvalidParameterError(f"{what} {out!r} exists and is not a Delta table; choose a new folder")
    check_local_writable(out, target, what=what)
    return out


def check_local_writable(out: str, target: str, *, what: str = "--out") -> None:
    """Refuse a local `target` that could not be written, before any work: a folder is made and
    removed again in the target (when it exists) or in its nearest existing folder (a read-only
    mount, a folder of another user, /proc). Nothing is left behind; an object store is not probed."""
    if "://" in out:
        return
    folder = next((f for f in map(Path, _ancestors(target)) if f.exists()), None)
    if folder is None or not folder.is_dir():
        return  # under a file: check_local_parent's refusal
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".weaver-probe-", dir=folder))
    except OSError as exc:
        raise InvalidParameterError(f"{what} {out!r} cannot be written: {str(folder)!r} refuses a new folder "
                                    f"({exc.strerror or exc}); choose a writable location") from exc


def check_woven_root(settings, *, what: str = "woven root") -> None:
    """Refuse a woven tier root (``settings.woven_root``: ``--woven-root``, ``$WEAVER_WOVEN_ROOT``)
    that Weaver may not create its tables in, before anything is written (InvalidParameterError
    naming `what`): the lake root itself, anything else inside the lake than its default
    ``<lake>/woven`` (a contract table of it above all), and - for a local root - a folder that is
    or lies inside a Delta table, or another lake's or woven tier's root (a folder holding
    contract tables; the root itself may hold the woven tables: an existing woven tier).

    The default root and a folder outside every lake pass. An object-store root is checked by
    name only (against this lake's root and tables): nothing is listed to decide it.
    """
    if settings.woven_root is None:
        return  # the default <lake>/woven
    out = str(settings.woven_root)

    def norm(u: str) -> str:
        return u.rstrip("/") if "://" in u else str(Path(u).resolve())

    target, lake = norm(out), norm(str(settings.lake))
    if target == norm(table_uri(str(settings.lake), "woven")):
        return
    for name in SCHEMAS:
        if name in WOVEN_TABLES:
            continue
        p = norm(table_uri(str(settings.lake), name))
        if target == p or target.startswith(p + "/"):
            raise InvalidParameterError(f"{what} {out!r} is inside the lake's own {name!r} table ({p}); the woven "
                                        "tier never touches the source tables: use the default <lake>/woven or a "
                                        "folder outside the lake")
    if target == lake or target.startswith(lake + "/"):
        where = "is the lake root" if target == lake else f"lies inside the lake ({lake})"
        raise InvalidParameterError(f"{what} {out!r} {where}; the woven tier lives at the default "
                                    f"{table_uri(str(settings.lake), 'woven')} or in a folder outside the lake")
    if "://" in out:
        return  # an object store: only what its name decides
    for folder in _ancestors(target):
        here = folder == target
        try:
            table, held = (Path(folder) / "_delta_log").is_dir(), _holds_contract_tables(folder)
        except OSError:
            continue  # an unreadable folder holds no table we could write into
        if table:
            raise InvalidParameterError(f"{what} {out!r} {'is' if here else 'lies inside'} a Delta table "
                                        f"({folder}); the woven tier's tables go in a folder of their own")
        if here:
            held = [n for n in held if n not in WOVEN_TABLES]  # an existing woven tier is this root's own
        if (here and held) or len(held) >= _ROOT_MIN_TABLES:
            raise InvalidParameterError(f"{what} {out!r} {'is' if here else 'lies inside'} another lake's or woven "
                                        f"tier's root ({folder} holds {', '.join(held[:4])}); the woven tier never "
                                        "touches a lake's tables: choose a folder outside every lake")


def _check_own_output(out: str, target: str, kind: str | None, what: str) -> None:
    """Refuse the existing Delta table `target` unless every commit of it is a `kind` output of Weaver."""
    from deltalake import DeltaTable

    try:
        kinds = {output_commit_kind(c) for c in DeltaTable(target, storage_options=options(target)).history()}
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for a broken log
        raise InvalidParameterError(f"{what} {out!r} is a Delta table whose history cannot be read ({exc}); "
                                    "choose a new location") from exc
    if kind is None or kinds != {kind}:
        found = ", ".join(sorted(k or "not weaver's" for k in kinds))
        raise InvalidParameterError(f"{what} {out!r} is an existing Delta table that Weaver did not write as a "
                                    f"{kind or 'new'} output (its commits: {found}); Weaver overwrites only its own "
                                    "outputs of the same kind: choose a new location")


def _unfinished_of(folder: Path, kind: str | None) -> bool:
    """Whether `folder` carries the unfinished-output marker of a `kind` writer (or of an unnamed one)."""
    marker = folder / UNFINISHED
    if not marker.is_file():
        return False
    try:
        writer = json.loads(marker.read_text() or "{}").get("writer")
    except (ValueError, AttributeError, OSError):
        return False
    return writer is None or writer == kind


#: Marker an output writer leaves in its (local) target folder until its Delta commit is done. A
#: writer killed before its first commit leaves data files and no table; the marker proves the
#: folder is weaver's own unfinished output, so the rerun may clear it instead of refusing it.
UNFINISHED = "_weaver_unfinished_output"


def claim_output(out: str, what: str) -> None:
    """Before writing the new table `out` (already passed by :func:`check_output_target`): clear
    what an earlier, killed attempt left there (only when it carries the marker and never
    committed), then mark the folder as an unfinished output of `what`."""
    if "://" in out:
        return  # object stores: no folder, and a PUT is whole or absent
    p = Path(out)
    if p.exists() and not is_table(out) and (p / UNFINISHED).exists():
        shutil.rmtree(p)
    try:
        p.mkdir(parents=True, exist_ok=True)
        (p / UNFINISHED).write_text(json.dumps({"writer": what, "pid": os.getpid()}) + "\n")
    except OSError as exc:  # e.g. under /proc, or a read-only mount: bad input, nothing of ours written
        raise InvalidParameterError(f"cannot create the output folder {out!r}: {exc.strerror or exc}; choose a "
                                    "writable location") from exc


def release_output(out: str) -> None:
    """After the Delta commit into `out`: the folder is a table now, the marker goes."""
    if "://" not in out:
        (Path(out) / UNFINISHED).unlink(missing_ok=True)


def write_parquet_atomic(path: str | Path, table: pa.Table) -> str:
    """Write `table` as one Parquet file (a local path via a temporary name, or an s3:// object in
    one PUT): a reader never sees half a file."""
    from weaver.core import objstore

    uri = str(path)
    return objstore.write_parquet(uri, table, options(uri))


# --- Arrow helpers shared by every stage ---------------------------------------------------------
def key_ranges_expr(ranges: Sequence[tuple[str | None, str | None]]) -> pc.Expression:
    """Dataset filter: key in one of the [lo, hi) ranges (lo None or "": unbounded below, hi None:
    unbounded above; no range: nothing)."""
    anyof = pc.scalar(False)
    for lo, hi in ranges:
        e = pc.scalar(True)
        if lo:
            e = e & (pc.field("key") >= lo)
        if hi is not None:
            e = e & (pc.field("key") < hi)
        anyof = anyof | e
    return anyof


def filter_range(table: pa.Table, key_lo: str | None, key_hi: str | None) -> pa.Table:
    """Rows with key_lo <= key < key_hi (None = unbounded)."""
    mask = None
    k = table.column("key")
    if key_lo:
        mask = pc.greater_equal(k, key_lo)
    if key_hi is not None:
        m = pc.less(k, key_hi)
        mask = m if mask is None else pc.and_(mask, m)
    return table if mask is None else table.filter(mask)


def is_increasing(col: pa.ChunkedArray | pa.Array, strict: bool = False) -> bool:
    """Whether `col` is sorted ascending (strictly: no repeats) - a cheap check that saves a sort."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if n < 2:
        return True
    cmp = pc.greater if strict else pc.greater_equal
    return bool(pc.all(cmp(arr.slice(1), arr.slice(0, n - 1))).as_py())


# --- schema checks -------------------------------------------------------------------------------
def empty(name: str) -> pa.Table:
    """An empty table with contract table `name`'s schema."""
    return SCHEMAS[name].empty_table()


def conform(table: pa.Table, name: str, *, where: str = "", columns: Sequence[str] | None = None) -> pa.Table:
    """Check `table` carries every contract column with a compatible type; return it cast.

    Extra columns are dropped (a user's change log may carry more). A missing column or an
    incompatible type raises SchemaMismatchError naming both. `columns` checks (and returns) only
    those contract columns, in that order: a projected read.
    """
    schema = SCHEMAS[name]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    added = ADDED_COLUMNS.get(name, {})
    cols = []
    for f in schema:
        if f.name not in table.column_names and f.name in added:
            cols.append(pa.chunked_array([pa.array([added[f.name]] * table.num_rows, f.type)], f.type))
            continue
        if f.name not in table.column_names:
            raise SchemaMismatchError(
                f"table {name!r}{where} lacks column {f.name!r} ({f.type}); found {table.column_names}"
            )
        col = table.column(f.name)
        if not col.type.equals(f.type):
            try:
                col = _cast(col, f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"table {name!r}{where}: column {f.name!r} is {col.type}, the contract says {f.type}"
                ) from exc
        if col.null_count and f.name in added:
            col = pc.fill_null(col, pa.scalar(added[f.name], f.type))
        if not f.nullable and col.null_count:
            raise SchemaMismatchError(f"table {name!r}{where}: column {f.name!r} has nulls")
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def _cast(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    src = col.type
    if pa.types.is_timestamp(target):
        if not pa.types.is_timestamp(src) or src.tz is None:
            # A naive timestamp in a contract table would be an hours-wide silent error.
            raise pa.ArrowInvalid(f"{src} is not a timezone-aware timestamp")
        return pc.cast(col, target)
    if pa.types.is_string(target) and (pa.types.is_large_string(src) or pa.types.is_string_view(src)):
        return pc.cast(col, target)
    if pa.types.is_binary(target) and (pa.types.is_large_binary(src) or pa.types.is_binary_view(src)):
        return pc.cast(col, target)
    if pa.types.is_integer(target) and pa.types.is_integer(src):
        return pc.cast(col, target)
    if pa.types.is_floating(target) and (pa.types.is_floating(src) or pa.types.is_integer(src)):
        return pc.cast(col, target)
    if pa.types.is_list(target) and (pa.types.is_list(src) or pa.types.is_large_list(src)):
        return pc.cast(col, target)
    raise pa.ArrowInvalid(f"cannot use {src} as {target}")


# --- delta-rs I/O --------------------------------------------------------------------------------
def options(uri: str) -> dict[str, str] | None:
    """delta-rs storage options for `uri` (None for a local path); pass them to every DeltaTable
    and write_deltalake call so an s3:// lake reaches its endpoint with its credentials."""
    from weaver.core.settings import storage_options

    return storage_options(uri)


def by_partition_value(ds, column: str) -> dict:
    """The fragments of dataset `ds` grouped by their partition value of `column` (None: a file
    without one), from one listing. A filtered scan per value tests every file's partition value:
    one per weave or snapshot made reading many of them quadratic in the table's files."""
    import pyarrow.dataset as pds

    out: dict = {}
    for f in ds.get_fragments():
        out.setdefault(pds.get_partition_keys(f.partition_expression).get(column), []).append(f)
    return out


def of_fragments(ds, fragments):
    """A dataset with `ds`'s schema, format and filesystem over `fragments` alone."""
    import pyarrow.dataset as pds

    return pds.FileSystemDataset(list(fragments), ds.schema, ds.format, ds.filesystem)


def dataset(dt, **kwargs):
    """delta-rs' pyarrow dataset of the DeltaTable `dt`; `kwargs` go to ``to_pyarrow_dataset``.

    A local table is read through Arrow's native filesystem. delta-rs' default is a Python
    filesystem handler: every read takes the GIL, and a scan dropped with read-ahead in flight
    frees Python buffers on Arrow's I/O threads - once interpreter shutdown has begun, that thread
    exits inside C++ code and the process aborts (std::terminate, exit 134) after its work is done.

    delta-rs gives each fragment its file's statistics as a guarantee, and a bound the file leaves
    unstated as ``c >= null``: any filter on ``c`` then pruned the file and its rows were never
    read (a file from a writer that collects statistics of fewer columns). Such files' fragments
    are remade with their partition values as their only guarantee (:func:`_unstated`); the
    others keep delta-rs' statistics.
    """
    uri = dt.table_uri
    if "://" not in uri or uri.startswith("file://"):
        from pyarrow import fs as pa_fs

        root = str(Path(unquote(uri.removeprefix("file://"))).resolve())
        kwargs.setdefault("filesystem", pa_fs.SubTreeFileSystem(root, pa_fs.LocalFileSystem()))
    check_read_features(dt)  # a handle kept open may have moved to a version it cannot read
    ds = dt.to_pyarrow_dataset(**kwargs)
    remake = _unstated(dt)
    if not remake:
        return ds
    import pyarrow.dataset as pds

    frags = [ds.format.make_fragment(fr.path, filesystem=ds.filesystem, partition_expression=remake[unquote(fr.path)])
             if unquote(fr.path) in remake else fr for fr in ds.get_fragments()]
    return pds.FileSystemDataset(frags, ds.schema, ds.format, ds.filesystem)


def _unstated(dt) -> dict:
    """Path (unescaped) -> partition guarantee of each file of `dt` that leaves a min or max
    statistic of a column unstated while the column holds a value there (an all-null column has
    no bounds to state; delta-rs says ``is_null`` for it). A file without any statistics is
    included too (delta-rs guarantees it nothing: remaking it changes nothing)."""
    acts = pa.table(dt.get_add_actions(flatten=True))
    names = set(acts.column_names)
    bad = None
    for n in acts.column_names:
        if not n.startswith(("min.", "max.")):
            continue
        m = acts.column(n).is_null()
        nulls = "null_count." + n.split(".", 1)[1]
        if nulls in names and "num_records" in names:
            m = pc.and_(m, pc.fill_null(pc.not_equal(acts.column(nulls), acts.column("num_records")), True))
        bad = m if bad is None else pc.or_(bad, m)
    if bad is None or not pc.any(bad).as_py():
        return {}
    schema = pa.schema(dt.schema().to_arrow())
    cols = list(dt.metadata().partition_columns)
    rows = acts.filter(bad).select(["path"] + [f"partition.{c}" for c in cols]).to_pylist()
    return {unquote(r["path"]): partition_guarantee(schema, {c: r[f"partition.{c}"] for c in cols}) for r in rows}


def partition_guarantee(schema: pa.Schema, values: dict):
    """A fragment's guarantee from its file's partition values only (None when it has none): what
    a reader needs to fill the partition columns, and nothing a statistic would add."""
    expr = None
    for c, v in values.items():
        e = pc.field(c).is_null() if v is None else pc.field(c) == pa.scalar(v).cast(schema.field(c).type)
        expr = e if expr is None else expr & e
    return expr


def create_table(uri: str, data, **kwargs) -> None:
    """Create the Delta table `uri` with its first rows (`data`: Arrow table or reader; `kwargs` go
    to ``write_deltalake``), failing with delta-rs' ``CommitFailedError`` when another writer
    created it first.

    ``mode="error"`` so a racing creator never replaces the winner's rows, and no commit retries
    inside delta-rs: left to itself it rebases the loser's create onto the winner's version as a
    blind append (every row twice). Callers retry the loser as a MERGE / replaceWhere.
    """
    from deltalake import CommitProperties, write_deltalake

    write_deltalake(uri, data, mode="error", storage_options=options(uri),
                    commit_properties=CommitProperties(max_commit_retries=0), **kwargs)


def is_table(uri: str) -> bool:
    """Whether a Delta table exists (and can be opened) at `uri`."""
    from deltalake import DeltaTable

    try:
        return DeltaTable.is_deltatable(uri, storage_options=options(uri))
    except Exception:  # noqa: BLE001 - an unreadable location is simply not a table
        return False


def open_table(uri: str, name: str = "", version: int | None = None):
    """Open a Delta table with delta-rs, mapping failures to named errors.

    A `version` the log does not hold (not written yet, or cleaned up) while the table itself opens
    is the caller's bad input, InvalidParameterError naming the latest version (and no path: it
    reaches API clients); anything else that fails is a CorruptTableError."""
    from deltalake import DeltaTable

    if not is_table(uri):
        raise TableNotFoundError(f"no Delta table {name or ''} at {uri}; run the stage that writes it")
    try:
        dt = DeltaTable(uri, version=version, storage_options=options(uri))
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for a broken log
        latest = None
        if version is not None:
            try:
                latest = DeltaTable(uri, storage_options=options(uri)).version()
            except Exception:  # noqa: BLE001 - the table itself is broken: reported below
                pass
        if latest is not None:
            raise InvalidParameterError(f"the {name or 'Delta'} table has no version {version} (its latest is "
                                        f"{latest}; older versions may have been cleaned up); pick one it has") from exc
        raise CorruptTableError(f"Delta table {name or uri} at {uri} cannot be opened: {exc}") from exc
    check_read_features(dt, name, uri)
    return dt


#: Reader features whose tables delta-rs' pyarrow reader reads right (``deltalake.table.SUPPORTED_READER_FEATURES``).
READABLE_FEATURES = frozenset({"timestampNtz", "variantType", "variantType-preview"})


def column_mapping_mode(configuration) -> str | None:
    """A Delta table's column-mapping mode (``name`` or ``id``) from its metadata's configuration,
    None without one."""
    mode = str(configuration.get("delta.columnMapping.mode", "none")).lower()
    return None if mode == "none" else mode


def records_change_feed(configuration) -> bool:
    """Whether a Delta table's metadata configuration turns its change data feed on."""
    return str(configuration.get("delta.enableChangeDataFeed", "false")).lower() == "true"


def check_read_features(dt, name: str = "", uri: str = "") -> None:
    """Refuse a table version whose rows the readers here would get wrong, before any row is read
    or written: UnsupportedTableFeatureError naming the feature and the way out.

    - Delta column mapping (``delta.columnMapping.mode`` name or id; reader version 2, or the
      ``columnMapping`` reader feature) keeps data columns under physical names, which delta-rs'
      pyarrow dataset does not resolve at reader version 2: it reads every data column as null,
      without an error (a native Parquet read by logical name finds nothing either).
    - Any other reader feature outside :data:`READABLE_FEATURES` (``deletionVectors``: rows deleted
      through them would come back): delta-rs opens such a table and refuses only at the first
      read, with its own exception type.

    Spark (Delta Spark) reads such tables, but every stage plans or checks through delta-rs, so the
    table is refused as a whole. Called on every open and on every version a kept handle moves to
    (a table can gain either feature by ``ALTER TABLE ... SET TBLPROPERTIES``)."""
    at = uri or dt.table_uri
    where = f"Delta table {name} at {at}" if name else f"Delta table at {at}"
    mode = column_mapping_mode(dt.metadata().configuration)
    if mode is not None:
        raise UnsupportedTableFeatureError(
            f"{where} uses column mapping (delta.columnMapping.mode = {mode}): the readers here would read its "
            "data columns as nulls, so it is refused; rewrite it without column mapping (CREATE TABLE ... AS "
            "SELECT into a new table) and use that")
    other = sorted(set(dt.protocol().reader_features or ()) - READABLE_FEATURES)
    if other:
        raise UnsupportedTableFeatureError(
            f"{where} needs the reader feature(s) {', '.join(other)}, which the readers here cannot apply "
            "(deletion vectors: deleted rows would be read back), so it is refused; remove the feature "
            "(for deletion vectors: REORG TABLE ... APPLY (PURGE), then ALTER TABLE ... DROP FEATURE "
            "deletionVectors) or rewrite the table without it")


def check_readable(uri: str, name: str) -> None:
    """Refuse the contract table `name` at `uri` when it cannot be read, from its Delta log and one
    listing of its folder alone (no data file is opened): no table there is TableNotFoundError;
    files but no readable Delta log, or a data file the log lists that is gone or whose size is
    not the size the log recorded (cut short, overwritten), is CorruptTableError naming it. For a
    command that may not otherwise read the table (advice that is all waits) and must not write
    over a broken lake. One listing, not one read per file: on an object store the cost is a LIST
    request per thousand files. Damage inside a file of the right size shows only when it is read."""
    import pyarrow.fs as pafs
    from urllib.parse import unquote

    from weaver.core import objstore

    opts = options(uri)
    if not is_table(uri):
        if objstore.list_folder(uri, opts) or objstore.list_folder(uri, opts, folders=True):
            raise CorruptTableError(f"Delta table {name} at {uri} holds files but no readable Delta log (its "
                                    "_delta_log was lost or damaged); restore the _delta_log (or the lake) first")
        raise TableNotFoundError(f"no Delta table {name} at {uri}; point --lake (WEAVER_LAKE) at the lake's root")
    acts = pa.table(open_table(uri, name).get_add_actions(flatten=True))
    fs, root = objstore.filesystem(uri, opts)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"Delta table {name} at {uri} cannot be listed: {exc}") from exc
    prefix = root.rstrip("/") + "/"
    sizes = {i.path[len(prefix):]: i.size for i in infos if i.type == pafs.FileType.File and i.path.startswith(prefix)}
    for path, size in zip(acts.column("path").to_pylist(), acts.column("size_bytes").to_pylist()):
        found = sizes.get(unquote(path), sizes.get(path))
        if found is None:
            raise CorruptTableError(f"Delta table {name} at {uri}: data file {path} is missing; restore it (or the "
                                    "lake) first")
        if size is not None and found != size:
            raise CorruptTableError(f"Delta table {name} at {uri}: data file {path} holds {found} bytes, its Delta "
                                    f"log says {size} (cut short or overwritten); restore it (or the lake) first")


def read(
    uri: str,
    name: str,
    *,
    filters: list | None = None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
    missing_ok: bool = False,
) -> pa.Table:
    """Read (part of) a contract table through delta-rs as Arrow, conformed to the contract.

    `filters` are DNF tuples as in pyarrow (`[("partition_id", "=", "p1")]`), pushed down to
    file skipping and row filtering.
    """
    if missing_ok and not is_table(uri):
        t = empty(name)
        return t.select(list(columns)) if columns else t
    dt = open_table(uri, name, version)
    expr = _filters_to_expression(filters) if filters else None
    try:
        ds = dataset(dt)
        try:
            table = ds.to_table(filter=expr)
            post = None
        except pa.ArrowNotImplementedError:
            # Files written by delta-rs MERGE may hold string_view columns, which pyarrow cannot
            # compare with a string scalar: push down only the non-string predicates, then filter
            # the conformed (plain string) rows in memory.
            safe = [f for f in filters or [] if not _is_string_col(ds.schema, f[0])]
            table = ds.to_table(filter=_filters_to_expression(safe) if safe else None)
            post = expr
    except (OSError, pa.ArrowInvalid) as exc:
        raise CorruptTableError(f"Delta table {name} at {uri} cannot be read: {exc}") from exc
    table = conform(table, name, where=f" at {uri}")
    if post is not None:
        table = table.filter(post)
    return table.select(list(columns)) if columns else table


def _is_string_col(schema: pa.Schema, col: str) -> bool:
    i = schema.get_field_index(col)
    if i < 0:
        return False
    t = schema.field(i).type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _filters_to_expression(filters: Iterable) -> pc.Expression:
    expr = None
    for col, op, val in filters:
        field = pc.field(col)
        if op in ("=", "=="):
            e = field == val
        elif op == "!=":
            e = field != val
        elif op == "<":
            e = field < val
        elif op == "<=":
            e = field <= val
        elif op == ">":
            e = field > val
        elif op == ">=":
            e = field >= val
        elif op == "in":
            e = field.isin(list(val))
        else:
            raise ValueError(f"unsupported filter operator {op!r}")
        expr = e if expr is None else expr & e
    return expr


def version_of(uri: str) -> int | None:
    """Current Delta version of a table, None when absent."""
    if not is_table(uri):
        return None
    return open_table(uri).version()


def _writer_properties(compression: str = "SNAPPY"):
    from deltalake import WriterProperties

    return WriterProperties(compression=compression)


def merge(
    uri: str,
    name: str,
    rows: pa.Table,
    keys: Sequence[str],
    *,
    partition_by: Sequence[str] | None = None,
    compression: str = "SNAPPY",
    target_filter: str | None = None,
) -> dict:
    """Idempotent upsert of `rows` into a contract table keyed on deterministic `keys`.

    Creates the table (protocol 1,2) on first write. Rerunning with the same rows leaves the
    same rows once. Returns delta-rs' metrics. `target_filter` (SQL on the target's columns,
    alias ``t``) is a condition every matching target row meets: it joins the MERGE predicate so
    delta-rs reads only the files whose statistics can hold such rows (the caller guarantees that
    no row outside it shares a key with `rows`).
    """
    from deltalake import DeltaTable

    from weaver.core.retry import retry_commit

    rows = conform(rows, name)

    def attempt() -> dict:
        # Re-read on every try: a retry after a conflict must plan against the winner's version.
        if not is_table(uri):
            # A second creator racing this one fails and retries as a MERGE.
            create_table(uri, rows, partition_by=list(partition_by or []) or None,
                         writer_properties=_writer_properties(compression))
            return {"num_target_rows_inserted": rows.num_rows}
        if rows.num_rows == 0:
            return {"num_target_rows_inserted": 0}
        dt = DeltaTable(uri, storage_options=options(uri))
        predicate = " AND ".join([f"t.{k} = s.{k}" for k in keys] + ([f"({target_filter})"] if target_filter else []))
        # A table written before a column was added (ADDED_COLUMNS) gains it here.
        evolve = bool(ADDED_COLUMNS.get(name)) and not set(rows.column_names) <= {f.name for f in dt.schema().fields}
        # Only rows that differ are rewritten: a rerun of the same interval commits nothing and adds no file.
        # (Not while evolving: the target lacks the new column, so every matched row is rewritten once.)
        differs = None if evolve else " OR ".join(f"(t.{c} IS DISTINCT FROM s.{c})" for c in rows.column_names
                                                   if c not in keys)
        return (
            dt.merge(source=rows, predicate=predicate, source_alias="s", target_alias="t", merge_schema=evolve,
                     writer_properties=_writer_properties(compression))
            .when_matched_update_all(predicate=differs or None)
            .when_not_matched_insert_all()
            .execute()
        )

    return retry_commit(attempt, what=f"MERGE into {name}")


def overwrite(uri: str, name: str, rows: pa.Table, *, predicate: str | None = None,
              compression: str = "SNAPPY") -> None:
    """Replace a table (or, with `predicate`, the rows matching it: replaceWhere) in one commit."""
    from deltalake import write_deltalake

    from weaver.core.retry import retry_commit

    rows = conform(rows, name)
    retry_commit(lambda: write_deltalake(uri, rows, mode="overwrite", predicate=predicate if is_table(uri) else None,
                                         writer_properties=_writer_properties(compression),
                                         storage_options=options(uri)),
                 what=f"overwrite of {name}")
