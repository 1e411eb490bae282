"""Weaving (DESIGN §3 woven tier, §4.2): shadow snapshot sequences for predicted splits.

For every prediction at or above the confidence threshold, a *woven sequence* pretends the
predicted split of partition P at ``split_key`` k happened at ``predicted_split_ts`` s. At each
timepoint T of the sequence (s, s + cadence, ... <= window_end) it stores restore(P, T) routed to
two hypothetical children: keys < k to ``f"{P}~{weave_id[:8]}~L"``, keys >= k to ``~R``.

restore(P, T) is replay by KEY RANGE: the base (P's or an ancestor's latest snapshot cut to P's
range, a cover by descendants' snapshots, or empty at seq 0; see ``weaver.pitr.plan_restore``)
plus every change with ``ts <= T`` whose key lies in ``[key_lo, key_hi)``. A real split of P
during the window needs no special case: the children's changes are changes on keys of the range.

Runs are incremental. A run at ``at`` registers the new predictions' sequences in
``woven_catalog`` and extends every extendable sequence (``active`` or ``confirmed``) with the
timepoints whose data has arrived (``T <= at`` and the change log reached T), starting from the
state at the sequence's last woven timepoint (read back from ``woven_snapshots``), not from the
base snapshot. The woven rows of a run go into ``woven_snapshots`` in ONE Delta commit (a
replaceWhere on the (weave, timepoint) span the run owns, partitioned by weave_id), so a rerun of
the same interval writes nothing and ``VERSION AS OF`` answers "what did we believe then".

Spark does the replay with DataFrame -> DataFrame transforms (``with_*``/``filter_*``): the
events (base rows at their base seq, then the changes) of every (weave, key) are ordered by seq;
each PUT is live from its seq until the key's next event, so it belongs to the contiguous run of
timepoints whose seq lies in that interval (array index arithmetic, one explode, no per-timepoint
join). Control tables (catalogs, predictions, lineage) are small and go through delta-rs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from weaver import storage
from weaver.changelog import Lineage
from weaver.errors import (
    ContractViolation,
    InvalidParameterError,
    InvalidTimepointError,
    TableNotFoundError,
)
from weaver.settings import Settings, check_confidence, parse_timepoint

ACTIVE, CONFIRMED, REFUTED, EXPIRED = "active", "confirmed", "refuted", "expired"
STATUSES = (ACTIVE, CONFIRMED, REFUTED, EXPIRED)
#: Sequences a run extends: a confirmed split stays the fastest recovery source in its window.
EXTENDABLE = frozenset({ACTIVE, CONFIRMED})
COMPRESSION = "ZSTD"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- ids -----------------------------------------------------------------------------------------
def weave_id_for(prediction_id: str) -> str:
    """The deterministic weave id of a prediction: ``sha1(prediction_id)[:16]``."""
    return hashlib.sha1(prediction_id.encode("utf-8")).hexdigest()[:16]


def child_ids_for(partition_id: str, weave_id: str) -> tuple[str, str]:
    """Ids of the hypothetical children (left: keys < split_key). '~' never occurs in real ids."""
    return f"{partition_id}~{weave_id[:8]}~L", f"{partition_id}~{weave_id[:8]}~R"


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _retention_interval(d: timedelta) -> str:
    return f"interval {max(1, int(d.total_seconds()))} seconds"


def _table_properties(settings: Settings) -> dict[str, str]:
    """The woven tier's own retention (log and removed files), separate from the lake's."""
    r = _retention_interval(settings.woven_retention)
    return {"delta.logRetentionDuration": r, "delta.deletedFileRetentionDuration": r}


# --- sequences -----------------------------------------------------------------------------------
@dataclass
class Sequence:
    """One woven sequence as this run sees it (a catalog row plus P's range and the run's plan)."""

    weave_id: str
    prediction_id: str
    source_partition_id: str
    key_lo: str
    key_hi: str | None
    split_key: str
    split_ts: datetime
    confidence: float
    window_start: datetime
    window_end: datetime
    status: str
    created_at: datetime
    last_timepoint: datetime | None = None
    last_seq: int | None = None
    actual_split_key: str | None = None
    actual_split_ts: datetime | None = None
    updated_at: datetime | None = None
    is_new: bool = False
    # Filled by planning:
    timepoints: list[datetime] = field(default_factory=list)
    tp_seqs: list[int] = field(default_factory=list)
    pieces: list = field(default_factory=list)  # weaver.pitr.Piece, for a sequence's first timepoints

    @property
    def child_ids(self) -> tuple[str, str]:
        return child_ids_for(self.source_partition_id, self.weave_id)

    def candidate_timepoints(self, cadence: timedelta, limit: datetime) -> list[datetime]:
        """Timepoints after the last woven one (or from split_ts) on the cadence, up to `limit`."""
        t = self.split_ts if self.last_timepoint is None else self.last_timepoint + cadence
        limit = min(limit, self.window_end)
        out = []
        while t <= limit:
            out.append(t)
            t += cadence
        return out

    def catalog_row(self, updated_at: datetime) -> dict:
        left, right = self.child_ids
        return {
            "weave_id": self.weave_id, "prediction_id": self.prediction_id,
            "source_partition_id": self.source_partition_id, "split_key": self.split_key,
            "split_ts": self.split_ts, "confidence": self.confidence, "window_start": self.window_start,
            "window_end": self.window_end, "child_ids": [left, right], "status": self.status,
            "created_at": self.created_at, "last_timepoint": self.last_timepoint, "last_seq": self.last_seq,
            "actual_split_key": self.actual_split_key, "actual_split_ts": self.actual_split_ts,
            "updated_at": updated_at,
        }


def read_catalog(settings: Settings) -> pa.Table:
    """The woven catalog (empty when nothing was woven yet)."""
    return storage.read(storage.uri_for(settings, storage.WOVEN_CATALOG), storage.WOVEN_CATALOG, missing_ok=True)


def _sequence_from_row(r: dict, lineage: Lineage) -> Sequence:
    p = lineage.get(r["source_partition_id"])
    return Sequence(
        weave_id=r["weave_id"], prediction_id=r["prediction_id"], source_partition_id=r["source_partition_id"],
        key_lo=p.key_lo, key_hi=p.key_hi, split_key=r["split_key"], split_ts=r["split_ts"],
        confidence=float(r["confidence"]), window_start=r["window_start"], window_end=r["window_end"],
        status=r["status"], created_at=r["created_at"], last_timepoint=r["last_timepoint"],
        last_seq=r["last_seq"], actual_split_key=r["actual_split_key"], actual_split_ts=r["actual_split_ts"],
        updated_at=r["updated_at"])


def select_predictions(settings: Settings, *, at: datetime, run_ts: datetime | None = None) -> tuple[datetime | None, pa.Table]:
    """Predictions of the latest run <= `at` (or of `run_ts`): (run_ts, rows)."""
    uri = storage.uri_for(settings, storage.PREDICTIONS)
    if not storage.is_table(uri):
        raise TableNotFoundError(f"no predictions table at {uri}; run `weaver predict --at T` before weaving")
    runs = storage.read(uri, storage.PREDICTIONS, columns=["run_ts"]).column("run_ts")
    if run_ts is not None:
        if run_ts > at:
            raise InvalidParameterError(
                f"--run-ts {run_ts.isoformat()} is after --at {at.isoformat()}: a run may weave only predictions "
                "made by then (no look-ahead)")
        chosen = run_ts
        if not pc.any(pc.equal(runs, pa.scalar(run_ts, storage.TS))).as_py():
            known = sorted({t for t in runs.to_pylist()})[-5:]
            raise InvalidParameterError(
                f"no predictions with run_ts {run_ts.isoformat()}; latest runs: {[t.isoformat() for t in known]}")
    else:
        eligible = runs.filter(pc.less_equal(runs, pa.scalar(at, storage.TS)))
        if len(eligible) == 0:
            return None, storage.empty(storage.PREDICTIONS)
        chosen = pc.max(eligible).as_py()
    rows = storage.read(uri, storage.PREDICTIONS, filters=[("run_ts", "=", pa.scalar(chosen, storage.TS))])
    return chosen, rows


def sequences_for(predictions: pa.Table, lineage: Lineage, threshold: float, at: datetime) -> list[Sequence]:
    """New sequences for the predictions at or above `threshold`, each validated (nothing is
    written when one is malformed: ContractViolation names the prediction)."""
    out = []
    for r in predictions.to_pylist():
        if r["probability"] < threshold:
            continue
        pid, where = r["partition_id"], f"prediction {r['prediction_id']!r} of partition {r['partition_id']!r}"
        p = lineage.by_id.get(pid)
        if p is None:
            raise ContractViolation(f"{where}: the partition is not in the partitions lineage; "
                                    "re-run the forecast on this lake", partition_id=pid)
        k, s = r["split_key"], r["predicted_split_ts"]
        if k is None or s is None:
            raise ContractViolation(f"{where}: probability {r['probability']:.2f} >= {threshold} but no split_key/"
                                    "predicted_split_ts; the forecast must give both for a likely split",
                                    partition_id=pid)
        if not (p.key_lo < k and (p.key_hi is None or k < p.key_hi)):
            raise ContractViolation(f"{where}: split_key {k!r} is not strictly inside the partition's range "
                                    f"[{p.key_lo!r}, {p.key_hi!r}); both children must be non-empty ranges",
                                    partition_id=pid)
        if not (r["window_start"] <= s <= r["window_end"]):
            raise ContractViolation(f"{where}: predicted_split_ts {s.isoformat()} lies outside its window "
                                    f"[{r['window_start'].isoformat()}, {r['window_end'].isoformat()}]",
                                    partition_id=pid)
        wid = weave_id_for(r["prediction_id"])
        out.append(Sequence(weave_id=wid, prediction_id=r["prediction_id"], source_partition_id=pid,
                            key_lo=p.key_lo, key_hi=p.key_hi, split_key=k, split_ts=s,
                            confidence=float(r["probability"]), window_start=r["window_start"],
                            window_end=r["window_end"], status=ACTIVE, created_at=at, is_new=True))
    return out


# --- Spark transforms (DataFrame -> DataFrame) ---------------------------------------------------
# The run's plan (pieces, timepoints, child ids) is small and travels inside the expressions as
# literals: no broadcast joins, so the replay is one scan -> one shuffle (the per-key ordering)
# -> one write, on a laptop or a cluster alike.
def _pieces_lit(todo: list[Sequence]):
    """Literal array<struct>: one entry per (sequence, base piece) with its key range and seq span."""
    from pyspark.sql import functions as F

    return F.array(*[
        F.struct(F.lit(s.weave_id).alias("weave_id"), F.lit(p.key_lo).alias("lo"),
                 F.lit(p.key_hi).cast("string").alias("hi"), F.lit(p.snapshot_id).cast("string").alias("snapshot_id"),
                 F.lit(int(p.base_seq)).cast("long").alias("base_seq"), F.lit(int(s.tp_seqs[-1])).cast("long").alias("end_seq"))
        for s in todo for p in s.pieces])


def _plan_lit(todo: list[Sequence]):
    """Literal map weave_id -> struct(source, split_key, left_id, right_id, tp_us, tp_seqs)."""
    from pyspark.sql import functions as F

    kv = []
    for s in todo:
        left, right = s.child_ids
        kv += [F.lit(s.weave_id), F.struct(
            F.lit(s.source_partition_id).alias("source_partition_id"), F.lit(s.split_key).alias("split_key"),
            F.lit(left).alias("left_id"), F.lit(right).alias("right_id"),
            F.array(*[F.lit(_us(t)).cast("long") for t in s.timepoints]).alias("tp_us"),
            F.array(*[F.lit(int(q)).cast("long") for q in s.tp_seqs]).alias("tp_seqs"))]
    return F.create_map(*kv)


def filter_seq_span(after_seq: int, upto_seq: int) -> Callable:
    """Changes with after_seq < seq <= upto_seq (file skipping on seq stats)."""
    from pyspark.sql import functions as F

    return lambda df: df.where((F.col("seq") > after_seq) & (F.col("seq") <= upto_seq))


def with_weave_of_change(todo: list[Sequence]) -> Callable:
    """One row per (change, sequence) whose piece holds the change's key and whose base precedes
    it (seq in (base_seq, end_seq]); adds weave_id. Overlapping weaves each get their copy."""
    from pyspark.sql import functions as F

    def f(df):
        key, seq = F.col("key"), F.col("seq")
        hits = F.filter(_pieces_lit(todo), lambda p: (key >= p["lo"]) & (p["hi"].isNull() | (key < p["hi"]))
                        & (seq > p["base_seq"]) & (seq <= p["end_seq"]))
        return df.withColumn("_p", F.explode(hits)).withColumn("weave_id", F.col("_p.weave_id")).drop("_p")
    return f


def with_weave_of_snapshot_row(todo: list[Sequence]) -> Callable:
    """Snapshot rows as PUT events at their piece's base seq, cut to the piece's key range."""
    from pyspark.sql import functions as F

    def f(df):
        key, sid = F.col("key"), F.col("snapshot_id")
        hits = F.filter(_pieces_lit(todo), lambda p: (p["snapshot_id"] == sid) & (key >= p["lo"])
                        & (p["hi"].isNull() | (key < p["hi"])))
        return (df.withColumn("_p", F.explode(hits))
                  .select(F.col("_p.weave_id").alias("weave_id"), "key", F.col("_p.base_seq").alias("seq"),
                          F.lit("PUT").alias("op"), "value"))
    return f


def filter_last_timepoint(ext: list[Sequence]) -> Callable:
    """Rows of each extended sequence's last woven timepoint, as PUT events at its last_seq."""
    from pyspark.sql import functions as F

    last_us = F.create_map(*[x for s in ext for x in (F.lit(s.weave_id), F.lit(_us(s.last_timepoint)).cast("long"))])
    last_seq = F.create_map(*[x for s in ext for x in (F.lit(s.weave_id), F.lit(int(s.last_seq)).cast("long"))])

    def f(df):
        wid = F.col("weave_id")
        return (df.where(wid.isin([s.weave_id for s in ext]))
                  .where(F.unix_micros(F.col("timepoint")) == F.element_at(last_us, wid))
                  .select("weave_id", "key", F.element_at(last_seq, wid).alias("seq"), F.lit("PUT").alias("op"),
                          "value"))
    return f


