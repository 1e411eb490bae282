"""The Spark folds, as DataFrame -> DataFrame transforms (``with_*`` add columns, ``filter_*`` drop rows).

Both fold base rows (PUT events at their base seq) and changes by KEY RANGE, the last event per
key winning:

* :func:`with_last_state` - the state of each target at ONE seq (whole-table restore, base
  snapshots): ``max_by(op, value)`` per (target, key);
* :func:`woven_rows` - the state of each woven sequence at MANY timepoints: each PUT is live from
  its seq until the key's next event, so it belongs to the timepoints whose seq lies in that
  interval (one broadcast equi-join on the sequence, the interval as its join condition).

The plans (pieces, timepoints, child ids) are small and travel as broadcast frames, so a fold is
one scan -> one shuffle -> one write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Protocol

from weaver.core import storage
from weaver.core.time import to_us
from weaver.log.lineage import Lineage


class WovenPlan(Protocol):
    """What the woven fold needs of one sequence (weaver.weave.plan.Sequence provides it)."""

    weave_id: str
    source_partition_id: str
    split_key: str
    timepoints: list[datetime]  # the timepoints this run weaves
    tp_seqs: list[int]  # seq_at of each timepoint
    pieces: list  # weaver.pitr.Piece bases (key range, snapshot id, base seq)
    last_timepoint: datetime | None
    last_seq: int | None

    @property
    def child_ids(self) -> tuple[str, str]: ...


# The run's plan (pieces, timepoints, child ids) is small: it travels as broadcast frames built
# from Python rows (one createDataFrame each), joined to the events. Literal expressions holding
# the plan (a map or array literal per row expression) were measured to cost the driver 12-45 s
# of analysis and optimisation at 64 sequences (docs/design.md, "Weaving engines"), and
# higher-order functions over a literal array are interpreted per row; a broadcast join is
# compiled, and its size does not grow the plan.
_PIECES = ("_p_weave_id string, _p_lo string, _p_hi string, _p_snapshot_id string, _p_base_seq long, "
           "_p_end_seq long")
_TIMEPOINTS = ("_w string, _tp_us long, _tp_seq long, source_partition_id string, split_key string, "
               "left_id string, right_id string")


def _pieces_frame(spark, todo: list[WovenPlan]):
    """Broadcast frame: one row per (sequence, base piece) with its key range and seq span."""
    from pyspark.sql import functions as F

    rows = [(s.weave_id, p.key_lo, p.key_hi, p.snapshot_id, int(p.base_seq), int(s.tp_seqs[-1]))
            for s in todo for p in s.pieces]
    return F.broadcast(spark.createDataFrame(rows, _PIECES))


def _in_piece():
    from pyspark.sql import functions as F

    return (F.col("key") >= F.col("_p_lo")) & (F.col("_p_hi").isNull() | (F.col("key") < F.col("_p_hi")))


def filter_seq_span(after_seq: int, upto_seq: int) -> Callable:
    """Changes with after_seq < seq <= upto_seq (file skipping on seq stats)."""
    from pyspark.sql import functions as F

    return lambda df: df.where((F.col("seq") > after_seq) & (F.col("seq") <= upto_seq))


def with_weave_of_change(todo: list[WovenPlan]) -> Callable:
    """One row per (change, sequence) whose piece holds the change's key and whose base precedes
    it (seq in (base_seq, end_seq]); adds weave_id. Overlapping weaves each get their copy."""
    from pyspark.sql import functions as F

    def f(df):
        seq = F.col("seq")
        hit = _in_piece() & (seq > F.col("_p_base_seq")) & (seq <= F.col("_p_end_seq"))
        return (df.join(_pieces_frame(df.sparkSession, todo), hit)
                  .select(*[df[c] for c in df.columns], F.col("_p_weave_id").alias("weave_id")))
    return f


def with_weave_of_snapshot_row(todo: list[WovenPlan]) -> Callable:
    """Snapshot rows as PUT events at their piece's base seq, cut to the piece's key range."""
    from pyspark.sql import functions as F

    def f(df):
        hit = (F.col("snapshot_id") == F.col("_p_snapshot_id")) & _in_piece()
        return (df.join(_pieces_frame(df.sparkSession, todo), hit)
                  .select(F.col("_p_weave_id").alias("weave_id"), "key", F.col("_p_base_seq").alias("seq"),
                          F.lit("PUT").alias("op"), "value"))
    return f


def filter_last_timepoint(ext: list[WovenPlan]) -> Callable:
    """Rows of each extended sequence's last woven timepoint, as PUT events at its last_seq."""
    from pyspark.sql import functions as F

    def f(df):
        last = F.broadcast(df.sparkSession.createDataFrame(
            [(s.weave_id, to_us(s.last_timepoint), int(s.last_seq)) for s in ext],
            "_w string, _last_us long, _last_seq long"))
        # The isin stays a literal: it is what prunes woven_snapshots' weave_id partitions.
        return (df.where(F.col("weave_id").isin([s.weave_id for s in ext]))
                  .join(last, (F.col("weave_id") == F.col("_w")) & (F.unix_micros(F.col("timepoint")) == F.col("_last_us")))
                  .select("weave_id", "key", F.col("_last_seq").alias("seq"), F.lit("PUT").alias("op"), "value"))
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


def _timepoints_frame(spark, todo: list[WovenPlan]):
    """Broadcast frame: one row per (sequence, timepoint) - weave_id (as _w), the timepoint, its
    seq, and the sequence's source, split key and child ids."""
    from pyspark.sql import functions as F

    rows = [(s.weave_id, to_us(t), int(q), s.source_partition_id, s.split_key, *s.child_ids)
            for s in todo for t, q in zip(s.timepoints, s.tp_seqs)]
    return F.broadcast(spark.createDataFrame(rows, _TIMEPOINTS))


