"""The shared writer: a source Batch -> contract rows in `changelog`, exactly once, with its watermark.

Order of work (nothing is written before every check has passed):

0. ``_check_lake``: a damaged lake is refused by name (a lake root that is a file, a changelog
   that lost its Delta log, ledger rows whose changelog or ingest_log is gone, an unreadable log).
1. the source's watermark, read from the change log itself (see ``load_watermark``); ledger rows
   of `ingest_watermarks` a crash left behind are rebuilt for the checks and written back only
   with the batch's own writes (or on the same input again), so a refused input writes nothing.
2. the adapter reads its input; an input read from another table than the one the source name
   already holds (``Batch.identity``) is refused (SourceIdentityError); the batch is classified
   against the watermark: a re-ingest of an input already committed writes nothing; an input
   wholly at or below the watermark that was never ingested is refused (StaleInputError); an input
   starting after a gap is refused (WatermarkGapError); an overlapping input keeps only the
   changes above the watermark, once the lake is found to hold every change at or below it
   (else LateChangeError: late or out-of-order data) with the same item image (else
   ConflictingChangeError: the source's history changed under those positions; see ``_check_held``).
3. seq continues the lake's log gap-free; ts = max(source ts, the running maximum, starting at
   the log's last ts and just after the source's reported ``complete_to``), so ts never steps back
   along seq and nothing lands at or before an instant already reported complete (the source's ts
   goes to `ingest_log`);
   partition_id comes from the active partitions of the lineage (a new lake gets its initial
   range partitioning here); the rows pass ``validate_changes`` against the lineage.
4. writes: the initial `partitions` (new lake only), `ingest_log` rows (replaceWhere seq >= first
   new seq), then ONE `changelog` append whose Delta commit carries the app transaction
   ``weaver.ingest/<source>`` = batch number and a commitInfo entry ``weaver.ingest`` holding the
   new watermark; then the ledger row in `ingest_watermarks`. The recorded ``complete_to`` never
   moves back (the max of the previous and the batch's): an instant a run was told is complete
   stays complete.

Exactly once: the changelog commit is the commit point. Changes and watermark are in the same
Delta commit (delta-rs cannot commit two tables atomically, so the watermark lives in the
changelog's own log). A crash before it leaves only rows nobody reads (`ingest_log` above the
log's last seq, overwritten next time; `partitions` of a lake with no log, reused next time); a
crash after it leaves the ledger one batch behind: every read of the watermark rebuilds the
missing ledger rows from the commitInfo of the changelog commits whose app-transaction version
is above the ledger's last batch, and the next ingest that passes its checks writes them back.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import faults, objstore, storage
from weaver.core.errors import CorruptTableError, InvalidParameterError, SchemaMismatchError, TableNotFoundError
from weaver.ingest.base import (
    Adapter,
    Batch,
    Change,
    Watermark,
    format_position,
    parse_position,
)
from weaver.ingest.errors import (
    ConflictingChangeError,
    IngestStateError,
    LateChangeError,
    SourceIdentityError,
    StaleInputError,
    WatermarkGapError,
)
from weaver.ingest.keys import decode_key, equal_ranges
from weaver.ingest.values import decode_item
from weaver.log import Lineage, validate_changes

COMMIT_KEY = "weaver.ingest"


def app_id(source: str) -> str:
    return f"weaver.ingest/{source}"


@dataclass
class IngestResult:
    """What one ingest did (the CLI's --json summary)."""

    source: str
    records_read: int
    changes_written: int
    duplicates_skipped: int
    old_watermark: Optional[str]
    new_watermark: Optional[str]
    first_seq: Optional[int]
    last_seq: Optional[int]
    ts_carried_forward: int
    complete_to: Optional[datetime]
    batch: Optional[int]

    def to_json(self) -> dict:
        return {"source": self.source, "records_read": self.records_read, "changes_written": self.changes_written,
                "duplicates_skipped": self.duplicates_skipped, "old_watermark": self.old_watermark,
                "new_watermark": self.new_watermark, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "ts_carried_forward": self.ts_carried_forward,
                "complete_to": self.complete_to.isoformat() if self.complete_to else None, "batch": self.batch}


@dataclass(frozen=True)
class Partitioning:
    """The initial range partitioning of a new lake: N equal ranges, or explicit boundaries."""

    partitions: int = 1
    boundaries: tuple[str, ...] = ()
    tag: str = "S"  # type tag of the first key component, for equal ranges

    def bounds(self) -> list[str]:
        if self.boundaries:
            return list(self.boundaries)
        return equal_ranges(self.partitions, self.tag)


# --- watermark -----------------------------------------------------------------------------------
def read_ledger(settings, source: str | None = None) -> pa.Table:
    """Rows of `ingest_watermarks` (one per committed batch), optionally of one source."""
    uri = storage.uri_for(settings, storage.INGEST_WATERMARKS)
    t = storage.read(uri, storage.INGEST_WATERMARKS, missing_ok=True)
    if source is not None and t.num_rows:
        t = t.filter(pc.equal(t.column("source"), source))
    return t


def load_watermark(settings, source: str) -> Optional[Watermark]:
    """The source's watermark as committed in the change log (None before its first batch); reads only.

    The Delta app-transaction version of ``weaver.ingest/<source>`` in `changelog` counts the
    batches committed with their changes; ledger rows missing after a crash are rebuilt from
    those commits' commitInfo in memory (``ingest`` writes them back with its next good batch).
    ``complete_to`` is the latest any batch reported (a lake written before it was kept monotonic
    may hold a later row with an earlier one); ``identity`` the last one recorded (None: the
    source never told one).
    """
    return _watermark_and_missing(settings, source)[0]


def _repair_ledger(settings, missing: Optional[pa.Table]) -> None:
    """Write the ledger rows a crash left behind (rebuilt from the changelog's commits); idempotent."""
    if missing is not None and missing.num_rows:
        storage.merge(storage.uri_for(settings, storage.INGEST_WATERMARKS), storage.INGEST_WATERMARKS,
                      missing, keys=["source", "batch"])


def _watermark_and_missing(settings, source: str) -> tuple[Optional[Watermark], Optional[pa.Table]]:
    """The watermark (see load_watermark), and the ledger rows it lacks (None: none)."""
    dt = _open_changelog(settings)
    ledger = read_ledger(settings, source)
    have = int(pc.max(ledger.column("batch")).as_py()) if ledger.num_rows else 0
    if dt is None:
        if have:
            raise IngestStateError(
                f"ingest_watermarks lists {have} batches of {source!r} but the lake at {settings.lake} has no "
                "changelog (deleted?): ingesting would start a new log at seq 1 and overwrite those batches; "
                "restore the changelog, or drop that source's ledger rows if the lake is meant to start over")
        return None, None
    committed = dt.transaction_version(app_id(source))
    if committed is None:
        if have:
            raise IngestStateError(
                f"ingest_watermarks lists {have} batches of {source!r} but the changelog has no record of them "
                "(it was rewritten); restore the changelog or drop that source's ledger rows")
        return None, None
    if committed < have:
        raise IngestStateError(
            f"ingest_watermarks lists batch {have} of {source!r} but the changelog committed only {committed} "
            "(restored to an older version?); drop the ledger rows above it and re-ingest")
    missing = None
    if committed > have:
        missing = _rows_from_history(dt, source, have, committed)
        ledger = pa.concat_tables([ledger, storage.conform(missing, storage.INGEST_WATERMARKS)])
    last = ledger.filter(pc.equal(ledger.column("batch"), committed)).to_pylist()[0]
    told = ledger.filter(pc.is_valid(ledger.column("identity"))).sort_by("batch")
    return Watermark(source=source, batch=committed, pos=parse_position(last["position"]),
                     watermark=last["watermark"], complete_to=pc.max(ledger.column("complete_to")).as_py(),
                     fingerprints=frozenset(ledger.column("fingerprint").to_pylist()), keys=last.get("keys"),
                     identity=told.column("identity")[-1].as_py() if told.num_rows else None), missing


def _ingest_commits(dt, source: str):
    """(commit, its ``weaver.ingest`` record) of `source`'s batches in the changelog's Delta
    history, newest first (one read per commit still in the log)."""
    for commit in dt.history():
        raw = commit.get(COMMIT_KEY)
        if raw:
            rec = json.loads(raw)
            if rec.get("source") == source:
                yield commit, rec


def _rows_from_history(dt, source: str, have: int, committed: int) -> pa.Table:
    found: dict[int, dict] = {}
    for _commit, rec in _ingest_commits(dt, source):
        if have < int(rec["batch"]) <= committed:
            found[int(rec["batch"])] = rec
        if len(found) == committed - have:
            break
    lost = [b for b in range(have + 1, committed + 1) if b not in found]
    if lost:
        raise IngestStateError(
            f"changelog committed batches {lost} of {source!r} but their commit metadata is gone "
            "(log cleanup?); rebuild ingest_watermarks for that source by hand")
    rows = []
    for b in sorted(found):
        r = found[b]
        rows.append({**r, "complete_to": datetime.fromisoformat(r["complete_to"]),
                     "committed_at": datetime.fromisoformat(r["committed_at"])})
    return pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.INGEST_WATERMARKS])