def with_next_seq(df):
    """Add the seq of the key's next event (null: the last), ordering each (weave, key) by seq."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("weave_id", "key").orderBy("seq")
    return df.withColumn("next_seq", F.lead("seq").over(w))


def filter_puts(df):
    """Drop DELETE events: a deleted key is simply absent until its next PUT."""
    from pyspark.sql import functions as F

    return df.where(F.col("op") == "PUT")


def with_plan(todo: list[Sequence]) -> Callable:
    """Add the sequence's plan: source, split_key, child ids, timepoints (epoch us) and their seqs."""
    from pyspark.sql import functions as F

    def f(df):
        plan = F.element_at(_plan_lit(todo), F.col("weave_id"))
        return df.withColumn("_plan", plan).select("*", "_plan.*").drop("_plan")
    return f


def with_timepoint_span(df):
    """Add [i0, i1): the timepoints (0-based) at which an event is its key's live state.

    i0 = number of timepoint seqs < seq (the first timepoint that includes the event);
    i1 = the same for next_seq (the first that includes the key's next event), or all of them.
    """
    from pyspark.sql import functions as F

    seqs = F.col("tp_seqs")
    i0 = F.size(F.filter(seqs, lambda x: x < F.col("seq")))
    i1 = F.when(F.col("next_seq").isNull(), F.size(seqs)).otherwise(
        F.size(F.filter(seqs, lambda x: x < F.col("next_seq"))))
    return df.withColumn("i0", i0).withColumn("i1", i1)


