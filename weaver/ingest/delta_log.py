"""The change feed of a Delta table read from its log and data files, for the tables whose feed
delta-rs' ``load_cdf`` refuses (column mapping: ``delta.columnMapping.mode`` = name or id), gets
wrong (deletion vectors: a removed file that carries one) or cannot parse (a Spark shallow clone's
clone commit).

It follows the protocol's "Change Data Files" rules, version by version:

* a commit with ``cdc`` actions: its change data is exactly the rows of those files (each carries
  ``_change_type``); its ``add`` / ``remove`` actions are ignored;
* a commit without: the live rows of every data file it adds (``dataChange`` true) are inserts and
  the live rows of every file it removes are deletes, where a file's live rows are its rows minus
  those its deletion vector marks; a file both removed and added again (a deletion vector updated:
  Spark's DELETE on a table with deletion vectors writes no change data) gives the rows live
  before and not after as deletes, and the reverse as inserts;
* actions with ``dataChange`` false (OPTIMIZE, a deletion-vector purge) change no row.

Columns are read by their physical names (mode ``name``) or Parquet field ids (mode ``id``,
physical names where a file has no ids), at every nesting level, and named by the schema in force
*at that version*: a column renamed in the range keeps its values and carries its new name from the
rename on (each version's rows are the row images of that version). A column added later is null
in older files. Partition values come from the actions (keyed by physical name). Files named by
absolute URIs (a shallow clone's: ``file:/...``, ``s3://``, ``s3a://``) are read on the table's
own file system; a clone on one store of a table on another is refused by name.

Deletion vectors are read here too (inline, or in ``deletion_vector_<uuid>.bin`` files: the 64-bit
"portable" RoaringBitmapArray serialisation of Delta's protocol), since the rows a vector removes
are the change.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weaver.core import objstore, storage
from weaver.ingest.errors import MalformedInputError

CHANGE_TYPE = "_change_type"
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_B85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_Z85_TO_B85 = str.maketrans(_Z85, _B85)
_DV_MAGIC = 1681511377  # Delta's RoaringBitmapArray, "portable" serialisation
_ROARING_RUNS, _ROARING_NO_RUNS = 12347, 12346
_ID = b"delta.columnMapping.id"
_PHYSICAL = b"delta.columnMapping.physicalName"
_PARQUET_ID = b"PARQUET:field_id"


def z85_decode(text: str) -> bytes:
    """ZeroMQ's Z85 (the protocol's encoding of deletion-vector ids and inline vectors)."""
    if len(text) % 5:
        raise ValueError(f"a Z85 string has a multiple of 5 characters, not {len(text)}")
    return base64.b85decode(text.translate(_Z85_TO_B85))


def roaring32(buf: memoryview, pos: int) -> tuple[np.ndarray, int]:
    """One 32-bit Roaring bitmap in the portable format at `pos`: (sorted values, end position)."""
    (cookie,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if cookie & 0xFFFF == _ROARING_RUNS:
        n = (cookie >> 16) + 1
        runs = np.unpackbits(np.frombuffer(buf, np.uint8, (n + 7) // 8, pos), bitorder="little")[:n].astype(bool)
        pos += (n + 7) // 8
        has_offsets = n >= 4
    elif cookie == _ROARING_NO_RUNS:
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        runs, has_offsets = np.zeros(n, dtype=bool), True
    else:
        raise ValueError(f"not a portable Roaring bitmap (cookie {cookie})")
    header = np.frombuffer(buf, "<u2", 2 * n, pos).reshape(n, 2).astype(np.int64)
    pos += 4 * n + (4 * n if has_offsets else 0)
    parts = []
    for (key, card_1), run in zip(header, runs):
        high = np.int64(key) << 16
        if run:
            (nruns,) = struct.unpack_from("<H", buf, pos)
            pairs = np.frombuffer(buf, "<u2", 2 * nruns, pos + 2).reshape(nruns, 2).astype(np.int64)
            pos += 2 + 4 * nruns
            low = np.concatenate([np.arange(s, s + ln + 1) for s, ln in pairs]) if nruns else np.empty(0, np.int64)
        elif card_1 + 1 > 4096:
            words = np.frombuffer(buf, "<u8", 1024, pos)
            pos += 8192
            low = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
        else:
            low = np.frombuffer(buf, "<u2", card_1 + 1, pos).astype(np.int64)
            pos += 2 * (card_1 + 1)
        parts.append(high + low)
    return (np.concatenate(parts) if parts else np.empty(0, np.int64)), pos


def roaring_array(data: bytes) -> np.ndarray:
    """Delta's 64-bit RoaringBitmapArray (magic, bitmap count, then key + 32-bit bitmap each):
    the row indexes it holds, sorted."""
    buf = memoryview(data)
    magic, count = struct.unpack_from("<iq", buf, 0)
    if magic != _DV_MAGIC:
        raise ValueError(f"not a portable RoaringBitmapArray (magic {magic})")
    pos, parts = 12, []
    for _ in range(count):
        (high,) = struct.unpack_from("<I", buf, pos)
        values, pos = roaring32(buf, pos + 4)
        parts.append((np.int64(high) << 32) + values)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


@dataclass(frozen=True)
class _Version:
    """One commit of the range: its time, schema in force and actions."""
    version: int
    time: datetime
    schema: pa.Schema  # logical, with the column-mapping metadata on every field
    mode: Optional[str]  # None, "name" or "id"
    partitions: tuple[str, ...]
    actions: list[dict]


class ChangeFeed:
    """Reads versions ``start..end`` of the change feed of the Delta table at `uri` (see module)."""

    def __init__(self, uri: str, options: dict[str, str] | None = None):
        self.uri = uri.rstrip("/")
        self.options = options
        self.fs, self.root = objstore.filesystem(self.uri, options)

    def read(self, start: int, end: int) -> list[pa.Table]:
        """One table per version with changes: the logical columns of that version's schema, then
        ``_change_type``, ``_commit_version``, ``_commit_timestamp`` (as delta-rs' ``load_cdf``: UTC
        without a zone, whose rows convert to Python three times faster than zone-aware ones)."""
        out = []
        for v in self._versions(start, end):
            t = self._changes(v)
            if t.num_rows:
                out.append(t.append_column("_commit_version", pa.array([v.version] * t.num_rows, pa.int64()))
                           .append_column("_commit_timestamp", pa.array([v.time.replace(tzinfo=None)] * t.num_rows,
                                                                        pa.timestamp("us"))))
        return out

    # --- the log ------------------------------------------------------------------------------
    def _versions(self, start: int, end: int):
        from deltalake import DeltaTable, Schema

        # The metadata in force at `start` (its own commit's included, applied again below to the
        # same effect): loadable from a checkpoint at `start` when the commits before it are cleaned up.
        dt = DeltaTable(self.uri, version=start, storage_options=self.options)
        meta = dt.metadata()
        schema, conf, parts = pa.schema(dt.schema().to_arrow()), dict(meta.configuration), tuple(meta.partition_columns)
        for v in range(start, end + 1):
            actions = self._commit(v)
            for a in actions:
                if "metaData" in a:
                    m = a["metaData"]
                    schema = pa.schema(Schema.from_json(m["schemaString"]).to_arrow())
                    conf, parts = dict(m.get("configuration") or {}), tuple(m.get("partitionColumns") or ())
            if not storage.records_change_feed(conf):
                raise MalformedInputError(f"{self.uri} version {v}: the table did not record a change feed then "
                                          "(delta.enableChangeDataFeed was not true); ingest from a later version")
            yield _Version(v, self._time(v, actions), schema, storage.column_mapping_mode(conf), parts, actions)

    def commit_time(self, v: int) -> datetime:
        """When version `v` was committed (as its changes' ``_commit_timestamp``)."""
        return self._time(v, self._commit(v))

    def _time(self, v: int, actions: list[dict]) -> datetime:
        """The commit's in-commit timestamp, else its commitInfo's, else its file's modification time."""
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        ms = info.get("inCommitTimestamp", info.get("timestamp"))
        if ms is None:
            ms = self.fs.get_file_info(self._log_path(v)).mtime.timestamp() * 1000
        return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)

    def _log_path(self, v: int) -> str:
        return f"{self.root}/_delta_log/{v:020d}.json"

    def _commit(self, v: int) -> list[dict]:
        try:
            with self.fs.open_input_stream(self._log_path(v)) as f:
                text = f.read().decode()
        except FileNotFoundError as exc:
            raise MalformedInputError(f"{self.uri}: the commit of version {v} is gone from _delta_log (cleaned up "
                                      "after a checkpoint?); ingest from a later version") from exc
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise MalformedInputError(f"{self.uri}: the commit of version {v} is not JSON lines ({exc})") from exc

    # --- one version's changes -----------------------------------------------------------------
    def _changes(self, v: _Version) -> pa.Table:
        cdc = [a["cdc"] for a in v.actions if "cdc" in a]
        target = pa.schema([*v.schema, pa.field(CHANGE_TYPE, pa.string())])
        if cdc:
            return pa.concat_tables([self._file(v, a, with_change_type=True) for a in cdc]).select(target.names)
        added = {a["add"]["path"]: a["add"] for a in v.actions if "add" in a and a["add"].get("dataChange", True)}
        removed = {a["remove"]["path"]: a["remove"] for a in v.actions
                   if "remove" in a and a["remove"].get("dataChange", True)}
        tables = []
        for path in sorted(set(added) | set(removed)):
            new, old = added.get(path), removed.get(path)
            rows = self._file(v, new or old)
            n = rows.num_rows
            live_new = self._live(new, n) if new else np.zeros(n, bool)
            live_old = self._live(old, n) if old else np.zeros(n, bool)
            for mask, kind in ((live_old & ~live_new, "delete"), (live_new & ~live_old, "insert")):
                if mask.any():
                    picked = rows.filter(pa.array(mask))
                    tables.append(picked.append_column(CHANGE_TYPE, pa.array([kind] * picked.num_rows, pa.string())))
        return pa.concat_tables(tables).select(target.names) if tables else target.empty_table()

    def _file(self, v: _Version, action: dict, with_change_type: bool = False) -> pa.Table:
        """The file's rows under the version's logical schema (partition columns from the action)."""
        path = self._data_path(action["path"])
        try:
            t = pq.read_table(path, filesystem=self.fs)
        except FileNotFoundError as exc:
            raise MalformedInputError(f"{self.uri} version {v.version}: {action['path']} is gone (vacuumed?); "
                                      "ingest from a later version") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise MalformedInputError(f"{self.uri} version {v.version}: {action['path']} cannot be read ({exc})") from exc
        values = action.get("partitionValues") or {}
        cols, fields = [], []
        for f in v.schema:
            phys = _physical(f)
            if f.name in v.partitions:
                raw = values.get(phys, values.get(f.name))
                col = _partition_value(raw, f.type, t.num_rows, where=f"{self.uri} version {v.version}")
            else:
                idx = _find(t.schema, f, v.mode)
                col = _logical(t.column(idx), t.schema.field(idx), f, v.mode) if idx is not None else pa.nulls(t.num_rows, f.type)
            cols.append(col)
            fields.append(pa.field(f.name, f.type))
        if with_change_type:
            cols.append(t.column(CHANGE_TYPE))
            fields.append(pa.field(CHANGE_TYPE, pa.string()))
        return pa.Table.from_arrays(cols, schema=pa.schema(fields))

    def _data_path(self, rel: str) -> str:
        """A file of the log as a path in the table's file system: a URI-encoded path relative to the
        table, or an absolute URI (a shallow clone's files: ``file:/...``, ``s3://`` or Spark's
        ``s3a://``)."""
        scheme, sep, rest = rel.partition(":")
        scheme = scheme.lower()
        if sep and scheme in ("file", "s3", "s3a"):
            if (scheme == "file") == self.uri.startswith("s3://"):
                raise MalformedInputError(f"{self.uri}: the log names {rel}, a file on another store than the "
                                          "table's (a shallow clone across stores); ingest from the source table")
            if scheme == "file":
                return unquote(urlparse(rel).path)
            return objstore.filesystem("s3:" + unquote(rest), self.options)[1]
        return f"{self.root}/{unquote(rel)}"

    def _live(self, action: dict, n: int) -> np.ndarray:
        live = np.ones(n, bool)
        dv = action.get("deletionVector")
        if dv:
            gone = self._deletion_vector(dv)
            if len(gone) and int(gone[-1]) >= n:
                raise MalformedInputError(f"{self.uri}: a deletion vector of {action['path']} marks row {int(gone[-1])} "
                                          f"of a file of {n} rows")
            live[gone] = False
        return live

    def _deletion_vector(self, dv: dict) -> np.ndarray:
        kind, where = dv["storageType"], dv["pathOrInlineDv"]
        try:
            if kind == "i":
                return roaring_array(z85_decode(where))
            if kind == "u":
                prefix, code = where[:-20], where[-20:]
                name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(code))}.bin"
                path = f"{self.root}/{prefix}/{name}" if prefix else f"{self.root}/{name}"
            elif kind == "p":
                path = self._data_path(where)
            else:
                raise ValueError(f"unknown deletion-vector storage type {kind!r}")
            offset = int(dv.get("offset") or 0)
            with self.fs.open_input_file(path) as f:
                f.seek(offset)
                head = f.read(4)
                (size,) = struct.unpack(">i", head)
                data = f.read(size)
            if size != int(dv["sizeInBytes"]) or len(data) != size:
                raise ValueError(f"{size} bytes at offset {offset}, the log says {dv['sizeInBytes']}")
            values = roaring_array(data)
        except (ValueError, OSError, struct.error) as exc:
            raise MalformedInputError(f"{self.uri}: a deletion vector ({kind}:{where}) cannot be read ({exc})") from exc
        if len(values) != int(dv.get("cardinality", len(values))):
            raise MalformedInputError(f"{self.uri}: a deletion vector ({kind}:{where}) holds {len(values)} rows, "
                                      f"the log says {dv['cardinality']}")
        return values