# --- the lake's state ----------------------------------------------------------------------------
def _open_changelog(settings):
    """The lake's `changelog` (a delta-rs DeltaTable), or None when the lake has none yet.

    A folder holding data files but no Delta log is not a lake without a change log: its log was
    lost, and starting a new one at seq 1 would orphan those rows and overwrite the ledger's first
    batches (CorruptTableError). An unreadable log is a CorruptTableError too (`storage.open_table`).
    """
    uri = storage.uri_for(settings, storage.CHANGELOG)
    if storage.is_table(uri):
        return storage.open_table(uri, storage.CHANGELOG)
    if _holds_data(uri):
        raise CorruptTableError(
            f"{uri} holds data files but no Delta log (its _delta_log was lost or emptied): ingesting would start "
            "a new log at seq 1 beside those rows; restore the _delta_log (or the lake), or move the folder away "
            "if no ingest ever committed into this lake (a first ingest killed while writing)")
    return None


def _holds_data(uri: str) -> bool:
    """Whether the folder `uri` holds Parquet data files (directly, or under partition folders)."""
    opts = storage.options(uri)
    if any(f.endswith(".parquet") for f in objstore.list_folder(uri, opts)):
        return True
    return any("=" in d for d in objstore.list_folder(uri, opts, folders=True))