def explode_timepoints(df):
    """One row per (event, timepoint in [i0, i1)) with that timepoint and its seq."""
    from pyspark.sql import functions as F

    return (df.where(F.col("i1") > F.col("i0"))
              .withColumn("i", F.explode(F.sequence(F.col("i0"), F.col("i1") - 1)))
              .withColumn("timepoint", F.timestamp_micros(F.element_at("tp_us", F.col("i") + 1)))
              .withColumn("as_of_seq", F.element_at("tp_seqs", F.col("i") + 1)))


def with_woven_partition(df):
    """Route every row to its hypothetical child by split_key (left holds keys < split_key)."""
    from pyspark.sql import functions as F

    return df.withColumn("woven_partition_id",
                         F.when(F.col("key") < F.col("split_key"), F.col("left_id")).otherwise(F.col("right_id")))


def woven_rows(events, todo: list[Sequence]):
    """Woven snapshot rows (contract columns) from base-plus-change events (weave_id, key, seq, op,
    value) and the sequences' plans (timepoints with their seqs, split key, child ids)."""
    cols = [f.name for f in storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]]
    return (events.transform(with_next_seq)
                  .transform(filter_puts)
                  .transform(with_plan(todo))
                  .transform(with_timepoint_span)
                  .transform(explode_timepoints)
                  .transform(with_woven_partition)
                  .select(*cols))