def _physical(f: pa.Field) -> str:
    meta = f.metadata or {}
    return meta.get(_PHYSICAL, f.name.encode()).decode()


def _find(schema: pa.Schema | pa.StructType, f: pa.Field, mode: Optional[str]) -> Optional[int]:
    """Index in a file's schema (or struct) of the column of logical field `f`: by Parquet field id
    in mode ``id`` (where the file has ids), else by physical name."""
    fields = list(schema) if isinstance(schema, pa.Schema) else [schema.field(i) for i in range(schema.num_fields)]
    meta = f.metadata or {}
    if mode == "id" and _ID in meta:
        for i, g in enumerate(fields):
            if (g.metadata or {}).get(_PARQUET_ID) == meta[_ID]:
                return i
    phys = _physical(f)
    for i, g in enumerate(fields):
        if g.name == phys:
            return i
    return None


def _logical(col, file_field: pa.Field, f: pa.Field, mode: Optional[str]):
    """A file's column as logical field `f`: nested fields renamed from physical names, then cast."""
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([_logical(c, file_field, f, mode) for c in col.chunks], type=f.type)
    t, ft = f.type, file_field.type
    if pa.types.is_struct(t) and pa.types.is_struct(ft):
        children, names = [], []
        for i in range(t.num_fields):
            sub = t.field(i)
            j = _find(ft, sub, mode)
            children.append(_logical(col.field(j), ft.field(j), sub, mode) if j is not None
                            else pa.nulls(len(col), sub.type))
            names.append(sub.name)
        return pa.StructArray.from_arrays(children, fields=[pa.field(n, c.type) for n, c in zip(names, children)],
                                          mask=col.is_null()).cast(t)
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (pa.types.is_list(ft) or pa.types.is_large_list(ft)):
        values = _logical(col.values, ft.value_field, t.value_field, mode)
        return type(col).from_arrays(col.offsets, values, mask=col.is_null()).cast(t)
    if pa.types.is_map(t) and pa.types.is_map(ft):
        keys = _logical(col.keys, ft.key_field, t.key_field, mode)
        items = _logical(col.items, ft.item_field, t.item_field, mode)
        return pa.MapArray.from_arrays(col.offsets, keys, items, mask=col.is_null()).cast(t)
    return col.cast(t) if col.type != t else col


def _partition_value(raw: Optional[str], typ: pa.DataType, n: int, where: str) -> pa.Array:
    """A partition column's value (a string in the log; null when absent or null) for `n` rows."""
    if raw is None:
        return pa.nulls(n, typ)
    try:
        if pa.types.is_boolean(typ):
            value = pa.scalar(raw.lower() == "true")
        elif pa.types.is_binary(typ):
            value = pa.scalar(raw.encode())
        elif pa.types.is_timestamp(typ) and typ.tz is not None and not re.search(r"(Z|[+-]\d\d:?\d\d)$", raw):
            # The protocol's "yyyy-MM-dd HH:mm:ss[.SSSSSS]" is UTC for a timestamp with a time zone.
            value = pc.assume_timezone(pa.array([raw]).cast(pa.timestamp(typ.unit)), "UTC").cast(typ)[0]
        else:
            value = pa.array([raw]).cast(typ)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MalformedInputError(f"{where}: partition value {raw!r} is not a {typ} ({exc})") from exc
    return pa.repeat(value, n)