def _check_lake(settings) -> None:
    """Refuse a damaged lake by name before the input is read or anything is written.

    delta-rs and Arrow would otherwise fail half-way with their own errors, or worse, succeed: a
    changelog without its log looks like a new lake (see `_open_changelog`), and one deleted
    outright leaves ledger rows a new log at seq 1 would overwrite (IngestStateError); an
    ingest_log gone while batches with changes are recorded would lose the positions that tell a
    duplicate from a late change. Tables whose Delta log cannot be read are CorruptTableError.
    """
    lake = settings.lake
    if "://" not in lake and Path(lake).exists() and not Path(lake).is_dir():
        raise InvalidParameterError(f"--lake {lake} is a file, not a lake folder; point --lake at the lake's root "
                                    "folder (or at a new folder to start a lake)")
    has_log = _open_changelog(settings) is not None
    log_uri = storage.uri_for(settings, storage.INGEST_LOG)
    for name in (storage.INGEST_LOG, storage.PARTITIONS):
        uri = storage.uri_for(settings, name)
        if storage.is_table(uri):
            storage.open_table(uri, name)
    ledger = read_ledger(settings)
    if ledger.num_rows == 0:
        return
    sources = sorted(set(ledger.column("source").to_pylist()))
    if not has_log:
        raise IngestStateError(
            f"ingest_watermarks lists {ledger.num_rows} batches (of {', '.join(sources)}) but the lake at "
            f"{settings.lake} has no changelog (deleted?): ingesting would start a new log at seq 1 and overwrite "
            "those batches; restore the changelog, or drop the ledger if the lake is meant to start over")
    if pc.any(pc.greater(ledger.column("changes"), 0)).as_py() and not storage.is_table(log_uri):
        raise IngestStateError(
            f"ingest_watermarks lists batches with changes (of {', '.join(sources)}) but the lake at {settings.lake} "
            f"has no ingest_log (deleted, or its _delta_log lost): the source positions that tell a duplicate from "
            "a late change are gone; restore the ingest_log before ingesting")


def _log_tail(settings) -> tuple[int, Optional[datetime]]:
    """(last seq, its ts) of the change log, (0, None) when there is none; file stats first."""
    dt = _open_changelog(settings)
    if dt is None:
        return 0, None
    adds = pa.table(dt.get_add_actions(flatten=True))
    if adds.num_rows == 0:
        return 0, None
    best = None
    if "max.seq" in adds.column_names and adds.column("max.seq").null_count == 0:
        best = int(pc.max(adds.column("max.seq")).as_py())
    flt = (pc.field("seq") >= best) if best is not None else None
    t = _read_log(dt, ["seq", "ts"], flt)
    if t.num_rows == 0:
        return 0, None
    i = pc.index(t.column("seq"), pc.max(t.column("seq"))).as_py()
    return int(t.column("seq")[i].as_py()), t.column("ts")[i].as_py()


def _read_log(dt, columns: list[str], flt) -> pa.Table:
    """`columns` of the changelog rows matching `flt`; a data file that is gone or not Parquet is a
    CorruptTableError (the log names a file the lake no longer holds intact), not Arrow's error."""
    try:
        return storage.dataset(dt).to_table(columns=columns, filter=flt)
    except (OSError, pa.ArrowInvalid) as exc:
        where = dt.table_uri.removeprefix("file://").rstrip("/")
        raise CorruptTableError(f"Delta table changelog at {where} cannot be read: {exc}; restore the "
                                "missing or damaged data file (or the lake) before ingesting") from exc


def _initial_partitions(bounds: list[str], created_ts: datetime) -> pa.Table:
    edges = [""] + bounds + [None]
    rows = [{"partition_id": f"p{i:04d}", "key_lo": edges[i], "key_hi": edges[i + 1], "parent_id": None,
             "created_seq": 0, "created_ts": created_ts, "retired_seq": None, "retired_ts": None}
            for i in range(len(edges) - 1)]
    return pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PARTITIONS])