# --- the weaving run -----------------------------------------------------------------------------
def weave(spark, settings: Settings, *, at: datetime, confidence_threshold: float | None = None,
          run_ts: datetime | None = None) -> dict:
    """Weave the predictions of the latest run <= `at` (or of `run_ts`) and extend active sequences.

    Returns counts: sequences (extended this run), new_sequences, timepoints_written,
    rows_written, version (woven_snapshots' Delta version after the run; None if absent),
    committed (whether this run added a version). Raises TableNotFoundError, ContractViolation
    (a malformed prediction, a gap in the change log), InvalidParameterError; nothing is written then.
    """
    t0 = time.perf_counter()
    at = parse_timepoint(at)
    run_ts = parse_timepoint(run_ts) if run_ts is not None else None
    threshold = check_confidence(settings.confidence_threshold if confidence_threshold is None else confidence_threshold)
    log_uri = storage.uri_for(settings, storage.CHANGELOG)
    if not storage.is_table(log_uri):
        raise TableNotFoundError(f"no change log at {log_uri}; point --lake at a lake with a changelog table")
    lineage = Lineage.load(settings)
    chosen_run, preds = select_predictions(settings, at=at, run_ts=run_ts)
    catalog = read_catalog(settings)
    known = set(catalog.column("weave_id").to_pylist())
    below = sum(1 for p in preds.column("probability").to_pylist() if p < threshold)
    new = [s for s in sequences_for(preds, lineage, threshold, at) if s.weave_id not in known]
    old = [_sequence_from_row(r, lineage) for r in catalog.to_pylist() if r["status"] in EXTENDABLE]
    woven_uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    if old and not storage.is_table(woven_uri):
        # The rows an extension would start from are gone (tier deleted by hand): re-weave from the base.
        for s in old:
            s.last_timepoint = s.last_seq = None
    todo = plan_timepoints(settings, old + new, at)
    summary = {"at": at.isoformat(), "run_ts": chosen_run.isoformat() if chosen_run else None,
               "confidence_threshold": threshold, "below_threshold": below, "new_sequences": len(new),
               "sequences": len(todo), "timepoints_written": sum(len(s.timepoints) for s in todo),
               "rows_written": 0, "committed": False}
    if todo:
        _plan_bases(settings, lineage, todo)
        _check_segment(settings, todo)
        _write_woven(spark, settings, _woven_frame(spark, settings, todo), todo)
        summary["committed"] = True
        summary["rows_written"] = _rows_written(woven_uri)
    for s in todo:
        s.last_timepoint, s.last_seq = s.timepoints[-1], s.tp_seqs[-1]
    changed = {s.weave_id: s for s in new}
    changed.update({s.weave_id: s for s in todo})
    _write_catalog(settings, [s.catalog_row(at) for s in changed.values()])
    summary["version"] = storage.version_of(woven_uri)
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return summary


