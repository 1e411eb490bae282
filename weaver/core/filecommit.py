"""Replace one instant's rows of a Delta table with Parquet files that Arrow writes.

delta-rs' ``write_deltalake`` keeps growing its resident memory with the rows it writes, even
fed a stream of small batches (hand check at deltalake 1.6.6: +130/+320/+620 MB for 2/7/14
batches of 0.95 M keys, append or replaceWhere alike; Arrow's ``ParquetWriter`` on the same
stream stays flat). A metrics checkpoint carries every live key of the table, so its write would
grow with the table. Here the rows go through Arrow's writer, a file at a time, and the files
are committed with delta-rs' ``create_write_transaction``: add actions with the statistics a
Delta reader skips files by, and remove actions for the files the instant's old rows were in.

The commit is planned on one table version and allowed to land only as the next one
(``max_commit_retries=0``): when another writer committed first, the plan is made again on the
new version (``retry_commit``), so two writers of one instant never leave its rows twice - what
delta-rs' replaceWhere guarantees by checking its predicate against concurrent adds.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from weaver.core import faults, objstore, storage
from weaver.core.errors import InvalidParameterError

_MS = timedelta(milliseconds=1)
# Column types whose minimum and maximum a Delta reader uses to skip files.
_STAT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
               pa.types.is_timestamp, pa.types.is_date)


def _json_value(v: Any, *, up: bool = False) -> Any:
    """A statistic as Delta's JSON stats write it (timestamps to the millisecond, the maximum
    rounded up so that it still bounds the column)."""
    if isinstance(v, datetime):
        v = v.astimezone(timezone.utc)
        if up and v.microsecond % 1000:
            v = v.replace(microsecond=v.microsecond - v.microsecond % 1000) + _MS
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


class _Stats:
    """Running numRecords / minValues / maxValues / nullCount of one file."""

    def __init__(self, schema: pa.Schema):
        self.cols = [f.name for f in schema if any(t(f.type) for t in _STAT_TYPES)]
        self.rows = 0
        self.lo: dict[str, Any] = {}
        self.hi: dict[str, Any] = {}
        self.nulls = dict.fromkeys(self.cols, 0)

    def add(self, t: pa.Table) -> None:
        self.rows += t.num_rows
        for c in self.cols:
            col = t.column(c)
            self.nulls[c] += col.null_count
            mm = pc.min_max(col)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            if lo is None:
                continue
            self.lo[c] = lo if c not in self.lo else min(self.lo[c], lo)
            self.hi[c] = hi if c not in self.hi else max(self.hi[c], hi)

    def json(self) -> str:
        return json.dumps({"numRecords": self.rows,
                           "minValues": {c: _json_value(v) for c, v in self.lo.items()},
                           "maxValues": {c: _json_value(v, up=True) for c, v in self.hi.items()},
                           "nullCount": self.nulls}, separators=(",", ":"))


class _Files:
    """Parquet files written under a table's root by Arrow, rolled over at `file_bytes`; what is
    written is remembered so a failed write can delete it."""

    def __init__(self, fs, root: str, schema: pa.Schema, *, compression: str, row_group_rows: int | None,
                 file_bytes: int | None):
        self.fs, self.root, self.schema = fs, root, schema
        self.compression, self.row_group_rows, self.file_bytes = compression.lower(), row_group_rows, file_bytes
        self.written: list[str] = []
        self.adds: list = []
        self._run = uuid.uuid4()
        self._cur: tuple | None = None  # (relative path, stream, writer, stats)

    def write(self, t: pa.Table) -> None:
        if not t.num_rows:
            return
        if self._cur is None:
            rel = f"part-{len(self.adds):05d}-{self._run}-c000.{self.compression}.parquet"
            stream = self.fs.open_output_stream(f"{self.root}/{rel}")
            self.written.append(rel)
            self._cur = (rel, stream, pq.ParquetWriter(stream, self.schema, compression=self.compression),
                         _Stats(self.schema))
            self.adds.append(None)  # placeholder: the action is made when the file is closed
        _, stream, writer, stats = self._cur
        writer.write_table(t, row_group_size=self.row_group_rows or t.num_rows)
        stats.add(t)
        if self.file_bytes and stream.tell() >= self.file_bytes:
            self.close()

    def close(self) -> None:
        from deltalake.transaction import AddAction

        if self._cur is None:
            return
        rel, stream, writer, stats = self._cur
        self._cur = None
        writer.close()
        stream.close()
        size = self.fs.get_file_info(f"{self.root}/{rel}").size
        self.adds[-1] = AddAction(rel, size, {}, int(time.time() * 1000), True, stats.json())

    def delete(self) -> None:
        if self._cur is not None:
            try:
                self._cur[2].close()
                self._cur[1].close()
            except Exception:  # noqa: BLE001 - the file is deleted next either way
                pass
            self._cur = None
        for rel in self.written:
            try:
                self.fs.delete_file(f"{self.root}/{rel}")
            except OSError:
                pass


def _matches(t: pa.Table, match: Mapping[str, pa.Scalar]) -> pa.ChunkedArray | pa.Array:
    mask = None
    for c, v in match.items():
        m = pc.fill_null(pc.equal(t.column(c), v), False)
        mask = m if mask is None else pc.and_(mask, m)
    return mask


def _matches_any(t: pa.Table, wants: list[dict[str, pa.Scalar]]) -> pa.ChunkedArray | pa.Array:
    mask = _matches(t, wants[0])
    for w in wants[1:]:
        mask = pc.or_(mask, _matches(t, w))
    return mask


def _classify(acts: pa.Table, i: int, match: Mapping[str, pa.Scalar]) -> str:
    """'none', 'all' or 'some' of file `i`'s rows can equal `match`, by its statistics."""
    every = True
    for c, v in match.items():
        if f"min.{c}" not in acts.column_names or f"max.{c}" not in acts.column_names:
            return "some"
        lo, hi = acts.column(f"min.{c}")[i].as_py(), acts.column(f"max.{c}")[i].as_py()
        if lo is None or hi is None:
            return "some"
        x = v.as_py()
        if isinstance(x, datetime) and (x < lo - _MS or x > hi + _MS):  # statistics may be milliseconds
            return "none"
        if not isinstance(x, datetime) and (x < lo or x > hi):
            return "none"
        every = every and lo == hi == x
    return "all" if every else "some"


