"""The woven file index: `woven_snapshots` files with their weave ids and timepoint bounds.

Recovery and the API choose files by these bounds (Delta statistics, then exact Parquet footers)
before touching data, so a lookup reads the few files that can hold the answer.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.deltafiles import DeltaFiles, delta_files
from weaver.core.settings import Settings
from weaver.weave.catalog import open_woven_as_of

_MS = timedelta(milliseconds=1)
#: Files per read when :meth:`WovenTable.timepoints_held` scans: the rows of two columns of that many files at once.
_HELD_FILES_PER_READ = 256



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
        self._weaves: dict[str, list[int]] | None = None  # weave id -> its files' positions in self.files
        self._loose: list[int] = []  # files that may hold several weaves

    @classmethod
    def open(cls, settings: Settings) -> "WovenTable | None":
        uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
        snap = delta_files(uri, storage.WOVEN_SNAPSHOTS, missing_ok=True)
        if snap is None:
            return None
        if "woven" not in snap.memo:
            snap.memo["woven"] = cls(snap)
        return snap.memo["woven"]

    @classmethod
    def as_of(cls, settings: Settings, *, version: int | None = None,
              timestamp: datetime | None = None) -> "WovenTable":
        """`woven_snapshots` as it stood at Delta `version` or at transaction time `timestamp`
        (exactly one; errors as :func:`weaver.weave.catalog.open_woven_as_of`), with the same
        file index as the current version: a look-up back in time reads the files of the
        snapshot it serves, not the tier as it stood. Not kept per process (a version is read
        once per request; a table recreated at the same URI has other files under the same
        version number)."""
        dt = open_woven_as_of(settings, version=version, timestamp=timestamp)
        return cls(DeltaFiles(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS, dt))

    def files_for_lookup(self, weaves: set[str], at: datetime) -> list[str]:
        """Files that can hold the latest timepoint <= `at` of one of `weaves`, from the per-weave
        index (:meth:`_files_of`), not a test of every file of the tier.

        Delta keeps timestamp stats at millisecond precision (writers truncate or round), so every
        bound is widened by a millisecond: a file is never skipped for a rounding.
        """
        cand = [f for f in self._files_of(weaves) if f.tp_lo is None or f.tp_lo - _MS <= at]
        # A file whose minimum is surely <= at holds a timepoint >= (its minimum - 1 ms); a file
        # whose maximum lies below that cannot hold the latest timepoint.
        sure = [f.tp_lo for f in cand if f.tp_lo is not None and f.tp_lo + _MS <= at]
        if sure:
            floor = max(sure) - _MS
            cand = [f for f in cand if f.tp_hi is None or f.tp_hi + _MS >= floor]
        return [f.path for f in cand]

    def _holding(self, weave_id: str, tps: list[datetime]) -> list[_File]:
        """The files of `weave_id` whose timepoint bounds hold one of the sorted `tps`, in the
        table's file order."""
        return [f for f in self._files_of((weave_id,)) if _holds_one(f, tps)]

    def _files_of(self, weave_ids) -> list[_File]:
        """The files that can hold rows of one of `weave_ids` (their own and those that may hold
        several weaves), in the table's file order, from a per-weave index made once (a test of
        every file per look-up made a run's look-ups quadratic in the tier's files)."""
        if self._weaves is None:
            # Built whole, then published: the API's threads share one WovenTable per version, and
            # a thread must never see half an index (it would miss files, hence rows).
            weaves: dict[str, list[int]] = {}
            loose: list[int] = []
            for i, f in enumerate(self.files):
                if f.weave_id is None:
                    loose.append(i)
                else:
                    weaves.setdefault(f.weave_id, []).append(i)
            self._loose = loose
            self._weaves = weaves
        pos = [i for w in weave_ids for i in self._weaves.get(w, ())]
        if self._loose or len(weave_ids) > 1:
            pos = sorted(set(pos).union(self._loose))
        return [self.files[i] for i in pos]

    def rows_at(self, weave_id: str, tp: datetime, columns: list[str]) -> pa.Table:
        """`columns` of every row of (`weave_id`, `tp`), both children, read from the files whose
        timepoint bounds (widened by a millisecond) hold `tp`; unfiltered when their footers prove
        they hold nothing else (:meth:`only`), the same work as a raw Parquet read of those files."""
        return self._rows(weave_id, [tp], columns)

    def rows_of(self, weave_id: str, tps: list[datetime], columns: list[str]) -> pa.Table:
        """`columns` of every row of `weave_id` at any of the timepoints `tps`, both children, in
        one read of the files that can hold them: those whose timepoint bounds hold one of `tps`
        (a weave extended hourly has a file per run, and a sample of its first, middle and last
        timepoints needs three of them, not every file between)."""
        return self._rows(weave_id, tps, columns)

    def _rows(self, weave_id: str, tps: list[datetime], columns: list[str]) -> pa.Table:
        """The one reader of :meth:`rows_at` and :meth:`rows_of`: the files holding one of `tps`,
        read unfiltered when their footers prove every row is of `weave_id` at one of `tps`, else
        filtered on the timepoint (pushed down) and, for files that may hold several weaves, on
        the weave id after the read (:meth:`scan`)."""
        want = sorted(set(tps))
        if not want:
            return self.scan([], list(columns), None)
        cand = self._holding(weave_id, want)
        paths = [f.path for f in cand]
        mixed = any(f.weave_id is None for f in cand)
        cols = (["weave_id"] if mixed and "weave_id" not in columns else []) + list(columns)
        if not mixed and self.only(paths, weave_id, want):
            expr = None
        elif len(want) == 1:
            expr = pc.field("timepoint") == pa.scalar(want[0], storage.TS)
        else:
            expr = pc.field("timepoint").isin(pa.array(want, storage.TS))
        t = self.scan(paths, cols, expr)
        if mixed:
            t = t.filter(pc.equal(t.column("weave_id"), weave_id))
        return t.select(list(columns))

    def timepoints_held(self, weave_ids: list[str]) -> dict[str, set[datetime]]:
        """{weave id: the distinct timepoints its rows hold} for `weave_ids`: from the Parquet
        footers of a weave's files where every row group holds one timepoint, else from reads of
        the (weave_id, timepoint) columns of the other files (files that may hold several weaves
        included), a bounded number of files per read."""
        out: dict[str, set[datetime]] = {w: set() for w in weave_ids}
        groups, scan = self._footers_or_scan([f.path for f in self._files_of(out)])
        for g in groups:
            out[g[0]].add(g[1])
        want = pa.array(sorted(out), pa.string())
        for n in range(0, len(scan), _HELD_FILES_PER_READ):
            t = self.scan(scan[n:n + _HELD_FILES_PER_READ], ["weave_id", "timepoint"], None)
            t = t.set_column(0, "weave_id", t.column("weave_id").cast(pa.string()))
            pairs = t.filter(pc.is_in(t.column("weave_id"), value_set=want))
            pairs = pairs.group_by(["weave_id", "timepoint"]).aggregate([])
            for w, tp in zip(pairs.column("weave_id").to_pylist(), pairs.column("timepoint").to_pylist()):
                out[w].add(tp)
        return out

    def timepoints(self, paths: list[str], at: datetime) -> pa.Table:
        """(weave_id, timepoint, as_of_seq) rows with timepoint <= `at` present in `paths`.

        Parquet footers keep exact (microsecond) min/max per row group: a row group of one weave
        whose timepoint min == max is answered from its footer alone; only files with mixed row
        groups (or no usable stats) are scanned. Footers are read once per file (files never change).
        """
        groups, scan = self._footers_or_scan(paths)
        rows = [g for g in groups if g[1] <= at]
        cols = ["weave_id", "timepoint", "as_of_seq"]
        out = pa.table({"weave_id": pa.array([r[0] for r in rows], pa.string()),
                        "timepoint": pa.array([r[1] for r in rows], storage.TS),
                        "as_of_seq": pa.array([r[2] for r in rows], pa.int64())})
        if scan:
            more = self.scan(scan, cols, pc.field("timepoint") <= pa.scalar(at, storage.TS))
            out = pa.concat_tables([out, more.select(cols).cast(out.schema)])
        return out

    def _footers_or_scan(self, paths: list[str]) -> tuple[list[tuple], list[str]]:
        """([(weave_id, timepoint, as_of_seq)] of the row groups of `paths` whose footers answer
        exactly (:meth:`_footer`), [the other paths, to be read])."""
        groups: list[tuple] = []
        scan: list[str] = []
        for path in paths:
            g = self._footer(path)
            if g is None:
                scan.append(path)
            else:
                groups.extend(g)
        return groups, scan

    def _footer(self, path: str) -> list[tuple] | None:
        if path in self._footers:
            return self._footers[path]
        groups = None
        f = self._by_path.get(path)
        if f is not None and f.weave_id is not None and self.table.native:
            groups = _footer_groups(self.table.local_path(path), f.weave_id)
        self._footers[path] = groups
        return groups

    def only(self, paths: list[str], weave_id: str, tps: list[datetime]) -> bool:
        """Whether the footers prove every row of `paths` belongs to `weave_id` at one of `tps`."""
        want = set(tps)
        for path in paths:
            groups = self._footer(path)
            if groups is None or any(g[0] != weave_id or g[1] not in want for g in groups):
                return False
        return True

    def scan(self, paths: list[str], columns: list[str], expr: pc.Expression | None) -> pa.Table:
        """Projected read of `paths`; only non-string predicates are pushed down: files a delta-rs
        MERGE wrote hold string_view columns, and pyarrow cannot bind a string predicate against
        their stats (no string vs string_view kernel), so strings are filtered after the read."""
        if not paths:
            return pa.schema([self.table.schema.field(c) for c in columns]).empty_table()
        return self.table.read(paths, columns, expr)


def _holds_one(f: _File, tps: list[datetime]) -> bool:
    """Whether the bounds of `f` (widened by a millisecond; None: unbounded) hold one of the sorted `tps`."""
    i = 0 if f.tp_lo is None else bisect.bisect_left(tps, f.tp_lo - _MS)
    return i < len(tps) and (f.tp_hi is None or tps[i] <= f.tp_hi + _MS)


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