def plan_timepoints(settings: Settings, seqs: list[Sequence], at: datetime) -> list[Sequence]:
    """Give each sequence the timepoints this run weaves (after its last one, on the cadence,
    <= min(at, window_end) and reached by the change log) with their seqs; return those with any."""
    candidates = {s.weave_id: s.candidate_timepoints(settings.woven_cadence, at) for s in seqs}
    all_tps = sorted({t for tps in candidates.values() for t in tps})
    if not all_tps:
        return []
    max_ts, tp_seq = timepoint_seqs(settings, all_tps)
    seq_of = dict(zip(all_tps, tp_seq))
    todo = []
    for s in seqs:
        s.timepoints = [t for t in candidates[s.weave_id] if max_ts is not None and t <= max_ts]
        s.tp_seqs = [seq_of[t] for t in s.timepoints]
        if s.timepoints:
            todo.append(s)
    return todo


def timepoint_seqs(settings: Settings, tps: list[datetime]) -> tuple[datetime | None, list[int]]:
    """The log's latest ts (None: empty log) and, per sorted timepoint, the largest seq with ts <= it.

    Reads only `seq` and `ts` through delta-rs (file skipping on ts); the change log's seq grows
    with ts (DESIGN §4.5), so one sorted search answers every timepoint.
    """
    import numpy as np

    ds = storage.open_table(storage.uri_for(settings, storage.CHANGELOG), storage.CHANGELOG).to_pyarrow_dataset()
    late = ds.to_table(columns=["ts"], filter=pc.field("ts") >= pa.scalar(tps[0], storage.TS))
    if late.num_rows:
        max_ts = pc.max(late.column("ts")).as_py()
    else:
        head = ds.to_table(columns=["ts"])
        max_ts = pc.max(head.column("ts")).as_py() if head.num_rows else None
    upto = min(tps[-1], max_ts) if max_ts is not None else tps[0]
    t = ds.to_table(columns=["seq", "ts"], filter=pc.field("ts") <= pa.scalar(upto, storage.TS))
    if t.num_rows == 0:
        return max_ts, [0] * len(tps)
    t = t.sort_by([("seq", "ascending")])
    seq = t.column("seq").to_numpy()
    ts = pc.cast(t.column("ts"), pa.int64()).to_numpy()
    idx = np.searchsorted(ts, np.array([_us(x) for x in tps], dtype=np.int64), side="right")
    return max_ts, [int(seq[i - 1]) if i > 0 else 0 for i in idx]


def _plan_bases(settings: Settings, lineage: Lineage, todo: list[Sequence]) -> None:
    """Base pieces: a new sequence starts from snapshots <= its first timepoint's seq (or empty at
    seq 0); an extended one from its own last woven timepoint."""
    from weaver.pitr import Piece, catalog_index, plan_restore, read_catalog as read_snapshot_catalog

    news = [s for s in todo if s.last_timepoint is None]
    idx = catalog_index(read_snapshot_catalog(settings)) if news else {}
    for s in todo:
        if s.last_timepoint is None:
            s.pieces = plan_restore(idx, lineage, s.source_partition_id, s.tp_seqs[0])
        else:
            s.pieces = [Piece(s.key_lo, s.key_hi, None, None, int(s.last_seq))]


def _check_segment(settings: Settings, todo: list[Sequence]) -> None:
    """DESIGN §4.5 before writing: every seq the run replays, (min base, max timepoint seq], is in
    the log exactly once (reads only `seq` through delta-rs; names the offending seq)."""
    from weaver.pitr import check_contiguous

    lo = min(p.base_seq for s in todo for p in s.pieces)
    hi = max(s.tp_seqs[-1] for s in todo)
    try:
        check_contiguous(settings, lo, hi)
    except InvalidTimepointError as exc:
        raise InvalidTimepointError(f"weaving: {exc}; take base snapshots (weaver snapshot) or weave a later "
                                    "window") from exc


