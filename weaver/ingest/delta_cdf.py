"""Delta Change Data Feed, read through delta-rs (``DeltaTable.load_cdf``), no JVM; a table with column
mapping (whose feed ``load_cdf`` refuses) or deletion vectors (whose feed it gets wrong where a removed
file carries one), and any table whose feed ``load_cdf`` fails on (a Spark shallow clone's log), is
read from its log and files by :mod:`weaver.ingest.delta_log`.

Rows carry ``_change_type`` (insert, update_preimage, update_postimage, delete),
``_commit_version`` and ``_commit_timestamp``. insert / update_postimage -> PUT of the row image,
delete -> DELETE, update_preimage -> DELETE of its key when the commit has no row image of that
key (an update that changed the key: the old key is gone), else dropped (the postimage carries
the new state). Source order = (commit version, deletes before puts, key); position = commit
version; the watermark is the last version read, and ``complete_to`` is the time taken just
before the table's latest version was read (when read up to it), so any later commit is later. The table must have ``delta.enableChangeDataFeed = true``
from the first version read on (CDF is not recorded for versions before it was enabled).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import unquote

import pyarrow as pa

from weaver.core import storage
from weaver.core.errors import CorruptTableError, InvalidParameterError, WeaverError
from weaver.ingest.base import Batch, Change, Position, Watermark, key_attrs
from weaver.ingest.errors import MalformedInputError, MissingKeyAttributeError, UnknownEventError, UnorderableKeyError
from weaver.ingest.keys import encode_key
from weaver.ingest.values import encode_row

META = ("_change_type", "_commit_version", "_commit_timestamp")
_RANK = {"delete": 0, "insert": 1, "update_postimage": 1}


def normalized_uri(uri: str) -> str:
    """One spelling per table location: a local path (or file:// URI) absolute and resolved, an
    object-store URI without trailing slashes (``s3://b/t/`` -> ``s3://b/t``)."""
    if "://" in uri and not uri.startswith("file://"):
        scheme, _, rest = uri.partition("://")
        return f"{scheme}://{rest.rstrip('/')}"
    path = unquote(uri.removeprefix("file://")) if uri.startswith("file://") else uri
    return Path(path).resolve().as_posix()


def _detail(exc: Exception) -> str:
    """The first line of a delta-rs error (the rest is its native backtrace)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class DeltaCDF:
    """Adapter for the Change Data Feed of one Delta table."""

    kind = "delta-cdf"

    def __init__(self, uri: str, keys: str | list[str], name: str | None = None,
                 starting_version: int | None = None, ending_version: int | None = None):
        self.uri = str(uri)
        self.location = normalized_uri(self.uri)
        self.keys = key_attrs(keys)
        self.dt = self._open()
        with self._reading("read"):
            meta = self.dt.metadata()
            cols = [f.name for f in pa.schema(self.dt.schema().to_arrow())]
        self.identity = str(meta.id)  # the table's own id: another table at this name is another source
        if not storage.records_change_feed(meta.configuration):
            raise InvalidParameterError(f"{self.uri} does not record a change feed; run ALTER TABLE ... SET TBLPROPERTIES "
                                        "(delta.enableChangeDataFeed = true) and ingest the versions after it")
        for k in self.keys:
            if k not in cols:
                raise MissingKeyAttributeError(f"{self.uri}: the table has no key column {k!r} (columns: {cols})")
        self.starting_version, self.ending_version = starting_version, ending_version
        self.source = f"{self.kind}:{name or meta.name or self.uri.rstrip('/').rsplit('/', 1)[-1]}"

    def _open(self):
        """The source table through delta-rs; a table whose log cannot be read is a CorruptTableError."""
        from deltalake import DeltaTable

        opts = storage.options(self.uri)  # the source table may itself be on the object store
        with self._reading("opened"):
            if not DeltaTable.is_deltatable(self.uri, storage_options=opts):
                raise InvalidParameterError(f"no Delta table at {self.uri}")
            return DeltaTable(self.uri, storage_options=opts)

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Map delta-rs' errors on the source table's log (DeltaError, OSError, ...) to CorruptTableError."""
        try:
            yield
        except WeaverError:
            raise
        except Exception as exc:  # noqa: BLE001 - delta-rs raises generic errors for a broken log
            raise CorruptTableError(f"{self.uri}: the source Delta table cannot be {what} ({_detail(exc)}); "
                                    "repair its _delta_log or point --input at another table") from exc

    def describe(self, pos: Position) -> str:
        return f"version {pos[0]}"

    def contiguous(self, watermark: Position, start: Position) -> bool:
        return start[0] <= watermark[0] + 1

    def read(self, since: Optional[Watermark], progress: Optional[Callable[[int], None]] = None) -> Batch:
        # A table read up to its latest version is complete up to the instant taken BEFORE that
        # version was read: a commit after it gets a later time (the table may have moved since
        # the adapter opened it, so it is refreshed here).
        now = datetime.now(timezone.utc)
        with self._reading("read"):
            self.dt.update_incremental()
            latest = self.dt.version()
            by_log = self._needs_log_reader()  # the table may have gained a feature since opened
        start = self.starting_version if self.starting_version is not None else (since.pos[0] + 1 if since else 0)
        end = self.ending_version if self.ending_version is not None else latest
        if end > latest or start < 0 or end < 0:
            raise InvalidParameterError(f"{self.uri}: versions {start}..{end} requested, the table has 0..{latest}")
        if start > end:  # nothing new after the watermark: a heartbeat
            if since is None or start != since.pos[0] + 1:
                raise InvalidParameterError(
                    f"{self.uri}: versions {start}..{end} requested, the table has 0..{latest}"
                    + (f" and the lake holds it up to version {since.pos[0]}" if since else "")
                    + "; a range must start at most one version after the watermark and not pass the latest version")
            # It vouches for now only when read up to the latest version; else complete_to stays.
            return Batch(source=self.source, changes=[], start=since.pos, end=since.pos,
                         complete_to=now if end == latest else since.complete_to,
                         fingerprint=f"delta-cdf:{self.location}@{end}:idle", records_read=0, identity=self.identity)
        parts = self._feed(start, end, by_log)
        out: list[tuple[int, int, str, Change]] = []
        seen: dict[tuple[int, int, str], bool] = {}
        pre: dict[tuple[int, str], datetime] = {}  # (version, key) of update preimages -> commit time
        for rows in parts:
            data_cols = [c for c in rows.column_names if c not in META]
            for k in self.keys:
                if k not in data_cols:
                    raise MissingKeyAttributeError(f"{self.uri}: the change feed of versions {start}..{end} has no key "
                                                   f"column {k!r} (columns: {data_cols})")
            for r in rows.to_pylist():
                self._take(r, data_cols, out, seen, pre)
        # An update that changed the key: its preimage's key has no row image in that commit, so
        # the old key is gone (a DELETE, ordered with the commit's deletes, before its puts).
        for (v, key), ts in pre.items():
            if (v, 1, key) not in seen and (v, 0, key) not in seen:
                out.append((v, 0, key, Change((v,), key, "DELETE", None, ts)))
        records = sum(t.num_rows for t in parts)
        if progress:
            progress(records)
        out.sort(key=lambda t: t[:3])
        complete_to = now if end == latest else self._commit_time(end)
        return Batch(source=self.source, changes=[c for *_, c in out], start=(start,), end=(end,),
                     complete_to=complete_to, fingerprint=self._fingerprint(start, end, since),
                     records_read=records, identity=self.identity)

    def _needs_log_reader(self) -> bool:
        """Column mapping (delta-rs' ``load_cdf`` refuses it) or deletion vectors (``load_cdf`` reads a
        removed file that carries one wrongly: the rows the vector deleted come back as deletes,
        the file's live rows are missed) send the feed to :class:`ChangeFeed`."""
        return (storage.column_mapping_mode(self.dt.metadata().configuration) is not None
                or "deletionVectors" in (self.dt.protocol().reader_features or ()))

    def _feed(self, start: int, end: int, by_log: bool) -> list[pa.Table]:
        """Versions start..end of the change feed: delta-rs' ``load_cdf``, or :class:`ChangeFeed` (one
        table per version, each under that version's schema) for a table :meth:`_needs_log_reader`
        names, and for one whose feed ``load_cdf`` refuses or whose log it cannot parse (column
        mapping earlier in the range; a Spark shallow clone's log): the log reader reads it, or
        names why not."""
        try:
            if not by_log:
                try:
                    return [pa.table(self.dt.load_cdf(starting_version=start, ending_version=end).read_all())]
                except Exception:  # noqa: BLE001 - delta-rs raises generic errors; the log reader names its own
                    pass
            return self._log().read(start, end)
        except WeaverError:
            raise
        except Exception as exc:  # noqa: BLE001 - a generic error on the way
            raise MalformedInputError(f"{self.uri}: change feed of versions {start}..{end} cannot be read "
                                      f"({_detail(exc)}); was CDF enabled then, or were those versions vacuumed?") from exc

    def _log(self):
        """The log reader of this table (imported here: the CLI imports this module at start-up)."""
        from weaver.ingest.delta_log import ChangeFeed

        return ChangeFeed(self.uri, storage.options(self.uri))

    def _take(self, r: dict, data_cols: list[str], out: list, seen: dict, pre: dict) -> None:
        """One feed row into `out` (see the module's rules); `seen` and `pre` as in :meth:`read`."""
        ctype, v = r["_change_type"], int(r["_commit_version"])
        where = f"{self.uri} version {v}"
        if ctype != "update_preimage" and ctype not in _RANK:
            raise UnknownEventError(f"{where}: unknown _change_type {ctype!r}")
        kv = [r[k] for k in self.keys]
        try:
            key = encode_key(kv)
        except UnorderableKeyError as exc:
            raise UnorderableKeyError(f"{where}: {exc}") from exc
        slot = (v, -1, key) if ctype == "update_preimage" else (v, _RANK[ctype], key)
        if slot in seen:
            raise MalformedInputError(f"{where}: key {kv} changes twice in one commit; the key columns "
                                      f"{self.keys} do not identify a row")
        seen[slot] = True
        ts = r["_commit_timestamp"]
        ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
        if ctype == "update_preimage":
            pre[(v, key)] = ts
        elif ctype == "delete":
            out.append((v, _RANK[ctype], key, Change((v,), key, "DELETE", None, ts)))
        else:
            out.append((v, _RANK[ctype], key, Change((v,), key, "PUT", encode_row({c: r[c] for c in data_cols}), ts)))

    def _fingerprint(self, start: int, end: int, since: Optional[Watermark]) -> str:
        """The input's identity: the table's normalised location and the version range, so the same
        range read through another spelling of the location (``x/``, ``./x``, an absolute path) is
        recognised as already ingested. A range committed under the fingerprint of its spelling as
        given (how it was computed before) keeps that fingerprint, so it is recognised too."""
        def fp(location: str) -> str:
            return "delta-cdf:" + hashlib.sha256(f"{location}@{start}-{end}".encode()).hexdigest()

        current = fp(self.location)
        if since is not None and current not in since.fingerprints:
            for spelling in (self.uri, self.uri.rstrip("/"), self.uri.rstrip("/") + "/"):
                if fp(spelling) in since.fingerprints:
                    return fp(spelling)
        return current

    def _commit_time(self, version: int) -> datetime:
        """When `version` was committed, from its commit file (delta-rs' ``history()`` reads every
        commit, and cannot parse a shallow clone's)."""
        with self._reading("read"):
            return self._log().commit_time(version)
