"""Split prediction (DESIGN §5): per partition, forecast size and write rate, count crossing paths.

A run at instant ``at`` looks only at data with ``ts <= at`` (DESIGN §4.4):

1. The partitions active at ``at`` (created at or before it, not retired by then: a retirement
   recorded later in the lineage is ignored, it had not happened yet).
2. Their history on the bucket grid over ``[at - history, last complete bucket end]``: own
   `partition_metrics` rows (computed in memory from the change log when the table lacks them),
   and, for buckets before a partition existed, what its key range measured inside its
   ancestors (so a child split off yesterday still has a week of history).
3. Per partition, predictive sample paths of size (bytes) and write rate (writes/s) at the bucket
   ends inside the window, from Prophet (default) or SARIMAX; ``probability`` is the share of
   paths where size or write rate exceeds its threshold; ``predicted_split_ts`` and p10/p90 are
   quantiles of the first crossing among the crossing paths; ``reason`` is the threshold most
   paths cross first. Fits run in parallel (processes; Spark ``applyInPandas`` on a cluster).
4. The split key from the partition's state at ``at`` (see `weaver.splitkey`).

Partitions that cannot be forecast get a row with ``probability = 0`` and a ``skip_reason``; so do
partitions that cannot reach a threshold within the window under a conservative envelope of their
history (``unreachable ...``, `weaver.predict.triage`): they are never fitted.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import storage
from weaver.core.errors import InvalidParameterError, InvalidTimepointError
from weaver.core.ids import STAGED, prediction_id
from weaver.core.spark import get_spark
from weaver.core.time import bucket_us, format_duration, from_us, parse_duration, parse_timepoint, to_us
from weaver.log.changelog import last_change_ts
from weaver.log.lineage import Lineage, Partition
from weaver.predict import calibration as _calibration
from weaver.predict import metrics, splitkey
from weaver.predict import models as _models
from weaver.predict import triage as _triage

MODELS = _models.MODELS
DEFAULT_MODEL = _models.DEFAULT_MODEL
#: The longest window a run accepts. The models extrapolate at most `settings.forecast_history`
#: (7 d by default) of hourly history and draw a sample path per bucket end of the window; a
#: window of years asked for ~10^5 bucket ends per path and ran out of memory (every row then
#: skipped as ``MemoryError``, a wrong answer that looked like one). 30 d is four histories.
MAX_WINDOW = timedelta(days=30)


# --- parameters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunParams:
    """Validated parameters of one prediction run."""

    at: datetime
    window: timedelta
    model: str
    size_threshold: float
    write_threshold: float
    confidence_threshold: float
    bucket: timedelta
    history: timedelta
    min_history: int
    samples: int


def run_params(settings, *, at: datetime, window: timedelta | str | None = None, model: str = DEFAULT_MODEL,
               size_threshold: float | None = None, write_threshold: float | None = None) -> RunParams:
    """Check a run's parameters (named errors, nothing touched) and fill defaults from settings."""
    at = parse_timepoint(at)
    if model not in MODELS:
        raise InvalidParameterError(f"model {model!r} is unknown; choose one of {', '.join(MODELS)}")
    window = parse_duration(window) if window is not None else settings.window
    if window < settings.bucket:
        raise InvalidParameterError(
            f"window {format_duration(window)} is shorter than one metrics bucket ({format_duration(settings.bucket)}); "
            "use a longer --window")
    if window > MAX_WINDOW:
        raise InvalidParameterError(
            f"window {format_duration(window)} is longer than {format_duration(MAX_WINDOW)}, the longest a forecast "
            f"extrapolates its history over; use a shorter --window")
    if at > datetime.max.replace(tzinfo=at.tzinfo) - window:
        raise InvalidTimepointError(f"{at.isoformat()} + the window {format_duration(window)} lies past year 9999; "
                                    "pick an earlier run time")
    size_t = float(settings.size_threshold_bytes if size_threshold is None else size_threshold)
    write_t = float(settings.write_threshold_per_s if write_threshold is None else write_threshold)
    for name, v in (("size threshold", size_t), ("write threshold", write_t)):
        if not math.isfinite(v) or v <= 0:
            raise InvalidParameterError(f"{name} {v!r} must be a positive number")
    return RunParams(at, window, model, size_t, write_t, settings.confidence(), settings.bucket,
                     settings.forecast_history, settings.min_history_buckets, int(settings.forecast_samples))