# --- ingest --------------------------------------------------------------------------------------
def ingest(settings, adapter: Adapter, *, partitioning: Partitioning = Partitioning(),
           progress: Optional[Callable[[int], None]] = None) -> IngestResult:
    """Ingest the adapter's input into the lake exactly once; see the module docstring.

    Raises the adapter's named input errors, StaleInputError (LateChangeError), WatermarkGapError,
    SourceIdentityError, the named errors of a damaged lake (``_check_lake``) and the contract
    errors of validate_changes, each before anything is written.
    The pause point ``ingest.after_changelog`` (`weaver.core.faults`) lies between the commit
    point and the ledger row: crash tests stop there.
    """
    source = adapter.source
    _check_lake(settings)
    # Read only: ledger rows a crash left behind are written back once the batch passed every check
    # (a refused input changes nothing on disk), or on the same input again.
    wm, missing = _watermark_and_missing(settings, source)
    log_schema = _existing_log_schema(settings)
    key_spec = ",".join(adapter.keys)
    if wm is not None and wm.keys and wm.keys != key_spec:
        raise InvalidParameterError(
            f"{source} was ingested with --keys {wm.keys}; its keys must stay encoded the same way "
            f"(got --keys {key_spec})")
    batch = adapter.read(wm, progress)
    _check_identity(wm, batch)
    new, dups = _classify(settings, adapter, wm, batch)
    dups += batch.repeats  # records the input itself repeated (kept once by the adapter)
    result = IngestResult(source=source, records_read=batch.records_read, changes_written=0,
                          duplicates_skipped=dups, old_watermark=wm.watermark if wm else None,
                          new_watermark=wm.watermark if wm else None, first_seq=None, last_seq=None,
                          ts_carried_forward=0, complete_to=wm.complete_to if wm else None,
                          batch=wm.batch if wm else None)
    if new is None:  # the same input again: nothing to write but the ledger rows a crash lost
        _repair_ledger(settings, missing)
        if wm is not None and batch.fingerprint in wm.fingerprints:
            # Name the batch this input committed (perhaps by an attempt that crashed before its
            # ledger row and its check): the retry's check then covers it.
            result.first_seq, result.last_seq = _committed_seqs(settings, source, batch.fingerprint)
        return result

    last_seq, last_ts = _log_tail(settings)
    parts_uri = storage.uri_for(settings, storage.PARTITIONS)
    new_lake = last_seq == 0 and not storage.is_table(storage.uri_for(settings, storage.CHANGELOG))
    if storage.is_table(parts_uri):
        lineage = Lineage.load(settings)
        parts_table = None
    elif new_lake:
        first_ts = min((c.source_ts for c in new), default=batch.complete_to)
        parts_table = _initial_partitions(partitioning.bounds(), first_ts)
        lineage = Lineage(parts_table)
    else:
        raise TableNotFoundError(f"the lake at {settings.lake} has a changelog but no partitions table; "
                                 "restore it before ingesting")
    active = lineage.active()
    if not active:
        raise InvalidParameterError(f"the lake at {settings.lake} has no active partition to route changes to")
    new = _expand_truncates(settings, new, lineage, last_seq, last_ts)
    los = [p.key_lo for p in active]

    seqs, tss, pids, keys, ops, vals, vbytes, poss, srcts = ([] for _ in range(9))
    # ts floor: the log's last ts, and past the source's reported complete_to (what a run was told
    # is complete must not change: a later transaction whose commit time steps back lands after it).
    running = last_ts
    if wm is not None:
        floor = wm.complete_to + timedelta(microseconds=1)
        running = floor if running is None or floor > running else running
    carried = 0
    seq = last_seq
    for c in new:
        seq += 1
        ts = c.source_ts
        if running is not None and ts < running:
            ts = running
            carried += 1
        running = ts
        seqs.append(seq)
        tss.append(ts)
        pids.append(active[bisect.bisect_right(los, c.key) - 1].partition_id)
        keys.append(c.key)
        ops.append(c.op)
        vals.append(c.value)
        vbytes.append(len(c.value) if c.value is not None else 0)
        poss.append(format_position(c.pos))
        srcts.append(c.source_ts)
    changes = pa.table({"seq": seqs, "ts": pa.array(tss, storage.TS), "partition_id": pids, "key": keys,
                        "op": ops, "value": pa.array(vals, pa.binary()), "value_bytes": pa.array(vbytes, pa.int64())},
                       schema=storage.SCHEMAS[storage.CHANGELOG])
    validate_changes(changes, lineage, expected_first_seq=last_seq + 1 if new else None)
    to_write = _fit_to_log(changes, log_schema)

    batch_no = (wm.batch if wm else 0) + 1
    now = datetime.now(timezone.utc)
    # complete_to never moves back: a source reporting an earlier instant than a previous batch
    # (Debezium commit times stepping back) leaves complete what a run was already told is complete.
    complete_to = batch.complete_to if wm is None else max(wm.complete_to, batch.complete_to)
    # A source recorded before identities were (None) adopts the first one it is told; a batch
    # that tells none keeps the recorded one.
    identity = batch.identity if batch.identity is not None else (wm.identity if wm else None)
    record = {"source": source, "batch": batch_no, "watermark": adapter.describe(batch.end),
              "position": format_position(batch.end), "complete_to": complete_to.isoformat(),
              "committed_at": now.isoformat(), "first_seq": last_seq + 1 if new else None,
              "last_seq": seq if new else None, "changes": len(new), "fingerprint": batch.fingerprint, "keys": key_spec,
              "identity": identity, "full": batch.full}

    # --- writes (everything above raised before this point on bad input) ---
    _repair_ledger(settings, missing)
    if parts_table is not None:
        storage.overwrite(parts_uri, storage.PARTITIONS, parts_table)
        faults.point("ingest.after_partitions")
    if new:
        log_rows = pa.table({"seq": seqs, "source": [source] * len(seqs), "position": poss,
                             "source_ts": pa.array(srcts, storage.TS)}, schema=storage.SCHEMAS[storage.INGEST_LOG])
        storage.overwrite(storage.uri_for(settings, storage.INGEST_LOG), storage.INGEST_LOG, log_rows,
                          predicate=f"seq >= {last_seq + 1}")
        faults.point("ingest.after_ingest_log")
    _commit_changes(settings, to_write, source, batch_no, record)
    faults.point("ingest.after_changelog")
    storage.merge(storage.uri_for(settings, storage.INGEST_WATERMARKS), storage.INGEST_WATERMARKS,
                  pa.Table.from_pylist([{**record, "complete_to": complete_to, "committed_at": now}],
                                       schema=storage.SCHEMAS[storage.INGEST_WATERMARKS]),
                  keys=["source", "batch"])
    result.changes_written = len(new)
    result.new_watermark = record["watermark"]
    result.first_seq, result.last_seq = record["first_seq"], record["last_seq"]
    result.ts_carried_forward = carried
    result.complete_to = complete_to
    result.batch = batch_no
    return result


