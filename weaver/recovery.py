"""Recovery that prefers woven snapshots (DESIGN §4.3).

``recover(P, T)`` returns the state of partition P (a real partition or a woven child id
``"<P>~<weave_id[:8]>~L|R"``) at instant T. Two paths give the same rows:

* **woven** — the woven snapshot with ``confidence >= c`` whose range covers P and whose
  timepoint is the latest one ``<= T``; its rows (filtered to P's range) are read through
  delta-rs and only the tail of changes ``(as_of_seq, T]`` on P's key range is replayed;
* **standard** — the PITR framework's base snapshot + replay (``weaver.pitr.restore_partition``).

A woven snapshot of source partition S at timepoint tp is restore(S, tp) cut at the weave's
split key; the union of its L and R rows is S's whole range. Because restore is defined by key
range, it can serve any target whose range lies inside S's (S itself, either child, or a real
descendant of S after a real split). Snapshots below the confidence threshold are never read.

``mode="rollback"`` writes the recovered state as a *new* Delta table (default
``<lake>/recoveries/<recovery_id>``) and refuses any location inside a contract table, so the
source tables are never mutated.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from weaver import storage
from weaver.changelog import Lineage
from weaver.errors import (
    InvalidParameterError,
    InvalidTimepointError,
    UnknownWeaveError,
)
from weaver.replay import apply_changes, filter_range, last_per_key
from weaver.settings import Settings, check_confidence, parse_timepoint

MODES = ("point_in_time", "rollback")
PATHS = ("woven", "standard")
WOVEN_CHILD_RE = re.compile(r"^(?P<source>[A-Za-z0-9_.\-]{1,64})~(?P<wid>[0-9a-f]{8})~(?P<side>[LR])$")
# Weaves whose snapshots may have been vacuumed are not trusted as a recovery source.
UNUSABLE_STATUSES = frozenset({"expired"})
RECOVERIES_DIR = "recoveries"
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="weaver-recovery")


def woven_child_id(source_partition_id: str, weave_id: str, side: str) -> str:
    """The id of a woven child: ``f"{P}~{weave_id[:8]}~L"`` (keys < split_key) or ``~R``."""
    if side not in ("L", "R"):
        raise InvalidParameterError(f"side must be 'L' or 'R', not {side!r}")
    return f"{source_partition_id}~{weave_id[:8]}~{side}"


@dataclass(frozen=True)
class Target:
    """What a partition id names: a key range, the real partition containing it, its weave."""

    partition_id: str
    source_partition_id: str  # the real partition this id is (or is cut from)
    key_lo: str
    key_hi: str | None
    weave_id: str | None = None  # set for a woven child
    side: str | None = None
    split_key: str | None = None
    split_ts: datetime | None = None

    @property
    def is_woven_child(self) -> bool:
        return self.weave_id is not None


@dataclass(frozen=True)
class WovenSnapshot:
    """One woven snapshot chosen to serve a target: the rows of `children` at `timepoint`."""

    weave_id: str
    prediction_id: str
    source_partition_id: str
    split_key: str
    timepoint: datetime
    as_of_seq: int
    confidence: float
    status: str
    children: tuple[str, ...]  # woven_partition_ids whose rows cover the target
    key_lo: str  # the target's range, applied to the rows
    key_hi: str | None

    @property
    def source(self) -> str:
        return f"{self.weave_id}@{self.timepoint.isoformat()}"


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


# --- catalogs ------------------------------------------------------------------------------------
def load_catalog(settings: Settings) -> pa.Table:
    """The woven catalog (empty when nothing was woven yet)."""
    snap = delta_files(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)
    if snap is None:
        return storage.empty(storage.WOVEN_CATALOG)
    if "catalog" not in snap.memo:
        snap.memo["catalog"] = storage.conform(snap.read(None, None, None), storage.WOVEN_CATALOG,
                                               where=f" at {snap.uri}")
    return snap.memo["catalog"]


def load_lineage(settings: Settings) -> Lineage:
    """The partition lineage (cached per Delta version of `partitions`)."""
    snap = delta_files(storage.uri_for(settings, storage.PARTITIONS), storage.PARTITIONS)
    if "lineage" not in snap.memo:
        snap.memo["lineage"] = Lineage(storage.conform(snap.read(None, None, None), storage.PARTITIONS,
                                                       where=f" at {snap.uri}"))
    return snap.memo["lineage"]


def _catalog_rows(catalog: pa.Table) -> list[dict]:
    return catalog.select(["weave_id", "prediction_id", "source_partition_id", "split_key", "split_ts",
                           "confidence", "child_ids", "status"]).to_pylist()


def find_weave(catalog: pa.Table, weave_id: str) -> dict:
    """The catalog row of `weave_id` (full id or its 8-character prefix), else UnknownWeaveError."""
    if not isinstance(weave_id, str) or not re.fullmatch(r"[0-9a-f]{8,16}", weave_id or ""):
        raise UnknownWeaveError(f"{weave_id!r} is not a weave id (16 hex characters, or their first 8)")
    hits = [r for r in _catalog_rows(catalog) if r["weave_id"].startswith(weave_id)]
    if not hits:
        raise UnknownWeaveError(f"unknown weave {weave_id!r}; list weaves with GET /v1/partitions?kind=woven "
                                "or run `weaver weave` first")
    if len({r["weave_id"] for r in hits}) > 1:
        raise UnknownWeaveError(f"weave id prefix {weave_id!r} is ambiguous; give all 16 characters")
    return hits[0]


def resolve(settings: Settings, partition_id: str, *, lineage: Lineage | None = None,
            catalog: pa.Table | None = None) -> Target:
    """Map a partition id (real or woven child) to its key range, validated against the catalogs."""
    lineage = lineage if lineage is not None else load_lineage(settings)
    if isinstance(partition_id, str):
        m = WOVEN_CHILD_RE.match(partition_id)
    else:
        m = None
    if m is None:
        p = lineage.get(partition_id)  # UnknownPartitionError for anything else
        return Target(p.partition_id, p.partition_id, p.key_lo, p.key_hi)
    catalog = catalog if catalog is not None else load_catalog(settings)
    source = m.group("source")
    hits = [r for r in _catalog_rows(catalog)
            if r["source_partition_id"] == source and r["weave_id"].startswith(m.group("wid"))]
    if not hits:
        raise UnknownWeaveError(
            f"{partition_id!r} names weave {m.group('wid')!r} of {source!r}, which is not in woven_catalog; "
            "list woven children with GET /v1/partitions?kind=woven")
    row = hits[0]
    src = lineage.get(source)
    side = m.group("side")
    k = row["split_key"]
    if not (src.key_lo < k and (src.key_hi is None or k < src.key_hi)):
        raise UnknownWeaveError(f"weave {row['weave_id']} splits {source!r} at {k!r}, outside its range")
    lo, hi = (src.key_lo, k) if side == "L" else (k, src.key_hi)
    return Target(partition_id, source, lo, hi, row["weave_id"], side, k, row["split_ts"])


# --- woven lookup --------------------------------------------------------------------------------
def _covers(s_lo: str, s_hi: str | None, lo: str, hi: str | None) -> bool:
    return s_lo <= lo and (s_hi is None or (hi is not None and hi <= s_hi))


def find_woven_snapshot(settings: Settings, target: Target, at: datetime, confidence_threshold: float, *,
                        lineage: Lineage, catalog: pa.Table, weave_id: str | None = None,
                        woven: "WovenTable | None" = None) -> WovenSnapshot | None:
    """The woven snapshot with confidence >= threshold, covering `target`'s range, whose timepoint
    is the latest one <= `at` (ties: the target's own weave, then higher confidence); None if none.
    """
    candidates: dict[str, tuple[dict, tuple[str, ...]]] = {}
    for r in _catalog_rows(catalog):
        if weave_id is not None and r["weave_id"] != weave_id:
            continue
        if r["confidence"] < confidence_threshold or r["status"] in UNUSABLE_STATUSES:
            continue
        src = lineage.by_id.get(r["source_partition_id"])
        if src is None or not _covers(src.key_lo, src.key_hi, target.key_lo, target.key_hi):
            continue
        left, right = r["child_ids"][0], r["child_ids"][1]
        k = r["split_key"]
        need = []
        if target.key_lo < k:
            need.append(left)
        if target.key_hi is None or target.key_hi > k:
            need.append(right)
        candidates[r["weave_id"]] = (r, tuple(need))
    if not candidates:
        return None
    woven = woven if woven is not None else WovenTable.open(settings)
    if woven is None:
        return None
    # Any row of a (weave, timepoint) proves that timepoint was woven (both children in one commit),
    # so the child a target needs may be empty there. A timepoint whose whole source range is empty
    # leaves no row and is not seen: that costs only a longer tail, never wrong rows.
    meta = woven.timepoints(woven.files_for_lookup(set(candidates), at), at)
    meta = meta.filter(pc.is_in(meta.column("weave_id"), value_set=pa.array(sorted(candidates), pa.string())))
    if meta.num_rows == 0:
        return None
    tp_col = meta.column("timepoint")
    best_tp = pc.max(tp_col)
    at_best = meta.filter(pc.equal(tp_col, best_tp))
    weaves = [w for w in pc.unique(at_best.column("weave_id")).to_pylist()]

    def rank(w: str) -> tuple:
        r = candidates[w][0]
        return (w == target.weave_id, r["confidence"], w)

    wid = max(weaves, key=rank)
    seq = pc.max(at_best.filter(pc.equal(at_best.column("weave_id"), wid)).column("as_of_seq")).as_py()
    r, need = candidates[wid]
    return WovenSnapshot(r["weave_id"], r["prediction_id"], r["source_partition_id"], r["split_key"],
                         best_tp.as_py(), int(seq), float(r["confidence"]), r["status"], need, target.key_lo,
                         target.key_hi)


_MS = timedelta(milliseconds=1)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@dataclass
class _Handle:
    dt: Any
    stamp: tuple
    lock: Any
    snap: "DeltaFiles | None" = None


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


def delta_files(uri: str, name: str, *, missing_ok: bool = False) -> "DeltaFiles | None":
    """The current version of a table as a DeltaFiles snapshot (None if absent and `missing_ok`).

    Opening a Delta log costs milliseconds per commit file; a local table's handle is kept per
    process and brought up to date with ``update_incremental`` (about a millisecond), and what is
    derived from a version (file stats, lineage, catalogs) is computed once per version.
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
        self.version = dt.version()
        self.acts = pa.table(dt.get_add_actions(flatten=True))
        self.schema = pa.schema(dt.schema().to_arrow())
        self.partition_columns = list(dt.metadata().partition_columns)
        self.native = _is_local(uri) and dt.protocol().min_reader_version < 3
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
                ds = self.dt.to_pyarrow_dataset()
                if paths is not None:
                    want = set(paths)
                    frags = [fr for fr in ds.get_fragments() if fr.path in want]
                    if len(frags) == len(want):  # else a path spelled differently: read every file
                        ds = pds.FileSystemDataset(frags, ds.schema, ds.format, ds.filesystem)
            return ds.to_table(columns=columns, filter=expr, use_threads=use_threads)
        except (OSError, pa.ArrowInvalid) as exc:
            from weaver.errors import CorruptTableError

            raise CorruptTableError(f"Delta table {self.name} at {self.uri} cannot be read: {exc}") from exc

    def _native(self, paths: list[str] | None):
        import pyarrow.dataset as pds
        import pyarrow.fs as pafs

        fs = pafs.LocalFileSystem()
        fmt = pds.ParquetFileFormat()
        want = None if paths is None else set(paths)
        parts = {c: self.column("partition." + c) for c in self.partition_columns}
        frags = []
        for i, p in enumerate(self.column("path")):
            if want is not None and p not in want:
                continue
            expr = None
            for c, vals in parts.items():
                v = vals[i]
                e = pc.field(c).is_null() if v is None else pc.field(c) == pa.scalar(v).cast(self.schema.field(c).type)
                expr = e if expr is None else expr & e
            full = self.local_path(p)
            frags.append(fmt.make_fragment(full, filesystem=fs, partition_expression=expr)
                         if expr is not None else fmt.make_fragment(full, filesystem=fs))
        return pds.FileSystemDataset(frags, self.schema, fmt, fs)


@dataclass
class _File:
    path: str
    weave_id: str | None  # None: the file may hold several weaves
    tp_lo: datetime | None  # Delta stats: millisecond precision, so compared with a 1 ms slack
    tp_hi: datetime | None


class WovenTable:
    """`woven_snapshots` opened once, with per-file weave ids and timepoint bounds from the Delta log.

    Reads select files by those bounds before touching data, so a lookup reads the timepoint
    column of the few files that can hold the answer, and a row read reads the files of one
    (weave, timepoint) - the same Parquet bytes a raw read of that snapshot would.
    """

    def __init__(self, files: DeltaFiles):
        self.table = files
        part, wlo, whi = files.column("partition.weave_id"), files.column("min.weave_id"), files.column("max.weave_id")
        self.files = [_File(p, pw if pw is not None else (lo if lo is not None and lo == hi else None), tlo, thi)
                      for p, pw, lo, hi, tlo, thi in zip(files.column("path"), part, wlo, whi,
                                                         files.column("min.timepoint"), files.column("max.timepoint"))]
        self._by_path = {f.path: f for f in self.files}
        self._footers: dict[str, list[tuple] | None] = {}

    @classmethod
    def open(cls, settings: Settings) -> "WovenTable | None":
        uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
        snap = delta_files(uri, storage.WOVEN_SNAPSHOTS, missing_ok=True)
        if snap is None:
            return None
        if "woven" not in snap.memo:
            snap.memo["woven"] = cls(snap)
        return snap.memo["woven"]

    def files_for_lookup(self, weaves: set[str], at: datetime) -> list[str]:
        """Files that can hold the latest timepoint <= `at` of one of `weaves`.

        Delta keeps timestamp stats at millisecond precision (writers truncate or round), so every
        bound is widened by a millisecond: a file is never skipped for a rounding.
        """
        cand = [f for f in self.files if (f.weave_id is None or f.weave_id in weaves)
                and (f.tp_lo is None or f.tp_lo - _MS <= at)]
        # A file whose minimum is surely <= at holds a timepoint >= (its minimum - 1 ms); a file
        # whose maximum lies below that cannot hold the latest timepoint.
        sure = [f.tp_lo for f in cand if f.tp_lo is not None and f.tp_lo + _MS <= at]
        if sure:
            floor = max(sure) - _MS
            cand = [f for f in cand if f.tp_hi is None or f.tp_hi + _MS >= floor]
        return [f.path for f in cand]

    def files_for(self, weave_id: str, tp: datetime) -> list[str]:
        """Files that can hold rows of (`weave_id`, `tp`) (bounds widened by a millisecond)."""
        return [f.path for f in self.files if (f.weave_id is None or f.weave_id == weave_id)
                and (f.tp_lo is None or f.tp_lo - _MS <= tp) and (f.tp_hi is None or tp <= f.tp_hi + _MS)]

    def timepoints(self, paths: list[str], at: datetime) -> pa.Table:
        """(weave_id, timepoint, as_of_seq) rows with timepoint <= `at` present in `paths`.

        Parquet footers keep exact (microsecond) min/max per row group: a row group of one weave
        whose timepoint min == max is answered from its footer alone; only files with mixed row
        groups (or no usable stats) are scanned. Footers are read once per file (files never change).
        """
        rows: list[tuple] = []
        scan: list[str] = []
        for path in paths:
            groups = self._footer(path)
            if groups is None:
                scan.append(path)
                continue
            rows.extend(g for g in groups if g[1] <= at)
        cols = ["weave_id", "timepoint", "as_of_seq"]
        out = pa.table({"weave_id": pa.array([r[0] for r in rows], pa.string()),
                        "timepoint": pa.array([r[1] for r in rows], storage.TS),
                        "as_of_seq": pa.array([r[2] for r in rows], pa.int64())})
        if scan:
            more = self.scan(scan, cols, pc.field("timepoint") <= pa.scalar(at, storage.TS))
            out = pa.concat_tables([out, more.select(cols).cast(out.schema)])
        return out

    def _footer(self, path: str) -> list[tuple] | None:
        if path in self._footers:
            return self._footers[path]
        groups = None
        f = self._by_path.get(path)
        if f is not None and f.weave_id is not None and self.table.native:
            groups = _footer_groups(self.table.local_path(path), f.weave_id)
        self._footers[path] = groups
        return groups

    def only(self, paths: list[str], weave_id: str, tp: datetime) -> bool:
        """Whether the footers prove every row of `paths` belongs to (`weave_id`, `tp`)."""
        for path in paths:
            groups = self._footer(path)
            if groups is None or any(g[0] != weave_id or g[1] != tp for g in groups):
                return False
        return True

    def scan(self, paths: list[str], columns: list[str], expr: pc.Expression | None) -> pa.Table:
        """Projected read of `paths`; only non-string predicates are pushed down: files a delta-rs
        MERGE wrote hold string_view columns, and pyarrow cannot bind a string predicate against
        their stats (no string vs string_view kernel), so strings are filtered after the read."""
        if not paths:
            return pa.schema([self.table.schema.field(c) for c in columns]).empty_table()
        return self.table.read(paths, columns, expr)


def _footer_groups(path: str, weave_id: str) -> list[tuple] | None:
    """[(weave_id, timepoint, as_of_seq)] per row group from a Parquet footer, or None when any
    row group holds several timepoints or lacks exact stats (the caller then scans the file)."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        arrow = md.schema.to_arrow_schema()
        names = [md.schema.column(i).path for i in range(md.num_columns)]
        i_tp, i_seq = names.index("timepoint"), names.index("as_of_seq")
        tp_type = arrow.field("timepoint").type
    except (OSError, ValueError, KeyError, pa.ArrowInvalid):
        return None
    if not pa.types.is_timestamp(tp_type):
        return None
    out = []
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        st_tp, st_seq = rg.column(i_tp).statistics, rg.column(i_seq).statistics
        if rg.num_rows == 0:
            continue
        if (st_tp is None or st_seq is None or not st_tp.has_min_max or not st_seq.has_min_max
                or st_tp.physical_type != "INT64" or st_tp.min_raw != st_tp.max_raw):
            return None
        tp = pa.scalar(st_tp.min_raw, pa.int64()).cast(pa.timestamp(tp_type.unit, tz="UTC")).cast(storage.TS).as_py()
        out.append((weave_id, tp, int(st_seq.max_raw)))
    return out


def read_tail(settings: Settings, after_seq: int, at: datetime, key_lo: str | None, key_hi: str | None) -> pa.Table:
    """Changes with seq > `after_seq` and ts <= `at` on keys in [key_lo, key_hi), sorted by seq.

    Only files whose seq/ts stats overlap the tail are read. The whole tail (all keys) is checked
    to hold every seq once - on a hole the PITR check names the offending seq - and the key range
    is applied in memory: the tail is short by design.
    """
    log = delta_files(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG)
    hi_seq, lo_ts = log.column("max.seq"), log.column("min.ts")
    paths = [p for p, mx, t0 in zip(log.column("path"), hi_seq, lo_ts)
             if (mx is None or mx > after_seq) and (t0 is None or t0 - _MS <= at)]
    t = log.read(paths, ["seq", "ts", "key", "op", "value"],
                 (pc.field("seq") > after_seq) & (pc.field("ts") <= pa.scalar(at, storage.TS)),
                 use_threads=False) if paths else \
        storage.empty(storage.CHANGELOG).select(["seq", "ts", "key", "op", "value"])
    n = t.num_rows
    if n:
        seqs = t.column("seq")
        top = int(pc.max(seqs).as_py())
        if n != top - after_seq or pc.count_distinct(seqs).as_py() != n:
            from weaver import pitr

            pitr.check_contiguous(settings, after_seq, top)  # raises the named error
    t = filter_range(t, key_lo or None, key_hi)
    if t.num_rows > 1:
        t = t.take(pc.sort_indices(t, sort_keys=[("seq", "ascending")]))
    return t


class _SortedKeys:
    """Random access to the keys of a sorted (key, value) table as UTF-8 bytes, across chunks,
    without copying: Arrow compares strings bytewise, and so do Python bytes (UTF-8 order is
    code point order)."""

    def __init__(self, keys: pa.ChunkedArray):
        self._starts, self._offsets, self._data = [], [], []
        n = 0
        for chunk in keys.chunks:
            if len(chunk) == 0:
                continue
            if chunk.null_count or not pa.types.is_string(chunk.type):
                raise TypeError("keys must be non-null utf8")
            bufs = chunk.buffers()
            self._starts.append(n)
            # memoryview indexing yields Python ints/bytes without numpy's per-item overhead.
            self._offsets.append(memoryview(bufs[1]).cast("i")[chunk.offset:chunk.offset + len(chunk) + 1])
            self._data.append(memoryview(bufs[2]))
            n += len(chunk)
        self._n = n
        self._one = len(self._starts) == 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> bytes:
        if self._one:
            off, data = self._offsets[0], self._data[0]
            return bytes(data[off[i]:off[i + 1]])
        import bisect

        c = bisect.bisect_right(self._starts, i) - 1
        off = self._offsets[c]
        j = i - self._starts[c]
        return bytes(self._data[c][off[j]:off[j + 1]])


def apply_tail(rows: pa.Table, tail: pa.Table) -> pa.Table:
    """Fold a short `tail` onto `rows` (key, value sorted by key); the result stays sorted.

    Same semantics as replay.apply_changes (the last op per key wins), but instead of re-sorting
    every row it binary-searches the few touched keys and splices zero-copy slices: the cost
    grows with the tail, not with the partition. Long tails go through apply_changes.
    """
    import bisect

    if tail.num_rows == 0:
        return rows
    last = last_per_key(tail.select(["seq", "key", "op", "value"]))  # sorted by key
    if last.num_rows > 4096:
        return apply_changes(rows, tail)
    rows = rows.select(["key", "value"]).cast(storage.STATE_SCHEMA)
    view = _SortedKeys(rows.column("key"))
    n = len(view)
    puts = last.select(["key", "value"]).cast(storage.STATE_SCHEMA)
    ops = last.column("op").to_pylist()
    pieces, prev = [], 0
    for j, k in enumerate(last.column("key").to_pylist()):
        kb = k.encode()
        pos = bisect.bisect_left(view, kb, lo=prev)
        pieces.append(rows.slice(prev, pos - prev))
        if ops[j] == "PUT":
            pieces.append(puts.slice(j, 1))
        prev = pos + 1 if pos < n and view[pos] == kb else pos  # drop the old row of a touched key
    pieces.append(rows.slice(prev))
    return pa.concat_tables([p for p in pieces if p.num_rows] or [rows.slice(0, 0)])


def read_woven_rows(settings: Settings, snap: WovenSnapshot, woven: WovenTable | None = None) -> pa.Table:
    """The rows (key, value) of a woven snapshot restricted to the target's range, sorted by key."""
    woven = woven if woven is not None else WovenTable.open(settings)
    paths = woven.files_for(snap.weave_id, snap.timepoint)
    mixed = any(f.weave_id is None for f in woven.files if f.path in set(paths))
    both = len(snap.children) == 2
    cols = (["weave_id"] if mixed else []) + ([] if both else ["woven_partition_id"]) + ["key", "value"]
    # When the footers prove the files hold this (weave, timepoint) only, read them unfiltered:
    # the same work as a raw Parquet read of those files.
    exact = not mixed and woven.only(paths, snap.weave_id, snap.timepoint)
    t = woven.scan(paths, cols, None if exact else pc.field("timepoint") == pa.scalar(snap.timepoint, storage.TS))
    if mixed:
        t = t.filter(pc.equal(t.column("weave_id"), snap.weave_id))
    if not both:
        t = t.filter(pc.equal(t.column("woven_partition_id"), snap.children[0]))
    t = filter_range(t.select(["key", "value"]).cast(storage.STATE_SCHEMA), snap.key_lo or None, snap.key_hi)
    t = t.combine_chunks()
    if t.num_rows > 1:
        k = t.column("key")
        # Woven files are usually written in key order: check (cheap) before sorting (not cheap).
        if not pc.all(pc.less(k.slice(0, t.num_rows - 1), k.slice(1))).as_py():
            t = t.take(pc.sort_indices(t, sort_keys=[("key", "ascending")]))
    return t


# --- recovery ------------------------------------------------------------------------------------
def recovery_id_for(partition_id: str, at: datetime) -> str:
    """Deterministic id of a recovery: the same (partition, instant) gives the same rows and id."""
    return hashlib.sha1(f"{partition_id}|{at.isoformat()}".encode()).hexdigest()[:16]


def default_rollback_uri(settings: Settings, recovery_id: str) -> str:
    """Where a rollback lands unless told otherwise: ``<lake>/recoveries/<recovery_id>``."""
    return storage.table_uri(storage.table_uri(settings.lake, RECOVERIES_DIR), recovery_id)


def _check_rollback_target(settings: Settings, out: str) -> str:
    """Refuse a rollback location that is (or lies inside) a contract table or a lake root."""
    remote = "://" in out

    def norm(u: str) -> str:
        return u.rstrip("/") if "://" in u else str(Path(u).resolve())

    target = norm(out)
    protected = [norm(storage.uri_for(settings, name)) for name in storage.SCHEMAS]
    roots = {norm(settings.lake), norm(settings.woven)}
    for p in protected:
        if target == p or target.startswith(p + "/"):
            raise InvalidParameterError(f"rollback target {out!r} is inside the contract table {p!r}; "
                                        "a rollback writes a new table and never touches the source tables")
    if target in roots:
        raise InvalidParameterError(f"rollback target {out!r} is a lake root; choose a new folder")
    if not remote and Path(target).exists() and not storage.is_table(target) and any(Path(target).iterdir()):
        raise InvalidParameterError(f"rollback target {out!r} exists and is not a Delta table; choose a new folder")
    return out


def recover(settings: Settings, partition_id: str, at: datetime | str, *, confidence_threshold: float | None = None,
            mode: str = "point_in_time", out: str | None = None, lineage: Lineage | None = None,
            prefer: str = "woven") -> RecoveryResult:
    """Recover partition `partition_id` (real or woven child) at `at`, woven snapshot first.

    `prefer="standard"` skips the woven lookup (used to compare both paths). In point-in-time
    mode, `out` (optional) receives a Parquet file ``key, value``; in rollback mode the state is
    written as a new Delta table at `out` (default ``<lake>/recoveries/<recovery_id>``).
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    c = check_confidence(settings.confidence_threshold if confidence_threshold is None else confidence_threshold)
    if mode not in MODES:
        raise InvalidParameterError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if prefer not in PATHS:
        raise InvalidParameterError(f"prefer {prefer!r} is not one of {', '.join(PATHS)}")
    lineage = lineage if lineage is not None else load_lineage(settings)
    catalog = load_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    if target.is_woven_child and at < target.split_ts:
        raise InvalidTimepointError(
            f"woven child {partition_id!r} exists only from its split at {target.split_ts.isoformat()}; "
            f"recover it at or after that instant, or recover {target.source_partition_id!r}")
    rid = recovery_id_for(target.partition_id, at)
    if mode == "rollback":
        out = _check_rollback_target(settings, out or default_rollback_uri(settings, rid))

    snap = woven = None
    if prefer == "woven":
        woven = WovenTable.open(settings)
        snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog, woven=woven)
    if snap is not None:
        # The tail (change log) and the rows (woven tier) are independent reads: overlap them.
        pending = _POOL.submit(read_tail, settings, snap.as_of_seq, at, target.key_lo, target.key_hi)
        rows = read_woven_rows(settings, snap, woven)
        tail = pending.result()
        table = apply_tail(rows, tail)
        res = RecoveryResult(target.partition_id, at, "woven", snap.source, tail.num_rows, table.num_rows, 0.0,
                             table, snap.weave_id, snap.timepoint, mode, snap.confidence, rid)
    else:
        from weaver import pitr

        r = pitr.restore_partition(settings, target.source_partition_id, at, lineage=lineage)
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
        res.output = _write_parquet(out, res.table)
    return res


def _write_parquet(out: str, table: pa.Table) -> str:
    import pyarrow.parquet as pq

    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(p)  # a reader never sees a half-written file
    return str(p)


def _write_rollback(uri: str, res: RecoveryResult) -> str:
    from deltalake import CommitProperties, write_deltalake

    meta = {"weaver.recovery_id": res.recovery_id or "", "weaver.partition_id": res.partition_id,
            "weaver.at": res.at.isoformat(), "weaver.path": res.path, "weaver.source": res.source}
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    # Overwrite keyed on the deterministic recovery id: a rerun writes the same rows once.
    write_deltalake(uri, res.table, mode="overwrite", schema_mode="overwrite",
                    description=f"Temporal Weaver rollback of {res.partition_id} at {res.at.isoformat()}",
                    commit_properties=CommitProperties(custom_metadata=meta))
    return uri


def woven_snapshot(settings: Settings, partition_id: str, at: datetime | str, *,
                   confidence_threshold: float | None = None, weave_id: str | None = None
                   ) -> tuple[Target, WovenSnapshot, pa.Table]:
    """The rows of one woven snapshot (no tail replay) serving `partition_id` at `at`.

    Raises NoDataError when no woven snapshot with enough confidence covers it at or before `at`.
    """
    from weaver.errors import NoDataError

    at = parse_timepoint(at)
    c = check_confidence(settings.confidence_threshold if confidence_threshold is None else confidence_threshold)
    lineage = load_lineage(settings)
    catalog = load_catalog(settings)
    target = resolve(settings, partition_id, lineage=lineage, catalog=catalog)
    wid = None
    if weave_id is not None:
        wid = find_weave(catalog, weave_id)["weave_id"]
    woven = WovenTable.open(settings)
    snap = find_woven_snapshot(settings, target, at, c, lineage=lineage, catalog=catalog, weave_id=wid, woven=woven)
    if snap is None:
        raise NoDataError(
            f"no woven snapshot covers {partition_id!r} at or before {at.isoformat()} with confidence >= {c}; "
            "lower the confidence threshold, pick a later timepoint, or recover it (POST /v1/recoveries)")
    return target, snap, read_woven_rows(settings, snap, woven)


__all__ = ["MODES", "RecoveryResult", "Target", "WovenSnapshot", "WovenTable", "apply_tail", "delta_files", "find_weave",
           "find_woven_snapshot", "load_catalog", "load_lineage", "read_tail", "read_woven_rows", "recover", "resolve",
           "woven_child_id", "woven_snapshot"]