def replace_rows(uri: str, name: str, batches: Callable[[], Iterable[pa.Table]], *, match: Mapping[str, Any],
                 compression: str = "SNAPPY", row_group_rows: int | None = None,
                 file_bytes: int | None = None) -> None:
    """Replace the rows of table `name` at `uri` whose columns equal `match` with the tables
    `batches()` yields, in one commit, streamed: Arrow writes them to Parquet files of up to
    `file_bytes` (row groups of `row_group_rows`) as they come, so the caller's tables need not be
    in memory together and the memory does not grow with the rows written.

    Files whose statistics say they hold only `match` rows are removed; a file that may hold some
    (no statistics, or an optimized file of several instants) is rewritten without them. A row
    that does not equal `match` raises InvalidParameterError, and a write that fails deletes its
    files: nothing is committed either way. `batches` is called once."""
    schema = storage.SCHEMAS[name]
    want = {c: pa.scalar(v, schema.field(c).type) for c, v in match.items()}
    if not storage.is_table(uri):
        from deltalake.exceptions import CommitFailedError

        try:
            storage.create_table(uri, schema.empty_table())
        except CommitFailedError:
            pass  # another writer created it first: the commit below plans on its version
    fs, root = objstore.filesystem(uri, storage.options(uri))
    new = _Files(fs, root, schema, compression=compression, row_group_rows=row_group_rows, file_bytes=file_bytes)
    try:
        for t in batches():
            t = storage.conform(t, name)
            if t.num_rows and not pc.all(_matches(t, want)).as_py():
                raise InvalidParameterError(f"rows written to replace {name}'s {dict(match)} rows must all "
                                            f"equal them; a batch of {t.num_rows} rows does not")
            new.write(t)
        new.close()
        _commit(uri, name, new, [want], what=f"replace of {name}'s {dict(match)} rows")
    except BaseException:
        new.delete()
        raise