def _check_identity(wm: Optional[Watermark], batch: Batch) -> None:
    """Refuse a batch read from another table than the one the source name already stands for.

    Two Delta tables both named `orders`, or two DynamoDB tables of one name in two accounts,
    default to one source name; their positions (versions, write times) are unrelated, so one's
    watermark would skip the other's changes. A batch or a record without an identity is not
    checked (the adapter cannot tell; the name is all there is).
    """
    if wm is None or wm.identity is None or batch.identity is None or batch.identity == wm.identity:
        return
    raise SourceIdentityError(
        f"{batch.source}: this input was read from {batch.identity}, but the lake holds {batch.source} from "
        f"{wm.identity} (up to {wm.watermark}); two tables cannot share one source's watermark - give this input "
        "its own --name")


def _classify(settings, adapter: Adapter, wm: Optional[Watermark], batch: Batch):
    """(changes to write, duplicates skipped); (None, n) for a re-ingest of a committed input."""
    if wm is None:
        return list(batch.changes), 0
    if not batch.changes and batch.records_read == 0 and batch.end <= wm.pos:
        # Nothing new at the source. If it vouches for a later instant (a Delta table read up to
        # its latest version), commit an empty batch so `complete_to` moves: silence is then
        # known to be silence, not lag (see weaver.ingest.completeness).
        return ([], 0) if batch.end == wm.pos and batch.complete_to > wm.complete_to else (None, 0)
    if batch.end <= wm.pos:
        if batch.fingerprint in wm.fingerprints:
            return None, len(batch.changes)
        raise StaleInputError(
            f"{batch.source}: input covers {adapter.describe(batch.start)} .. {adapter.describe(batch.end)}, "
            f"wholly at or below the watermark {wm.watermark}, and is not an input already ingested; "
            "it is older than the watermark - ingest only inputs that reach past it")
    if batch.full:
        raise StaleInputError(
            f"{batch.source}: a full export can only start a source, but the lake already holds it up to "
            f"{wm.watermark}; ingest the incremental exports after that instead")
    if not adapter.contiguous(wm.pos, batch.start):
        raise WatermarkGapError(
            f"{batch.source}: input starts at {adapter.describe(batch.start)} but the lake holds the source only "
            f"up to {wm.watermark}; ingest the input covering the gap first")
    new = [c for c in batch.changes if c.pos > wm.pos]
    held = [c for c in batch.changes if c.pos <= wm.pos]
    if held:
        _check_held(settings, wm, held)
    return new, len(held)


#: Stands for a change whose changelog row vacuum removed: only its position is left to compare.
_VACUUMED = (None, None)