def _woven_frame(spark, settings: Settings, todo: list[Sequence]):
    """The woven rows of every (sequence, new timepoint) as a Spark DataFrame."""
    from pyspark.sql import functions as F

    lo = min(p.base_seq for s in todo for p in s.pieces)
    hi = max(s.tp_seqs[-1] for s in todo)
    events = (spark.read.format("delta").load(storage.uri_for(settings, storage.CHANGELOG))
                   .transform(filter_seq_span(lo, hi))
                   .select("seq", "key", "op", "value")
                   .transform(with_weave_of_change(todo))
                   .select("weave_id", "key", "seq", "op", "value"))
    snap_ids = sorted({p.snapshot_id for s in todo for p in s.pieces if p.snapshot_id})
    if snap_ids:
        snaps = (spark.read.format("delta").load(storage.uri_for(settings, storage.SNAPSHOTS))
                      .where(F.col("snapshot_id").isin(snap_ids))
                      .transform(with_weave_of_snapshot_row(todo)))
        events = events.unionByName(snaps)
    ext = [s for s in todo if s.last_timepoint is not None]
    if ext:
        prev = (spark.read.format("delta").load(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))
                     .transform(filter_last_timepoint(ext)))
        events = events.unionByName(prev)
    return woven_rows(events, todo)


def _scope_sql(todo: Iterable[Sequence], alias: str | None = "t") -> str:
    """SQL predicate: the (weave, timepoint) span this run owns (exact, via epoch micros)."""
    a = f"{alias}." if alias else ""
    parts = [f"({a}weave_id = '{s.weave_id}' AND {a}timepoint BETWEEN "
             f"timestamp_micros({_us(s.timepoints[0])}) AND timestamp_micros({_us(s.timepoints[-1])}))"
             for s in todo]
    return "(" + " OR ".join(parts) + ")"


def _write_woven(spark, settings: Settings, out, todo: list[Sequence]) -> None:
    """One Delta commit: the run's rows replace whatever the table holds in the run's own
    (weave, timepoint) span (replaceWhere). Spans are new timepoints, so data skipping on the
    timepoint stats finds nothing to remove; a retry after a lost catalog update replaces its
    own earlier rows instead of duplicating them."""
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    create = not storage.is_table(uri)
    with _SessionConf(spark, _write_conf(settings, create=create)):
        w = out.write.format("delta")
        if create:
            w.mode("errorifexists").partitionBy("weave_id").save(uri)
        else:
            w.mode("overwrite").option("replaceWhere", _scope_sql(todo, alias=None)).save(uri)


def _write_conf(settings: Settings, *, create: bool) -> dict[str, str]:
    conf = {"spark.sql.parquet.compression.codec": "zstd"}
    if create:
        # New-table defaults apply to this table only: the tier's own retention.
        for k, v in _table_properties(settings).items():
            conf["spark.databricks.delta.properties.defaults." + k.removeprefix("delta.")] = v
    return conf


class _SessionConf:
    """Set Spark session confs for one write, restoring the previous values afterwards."""

    def __init__(self, spark, conf: dict[str, str]):
        self.spark, self.conf, self.old = spark, conf, {}

    def __enter__(self):
        for k, v in self.conf.items():
            self.old[k] = self.spark.conf.get(k, None)
            self.spark.conf.set(k, v)
        return self

    def __exit__(self, *exc):
        for k, v in self.old.items():
            if v is None:
                self.spark.conf.unset(k)
            else:
                self.spark.conf.set(k, v)


def _rows_written(uri: str) -> int:
    """Rows the latest commit inserted or updated (from the Delta log's operation metrics)."""
    h = storage.open_table(uri).history(1)
    m = (h[0].get("operationMetrics") or {}) if h else {}
    if "numTargetRowsInserted" in m:
        return int(m.get("numTargetRowsInserted", 0)) + int(m.get("numTargetRowsUpdated", 0))
    return int(m.get("numOutputRows", 0))


def _write_catalog(settings: Settings, rows: list[dict]) -> None:
    """MERGE catalog rows keyed on weave_id (delta-rs, zstd); creates the table with the tier's retention."""
    if not rows:
        return
    from deltalake import WriterProperties, write_deltalake

    uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    table = pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.WOVEN_CATALOG])
    if not storage.is_table(uri):
        write_deltalake(uri, table, mode="overwrite", configuration=_table_properties(settings),
                        writer_properties=WriterProperties(compression=COMPRESSION))
        return
    storage.merge(uri, storage.WOVEN_CATALOG, table, ["weave_id"], compression=COMPRESSION)