def delete_rows(uri: str, name: str, matches: list[Mapping[str, Any]], *, compression: str = "SNAPPY",
                row_group_rows: int | None = None) -> None:
    """Delete, in one commit, the rows of table `name` whose columns equal any of `matches`: the
    files holding only such rows are removed unread, the others rewritten by Arrow without them."""
    if not matches or not storage.is_table(uri):
        return
    schema = storage.SCHEMAS[name]
    wants = [{c: pa.scalar(v, schema.field(c).type) for c, v in m.items()} for m in matches]
    fs, root = objstore.filesystem(uri, storage.options(uri))
    none = _Files(fs, root, schema, compression=compression, row_group_rows=row_group_rows, file_bytes=None)
    _commit(uri, name, none, wants, what=f"delete of {len(matches)} instants of {name}")


def _commit(uri: str, name: str, new: _Files, wants: list[dict[str, pa.Scalar]], *, what: str) -> None:
    """Commit `new`'s files and the removal of every row equal to one of `wants`, planned on the
    table's latest version and landing as the next one (a conflict plans again)."""
    from deltalake import CommitProperties, DeltaTable
    from deltalake.transaction import RemoveAction

    from weaver.core.retry import retry_commit

    opts = storage.options(uri)

    def attempt() -> None:
        dt = DeltaTable(uri, storage_options=opts)
        if dt.metadata().partition_columns:
            raise InvalidParameterError(f"{name} is partitioned; filecommit writes unpartitioned tables")
        acts = pa.table(dt.get_add_actions(flatten=True))
        kept = _Files(new.fs, new.root, new.schema, compression=new.compression,
                      row_group_rows=new.row_group_rows, file_bytes=new.file_bytes)
        removes = []
        now = int(time.time() * 1000)
        try:
            for i in range(acts.num_rows):
                kinds = {_classify(acts, i, w) for w in wants}
                if kinds == {"none"}:
                    continue
                path = acts.column("path")[i].as_py()
                size = acts.column("size_bytes")[i].as_py()
                if "all" not in kinds and not _rewrite(kept, f"{new.root}/{unquote(path)}", name, wants):
                    continue  # statistics could not rule it out; its rows say none match
                removes.append(RemoveAction(path, True, now, size))
            adds = [a for a in new.adds + kept.adds if a is not None]
            if not adds and not removes:
                return
            faults.point("filecommit.before_commit")
            dt.create_write_transaction(adds + removes, mode="append", schema=dt.schema(),
                                        commit_properties=CommitProperties(max_commit_retries=0))
        except BaseException:
            kept.delete()
            raise

    retry_commit(attempt, what=what)


def _rewrite(out: _Files, path: str, name: str, wants: list[dict[str, pa.Scalar]]) -> bool:
    """Write the rows of the file at `path` that equal none of `wants` to `out`; False (nothing
    written) when no row equals one."""
    with out.fs.open_input_file(path) as f:
        src = pq.ParquetFile(f)
        cols = sorted({c for w in wants for c in w})
        if not any(pc.any(_matches_any(pa.Table.from_batches([rb]), wants)).as_py()
                   for rb in src.iter_batches(batch_size=65536, columns=cols)):
            return False
        for rb in src.iter_batches(batch_size=out.row_group_rows or 65536):
            t = storage.conform(pa.Table.from_batches([rb]), name)
            out.write(t.filter(pc.invert(_matches_any(t, wants))))
    out.close()
    return True