def with_timepoints(todo: list[WovenPlan]) -> Callable:
    """One row per (PUT event, timepoint of its sequence at which it is its key's live state):
    seq <= the timepoint's seq < next_seq (null next_seq: every later timepoint). Adds timepoint,
    as_of_seq and the sequence's source_partition_id, split_key, left_id, right_id.

    An equi-join on weave_id with the span as its (compiled) condition: each event meets its own
    sequence's timepoints and leaves once per timepoint that holds it - the explode of the span,
    without per-row array functions (higher-order functions are interpreted row by row; measured
    at 256 sequences x 23 timepoints, docs/design.md "Profile of the Spark path"). The broadcast
    holds one row per (sequence, timepoint) of the run - the same data the per-sequence arrays
    held before."""
    from pyspark.sql import functions as F

    def f(df):
        tq = F.col("_tp_seq")
        live = (F.col("seq") <= tq) & (F.col("next_seq").isNull() | (tq < F.col("next_seq")))
        return (df.join(_timepoints_frame(df.sparkSession, todo), (F.col("weave_id") == F.col("_w")) & live)
                  .withColumn("timepoint", F.timestamp_micros(F.col("_tp_us")))
                  .withColumnRenamed("_tp_seq", "as_of_seq")
                  .drop("_w", "_tp_us"))
    return f


def with_woven_partition(df):
    """Route every row to its hypothetical child by split_key (left holds keys < split_key)."""
    from pyspark.sql import functions as F

    return df.withColumn("woven_partition_id",
                         F.when(F.col("key") < F.col("split_key"), F.col("left_id")).otherwise(F.col("right_id")))


def woven_rows(events, todo: list[WovenPlan]):
    """Woven snapshot rows (contract columns) from base-plus-change events (weave_id, key, seq, op,
    value) and the sequences' plans (timepoints with their seqs, split key, child ids)."""
    cols = [f.name for f in storage.SCHEMAS[storage.WOVEN_SNAPSHOTS]]
    return (events.transform(with_next_seq)
                  .transform(filter_puts)
                  .transform(with_timepoints(todo))
                  .transform(with_woven_partition)
                  .select(*cols))


def materialize_with_spark(spark, settings, lineage: Lineage, plans: dict[str, list], seq_t: int):
    """DataFrame (partition_id, key, value): each target's state at `seq_t` from its planned bases
    (`plans`: partition id -> weaver.pitr.Piece list).

    Every piece is replayed from its own base seq, so targets whose bases were taken at
    different times all come out at the same seq (the whole-table restore's coalescing).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    rows = []
    for pid, pieces in plans.items():
        p = lineage.get(pid)
        for piece in pieces:
            lo = max(piece.key_lo, p.key_lo)
            hi = piece.key_hi if p.key_hi is None else (p.key_hi if piece.key_hi is None else min(piece.key_hi, p.key_hi))
            rows.append((pid, lo, hi, piece.snapshot_id, piece.snapshot_partition_id, int(piece.base_seq)))
    schema = StructType([StructField("target", StringType(), False), StructField("lo", StringType(), False),
                         StructField("hi", StringType(), True), StructField("snap_id", StringType(), True),
                         StructField("snap_pid", StringType(), True), StructField("base_seq", LongType(), False)])
    pieces_df = F.broadcast(spark.createDataFrame(rows, schema))
    in_piece = (F.col("key") >= F.col("lo")) & (F.col("hi").isNull() | (F.col("key") < F.col("hi")))
    min_base = min((r[5] for r in rows), default=seq_t)

    changes = (spark.read.format("delta").load(storage.uri_for(settings, storage.CHANGELOG))
               .where((F.col("seq") > min_base) & (F.col("seq") <= seq_t))
               .select("seq", "key", "op", "value"))
    tail = (changes.join(pieces_df, in_piece & (F.col("seq") > F.col("base_seq")))
            .select(F.col("target").alias("partition_id"), "key", "seq", "op", "value"))
    snap_ids = sorted({r[3] for r in rows if r[3]})
    if snap_ids:
        tail = tail.unionByName(base_events(spark, settings, pieces_df, snap_ids, sorted({r[4] for r in rows if r[4]})))
    return tail.transform(with_last_state)


def base_events(spark, settings, pieces_df, snap_ids: list[str], snap_pids: list[str]):
    """The base snapshots' rows as events (partition_id = the piece's target, key, seq = the
    piece's base seq, op PUT, value): each row of snapshot `snap_id` that lies in a piece's
    [lo, hi). `pieces_df` has columns target, lo, hi, snap_id, base_seq (one row per piece)."""
    from pyspark.sql import functions as F

    in_piece = (F.col("key") >= F.col("lo")) & (F.col("hi").isNull() | (F.col("key") < F.col("hi")))
    base = (spark.read.format("delta").load(storage.uri_for(settings, storage.SNAPSHOTS))
            .where(F.col("partition_id").isin(snap_pids) & F.col("snapshot_id").isin(snap_ids))
            .select("snapshot_id", "key", "value"))
    return (base.join(pieces_df, (F.col("snapshot_id") == F.col("snap_id")) & in_piece)
            .select(F.col("target").alias("partition_id"), "key", F.col("base_seq").alias("seq"),
                    F.lit("PUT").alias("op"), "value"))


def with_last_state(events):
    """Events (partition_id, key, seq, op, value) -> state (partition_id, key, value): each key's
    last event by seq, kept when it is a PUT."""
    from pyspark.sql import functions as F

    last = events.groupBy("partition_id", "key").agg(F.max_by(F.struct("op", "value"), "seq").alias("last"))
    return last.where(F.col("last.op") == "PUT").select("partition_id", "key", F.col("last.value").alias("value"))
