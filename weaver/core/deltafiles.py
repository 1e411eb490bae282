"""Delta tables opened once per process and read file by file (the low-latency read path).

Opening a Delta log costs milliseconds per commit file, and delta-rs' ``to_pyarrow_dataset``
builds a statistics expression for every file in Python on each open. Recovery and the API read a
handful of files chosen by their statistics, so a local table's handle is kept per process and
brought up to date incrementally, and what is derived from one version (file stats, lineage,
catalogs) is computed once per version in :attr:`DeltaFiles.memo`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import CorruptTableError, InvalidParameterError, NoDataError
from weaver.core.time import from_us, to_us



def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@dataclass
class _Handle:
    dt: Any
    stamp: tuple
    lock: Any
    snap: "DeltaFiles | None" = None
    checkpoint: tuple | None = None  # `_last_checkpoint` as it stood before the last refresh


_HANDLES: dict[str, _Handle] = {}


_HANDLES_LOCK = threading.Lock()


def _stamp(root: Path) -> tuple | None:
    """Identity of a local table's log: a table deleted and recreated at the same path differs."""
    log = root / "_delta_log"
    try:
        st = log.stat()
    except OSError:
        return None
    try:
        first = (log / ("0" * 20 + ".json")).stat()
        return st.st_ino, first.st_ino, first.st_mtime_ns
    except OSError:
        return st.st_ino, None, None


def _checkpoint_stamp(log: Path) -> tuple | None:
    try:
        st = (log / "_last_checkpoint").stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _moved(root: Path, h: _Handle) -> bool:
    """Whether the local table under handle `h` may have a version after the one it holds: its
    next commit file exists, or `_last_checkpoint` changed since the handle's last refresh.

    Delta writes version v+1 as ``_delta_log/<v+1>.json`` (put-if-absent) before any reader can
    see it, so its absence means no later commit - unless log clean-up removed it, which Delta
    does only for versions before its latest checkpoint: a checkpoint after the handle's version
    rewrites `_last_checkpoint` (a checkpoint is written before the clean-up that relies on it).
    Two stats, where ``update_incremental`` lists the log folder (0.5-1 ms at a hundred commits)."""
    log = root / "_delta_log"
    if h.snap is None or (log / f"{h.snap.version + 1:020d}.json").exists():
        return True
    return _checkpoint_stamp(log) != h.checkpoint


def delta_files(uri: str, name: str, *, missing_ok: bool = False) -> "DeltaFiles | None":
    """The current version of a table as a DeltaFiles snapshot (None if absent and `missing_ok`).

    Opening a Delta log costs milliseconds per commit file; a local table's handle is kept per
    process and brought up to date with ``update_incremental`` when its log shows a later commit
    (:func:`_moved`: two stats), and what is derived from a version (file stats, lineage,
    catalogs) is computed once per version.
    """
    if not _is_local(uri):
        if missing_ok and not storage.is_table(uri):
            return None
        return DeltaFiles(uri, name, storage.open_table(uri, name))
    root = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    stamp = _stamp(root)
    if stamp is None:
        if missing_ok:
            return None
        storage.open_table(uri, name)  # raises TableNotFoundError with its message
    with _HANDLES_LOCK:
        h = _HANDLES.get(uri)
        if h is None or h.stamp != stamp:
            h = _HANDLES[uri] = _Handle(storage.open_table(uri, name), stamp, threading.Lock())
    with h.lock:
        if not _moved(root, h):
            return h.snap
        h.checkpoint = _checkpoint_stamp(root / "_delta_log")  # before: a later checkpoint shows next time
        try:
            h.dt.update_incremental()
        except Exception:  # noqa: BLE001 - a log rewritten under us: open it afresh
            h.dt = storage.open_table(uri, name)
            h.snap = None
        if h.snap is None or h.snap.version != h.dt.version():
            h.snap = DeltaFiles(uri, name, h.dt)
        return h.snap