def _check_held(settings, wm: Watermark, held: list[Change]) -> None:
    """Refuse the input (LateChangeError) unless the lake holds every one of its changes at or below
    the watermark: only those are duplicates. A Debezium change at LSN 200 arriving after LSN 300
    was ingested is late data, not a re-delivery, and skipping it would lose it.

    What is compared: a position alone does not identify a change (DynamoDB items share a write
    microsecond, a Delta version holds many keys, a Debezium update that moves a key is a DELETE
    and a PUT at one LSN), so a change is held when `ingest_log` has its position for this source
    and the changelog row of that seq has its key and op. Three cases compare less: a TRUNCATE its
    position (its DELETEs are the keys live then), a change whose changelog row vacuum removed its
    position, and a change at or below a full snapshot's position (the source's first batch of a
    full DynamoDB export) - or below a batch recorded before that was told - none: the snapshot
    holds its outcome.

    A TRUNCATE that found the table empty expanded to no DELETE and left no row, so its
    redelivery has no position to match: such a TRUNCATE is held when no key was live at its place
    (:func:`_truncates_that_delete`), where skipping it changes nothing whether it was ingested or not.

    A change held by position, key and op must also carry the image the lake holds there
    (:func:`_same_image`), else ConflictingChangeError: the same event delivered again carries the
    same image, so another one means the source's history changed under positions already
    ingested (a database restored from a backup or failed over to another timeline), and skipping
    it would keep the old version without a word. Late changes are named first.

    Cost: the ledger tells which batches can hold those positions (batch b wrote positions in
    (end of b-1, end of b]); only their seqs are read, pushed down to file statistics, so the
    reads follow the overlap, not the lake's history.
    """
    ledger = read_ledger(settings, wm.source).sort_by("batch").to_pylist()
    # A snapshot's batch holds the outcome of every change at or below its position. A batch
    # recorded before snapshots were (`full` null) may have been one: the changes at or below such
    # batches are not checked, as before (a DynamoDB source started by a full export would
    # otherwise refuse every incremental export that overlaps it).
    covered = [parse_position(r["position"]) for r in ledger if r["full"] is not False]
    if covered:
        held = [c for c in held if c.pos > max(covered)]
        if not held:
            return
    span = _seq_span(ledger, min(c.pos for c in held), max(c.pos for c in held))
    lake = _held_changes(settings, wm.source, *span) if span else {}
    missing, conflicts, bare = [], [], []
    for c in held:
        have = lake.get(format_position(c.pos))
        if have is not None and (c.op == "TRUNCATE" or _VACUUMED in have):
            continue
        if have is None and c.op == "TRUNCATE":
            bare.append(c)  # no row at its position: an empty TRUNCATE, or a late one
            continue
        ingested = None if have is None else have.get((c.key, c.op))
        if ingested is None:
            missing.append(c)
        elif not any(_same_image(c.value, value) for _, value in ingested):
            conflicts.append((c, ingested[0][0]))
    if bare:
        missing = sorted(missing + _truncates_that_delete(settings, wm.source, ledger, lake, bare), key=lambda c: c.pos)
    if missing:
        shown = "; ".join(_describe_change(c) for c in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise LateChangeError(
            f"{wm.source}: the input holds {len(missing)} change(s) at or below the watermark {wm.watermark} that "
            f"the lake never ingested ({shown}{more}): late or out-of-order data - skipping them would lose them, "
            "appending them would order them after changes the source made later. Nothing was written; ingest "
            "inputs whose part at or below the watermark was ingested before, or rebuild the source in its order "
            "into a new lake")
    if conflicts:
        shown = "; ".join(f"{_describe_change(c)} against seq {seq}" for c, seq in conflicts[:3])
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        raise ConflictingChangeError(
            f"{wm.source}: the input holds {len(conflicts)} change(s) at or below the watermark {wm.watermark} whose "
            f"position, key and op the lake ingested with another item image ({shown}{more}): the source's history "
            "changed under positions already ingested (a database restored from a backup or failed over to another "
            "timeline, a table re-created under the same name) - skipping them would keep the old versions, "
            "appending them would order them after changes the source made later. Nothing was written; ingest the "
            "source's new history under its own --name into a new lake")


def _truncates_that_delete(settings, source: str, ledger: list[dict], lake: dict[str, dict],
                           truncates: list[Change]) -> list[Change]:
    """The TRUNCATEs of `truncates` (at or below the watermark, no row at their position) that
    would delete a key at their place in the log: late data. The others are held - whether the
    lake ingested them (a TRUNCATE that found the table empty leaves no row) or not, skipping a
    TRUNCATE where no key is live changes no state at any instant.

    Its place: after the changes of its batch (the first whose position reaches it) at earlier
    positions, or before the batch's first change when it has none there, or - for a batch that
    wrote no row - after the log as that batch's commit left it (its Delta version, found by the
    commit's ``weaver.ingest`` record); the batch's own rows are in `lake` (:func:`_held_changes`
    over the batches that can hold `truncates`). The keys live there are a restore of every partition at
    that seq's ts; changes after it at the same ts are in that restore too, and where they leave
    no key live, a TRUNCATE before them would have left the same state at every instant. A place
    that cannot be told (its commit no longer in the Delta log, a vacuumed log) keeps the TRUNCATE
    late, as before.
    """
    from weaver.core.errors import WeaverError
    from weaver.log import ChangeLog
    from weaver.pitr import restore_many  # the layer below ingest; imported only for such a TRUNCATE

    late, places = [], {}
    for c in truncates:
        batch = next((r for r in ledger if parse_position(r["position"]) >= c.pos), None)
        place = None if batch is None else _place_in(settings, source, batch, lake, c.pos)
        if place is None:
            late.append(c)
        else:
            places.setdefault(place, []).append(c)
    if not places:
        return late
    lineage, log = Lineage.load(settings), ChangeLog(settings)
    for place, cs in places.items():
        if place == 0:
            continue  # before the log's first change: no key is live
        if log.start is not None and place < log.start:
            late.extend(cs)  # vacuum removed the change at its place: its state cannot be restored
            continue
        try:
            at = log.ts_of(place)
            live = any(res.table.num_rows for _pid, results in
                       restore_many(settings, {p.partition_id: [at] for p in lineage.active_at_ts(at)}, lineage=lineage)
                       for res in results)
        except WeaverError:
            live = True  # the state there cannot be restored (vacuumed): it cannot be shown empty
        if live:
            late.extend(cs)
    return late


def _place_in(settings, source: str, batch: dict, lake: dict[str, dict], pos) -> Optional[int]:
    """The seq after which a change of `source` at `pos` sits in `batch`, its rows taken from
    `lake` (see :func:`_truncates_that_delete`); None when it cannot be told."""
    if batch["first_seq"] is not None:
        first, last = int(batch["first_seq"]), int(batch["last_seq"])
        before = [seq for p, changes in lake.items() if parse_position(p) < pos
                  for rows in changes.values() for seq, _ in rows if first <= seq <= last]
        return max(before) if before else first - 1
    for commit, rec in _ingest_commits(_open_changelog(settings), source):
        if int(rec["batch"]) == int(batch["batch"]) and "version" in commit:
            tops = pa.table(storage.open_table(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG,
                                               version=int(commit["version"]))
                            .get_add_actions(flatten=True))
            if "max.seq" not in tops.column_names or tops.column("max.seq").null_count:
                return None  # no statistics to tell the log's end by
            return int(pc.max(tops.column("max.seq")).as_py() or 0)
    return None


def _same_image(new: Optional[bytes], old: Optional[bytes]) -> bool:
    """Whether an input's item image is the one the lake holds for that change: the same bytes, or
    the same attributes once those that are NULL are left out on both sides (a column the source
    table gained since the change was first read is NULL in a re-read of it)."""
    if new == old:
        return True
    if new is None or old is None:
        return False
    try:
        a, b = decode_item(new), decode_item(old)
    except Exception:  # noqa: BLE001 - not an item image (a lake written by another producer): they differ
        return False
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    null = {"NULL": True}
    return {k: v for k, v in a.items() if v != null} == {k: v for k, v in b.items() if v != null}


def _seq_span(ledger: list[dict], lo: tuple, hi: tuple) -> Optional[tuple[int, int]]:
    """(first, last) seq of the source's batches that can hold positions in [lo, hi] (None: none)."""
    first = last = None
    prev = None
    for r in ledger:
        end = parse_position(r["position"])
        if r["first_seq"] is not None and end >= lo and (prev is None or prev < hi):
            first = r["first_seq"] if first is None else min(first, r["first_seq"])
            last = r["last_seq"] if last is None else max(last, r["last_seq"])
        prev = end
    return None if first is None else (int(first), int(last))


def _held_changes(settings, source: str, lo: int, hi: int) -> dict[str, dict]:
    """position -> {(key, op): [(seq, value), ...]} of `source`'s changes with seq in [lo, hi] as
    the lake holds them (`ingest_log` for positions, `changelog` for keys, ops and item images;
    the key _VACUUMED where the row is gone). Only `source`'s rows are kept: other sources' rows
    between its batches are filtered out by seq before their values are taken."""
    flt = [("source", "=", source), ("seq", ">=", lo), ("seq", "<=", hi)]
    src = storage.read(storage.uri_for(settings, storage.INGEST_LOG), storage.INGEST_LOG, filters=flt,
                       columns=["seq", "position"], missing_ok=True)
    rows = _read_log(_open_changelog(settings), ["seq", "key", "op", "value"],
                     (pc.field("seq") >= lo) & (pc.field("seq") <= hi)
                     & pc.field("seq").isin(src.column("seq").cast(pa.int64())))
    by_seq = {seq: ((key, op), value) for seq, key, op, value in
              zip(*(rows.column(c).to_pylist() for c in ("seq", "key", "op", "value")))}
    out: dict[str, dict] = {}
    for seq, pos in zip(src.column("seq").to_pylist(), src.column("position").to_pylist()):
        change, value = by_seq.get(seq, (_VACUUMED, None))
        out.setdefault(pos, {}).setdefault(change, []).append((seq, value))
    return out


def _describe_change(c: Change) -> str:
    """A change for a message: op, decoded key, source time and position (``adapter.describe``
    words a watermark, which for a DynamoDB write time is the next microsecond)."""
    where = f"source time {c.source_ts.isoformat()}, position {format_position(c.pos)}"
    if c.op == "TRUNCATE":
        return f"TRUNCATE ({where})"
    try:
        key = decode_key(c.key)
    except Exception:  # noqa: BLE001 - a message only: show the encoded key then
        key = (c.key,)
    return f"{c.op} of key {key[0] if len(key) == 1 else key} ({where})"


def _existing_log_schema(settings) -> Optional[pa.Schema]:
    """The existing `changelog`'s Arrow schema, checked against the contract (None: no log yet).

    A missing contract column or an incompatible type (e.g. a naive `ts`) raises SchemaMismatchError;
    an extra column the log carries must be nullable (the batch gets nulls there), else the same error.
    Runs before anything is read from the log or written.
    """
    dt = _open_changelog(settings)
    if dt is None:
        return None
    uri = storage.uri_for(settings, storage.CHANGELOG)
    schema = pa.schema(dt.schema().to_arrow())
    storage.conform(schema.empty_table(), storage.CHANGELOG, where=f" at {uri}")
    contract = storage.SCHEMAS[storage.CHANGELOG].names
    required = [f.name for f in schema if f.name not in contract and not f.nullable]
    if required:
        raise SchemaMismatchError(
            f"table 'changelog' at {uri} has extra non-nullable columns {required}; ingestion writes only the "
            f"contract columns {contract}: make them nullable or ingest into another lake")
    return schema


def _fit_to_log(changes: pa.Table, schema: Optional[pa.Schema]) -> pa.Table:
    """The contract rows in the existing log's column order and types, nulls in its extra columns."""
    if schema is None or schema == changes.schema:
        return changes
    cols = []
    for f in schema:
        if f.name in changes.column_names:
            col = changes.column(f.name)
            try:
                cols.append(col if col.type.equals(f.type) else col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(f"table 'changelog': column {f.name!r} is {f.type} in the lake and cannot "
                                          f"hold this batch's values ({exc})") from exc
        else:
            cols.append(pa.nulls(changes.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _committed_seqs(settings, source: str, fingerprint: str) -> tuple[Optional[int], Optional[int]]:
    """(first_seq, last_seq) of the latest batch of `source` committed from the input `fingerprint`."""
    ledger = read_ledger(settings, source)
    rows = [r for r in ledger.select(["batch", "fingerprint", "first_seq", "last_seq"]).to_pylist()
            if r["fingerprint"] == fingerprint]
    if not rows:
        return None, None
    last = max(rows, key=lambda r: r["batch"])
    return last["first_seq"], last["last_seq"]


def _expand_truncates(settings, new: list, lineage: Lineage, last_seq: int, last_ts: Optional[datetime]) -> list:
    """A TRUNCATE (Debezium op 't') becomes a DELETE of every key live at that point, in key order.

    The keys live at the log's end are the restore of every active partition there (base snapshots
    plus the log's tail), so a key whose last change vacuum cut from the log is still deleted.
    """
    if not any(c.op == "TRUNCATE" for c in new):
        return new
    live: set[str] = set()
    if last_seq and last_ts is not None:
        from weaver.pitr import restore_many  # the layer below ingest; imported only for a TRUNCATE

        for _pid, results in restore_many(settings, {p.partition_id: [last_ts] for p in lineage.active()},
                                          lineage=lineage):
            for res in results:
                live.update(res.table.column("key").to_pylist())
    out = []
    for c in new:
        if c.op == "TRUNCATE":
            out.extend(Change(c.pos, k, "DELETE", None, c.source_ts) for k in sorted(live))
            live.clear()
            continue
        (live.add if c.op == "PUT" else live.discard)(c.key)
        out.append(c)
    return out


def _commit_changes(settings, changes: pa.Table, source: str, batch_no: int, record: dict) -> None:
    """The commit point: changes + app transaction + watermark in ONE changelog commit."""
    from deltalake import CommitProperties, Transaction, write_deltalake

    uri = storage.uri_for(settings, storage.CHANGELOG)
    props = CommitProperties(custom_metadata={COMMIT_KEY: json.dumps(record, sort_keys=True)},
                             app_transactions=[Transaction(app_id=app_id(source), version=batch_no)])
    write_deltalake(uri, changes, mode="append", commit_properties=props,
                    writer_properties=storage._writer_properties(), storage_options=storage.options(uri))