# --- lifecycle -----------------------------------------------------------------------------------
def reconcile(settings: Settings, *, at: datetime) -> dict:
    """Move sequences through their lifecycle as of `at` (one delta-rs MERGE on woven_catalog).

    ``confirmed``: a real split of the same parent with split_ts in [window_start, window_end]
    and <= at (records actual_split_key/ts; timing error = actual_split_ts - split_ts);
    ``refuted``: the window closed (at >= window_end) without one; ``expired``: confirmed or
    refuted sequences once ``at >= window_end + woven_retention``. Returns counts per transition,
    the statuses after it, and the confirmed sequences' timing errors in seconds.
    """
    at = parse_timepoint(at)
    catalog = read_catalog(settings)
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS, missing_ok=True)
    by_parent: dict[str, list[dict]] = {}
    for s in sorted(splits.to_pylist(), key=lambda r: (r["split_ts"], r["split_seq"])):
        by_parent.setdefault(s["parent_id"], []).append(s)
    counts = {CONFIRMED: 0, REFUTED: 0, EXPIRED: 0}
    timing: dict[str, float] = {}
    changed = []
    statuses: dict[str, int] = {}
    for r in catalog.to_pylist():
        status = r["status"]
        if status == ACTIVE:
            real = [s for s in by_parent.get(r["source_partition_id"], [])
                    if r["window_start"] <= s["split_ts"] <= r["window_end"] and s["split_ts"] <= at]
            if real:
                r["actual_split_key"], r["actual_split_ts"] = real[0]["split_key"], real[0]["split_ts"]
                status = CONFIRMED
            elif at >= r["window_end"]:
                status = REFUTED
        if status in (CONFIRMED, REFUTED) and at >= r["window_end"] + settings.woven_retention:
            status = EXPIRED
        if status == CONFIRMED and r["actual_split_ts"] is not None:
            timing[r["weave_id"]] = (r["actual_split_ts"] - r["split_ts"]).total_seconds()
        if status != r["status"]:
            counts[status] += 1
            r["status"], r["updated_at"] = status, at
            changed.append(r)
        statuses[status] = statuses.get(status, 0) + 1
    _write_catalog(settings, changed)
    return {"at": at.isoformat(), "confirmed": counts[CONFIRMED], "refuted": counts[REFUTED],
            "expired": counts[EXPIRED], "statuses": statuses, "timing_error_s": timing}


