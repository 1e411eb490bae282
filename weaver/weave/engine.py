"""Which engine weaves a run, and the Arrow engine's write (single process, delta-rs, no JVM).

Both engines write the same rows (tests/test_weave_engines.py) into ``woven_snapshots`` in ONE
Delta commit: a replaceWhere on the (weave, timepoint) span the run owns, the table partitioned by
weave_id with the tier's own table properties. ``auto`` picks Arrow below
``settings.weave_spark_min_changes`` (the run's work, :func:`run_work`) and Spark at or above it;
the threshold's default is the crossover bench/weave.py measured (docs/design.md, "Weaving engines").
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from weaver.core import storage
from weaver.core import faults
from weaver.core.retry import retry_commit
from weaver.core.scratch import scratch
from weaver.core.settings import Settings
from weaver.core.storage import STATE_SCHEMA, filter_range
from weaver.log.changelog import ChangeLog
from weaver.pitr.restore import SnapshotFiles
from weaver.replay.woven import SCHEMA, WovenStats, woven_batches
from weaver.weave.catalog import COMPRESSION, table_properties
from weaver.weave.files import WovenTable
from weaver.weave.plan import Sequence

ARROW, SPARK, AUTO = "arrow", "spark", "auto"
#: Sequences folded in one pass of the change log: their states are held at once, and delta-rs
#: keeps one open file per weave_id partition, so a run with more sequences makes several passes
#: (still one commit: the passes feed one write).
PASS_SEQUENCES = 32


def run_work(todo: list[Sequence]) -> int:
    """The run's size in change-log rows: per sequence, the seqs between its lowest base and its
    last timepoint (what each sequence's replay spans), summed. Known from the plan, no read."""
    return sum(int(s.tp_seqs[-1]) - min(int(p.base_seq) for p in s.pieces) for s in todo)


def choose_engine(settings: Settings, todo: list[Sequence], *, cluster: bool = False) -> tuple[str, int]:
    """(engine, work): the setting when it names an engine; else Spark on a `cluster` (a session
    whose master is not local: the threshold was measured in local mode, and a job submitted to a
    cluster is there to use it), else Arrow below the threshold."""
    work = run_work(todo)
    if settings.weave_engine != AUTO:
        return settings.weave_engine, work
    return (SPARK if cluster or work >= settings.weave_spark_min_changes else ARROW), work


def on_cluster(spark) -> bool:
    """Whether `spark` is a session on a cluster master (spark://, yarn, k8s), not local[*]."""
    return spark is not None and not str(spark.sparkContext.master).startswith("local")


def _ts_sql(t: datetime) -> str:
    return ("arrow_cast('" + t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "', "
            "'Timestamp(Microsecond, Some(\"UTC\"))')")


def scope_predicate(todo: list[Sequence]) -> str:
    """delta-rs (DataFusion) predicate: the (weave, timepoint) span this run owns, to the microsecond."""
    return "(" + " OR ".join(f"(weave_id = '{s.weave_id}' AND timepoint BETWEEN {_ts_sql(s.timepoints[0])} "
                             f"AND {_ts_sql(s.timepoints[-1])})" for s in todo) + ")"


class _Bases:
    """The files a run's bases are read from, listed once per run (each pass reads its own bases):
    base snapshots through one listing of the snapshots table (:class:`weaver.pitr.restore.SnapshotFiles`),
    an extended sequence's last woven timepoint through the woven tier's file index
    (:class:`weaver.weave.files.WovenTable`). A filtered read per base listed every file of the
    table each time: 0.29 s a sequence on the scale lake's tier, 0.09 s a snapshot."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._snaps: SnapshotFiles | None = None
        self._woven: WovenTable | None = None

    def snapshot(self, snapshot_id: str) -> pa.Table:
        if self._snaps is None:
            self._snaps = SnapshotFiles(self.settings)
        return self._snaps.read(snapshot_id)

    def woven(self, weave_id: str, tp: datetime) -> pa.Table:
        if self._woven is None:
            self._woven = WovenTable.open(self.settings)
            if self._woven is None:  # no tier: the named error of a read
                storage.open_table(storage.uri_for(self.settings, storage.WOVEN_SNAPSHOTS), storage.WOVEN_SNAPSHOTS)
        return self._woven.rows_at(weave_id, tp, ["key", "value"])


def _base_reader(bases: _Bases):
    """base_of(sequence, piece) for the fold: snapshot rows cut to the piece's range, or an
    extended sequence's rows at its last woven timepoint. Snapshots are read once per pass."""
    cache: dict[str, pa.Table] = {}

    def base_of(s: Sequence, piece) -> pa.Table:
        if piece.snapshot_id:
            if piece.snapshot_id not in cache:
                cache[piece.snapshot_id] = bases.snapshot(piece.snapshot_id)
            rows = filter_range(cache[piece.snapshot_id], piece.key_lo or None, piece.key_hi)
        elif s.last_timepoint is not None:
            rows = bases.woven(s.weave_id, s.last_timepoint)
        else:
            return STATE_SCHEMA.empty_table()
        rows = rows.cast(STATE_SCHEMA)
        return rows.sort_by([("key", "ascending")]) if rows.num_rows > 1 else rows

    return base_of


def _batches(settings: Settings, todo: list[Sequence], stats: WovenStats):
    """The run's passes, PASS_SEQUENCES sequences each, grouped by the seq span they replay: a
    pass reads the log from its lowest base to its last timepoint, so one sequence from a day-old
    snapshot among extensions of an hour made that pass read the day (in the run's own order, 23
    passes of a 722-sequence run on the scale lake each read a day: 592 s of window reads)."""
    log = ChangeLog(settings)
    bases = _Bases(settings)
    order = sorted(todo, key=lambda s: (min(int(p.base_seq) for p in s.pieces), int(s.tp_seqs[-1]), s.weave_id))
    for i in range(0, len(order), PASS_SEQUENCES):
        yield from woven_batches(log, order[i:i + PASS_SEQUENCES], _base_reader(bases), stats)


def write_woven_arrow(settings: Settings, todo: list[Sequence]) -> WovenStats:
    """Weave `todo` with the Arrow fold and write the rows in one delta-rs commit (replaceWhere on
    the run's span; creates the table partitioned by weave_id with the tier's properties).

    The pass first spools its batches to a local Arrow IPC stream (lz4), then delta-rs writes from
    that file. Why not hand delta-rs a Python generator: it pulls batches on a worker of its async
    runtime, where the pass's own delta-rs reads cannot run (a panic, or - with the pass on
    another thread - a deadlock once two writes occupy the workers). Memory stays bounded by the
    pass; the spool costs local disk of about the run's rows (compressed), in a scratch folder
    that the next run on the host removes if this process is killed (weaver.core.scratch).
    """
    from deltalake import WriterProperties, write_deltalake

    uri = storage.uri_for(settings, storage.WOVEN_SNAPSHOTS)
    props = WriterProperties(compression=COMPRESSION)
    with scratch("weave") as tmp:
        spool = str(Path(tmp) / "woven.arrows")
        stats = WovenStats()
        opts = pa.ipc.IpcWriteOptions(compression="lz4")
        with pa.OSFile(spool, "wb") as sink, pa.ipc.new_stream(sink, SCHEMA, options=opts) as out:
            for batch in _batches(settings, todo, stats):
                out.write_batch(batch)

        def attempt() -> None:
            # Decided per try: a writer that lost the race to create the table retries as replaceWhere.
            create = not storage.is_table(uri)
            # Tests line two writers up here, after both decided (tests/test_concurrency.py).
            faults.point("weave.arrow_commit")
            with pa.OSFile(spool, "rb") as src:
                reader = pa.ipc.open_stream(src)
                if create:
                    # Of two racing creators one wins; the loser retries as a replaceWhere.
                    storage.create_table(uri, reader, partition_by=["weave_id"],
                                         configuration=table_properties(settings), writer_properties=props)
                else:
                    write_deltalake(uri, reader, mode="overwrite", predicate=scope_predicate(todo),
                                    writer_properties=props, storage_options=storage.options(uri))

        retry_commit(attempt, what="weave: write woven_snapshots", attempts=settings.commit_retries)
    return stats
