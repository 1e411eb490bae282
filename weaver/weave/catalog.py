"""The woven catalog (one row per woven sequence): the one reader, the one writer, and lookups.

Reads go through the per-process Delta handle (:mod:`weaver.core.deltafiles`), so the API and
recovery re-read the catalog only when its Delta version changes.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.deltafiles import delta_files, load_as_of
from weaver.core.errors import ConcurrentWriteError, InvalidParameterError, UnknownWeaveError
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint

COMPRESSION = "ZSTD"


def read_woven_catalog(settings: Settings) -> pa.Table:
    """The woven catalog (empty when nothing was woven yet)."""
    snap = delta_files(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)
    if snap is None:
        return storage.empty(storage.WOVEN_CATALOG)
    if "catalog" not in snap.memo:
        snap.memo["catalog"] = storage.conform(snap.read(None, None, None), storage.WOVEN_CATALOG,
                                               where=f" at {snap.uri}")
    return snap.memo["catalog"]


def catalog_rows(catalog: pa.Table) -> list[dict]:
    """The catalog columns recovery needs, one dict per sequence."""
    return catalog.select(["weave_id", "prediction_id", "source_partition_id", "split_key", "split_ts",
                           "confidence", "child_ids", "status", "origin"]).to_pylist()


def find_weave(catalog: pa.Table, weave_id: str) -> dict:
    """The catalog row of `weave_id` (full id or its 8-character prefix, hex in any case), else
    UnknownWeaveError."""
    weave_id = weave_id.strip().lower() if isinstance(weave_id, str) else weave_id  # ids are stored lower-case
    if not isinstance(weave_id, str) or not re.fullmatch(r"[0-9a-f]{8,16}", weave_id or ""):
        raise UnknownWeaveError(f"{weave_id!r} is not a weave id (16 hex characters, or their first 8)")
    hits = [r for r in catalog_rows(catalog) if r["weave_id"].startswith(weave_id)]
    if not hits:
        raise UnknownWeaveError(f"unknown weave {weave_id!r}; list weaves with GET /v1/partitions?kind=woven "
                                "or run `weaver weave` first")
    if len({r["weave_id"] for r in hits}) > 1:
        raise UnknownWeaveError(f"weave id prefix {weave_id!r} is ambiguous; give all 16 characters")
    return hits[0]


def retention_interval(d: timedelta) -> str:
    """A Delta table-property interval of `d` (at least one second)."""
    return f"interval {max(1, int(d.total_seconds()))} seconds"


def table_properties(settings: Settings) -> dict[str, str]:
    """The woven tier's own retention (log and removed files), separate from the lake's."""
    r = retention_interval(settings.woven_retention)
    return {"delta.logRetentionDuration": r, "delta.deletedFileRetentionDuration": r}


def write_woven_catalog(settings: Settings, rows: list[dict]) -> None:
    """MERGE catalog rows keyed on weave_id (delta-rs, zstd); creates the table with the tier's retention."""
    if not rows:
        return
    from deltalake import WriterProperties

    from weaver.core.retry import retry_commit

    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    table = storage.conform(pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_CATALOG]),
                            storage.WOVEN_CATALOG)
    if not storage.is_table(uri):
        try:
            # Of two racing creators one wins; the other MERGEs below.
            retry_commit(lambda: storage.create_table(uri, table, configuration=table_properties(settings),
                                                      writer_properties=WriterProperties(compression=COMPRESSION)),
                         what="create woven_catalog", attempts=0)
            return
        except ConcurrentWriteError:
            pass
    storage.merge(uri, storage.WOVEN_CATALOG, table, ["weave_id"], compression=COMPRESSION)


def delete_weaves(settings: Settings, weave_ids: list[str]) -> None:
    """Delete catalog rows by weave id (quarantine clear); a no-op for an empty list."""
    from weaver.core.retry import retry_commit

    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    if not weave_ids or not storage.is_table(uri):
        return
    ids = ", ".join(f"'{w}'" for w in sorted(weave_ids) if re.fullmatch(r"[0-9a-f]{16}", w))
    if ids:
        retry_commit(lambda: storage.open_table(uri).delete(f"weave_id IN ({ids})"), what="delete from woven_catalog")


def open_woven_as_of(settings: Settings, *, version: int | None = None, timestamp: datetime | None = None):
    """woven_snapshots as a delta-rs table loaded at Delta `version` or at transaction time
    `timestamp` (exactly one): InvalidParameterError for a version the log does not have,
    NoDataError for a timestamp before the first commit still in the log."""
    if (version is None) == (timestamp is None):
        raise InvalidParameterError("give exactly one of version or timestamp")
    dt = storage.open_table(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS)
    if timestamp is not None:
        load_as_of(dt, storage.WOVEN_SNAPSHOTS, parse_timepoint(timestamp))
    else:
        try:
            dt.load_as_version(version)
        except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for an unknown version
            raise InvalidParameterError(f"woven_snapshots has no version {version}: {exc}") from exc
    return dt


def woven_as_of(settings: Settings, *, version: int | None = None, timestamp: datetime | None = None,
                weave_id: str | None = None) -> pa.Table:
    """woven_snapshots as it stood after an earlier weaving run (delta-rs time travel): every row,
    or one weave's (`weave_id`, selected in the scan: the table is partitioned by weave_id).

    `version` is a Delta version (one per weaving run); `timestamp` picks the latest version
    committed at or before it (transaction time, :func:`weaver.core.deltafiles.load_as_of`: delta-rs'
    time travel by datetime plus one stat of the commit file it picked, never the whole history); a
    `timestamp` before the first commit still in the log is a NoDataError (delta-rs would silently
    answer with that first version). Rows are sorted by (weave_id, timepoint, key). A recovery's
    look-up at an old version reads only the files it needs (:meth:`WovenTable.as_of`).
    """
    dt = open_woven_as_of(settings, version=version, timestamp=timestamp)
    expr = pc.field("weave_id") == weave_id if weave_id else None
    t = storage.conform(storage.dataset(dt).to_table(filter=expr), storage.WOVEN_SNAPSHOTS)
    return t.sort_by([("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")])