def vacuum_woven(settings: Settings, *, now: datetime) -> dict:
    """Bring the lifecycle up to `now`, delete the rows of expired sequences, and vacuum files the
    woven tier no longer references after its retention (settings.woven_retention).

    Rows of active, confirmed and refuted sequences are never deleted (the delete is scoped to the
    expired weave ids, i.e. to whole weave_id partitions). Time travel reaches back at most the
    retention after this.
    """
    now = parse_timepoint(now)
    rec = reconcile(settings, at=now)
    catalog = read_catalog(settings)
    expired = sorted(w for w, s in zip(catalog.column("weave_id").to_pylist(), catalog.column("status").to_pylist())
                     if s == EXPIRED)
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    deleted, removed = 0, 0
    retention_h = int(settings.woven_retention.total_seconds() // 3600)
    if storage.is_table(uri):
        dt = storage.open_table(uri, storage.WOVEN_SNAPSHOTS)
        present = set()
        if expired:
            meta = dt.to_pyarrow_dataset().to_table(columns=["weave_id"], filter=pc.field("weave_id").isin(expired))
            present = set(meta.column("weave_id").to_pylist())
            deleted = meta.num_rows
        if present:
            from deltalake import WriterProperties

            ids = ", ".join(f"'{w}'" for w in sorted(present))
            dt.delete(f"weave_id IN ({ids})", writer_properties=WriterProperties(compression=COMPRESSION))
        removed += len(dt.vacuum(retention_hours=retention_h, dry_run=False, enforce_retention_duration=False))
    cat_uri = storage.uri_for(settings, storage.WOVEN_CATALOG)
    if storage.is_table(cat_uri):
        removed += len(storage.open_table(cat_uri).vacuum(retention_hours=retention_h, dry_run=False,
                                                          enforce_retention_duration=False))
    return {"now": now.isoformat(), "expired_sequences": len(expired), "newly_expired": rec["expired"],
            "rows_deleted": deleted, "files_removed": removed}


# --- time travel ---------------------------------------------------------------------------------
def woven_as_of(settings: Settings, *, version: int | None = None, timestamp: datetime | None = None,
                weave_id: str | None = None) -> pa.Table:
    """woven_snapshots as it stood after an earlier weaving run (delta-rs time travel).

    `version` is a Delta version (one per weaving run); `timestamp` picks the latest version
    committed at or before it (transaction time). Rows are sorted by (weave_id, timepoint, key).
    """
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    if (version is None) == (timestamp is None):
        raise InvalidParameterError("give exactly one of version or timestamp")
    dt = storage.open_table(uri, storage.WOVEN_SNAPSHOTS)
    try:
        dt.load_as_version(version if version is not None else parse_timepoint(timestamp))
    except Exception as exc:  # noqa: BLE001 - delta-rs raises several types for an unknown version
        raise InvalidParameterError(
            f"woven_snapshots has no version at {version if version is not None else timestamp}: {exc}") from exc
    expr = pc.field("weave_id") == weave_id if weave_id else None
    t = storage.conform(dt.to_pyarrow_dataset().to_table(filter=expr), storage.WOVEN_SNAPSHOTS)
    return t.sort_by([("weave_id", "ascending"), ("timepoint", "ascending"), ("key", "ascending")])


# --- check frame for the GX suite (expectations/woven.json) --------------------------------------
CHECK_COLUMNS = ["weave_id", "timepoint", "as_of_seq", "rows_left", "rows_right", "rows_restore", "missing",
                 "extra", "misrouted", "value_mismatch", "duplicates", "seq_mismatch", "row_diff"]


def woven_check_frame(settings: Settings, *, weave_ids: list[str] | None = None, sample: int | None = 3):
    """Per sampled (weave, timepoint): DESIGN §4.2 counted against the standard PITR restore.

    restore(P, T) comes from ``weaver.pitr.restore_partition`` (base snapshot + Arrow replay, an
    engine independent of this module's Spark replay). Columns: rows_left/right/restore; missing
    (in restore, not woven), extra (woven, not in restore), misrouted (on the wrong side of
    split_key, or under another child id), value_mismatch, duplicates (a key twice at one
    timepoint), seq_mismatch (as_of_seq != the restore's seq), row_diff (left + right - restore).
    Every count is 0 when the woven tier is correct. `sample` timepoints per weave, evenly spaced
    with the first and the last (None or 0: all); expired weaves are skipped.
    """
    import pandas as pd

    from weaver.pitr import restore_partition

    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    catalog = read_catalog(settings)
    rows_out: list[dict] = []
    if catalog.num_rows == 0 or not storage.is_table(uri):
        return pd.DataFrame(rows_out, columns=CHECK_COLUMNS)
    lineage = Lineage.load(settings)
    ds = storage.open_table(uri, storage.WOVEN_SNAPSHOTS).to_pyarrow_dataset()
    for r in catalog.to_pylist():
        if (weave_ids is not None and r["weave_id"] not in weave_ids) or r["status"] == EXPIRED:
            continue
        mine = pc.field("weave_id") == r["weave_id"]
        present = set(ds.to_table(columns=["timepoint"], filter=mine).column("timepoint").unique().to_pylist())
        if r["last_timepoint"] is not None:
            present.add(r["last_timepoint"])  # woven even when its state is empty
        if not present:
            continue
        tps = _sample(sorted(present), sample)
        woven = ds.to_table(filter=mine & pc.field("timepoint").isin(pa.array(tps, storage.TS)))
        left_id, right_id = r["child_ids"]
        k = r["split_key"]
        for tp in tps:
            restored = restore_partition(settings, r["source_partition_id"], tp, lineage=lineage)
            expect = dict(zip(restored.table.column("key").to_pylist(), restored.table.column("value").to_pylist()))
            at_tp = woven.filter(pc.equal(woven.column("timepoint"), pa.scalar(tp, storage.TS))).to_pylist()
            got: dict[str, bytes] = {}
            dup = mis = left = right = seq_bad = 0
            for w in at_tp:
                key, side = w["key"], w["woven_partition_id"]
                dup += key in got
                got[key] = w["value"]
                left += side == left_id
                right += side == right_id
                mis += not ((side == left_id and key < k) or (side == right_id and key >= k))
                seq_bad += w["as_of_seq"] != restored.as_of_seq
            rows_out.append({
                "weave_id": r["weave_id"], "timepoint": tp, "as_of_seq": restored.as_of_seq,
                "rows_left": left, "rows_right": right, "rows_restore": len(expect),
                "missing": sum(1 for key in expect if key not in got),
                "extra": sum(1 for key in got if key not in expect),
                "misrouted": mis,
                "value_mismatch": sum(1 for key, v in got.items() if key in expect and expect[key] != v),
                "duplicates": dup, "seq_mismatch": seq_bad,
                "row_diff": left + right - len(expect),
            })
    return pd.DataFrame(rows_out, columns=CHECK_COLUMNS)


def _sample(items: list, n: int | None) -> list:
    if not n or n <= 0 or len(items) <= n:
        return items
    if n == 1:
        return [items[-1]]
    step = (len(items) - 1) / (n - 1)
    return sorted({items[round(i * step)] for i in range(n)})
