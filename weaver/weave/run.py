"""The weaving run (DESIGN §3 woven tier, §4.2): Spark or Arrow replays, one Delta commit per run.

Runs are incremental. A run at ``at`` registers the new predictions' sequences in
``woven_catalog`` and extends every extendable sequence (``active`` or ``confirmed``) with the
timepoints whose data has arrived, starting from the state at the sequence's last woven timepoint
(read back from ``woven_snapshots``), not from the base snapshot. The woven rows of a run go into
``woven_snapshots`` in ONE Delta commit (a replaceWhere on the (weave, timepoint) span the run
owns, partitioned by weave_id), so a rerun of the same interval writes nothing and
``VERSION AS OF`` answers "what did we believe then". The replay is
:func:`weaver.replay.spark.woven_rows` (Spark) or :func:`weaver.replay.woven.woven_batches`
(Arrow, one process, no JVM); :mod:`weaver.weave.engine` picks one per run by its size.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Iterable

from weaver.core import storage
from weaver.core.errors import InvalidParameterError, TableNotFoundError
from weaver.core import faults
from weaver.core.ids import EXTENDABLE, STAGED, UNPUBLISHED
from weaver.core.retry import retry_commit
from weaver.core.settings import Settings
from weaver.core.time import parse_timepoint, to_us
from weaver.log.lineage import Lineage
from weaver.predict.models import DEFAULT_MODEL
from weaver.replay.spark import (
    filter_last_timepoint,
    filter_seq_span,
    with_weave_of_change,
    with_weave_of_snapshot_row,
    woven_rows,
)
from weaver.weave.catalog import read_woven_catalog, table_properties, write_woven_catalog
from weaver.weave.engine import ARROW, choose_engine, on_cluster, write_woven_arrow
from weaver.weave.plan import Sequence, check_segment, plan_bases, plan_timepoints, select_predictions, sequence_from_row, sequences_for


def weave(spark, settings: Settings, *, at: datetime, confidence_threshold: float | None = None,
          run_ts: datetime | None = None, model: str | None = None, stage: bool = False) -> dict:
    """Weave the predictions of `model` from its latest run <= `at` (or from its run `run_ts`) and
    extend active sequences.

    `model` None is the pipeline's default model (``weaver.predict.models.DEFAULT_MODEL``, what
    ``weaver predict`` writes without ``--model``); other models' rows at the same instant (a
    backtest's backfill, a second forecast) are never woven by this run.

    Returns model and counts: sequences (extended this run), new_sequences, timepoints_written,
    rows_written, version (woven_snapshots' Delta version after the run; None if absent),
    committed (whether this run added a version), engine ('arrow' | 'spark', chosen per run by
    settings.weave_engine / weave_spark_min_changes; None when nothing was due) and work_changes.
    `spark` may be None: a session is started only if Spark is chosen. Raises TableNotFoundError, ContractViolation
    (a malformed prediction, a gap in the change log), InvalidParameterError; nothing is written then.

    With `stage` (every entry point: the DAG's spark job, ``weaver weave``) the sequences this run
    writes land in the catalog as ``staged``: never served, never extended, until the `woven`
    check (:func:`weaver.pipeline.gate_weaves`) publishes them as ``active`` or quarantines them.
    """
    t0 = time.perf_counter()
    summary, lineage, seqs, at = _predicted_sequences(settings, at, confidence_threshold, run_ts, model)
    summary.update(weave_sequences(spark, settings, lineage, seqs, at=at, stage=stage))
    summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return summary


def planned_engine(settings: Settings, *, at: datetime, confidence_threshold: float | None = None,
                   run_ts: datetime | None = None, model: str | None = None) -> dict:
    """The engine :func:`weave` with no session would choose for this run, from its plan alone
    (catalog, predictions, lineage, snapshot catalog: no change-log data is read, nothing written).

    For a scheduler deciding before it starts anything: the DAG submits a Spark job only for a run
    big enough for Spark. Returns engine ('arrow' | 'spark' | None when nothing is due),
    work_changes and sequences. Raises what :func:`weave` raises for bad input.
    """
    summary, lineage, seqs, at = _predicted_sequences(settings, at, confidence_threshold, run_ts, model)
    todo = _due(settings, seqs, at)
    if not todo:
        return {"engine": None, "work_changes": 0, "sequences": 0}
    plan_bases(settings, lineage, todo)
    engine, work = choose_engine(settings, todo)
    return {"engine": engine, "work_changes": work, "sequences": len(todo)}


def _predicted_sequences(settings: Settings, at, confidence_threshold, run_ts, model):
    """(summary so far, lineage, sequences to weave, at): the new predictions' (of `model`, None:
    the default model) sequences above the threshold plus every extendable one in the catalog."""
    at = parse_timepoint(at)
    run_ts = parse_timepoint(run_ts) if run_ts is not None else None
    model = DEFAULT_MODEL if model is None else model
    if not isinstance(model, str) or not model.strip():
        raise InvalidParameterError(f"model {model!r}: name the forecast model whose predictions to weave")
    threshold = settings.confidence(confidence_threshold)
    log_uri = storage.uri_for(settings, storage.CHANGELOG)
    if not storage.is_table(log_uri):
        raise TableNotFoundError(f"no change log at {log_uri}; point --lake at a lake with a changelog table")
    lineage = Lineage.load(settings)
    chosen_run, preds = select_predictions(settings, at=at, run_ts=run_ts, model=model)
    catalog = read_woven_catalog(settings)
    known = set(catalog.column("weave_id").to_pylist())
    new = [s for s in sequences_for(preds, lineage, threshold, at) if s.weave_id not in known]
    below = sum(1 for p in preds.column("probability").to_pylist() if p < threshold)  # validated just above
    old = [sequence_from_row(r, lineage) for r in catalog.to_pylist() if r["status"] in EXTENDABLE]
    summary = {"at": at.isoformat(), "model": model, "run_ts": chosen_run.isoformat() if chosen_run else None,
               "confidence_threshold": threshold, "below_threshold": below, "new_sequences": len(new)}
    return summary, lineage, old + new, at


def _due(settings: Settings, seqs: list[Sequence], at: datetime) -> list[Sequence]:
    """The sequences with timepoints due by `at` and reached by the log, each with those timepoints."""
    gone = not storage.is_table(storage.uri_for(settings, storage.WOVEN_SNAPSHOTS))
    for s in seqs:
        # Only a published, extendable sequence's last timepoint is a base to extend from: an
        # expired one's rows may be vacuumed, a quarantined or staged one's failed (or never had)
        # their audit, and with the tier deleted by hand they are all gone. Re-weave from the base.
        if gone or s.status not in EXTENDABLE:
            s.last_timepoint = s.last_seq = None
    return plan_timepoints(settings, seqs, at)


def weave_sequences(spark, settings: Settings, lineage: Lineage, seqs: list[Sequence], *, at: datetime,
                    stage: bool = False) -> dict:
    """The weaving run proper: weave the timepoints of `seqs` that are due by `at` and reached by
    the change log (one Delta commit), then MERGE the catalog rows of the new and advanced ones.

    Predicted runs (:func:`weave`) and what-if weaves (:mod:`weaver.whatif`) both come through
    here, so they keep the same invariants. With `stage` the written sequences' catalog rows are
    ``staged`` (see :func:`weave`). Returns sequences, timepoints_written, rows_written, staged,
    committed, version, engine ('arrow' | 'spark'; None when nothing was due) and work_changes
    (the run's size that chose the engine, :func:`weaver.weave.engine.run_work`). `spark` may be
    None: a session is started only when the engine chosen is Spark. A woven root inside a lake
    (:func:`weaver.core.storage.check_woven_root`) or a cadence giving a sequence more than
    MAX_TIMEPOINTS timepoints is InvalidParameterError before anything is written.
    """
    # A woven root from the environment or the spark job (the CLI checks its --woven-root itself).
    storage.check_woven_root(settings, what="woven root (WEAVER_WOVEN_ROOT / --woven-root)")
    woven_uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    todo = _due(settings, seqs, at)
    summary = {"sequences": len(todo), "timepoints_written": sum(len(s.timepoints) for s in todo),
               "rows_written": 0, "committed": False, "engine": None, "work_changes": 0}
    if todo:
        plan_bases(settings, lineage, todo)
        check_segment(settings, lineage, todo)
        engine, summary["work_changes"] = choose_engine(settings, todo, cluster=on_cluster(spark))
        summary["engine"] = engine
        if stage:
            # An extension's new timepoints must not be served before their audit, and readers
            # serve what woven_snapshots holds for a published weave. So the catalog rows of the
            # published sequences this run extends go `staged` BEFORE the data commit (rows
            # unchanged otherwise: last_timepoint still the audited one): a crash between the two
            # commits leaves them staged - never served - until the gate audits them (it audits
            # what a crashed run left staged) and publishes them as `active` (reconcile then
            # re-derives `confirmed`). New sequences have no catalog row yet: nothing to hide.
            hide = [s for s in todo if not s.is_new and s.status not in UNPUBLISHED]
            write_woven_catalog(settings, [{**s.catalog_row(at), "status": STAGED} for s in hide])
        faults.point("weave.before_data")
        if engine == ARROW:
            summary["rows_written"] = write_woven_arrow(settings, todo).rows
        else:
            if spark is None:
                # Callers that may weave with Arrow pass no session: a JVM only when Spark is chosen.
                from weaver.core.spark import get_spark

                spark = get_spark(settings, "weaver-weave")
            _write_woven(spark, settings, _woven_frame(spark, settings, todo), todo)
            summary["rows_written"] = _rows_written(woven_uri)
        summary["committed"] = True
    for s in todo:
        s.last_timepoint, s.last_seq = s.timepoints[-1], s.tp_seqs[-1]
    changed = {s.weave_id: s for s in seqs if s.is_new}
    changed.update({s.weave_id: s for s in todo})
    if stage:
        for s in changed.values():
            s.status = STAGED
    summary["staged"] = sorted(changed) if stage else []
    # Between the two commits a crash leaves woven rows of new sequences no catalog row points at
    # and, with `stage`, extensions whose catalog rows were staged above: invisible to readers
    # either way; the rerun's replaceWhere replaces the rows.
    faults.point("weave.before_catalog")
    write_woven_catalog(settings, [s.catalog_row(at) for s in changed.values()])
    summary["version"] = storage.version_of(woven_uri)
    return summary


def _woven_frame(spark, settings: Settings, todo: list[Sequence]):
    """The woven rows of every (sequence, new timepoint) as a Spark DataFrame."""
    from pyspark.sql import functions as F

    lo = min(p.base_seq for s in todo for p in s.pieces)
    hi = max(s.tp_seqs[-1] for s in todo)
    events = (spark.read.format("delta").load(storage.uri_for(settings, storage.CHANGELOG))
                   .transform(filter_seq_span(lo, hi))
                   .select("seq", "key", "op", "value")
                   # Spread the changes over the tasks by key before the per-piece join: a log
                   # compacted into one file (one row group) is one scan task, which would otherwise
                   # do the join alone. Key partitioning also satisfies the fold's per-(weave, key)
                   # window, so a run without base rows shuffles once (Spark 4.0's Union does not
                   # keep it: with snapshot or extension rows the window shuffles again).
                   .repartition("key")
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
    n = weave_tasks(settings, todo)
    if n:
        # A large run: every weave's events to one task of n. The fold's (weave, key) window needs
        # no other shuffle, each weave's rows come out of one task (one file per weave, not one per
        # weave per task), and a task's output - which its writer sorts by weave_id - is bounded by
        # WEAVE_TIMEPOINTS_PER_TASK timepoints instead of growing with the run.
        events = events.repartition(n, "weave_id")
    return woven_rows(events, todo)


#: A large run's shuffle gives each task about this many (sequence, timepoint) pairs to write.
WEAVE_TIMEPOINTS_PER_TASK = 32


def weave_tasks(settings: Settings, todo: list[Sequence]) -> int:
    """Tasks of a large run's fold and write (0: a run of at most CONCURRENT_WRITERS sequences,
    which keeps the key partitioning and writes through concurrent writers without a sort).

    Measured at 23 M changes (bench/scale.py, 851 sequences, 18,796 timepoints): with the session's
    4 shuffle partitions each task's sort spilled so often that merging its spill files ran the
    1 GiB heap out of memory. A weave is one partition's key range, which splits at the size
    threshold, so a task holding a few whole weaves has bounded rows."""
    if not _large_run(len(todo)):
        return 0
    timepoints = sum(len(s.timepoints) for s in todo)
    want = -(-timepoints // WEAVE_TIMEPOINTS_PER_TASK)
    return min(len(todo), max(settings.spark_shuffle_partitions, want))


def _scope_sql(todo: Iterable[Sequence], alias: str | None = "t") -> str:
    """SQL predicate: the (weave, timepoint) span this run owns (exact, via epoch micros)."""
    a = f"{alias}." if alias else ""
    parts = [f"({a}weave_id = '{s.weave_id}' AND {a}timepoint BETWEEN "
             f"timestamp_micros({to_us(s.timepoints[0])}) AND timestamp_micros({to_us(s.timepoints[-1])}))"
             for s in todo]
    return "(" + " OR ".join(parts) + ")"


def _write_woven(spark, settings: Settings, out, todo: list[Sequence]) -> None:
    """One Delta commit: the run's rows replace whatever the table holds in the run's own
    (weave, timepoint) span (replaceWhere). Spans are new timepoints, so data skipping on the
    timepoint stats finds nothing to remove; a retry after a lost catalog update replaces its
    own earlier rows instead of duplicating them."""
    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)

    def attempt() -> None:
        # Decided per try: a writer that lost the race to create the table retries as replaceWhere.
        create = not storage.is_table(uri)
        with _SessionConf(spark, _write_conf(settings, create=create, sequences=len(todo))):
            w = out.write.format("delta")
            if create:
                w.mode("errorifexists").partitionBy("weave_id").save(uri)
            else:
                w.mode("overwrite").option("replaceWhere", _scope_sql(todo, alias=None)).save(uri)

    retry_commit(attempt, what="weave: write woven_snapshots", attempts=settings.commit_retries)


#: Runs of at most this many sequences write one open file per weave_id per task, without a sort.
CONCURRENT_WRITERS = 64


def _large_run(sequences: int) -> bool:
    """A run past CONCURRENT_WRITERS: shuffled by weave_id (weave_tasks) and written through the sort."""
    return sequences > CONCURRENT_WRITERS


def _write_conf(settings: Settings, *, create: bool, sequences: int) -> dict[str, str]:
    # Concurrent writers: the rows reach the writer clustered by key, not by weave_id, and Delta's
    # writer would otherwise sort them by its partition column first (measured: 1.8 GB spilled at
    # 64 sequences with local mode's 1 GiB heap). Only for runs of up to CONCURRENT_WRITERS
    # sequences (64: measured to fit that heap): past the limit Spark keeps the files it opened
    # open while it sorts the rest, and at 1,339 sequences with a limit of 128 the open Parquet
    # writers alone exhausted the heap (OutOfMemoryError, bench/scale.py's loop weave). Larger
    # runs sort (spilling, never failing).
    large = _large_run(sequences)
    conf = {"spark.sql.parquet.compression.codec": "zstd",
            "spark.sql.maxConcurrentOutputFileWriters": str(0 if large else CONCURRENT_WRITERS)}
    if large:
        # Delta checks every written row against the replaceWhere predicate, one OR term per
        # sequence: past a few dozen terms the check's code exceeds Janino's 64 KB method limit
        # and runs interpreted (measured at 851 sequences: the write's tasks spent their time in
        # that OR chain). The rows are the plan's own (weave, timepoint) pairs, inside the scope
        # by construction; the predicate still selects the rows the commit replaces.
        conf["spark.databricks.delta.replaceWhere.constraintCheck.enabled"] = "false"
    if create:
        # New-table defaults apply to this table only: the tier's own retention.
        for k, v in table_properties(settings).items():
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