class DeltaFiles:
    """A Delta table's live files with their stats, read with pyarrow directly.

    delta-rs' ``to_pyarrow_dataset`` builds a stats expression for every file in Python (a
    cost that grows with the number of files, paid on every open); a recovery needs a handful
    of files chosen by their stats, so it builds fragments for those only. Tables needing
    reader features (deletion vectors, column mapping) or on remote stores go through delta-rs.
    """

    def __init__(self, uri: str, name: str, dt):
        self.uri, self.name, self.dt = uri, name, dt
        storage.check_read_features(dt, name, uri)  # per version: a kept handle moves forward
        self.version = dt.version()
        self.acts = pa.table(dt.get_add_actions(flatten=True))
        self.schema = pa.schema(dt.schema().to_arrow())
        self.partition_columns = list(dt.metadata().partition_columns)
        # Reader version 2 is column mapping (Parquet columns under physical names), 3 table
        # features (deletion vectors): both are read through delta-rs, which resolves them.
        self.native = _is_local(uri) and dt.protocol().min_reader_version < 2
        self.memo: dict[str, Any] = {}  # objects derived from this version (lineage, catalog, ...)

    def local_path(self, path: str) -> str:
        """Filesystem path of a data file of a local table (add-action paths are URL-escaped)."""
        from urllib.parse import unquote

        root = self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri
        return path if path.startswith("/") else str(Path(root) / unquote(path))

    def column(self, name: str) -> list:
        """One add-action column as a list (None where absent); computed once per version."""
        key = "column:" + name
        if key not in self.memo:
            self.memo[key] = (self.acts.column(name).to_pylist() if name in self.acts.column_names
                              else [None] * self.acts.num_rows)
        return self.memo[key]

    def read(self, paths: list[str] | None, columns: list[str] | None, expr: pc.Expression | None, *,
             use_threads: bool = True) -> pa.Table:
        """Projected, filtered read of the files `paths` (None: every file); `use_threads=False`
        suits small reads (a thread pool costs more than it saves on a busy machine)."""
        import pyarrow.dataset as pds

        try:
            if self.native:
                ds = self._native(paths)
            else:
                ds = self._dataset()
                if paths is not None:
                    want = set(paths)
                    frags = [fr for fr in ds.get_fragments() if fr.path in want]
                    if len(frags) == len(want):  # else a path spelled differently: read every file
                        ds = pds.FileSystemDataset(frags, ds.schema, ds.format, ds.filesystem)
            return ds.to_table(columns=columns, filter=expr, use_threads=use_threads)
        except (OSError, pa.ArrowInvalid) as exc:
            raise CorruptTableError(f"Delta table {self.name} at {self.uri} cannot be read: {exc}") from exc

    def _dataset(self):
        """delta-rs' dataset of this version (its fragments of files with unstated bounds remade,
        :func:`weaver.core.storage.dataset`), built once: building it makes a statistics
        expression per file in Python (0.44 s at the scale lake's woven tier), and the woven check
        or an Arrow weave reads a remote tier once per weave or sequence. Built whole, then
        published: threads sharing this version see none or all of it."""
        ds = self.memo.get("dataset")
        if ds is None:
            ds = storage.dataset(self.dt)
            self.memo["dataset"] = ds
        return ds

    def _native(self, paths: list[str] | None):
        """The files `paths` (None: every file) as fragments whose only guarantee is their
        partition values: the statistics are applied by the callers, where they are trusted."""
        import pyarrow.dataset as pds
        import pyarrow.fs as pafs

        fs = pafs.LocalFileSystem()
        fmt = pds.ParquetFileFormat()
        every = self.column("path")
        if paths is None:
            rows = range(len(every))
        else:
            # Positions from an index made once per version: a test of every file per read made
            # many small reads (a run's base snapshots) quadratic in the table's files.
            if "path_index" not in self.memo:
                self.memo["path_index"] = {p: i for i, p in enumerate(every)}
            index = self.memo["path_index"]
            rows = sorted({index[p] for p in paths if p in index})
        parts = {c: self.column("partition." + c) for c in self.partition_columns}
        frags = [fmt.make_fragment(self.local_path(every[i]), filesystem=fs, partition_expression=storage.partition_guarantee(
                     self.schema, {c: vals[i] for c, vals in parts.items()}))
                 for i in rows]
        return pds.FileSystemDataset(frags, self.schema, fmt, fs)


def load_as_of(dt, name: str, timestamp: datetime) -> int:
    """Load the delta-rs table `dt` as it stood at transaction time `timestamp` (the latest version
    committed at or before it) and return that version; NoDataError when no commit still in the
    log had been written by then.

    delta-rs' own time travel by datetime picks the version: Delta dates a commit by its commit
    file's modification time (no in-commit timestamps at protocol (1, 2)), and delta-rs takes the
    latest version whose file was written at or before `timestamp` (compared in milliseconds) -
    or, when none was, silently the earliest version still in the log. So the one check needed is
    on the version it picked: its file written after `timestamp` means nothing was committed by
    then. That is one file stat, where reading the commit history (``DeltaTable.history()``) is
    one read per commit still in the log; and it stays right past checkpoints and after log
    cleanup, since delta-rs resolves against the log as it is. Only when the log is not as Delta
    leaves it (the commit file of a checkpointed version deleted by hand: delta-rs then fails,
    or loads a version whose file is gone) does it read ``history()`` for the earliest commit.
    """
    from deltalake.fs import DeltaStorageHandler

    uri = dt.table_uri
    ms = to_us(timestamp) // 1000
    try:
        dt.load_as_version(timestamp)
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for a log it cannot travel
        first = _earliest_commit(uri, name)
        if first is not None and ms < first[1]:
            raise _not_yet(name, timestamp, *first) from exc
        raise InvalidParameterError(f"{name} has no version at {timestamp.isoformat()}: {exc}") from exc
    version = dt.version()
    info = DeltaStorageHandler(uri, storage.options(uri)).get_file_info([f"_delta_log/{version:020d}.json"])[0]
    first = (version, info.mtime_ns // 1_000_000) if info.mtime_ns is not None else _earliest_commit(uri, name)
    if first is not None and ms < first[1]:
        raise _not_yet(name, timestamp, *first)
    return version


def _earliest_commit(uri: str, name: str) -> tuple[int, int] | None:
    """(version, commit timestamp in ms) of the earliest commit in the log's history, None if none."""
    h = min(storage.open_table(uri, name).history(), key=lambda h: h["version"], default=None)
    return None if h is None else (int(h["version"]), int(h["timestamp"]))


def _not_yet(name: str, timestamp: datetime, version: int, written_ms: int) -> NoDataError:
    return NoDataError(
        f"{name} did not exist yet at {timestamp.isoformat()}: the earliest commit still in its log "
        f"(version {version}) was written at {from_us(written_ms * 1000).isoformat()}; pick a later as_of")