def check_in_history(settings, params: RunParams) -> None:
    """Refuse a run later than one window past the change log's last change (named errors, nothing
    touched; a missing lake is a `TableNotFoundError`). Such a run would measure empty buckets from the
    log's end up to it - 3 million metrics rows for a run in 2100 - and forecast nothing real. A live
    run at the log's end, or a little after it (a quiet hour), is in range. One read of the newest
    change-log files' statistics (`weaver.log.changelog.last_change_ts`)."""
    last = last_change_ts(settings)
    if last is not None and params.at > last + params.window:
        raise InvalidTimepointError(
            f"{params.at.isoformat()} is more than one window ({format_duration(params.window)}) past the change "
            f"log's last change ({last.isoformat()}); nothing is known there yet - pick an earlier run time")


# --- inputs of a run -----------------------------------------------------------------------------
@dataclass
class PartitionInput:
    """What a run knows about one active partition at `at`."""

    partition: Partition
    ds: np.ndarray  # us, bucket ends
    size: np.ndarray
    rate: np.ndarray  # writes/s
    skip_reason: str | None = None
    size_key: str | None = None
    throughput_key: str | None = None


@dataclass
class RunInput:
    params: RunParams
    horizon: np.ndarray  # us, bucket ends in (at, at + window]
    partitions: list[PartitionInput] = field(default_factory=list)
    metrics_source: str = "table"


def run_horizon(p: RunParams) -> np.ndarray:
    """The bucket ends (us) a run at ``p.at`` scores crossings on: those inside its window."""
    bu = bucket_us(p.bucket)
    at_us = to_us(p.at)
    first = (at_us // bu + 1) * bu
    last = ((at_us + bucket_us(p.window)) // bu) * bu
    return np.arange(first, last + 1, bu, dtype=np.int64)


def key_span(parts: Sequence[Partition]) -> tuple[str, str | None]:
    """The smallest key range [lo, hi) holding every partition of `parts` (hi None: unbounded)."""
    lo = min(p.key_lo or "" for p in parts)
    his = [p.key_hi for p in parts]
    return lo, (None if any(h is None for h in his) else max(his))


def batches(active: Sequence[Partition], size: int) -> list[list[Partition]]:
    """`active` (sorted by key range) cut into runs of `size` neighbouring partitions (``size <= 0``:
    one batch). Each batch's key span (`key_span`) is then a contiguous slice of the key space."""
    parts = list(active)
    if size <= 0 or len(parts) <= size:
        return [parts] if parts else []
    return [parts[i:i + size] for i in range(0, len(parts), size)]


#: The change log's first bucket, from the Delta file statistics (see `metrics.log_first_bucket`).
log_first_bucket = metrics.log_first_bucket


def gather(settings, params: RunParams, *, lineage: Lineage | None = None,
           partitions: Sequence[Partition] | None = None, first_us: int | None = None) -> RunInput:
    """Histories, skip reasons and split keys of the partitions active at ``params.at``.

    With `partitions` (a batch of them, `batches`) only those, reading only their key span of the
    change log and of the checkpoint state: the memory follows the batch, not the table.
    `first_us` is then the table's first bucket when no checkpoint applies (`log_first_bucket`).
    """
    at = params.at
    bu = bucket_us(params.bucket)
    bucket_s = params.bucket.total_seconds()
    at_us = to_us(at)
    last_end = (at_us // bu) * bu  # end of the last complete bucket
    lineage = lineage or Lineage.load(settings)
    active = list(partitions) if partitions is not None else lineage.active_at_ts(at)
    run = RunInput(params, run_horizon(params))
    if not active:
        return run
    ranges = [key_span(active)] if partitions is not None else None
    # The state at `at` (split keys, the last bucket's writes) folds from the latest checkpoint at
    # or before `at - bucket`: only the increment since it is read (of the batch's key span only).
    log, ck, _ = metrics.fold_from(settings, at_us - bu + 1, upto=at, ranges=ranges)
    if ck is None and log.base_ts is not None and at_us < log.base_ts:
        raise InvalidTimepointError(
            f"{at.isoformat()} is before the retained change log (vacuum kept changes from "
            f"{from_us(log.base_ts).isoformat()} on); pick a later run time")
    if ck is not None:
        first_bucket = ck.first_us
    elif ranges is None or log.base_ts is not None:
        first_bucket = log.first_bucket(bu)
    else:
        first_bucket = first_us if first_us is not None else log_first_bucket(settings, at, bu)
    first_bucket = last_end if first_bucket is None else first_bucket
    hist_start = max(first_bucket, last_end - bucket_us(params.history))
    hist_start = min(hist_start, last_end)
    hist_log: list = []

    def history_log():
        """The log from the history's start on: the latest checkpoint at or before it (never one
        past it: a backtest at a past instant folds from an older one or the log's start)."""
        if not hist_log:
            hist_log.append(log if ck is None else metrics.fold_from(settings, hist_start, upto=at, ranges=ranges)[0])
        return hist_log[0]

    # Own buckets: those starting at or after the partition's creation (a bucket it was born
    # inside belongs to its range history, which counts the whole bucket's writes).
    def own_buckets(p: Partition) -> range:
        born = -((-to_us(p.created_ts)) // bu) * bu
        return range(max(born, hist_start), last_end, bu)

    # A batch computes lagging metrics for its own partitions only (its log holds only their keys).
    own_rows = _own_metrics(settings, history_log, active if ranges is not None else lineage, active, hist_start,
                            last_end, params, own_buckets, run)
    # Range history before birth, for the partitions born inside the history (one fold of the log).
    young = [p for p in active if own_buckets(p).start > hist_start or not len(own_buckets(p))]
    rh = {}
    if young and last_end > hist_start:
        hl = history_log()
        got = metrics.range_history(hl, [(p.key_lo, p.key_hi) for p in young], start=from_us(hist_start),
                                    end=from_us(last_end), bucket=params.bucket)
        rh = {p.partition_id: r for p, r in zip(young, got)}

    state = metrics.KeyState(log)
    state.advance(log.n)
    recent_lo = log.pos_before_ts(at_us - bu + 1)  # writes with ts in (at - bucket, at]
    recent = log.kidx[recent_lo:]
    for p in active:
        own = own_buckets(p)
        ds, size, writes = [], [], []
        r = rh.get(p.partition_id)
        if r is not None:
            pre = r["bucket_start"] < (own.start if len(own) else last_end)
            ds += list(r["bucket_start"][pre] + bu)
            size += list(r["size_bytes"][pre])
            writes += list(r["writes"][pre])
        for b in own:
            row = own_rows.get((p.partition_id, b))
            if row is None:  # cannot happen with computed metrics; keep the series dense anyway
                continue
            ds.append(b + bu)
            size.append(row[0])
            writes.append(row[1])
        pin = PartitionInput(p, np.asarray(ds, np.int64), np.asarray(size, float),
                             np.asarray(writes, float) / bucket_s)
        # A partition born within the last bucket is forecast like any other: its history is its
        # key range's (the bucket it was born inside included, counted whole). Skipping it until it
        # had a bucket of its own gave every child probability 0 for its first hour, when a
        # fast-growing range's next split is as predictable as ever (docs/prediction.md §8,
        # fifteenth pass: tuning seeds 100-104, 4-day lakes, path + `auto`, hourly Brier
        # 0.1250 -> 0.1227, grid 0.1119 -> 0.1108; 8-day 0.0735 -> 0.0732, grid 0.0678 -> 0.0674).
        if len(ds) < params.min_history:
            pin.skip_reason = (f"too little history: {len(ds)} complete buckets before the run, "
                               f"{params.min_history} needed")
        elif np.all(pin.size == pin.size[0]) and np.all(pin.rate == pin.rate[0]):
            pin.skip_reason = (f"constant series: size {int(pin.size[0])} B and write rate {pin.rate[0]:.3g}/s "
                               f"unchanged over {len(ds)} buckets; nothing to extrapolate")
        i0, i1 = log.key_index(p.key_lo), log.key_index(p.key_hi, upper=True)
        keys, item_bytes = state.items(i0, i1)
        pin.size_key = splitkey.size_split_key(keys, item_bytes)
        w = recent[(recent >= i0) & (recent < i1)]
        pin.throughput_key = splitkey.throughput_split_key(log.universe[np.sort(w)], keys) if len(w) else None
        run.partitions.append(pin)
    return run


def _own_metrics(settings, history_log, lineage, active, hist_start, last_end, params, own_buckets, run) -> dict:
    """{(partition_id, bucket_start us): (size_bytes, writes)} from the table, or computed."""
    need = {(p.partition_id, b) for p in active for b in own_buckets(p)}
    if not need:
        return {}
    t = metrics.read_metrics(settings, partition_ids=[p.partition_id for p in active],
                             start=from_us(hist_start), end=from_us(last_end))
    have = _rows_by_key(t)
    if need <= have.keys():
        return have
    # The table lags this run: compute the same rows from the log (ts <= at only) in memory.
    run.metrics_source = "changelog"
    t = metrics.compute_metrics(history_log(), lineage, start=from_us(hist_start), end=from_us(last_end),
                                bucket=params.bucket)
    return _rows_by_key(t)


def _rows_by_key(t: pa.Table) -> dict:
    pids = t.column("partition_id").to_pylist()
    bs = metrics_us(t.column("bucket_start"))
    return {(p, int(b)): (int(s), int(w)) for p, b, s, w in
            zip(pids, bs, t.column("size_bytes").to_pylist(), t.column("writes").to_pylist())}


def metrics_us(col) -> np.ndarray:
    """A timestamp column as int64 epoch microseconds (numpy)."""
    return pc.cast(pc.cast(col, storage.TS), pa.int64()).to_numpy(zero_copy_only=False)


# --- running the models --------------------------------------------------------------------------
def _workers(settings) -> int:
    return int(settings.forecast_workers) if settings.forecast_workers else (os.cpu_count() or 1)


@contextmanager
def forecast_pool(settings) -> Iterator:
    """A process pool for fits, shut down on exit.

    Linux uses ``fork`` (Python 3.11's default there): workers start in milliseconds with the
    model libraries already imported, and - unlike spawn/forkserver - never re-import the
    caller's ``__main__`` (a DAG file, a notebook, a script without a main guard). Workers only
    run numpy/pandas/Stan, never the parent's Arrow or JVM threads. ``settings.
    forecast_mp_context`` ($WEAVER_FORECAST_MP_CONTEXT) picks another start method.
    """
    import multiprocessing as mp
    import sys
    from concurrent.futures import ProcessPoolExecutor

    method = settings.forecast_mp_context or ("fork" if sys.platform == "linux" else "spawn")
    ctx = mp.get_context(method)
    if method == "fork":
        _models.preload()
    pool = ProcessPoolExecutor(max_workers=_workers(settings), mp_context=ctx, initializer=_models.quiet)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# CPU seconds of one partition's fit, per model, in a prediction run's own pool at 72 history
# buckets and 200 sample paths: figures.fit_cpu_s of bench/results/forecast_engine.json at 67dd3d1
# (AMD EPYC; its reruns read 0.0063 / 0.030 / 0.67 / 0.54 at 8849b86, 0.0039 / 0.024 / 0.66 / 0.49 at a349f9b).
# A fit's cost grows with its history (Prophet's and ARIMA's faster than linearly), so
# `planned_fit_s` scales these by buckets / 72 and by sample paths / 200: an
# estimate whose order of magnitude is what `fit_engine` needs (milliseconds for path, about a
# second for the fitted models).
FIT_CPU_S = {"path": 0.0073, "statsforecast": 0.035, "prophet": 0.85, "arima": 0.60}
FIT_CPU_BUCKETS = 72


def planned_fit_s(jobs: Sequence[_models.Job], settings) -> float:
    """Wall seconds the fits of `jobs` are planned to take in the run's process pool: their CPU
    seconds (`FIT_CPU_S` scaled by each job's history and sample paths) over the pool's workers."""
    cpu = sum(FIT_CPU_S.get(j.model, max(FIT_CPU_S.values())) * len(j.ds) / FIT_CPU_BUCKETS * j.n_samples / 200
              for j in jobs)
    return cpu / min(_workers(settings), max(1, len(jobs)))


# What a Spark application costs a run by itself, and what each further Spark job costs once it
# runs (bench/results/forecast_engine.json at a349f9b, AMD EPYC): `forecast_spark_min_s` (60 s by
# default, about twice SPARK_APP_S) has to outweigh the first, and a run that finds the
# application started has to outweigh the second in the same proportion (`spark_floor_s`: 7.0 s
# by default).
SPARK_APP_S = 25.7  # figures.spark_minus_process_s_median: the cells' spark - process
SPARK_JOB_S = 3.0  # figures.spark_job_s.job_s (3.03 s): one more job of 16 path fits in a started application


def spark_floor_s(settings) -> float:
    """The planned pool seconds a run's fits need to go to an application already started (a
    backtest's later instants): ``forecast_spark_min_s`` scaled by SPARK_JOB_S / SPARK_APP_S."""
    return float(settings.forecast_spark_min_s) * SPARK_JOB_S / SPARK_APP_S


def fit_engine(jobs: Sequence[_models.Job], settings, *, runs: int = 1, started: bool = False) -> str:
    """Where a run fits `jobs` (all of its fits, every batch's): 'spark' or 'process'
    (``settings.forecast_engine``).

    `auto` takes Spark only where it can pay off: on a cluster master (``spark://``), for fits
    planned to take ``forecast_spark_min_s`` or more in the process pool. A Spark application
    costs its start whatever it runs (23-30 s more than the pool on the bench's standalone
    cluster at a349f9b, 23-34 s at 8849b86: bench/results/forecast_engine.json), while the
    default path model fits a partition in milliseconds, so an hourly run of a few thousand
    partitions fits in the task's own process and never starts a JVM; a run of a few hundred
    Prophet or ARIMA fits goes to the executors.

    A caller that fits several runs in one process (a backtest's instants) shares one
    application among them: `runs` is how many runs of about this size it still has to fit, this
    one included, and `started` whether its application is running already. Before the start a
    run goes to Spark when its fits times `runs` reach ``forecast_spark_min_s`` and its own fits
    reach `spark_floor_s`, the share of a further Spark job; after it, when they reach
    `spark_floor_s`. With ``runs=1`` that is the single run's rule."""
    engine = settings.forecast_engine
    if engine != "auto":
        return engine
    if not str(settings.spark_master).startswith("spark://") or not jobs:
        return "process"
    planned, floor = planned_fit_s(jobs, settings), spark_floor_s(settings)
    need = floor if started else max(floor, float(settings.forecast_spark_min_s) / max(1, runs))
    return "spark" if planned >= need else "process"


def run_jobs(jobs: Sequence[_models.Job], settings, *, pool=None, engine: str | None = None, spark=None,
             progress: Callable[[int, int], None] | None = None) -> list[_models.Result]:
    """Run fits where `fit_engine` says (`engine` forces one): Spark applyInPandas, else a
    process pool, else inline."""
    if not jobs:
        return []
    engine = engine or fit_engine(jobs, settings)
    if engine == "spark":
        results = _run_spark(jobs, settings, spark)
        if progress:
            progress(len(jobs), len(jobs))
        return results
    _models.quiet()
    if jobs[0].model in _models.BATCH_MODELS:  # vectorised over partitions, its own process pool
        out = _models.run_batch(jobs, n_jobs=_workers(settings))
        if progress:
            progress(len(jobs), len(jobs))
        return out
    if pool is None and (_workers(settings) <= 1 or len(jobs) <= 1):
        out = []
        for i, j in enumerate(jobs):
            out.append(_models.run_job(j))
            if progress:
                progress(i + 1, len(jobs))
        return out
    if pool is None:
        with forecast_pool(settings) as own:
            return run_jobs(jobs, settings, pool=own, engine="process", progress=progress)
    futures = [pool.submit(_models.run_job, j) for j in jobs]
    out = []
    for i, f in enumerate(futures):
        out.append(f.result())
        if progress:
            progress(i + 1, len(jobs))
    return out


def _run_spark(jobs, settings, spark=None) -> list[_models.Result]:
    import pickle

    import pandas as pd

    if spark is None:
        spark = get_spark(settings, app_name="weaver-forecast")
    pdf = pd.DataFrame({"partition_id": [j.partition_id for j in jobs], "job": [pickle.dumps(j) for j in jobs]})
    df = spark.createDataFrame(pdf, schema="partition_id string, job binary")
    n = max(1, min(len(jobs), int(settings.spark_shuffle_partitions) * 4))
    res = (df.repartition(n, "partition_id")
           .groupBy("partition_id").applyInPandas(_models.spark_fit, schema="partition_id string, result binary")
           .collect())
    by_id = {r["partition_id"]: pickle.loads(r["result"]) for r in res}
    return [by_id[j.partition_id] for j in jobs]


# --- the run -------------------------------------------------------------------------------------
def predict(settings, *, at: datetime, window: timedelta | None = None, model: str = DEFAULT_MODEL,
            size_threshold: int | None = None, write_threshold: float | None = None, write: bool = True,
            progress: Callable[[int, int], None] | None = None, pool=None, lineage: Lineage | None = None,
            run_input: RunInput | Sequence[RunInput] | None = None, stage: bool = False,
            calibration: str | None = None, store_map: bool = True,
            engine_of: Callable[[Sequence[_models.Job]], str] | None = None) -> pa.Table:
    """Predict splits for every partition active at `at`; MERGE into `predictions` when `write`.

    With `stage` (the DAG's forecast task, ``weaver predict``) the rows go to
    ``predictions_staged`` instead, status ``staged``: the `predictions` suite then validates
    exactly them and only a pass publishes them (:func:`weaver.pipeline.gate_predictions`).

    Returns one row per active partition (contract schema, sorted by key range). Only data with
    ``ts <= at`` is used. Skipped partitions carry ``probability = 0`` and a ``skip_reason``; with
    ``settings.forecast_triage`` those that cannot reach a threshold in the window are skipped as
    ``unreachable ...`` before any fit (`triage_jobs`).
    ``probability`` is the model's raw probability (kept in ``probability_raw``) mapped through
    the calibration `calibration` (default `weaver.predict.calibration.DEFAULT_METHOD`; ``none``
    keeps it raw) fitted on this model's predictions whose windows closed by `at`.
    `run_input` is the run's inputs when the caller gathered them already: one `RunInput` (all
    partitions) or the batches of `gather_batched`. `engine_of(jobs)` chooses where the run's
    fits go (default `fit_engine` of the run alone; a backtest shares one Spark application
    among its instants).

    Bad input writes nothing: the parameters, the run instant against the change log's end
    (`check_in_history`), the change log the gather folds (`metrics.check_fold_input`: a gap in
    seq, a misrouted key; both left to the caller that passes `run_input`) and the gather (which
    reads the lake) come before the calibration map is stored. `store_map=False` stores no map (a dry run:
    ``weaver predict --no-write``); by default the map is stored even when the rows are not
    written, being derived from closed history only (same history, same file).
    """
    params = run_params(settings, at=at, window=window, model=model, size_threshold=size_threshold,
                        write_threshold=write_threshold)
    method = check_calibration(calibration)
    if run_input is None:
        check_in_history(settings, params)
        # The log the gather folds (the increment since the checkpoint it starts from), checked
        # as a restore checks its tail: a gap in seq or a misrouted key is a named error.
        metrics.check_fold_input(settings, to_us(params.at) - bucket_us(params.bucket) + 1, upto=params.at,
                                 lineage=lineage)
        run_input = gather_batched(settings, params, lineage=lineage)
    cmap = _calibration.map_for_run(settings, params.model, params.at, method, store=store_map)
    engine_of = engine_of or (lambda jobs: fit_engine(jobs, settings))
    if isinstance(run_input, RunInput):
        table = _predict_batch(settings, run_input, cmap, job_context(run_input) if params.model == "path" else {},
                               pool=pool, progress=progress, engine_of=engine_of)
    else:  # a run gathered in batches (`gather_batched`)
        table = _predict_runs(settings, params, run_input, cmap, pool=pool, progress=progress, engine_of=engine_of)
    if write and stage:
        fresh = _unpublished(settings, table, at=params.at)
        if fresh.num_rows:
            staged = fresh.append_column("status", pa.array([STAGED] * fresh.num_rows, pa.string()))
            storage.merge(storage.uri_for(settings, storage.PREDICTIONS_STAGED), storage.PREDICTIONS_STAGED, staged,
                          keys=["prediction_id"])
    elif write:
        storage.merge(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS, table,
                      keys=["prediction_id"])
    return table


def check_calibration(calibration: str | None) -> str:
    """The calibration method a run applies (None: the default); an unknown one is refused."""
    if calibration is not None and calibration not in _calibration.METHODS:
        raise InvalidParameterError(f"calibration {calibration!r} is unknown; choose one of "
                                    f"{', '.join(_calibration.METHODS)}")
    return calibration or _calibration.DEFAULT_METHOD


def _predict_batch(settings, run: RunInput, cmap, ctx: dict, *, engine_of, pool=None, progress=None) -> pa.Table:
    """Triage, fits and rows of the partitions of `run` (`ctx`: the run-wide `job_context`)."""
    jobs, triaged = triage_jobs(run, cmap, enabled=settings.forecast_triage, ctx=ctx)
    return _fit_rows(settings, run, jobs, triaged, cmap, pool=pool, engine=engine_of(jobs), progress=progress)


def _fit_rows(settings, run: RunInput, jobs, triaged, cmap, *, pool=None, engine=None, progress=None) -> pa.Table:
    results = {r.partition_id: r for r in run_jobs(jobs, settings, pool=pool, engine=engine, progress=progress)}
    return _rows(run, results, cmap, triaged)


def gather_batched(settings, params: RunParams, *, lineage: Lineage | None = None) -> list[RunInput]:
    """`gather` of the partitions active at ``params.at`` in batches of
    ``settings.forecast_batch_partitions`` neighbouring partitions (DESIGN §5, issue 11): each
    batch reads its key span only, from one run-local copy of the checkpoint and of each
    change-log read, so memory follows a batch, not the table. One `RunInput` per batch (one in
    all when a single batch holds every partition); their partitions, concatenated, are the
    partitions of an unbatched `gather`, in key order."""
    lineage = lineage or Lineage.load(settings)
    active = lineage.active_at_ts(params.at)
    groups = batches(active, int(settings.forecast_batch_partitions))
    first_us = log_first_bucket(settings, params.at, bucket_us(params.bucket)) if len(groups) > 1 else None
    with metrics.local_copies([key_span(g) for g in groups] if len(groups) > 1 else None):
        return [gather(settings, params, lineage=lineage, partitions=g if len(groups) > 1 else None,
                       first_us=first_us) for g in groups]


def _predict_runs(settings, params: RunParams, runs: Sequence[RunInput], cmap, *, engine_of, pool=None,
                  progress=None) -> pa.Table:
    """Triage, fits and rows of a run gathered in batches (`gather_batched`).

    Pass 1 (the gather) kept only each batch's `PartitionInput`s (bucket histories and two split
    keys per partition: the run-wide summary the path model's hot-spot context needs). Pass 2
    triages every batch (the jobs share the gathered arrays), chooses the engine once from all of
    the run's fits (`fit_engine`: one Spark application serves every batch, or none does), then
    fits batch by batch and keeps only rows. Batch models (statsforecast) draw one seed from all
    of a run's jobs: their fits stay one call over all jobs, so the paths equal a one-batch run's.
    """
    whole = _whole(params, runs)
    ctx = job_context(whole) if params.model == "path" else {}
    if len(runs) <= 1 or params.model in _models.BATCH_MODELS:
        return _predict_batch(settings, whole, cmap, ctx, pool=pool, progress=progress, engine_of=engine_of)
    staged = [(r, *triage_jobs(r, cmap, enabled=settings.forecast_triage, ctx=ctx)) for r in runs]
    engine = engine_of([j for _, jobs, _ in staged for j in jobs])
    own = forecast_pool(settings) if engine == "process" and pool is None and _workers(settings) > 1 else None
    with (own if own is not None else _nullpool(pool)) as shared:
        tables = [_fit_rows(settings, r, jobs, triaged, cmap, pool=shared, engine=engine, progress=progress)
                  for r, jobs, triaged in staged]
    return pa.concat_tables(tables)


def _whole(params: RunParams, runs: Sequence[RunInput]) -> RunInput:
    """The batches of one run (`gather_batched`) as one `RunInput`."""
    return RunInput(params, run_horizon(params), [p for r in runs for p in r.partitions],
                    "changelog" if any(r.metrics_source == "changelog" for r in runs) else "table")


@contextmanager
def _nullpool(pool):
    yield pool


def _unpublished(settings, table: pa.Table, *, at: datetime) -> pa.Table:
    """The rows of `table` that ``predictions`` does not already hold as they are.

    A rerun of a published run (a reprocessing backfill, a retried task) stages nothing, so it
    writes nothing at all; the gate then audits the run as published (`gate_predictions`).
    """
    published = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                             filters=[("run_ts", "=", pa.scalar(at, storage.TS))], missing_ok=True)
    if not published.num_rows:
        return table
    cols = table.column_names
    have = {r["prediction_id"]: r for r in published.select(cols).to_pylist()}
    keep = [have.get(r["prediction_id"]) != r for r in table.to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


def job_context(run: RunInput) -> dict[str, dict]:
    """{partition_id: extra `Job` fields} that need the run's other partitions (`range_context`
    over the key-range histories of the run's partitions)."""
    return range_context([(p.partition.partition_id, p.partition.key_lo, p.partition.key_hi, p.ds, p.size, p.rate)
                          for p in run.partitions], run.params.bucket)


def range_context(series: Sequence[tuple], bucket: timedelta) -> dict[str, dict]:
    """{id: extra `Job` fields} from the histories of key ranges tiling the key space, each
    ``(id, key_lo, key_hi, ds, size, rate)`` (those with 2 buckets or more are read): the moving hot
    spot (`weaver.predict.models.hot_contexts`) and the lake's recent-to-daily increment ratio
    (`weaver.predict.models.lake_recent_ratio`). A run's partitions (`job_context`), or a lake's
    live partitions with one range cut in two (`weaver.whatif.impact`)."""
    series = [x for x in series if len(x[3]) >= 2]
    if len(series) < 3:
        return {}
    per_day = max(1, round(_models.DAY_US / bucket_us(bucket)))
    ratio = _models.lake_recent_ratio([x[4] for x in series], per_day)
    out: dict[str, dict] = {x[0]: {"lake_ratio": ratio} for x in series} if ratio is not None else {}
    ds = np.unique(np.concatenate([x[3] for x in series]))
    rates = np.full((len(series), len(ds)), np.nan)
    sizes = np.full((len(series), len(ds)), np.nan)
    for i, x in enumerate(series):
        at = np.searchsorted(ds, x[3])
        rates[i, at], sizes[i, at] = x[5], x[4]
    bounds = _models.key_positions([k for x in series for k in (x[1], x[2])])
    ranges = list(zip(bounds[0::2], bounds[1::2]))
    for x, c in zip(series, _models.hot_contexts(ranges, ds, rates, sizes)):
        if c is not None:
            at = np.searchsorted(ds, x[3])  # back onto the range's own buckets
            c.hist_bytes, c.hist_rate = c.hist_bytes[at], c.hist_rate[at]
            out.setdefault(x[0], {})["hot"] = c
    return out


def triage_jobs(run: RunInput, cmap=None, *, enabled: bool = True,
                ctx: dict | None = None) -> tuple[list[_models.Job], dict[str, str]]:
    """The fits a run needs, and {partition_id: ``unreachable ...`` reason} of those triaged away.

    A partition is triaged when its envelope (`weaver.predict.triage`) shows that fewer paths
    can cross than the smallest count whose calibrated probability reaches the run's
    confidence threshold. ``enabled=False`` (``settings.forecast_triage``) fits every partition.
    `ctx` is the run-wide `job_context` when `run` is one batch of a run (default: `run`'s own).
    """
    p = run.params
    bu = bucket_us(p.bucket)
    q = _triage.path_budget(p.samples, _triage.min_crossing_count(p.samples, p.confidence_threshold, cmap)) \
        if enabled else 0.0
    jobs, triaged = [], {}
    if ctx is None:
        ctx = job_context(run) if p.model == "path" else {}
    for pin in run.partitions:
        if pin.skip_reason is not None:
            continue
        pid = pin.partition.partition_id
        job = _job(run, pin, ctx, bu)
        # The envelope bounds a partition's own history only: one a moving hot spot may reach is fitted.
        reason = _triage.check(job, q) if q > 0 and job.hot is None else None
        if reason is None:
            jobs.append(job)
        else:
            triaged[pid] = reason
    return jobs, triaged


def _job(run: RunInput, pin: PartitionInput, ctx: dict, bu: int) -> _models.Job:
    p, pid = run.params, pin.partition.partition_id
    return _models.Job(pid, pin.ds, pin.size, pin.rate, run.horizon, p.size_threshold, p.write_threshold,
                       p.samples, _models.seed_for(prediction_id(p.at, pid, p.model)), p.model, bu,
                       **ctx.get(pid, {}))


def run_jobs_of(params: RunParams, runs: Sequence[RunInput]) -> dict[str, _models.Job]:
    """{partition_id: the `Job` a run over `runs` (`gather_batched`) fits for the partition}, with
    the run-wide context and seed, for every partition not skipped at gather (triage not applied):
    `weaver.predict.models.job_paths` of one gives the very paths behind its ``probability_raw``."""
    whole = _whole(params, runs)
    ctx = job_context(whole) if params.model == "path" else {}
    bu = bucket_us(params.bucket)
    return {pin.partition.partition_id: _job(whole, pin, ctx, bu) for pin in whole.partitions
            if pin.skip_reason is None}


def _rows(run: RunInput, results: dict[str, _models.Result], cmap=None, triaged: dict | None = None) -> pa.Table:
    p = run.params
    rows = []
    triaged = triaged or {}
    for pin in run.partitions:
        pid = pin.partition.partition_id
        r = results.get(pid)
        # A triaged row is a skip: probability 0, never passed through the calibration map.
        skip = pin.skip_reason or triaged.get(pid) or (r.skip_reason if r else None)
        row = {"prediction_id": prediction_id(p.at, pid, p.model), "run_ts": p.at, "partition_id": pid,
               "model": p.model, "window_start": p.at, "window_end": p.at + p.window, "probability": 0.0,
               "reason": None, "predicted_split_ts": None, "split_ts_p10": None, "split_ts_p90": None,
               "split_key": None, "threshold": p.confidence_threshold, "skip_reason": skip,
               "probability_raw": None}
        if skip is None and r is not None:
            row["probability_raw"] = float(r.probability)
            row["probability"] = float(cmap.apply([r.probability])[0]) if cmap is not None else float(r.probability)
            row["reason"] = r.reason
            if r.p50 is not None:
                row["split_ts_p10"], row["predicted_split_ts"], row["split_ts_p90"] = (
                    from_us(r.p10), from_us(r.p50), from_us(r.p90))
            key = pin.throughput_key if r.reason == "throughput" else pin.size_key
            row["split_key"] = key or pin.size_key
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=storage.SCHEMAS[storage.PREDICTIONS])


def read_predictions(settings, *, run_ts: datetime | None = None, model: str | None = None) -> pa.Table:
    """Stored predictions, optionally of one run time and model."""
    filters: list = []
    if run_ts is not None:
        filters.append(("run_ts", "=", pa.scalar(run_ts, storage.TS)))
    t = storage.read(storage.uri_for(settings, storage.PREDICTIONS), storage.PREDICTIONS,
                     filters=filters or None, missing_ok=True)
    if model is not None:
        # In memory: delta-rs MERGE writes string_view columns that pyarrow cannot filter on.
        t = t.filter(pc.equal(t.column("model"), model))
    return t


# --- quality -------------------------------------------------------------------------------------
