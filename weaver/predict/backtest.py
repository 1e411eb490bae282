"""Backtest: replay prediction runs over a past span and score them against the real `splits`.

For every run time ``t`` of the span (every ``every``, default one bucket) the run sees exactly
what a live run at ``t`` would have seen (`weaver.forecasting.gather` cuts data at ``ts <= t``
and ignores lineage events after ``t``), so its predictions are the ones a live run would have
written (same deterministic ids). The backfill writes into `predictions` only the rows it does not
hold yet - a published row is never replaced, whatever parameters the backtest was given - and,
with a `check` (`weaver.pipeline.checked_backtest`: the `predictions` suite), only after every
run's rows passed it. Each prediction is matched to the partition's real split:
``actual_split`` is true when the partition split in ``(t, window_end]``. A window reaching past
the end of the known history (`known_until`: by default the later of the last change and the last
split) is *censored*, whether or not a split was seen in it yet: scoring the open windows that
already hold a split and dropping the rest would select on the outcome (precision biased up). It is
counted but neither written to `backtest_results` nor scored. A window in which the partition was
split by an operator (``splits.reason`` ``manual``) is left out the same way (``excluded_manual``):
no model can forecast an operator's decision, and the split ends the partition, so whether the data
manager would have split it in that window is unknown - it is neither a hit nor a miss. Size and
throughput splits are the positives.

Two naive baselines are scored side by side on the same inputs and skips:

- ``baseline_linear`` - a straight line through the last 6 size points, extrapolated; it
  "predicts" (probability 1) when the line exceeds the size threshold inside the window;
- ``baseline_near``   - probability 1 when the last size or write rate is within X % (default
  10 %) of its threshold.

Scores: precision and recall at the confidence threshold, Brier score, a reliability plot, and
the median absolute timing error of true positives, in an HTML + PNG report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from weaver.core import objstore, storage
from weaver.core.errors import InvalidParameterError
from weaver.core.ids import backtest_id
from weaver.core.time import format_duration, from_us, parse_duration, parse_timepoint
from weaver.log.changelog import history_end
from weaver.log.lineage import UNPREDICTABLE_REASONS, Lineage, first_splits, window_split
from weaver.predict import forecasting, metrics
from weaver.predict.calibration import DEFAULT_METHOD as DEFAULT_CALIBRATION
from weaver.predict.report import of_model, render_report

LINEAR_POINTS = 6
DEFAULT_NEAR = 0.10
MAX_RUNS = 92 * 24  # a quarter (92 days) of hourly runs; more is refused before any work
BASELINES = ("baseline_linear", "baseline_near")


def run_times(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """Run instants start, start + every, ... strictly before end."""
    out, t = [], start
    while t < end:
        out.append(t)
        t += every
    return out


# --- baselines -----------------------------------------------------------------------------------
def baseline_rows(run: forecasting.RunInput, near_fraction: float) -> list[dict]:
    """Predictions of the two naive baselines for one run (same inputs and skips as the model)."""
    p = run.params
    rows = []
    h_us = run.horizon
    for pin in run.partitions:
        pid = pin.partition.partition_id
        for name in BASELINES:
            row = {"prediction_id": forecasting.prediction_id(p.at, pid, name), "run_ts": p.at, "partition_id": pid,
                   "model": name, "window_end": p.at + p.window, "probability": 0.0, "predicted_split_ts": None}
            if pin.skip_reason is None and len(pin.size) >= 2 and len(h_us):
                if name == "baseline_linear":
                    x = (pin.ds[-LINEAR_POINTS:] - pin.ds[-1]) / 3.6e9
                    slope, icpt = np.polyfit(x, pin.size[-LINEAR_POINTS:], 1)
                    line = icpt + slope * (h_us - pin.ds[-1]) / 3.6e9
                    above = np.nonzero(line > p.size_threshold)[0]
                    if above.size:
                        row["probability"] = 1.0
                        row["predicted_split_ts"] = from_us(int(h_us[above[0]]))
                else:
                    near = (pin.size[-1] >= (1 - near_fraction) * p.size_threshold
                            or pin.rate[-1] >= (1 - near_fraction) * p.write_threshold)
                    row["probability"] = 1.0 if near else 0.0
            rows.append(row)
    return rows


# --- scoring -------------------------------------------------------------------------------------
@dataclass
class Scores:
    model: str
    rows: int
    actual_splits: int
    predicted_splits: int
    true_positives: int
    precision: float | None
    recall: float | None
    brier: float | None
    median_abs_timing_error_h: float | None
    median_timing_error_h: float | None


def score(rows: pa.Table, threshold: float, model: str) -> Scores:
    """Precision/recall at `threshold`, Brier score and timing errors of one model's scored rows
    (a `backtest_results` table)."""
    mine = of_model(rows, model)
    p = mine.column("probability").to_numpy(zero_copy_only=False).astype(float)
    y = mine.column("actual_split").to_numpy(zero_copy_only=False).astype(bool)
    pos = p >= threshold
    tp = int(np.sum(pos & y))
    err = mine.column("timing_error_s").to_numpy(zero_copy_only=False).astype(float)  # null -> NaN
    te = err[pos & y & ~np.isnan(err)] / 3600.0
    return Scores(
        model=model, rows=mine.num_rows, actual_splits=int(y.sum()), predicted_splits=int(pos.sum()), true_positives=tp,
        precision=(tp / int(pos.sum())) if pos.any() else None,
        recall=(tp / int(y.sum())) if y.any() else None,
        brier=float(np.mean((p - y) ** 2)) if len(p) else None,
        median_abs_timing_error_h=float(np.median(np.abs(te))) if len(te) else None,
        median_timing_error_h=float(np.median(te)) if len(te) else None,
    )


# --- the backtest --------------------------------------------------------------------------------
def backtest(settings, *, start: datetime, end: datetime, model: str = forecasting.DEFAULT_MODEL, out_dir: str | Path | None = None,
             every: timedelta | str | None = None, window: timedelta | str | None = None,
             size_threshold: float | None = None, write_threshold: float | None = None,
             near_fraction: float = DEFAULT_NEAR, write_predictions: bool = True,
             progress: Callable[[int, int], None] | None = None, calibration: str | None = None,
             known_until: datetime | None = None,
             check: Callable[[pa.Table, datetime], object] | None = None) -> dict:
    """Run predictions at every `every` in [start, end), score them, write results and a report.

    `known_until`: the instant up to which the change log and `splits` are complete (default: the
    later of the last change and the last split); windows ending after it are censored.
    `check(rows, run_ts)` is called on each run's predictions before anything is written and may
    raise to stop the backtest (nothing written then). With `write_predictions`, the runs' rows
    that `predictions` does not hold yet are inserted (a backfill); published rows stay as they are.

    Returns the scores per model (the model and both baselines), counts, and the report paths.
    """
    start, end = parse_timepoint(start), parse_timepoint(end)
    if start >= end:
        raise InvalidParameterError(f"--from {start.isoformat()} must be before --to {end.isoformat()}")
    if known_until is not None:
        known_until = parse_timepoint(known_until)
    every = parse_duration(every) if every is not None else settings.bucket
    if not 0 < near_fraction < 1:
        raise InvalidParameterError(f"near fraction {near_fraction!r} must be in (0, 1)")
    times = run_times(start, end, every)
    if len(times) > MAX_RUNS:
        raise InvalidParameterError(f"{len(times)} runs between --from and --to; at most {MAX_RUNS} (use a larger --every)")
    # Validate every parameter before any write: the last run against the change log's end (which
    # also refuses a missing lake), the calibration method and the report folder.
    params0 = forecasting.run_params(settings, at=start, window=window, model=model, size_threshold=size_threshold,
                                     write_threshold=write_threshold)
    forecasting.check_in_history(settings, forecasting.run_params(
        settings, at=times[-1], window=window, model=model, size_threshold=size_threshold,
        write_threshold=write_threshold))
    forecasting.check_calibration(calibration)
    if out_dir is not None:
        storage.check_outside_lake(settings, str(out_dir), what="--out")
    bid = backtest_id(start, end, every, model, params0.window, params0.size_threshold, params0.write_threshold,
                      near_fraction=near_fraction, calibration=calibration or DEFAULT_CALIBRATION,
                      confidence_threshold=params0.confidence_threshold, samples=settings.forecast_samples)
    lineage = Lineage.load(settings)
    splits = storage.read(storage.uri_for(settings, storage.SPLITS), storage.SPLITS)
    split_of = first_splits(splits.to_pylist())
    known_until = known_until or history_end(settings, splits) or datetime.min.replace(tzinfo=timezone.utc)

    # Complete buckets up to the last run never depend on later data: build them once (none for
    # runs before 1970-01-02, where no lake's changes lie: such runs see no partition, as a restore
    # then gives the empty state).
    floor = datetime(1970, 1, 2, tzinfo=timezone.utc)
    first = max(start - params0.history - settings.bucket, floor) if start > floor else floor
    if times[-1] > first:
        metrics.build_metrics(settings, start=first, end=times[-1])

    # The scored rows, one Arrow table per run: a quarter of hourly runs over a large table is
    # millions of rows, which as Python dicts would cost several times the memory.
    # (`probability_raw` rides along for the report's raw reliability series; it is not stored.)
    schema = storage.SCHEMAS[storage.BACKTEST_RESULTS].append(pa.field("probability_raw", pa.float64()))
    scored: list[pa.Table] = []
    runs_preds: list[pa.Table] = []
    censored = {m: 0 for m in (model, *BASELINES)}
    excluded_manual = {m: 0 for m in (model, *BASELINES)}
    lead: dict[str, datetime] = {}
    pool_cm = forecasting.forecast_pool(settings) if forecasting._workers(settings) > 1 else None
    pool = pool_cm.__enter__() if pool_cm else None
    # One Spark application for the whole backtest (`forecasting.fit_engine`): an instant's fits
    # go to it when they, times the instants left, outweigh its start - so a quarter of Prophet
    # instants on a cluster pays one start instead of fitting every instant in the pool.
    spark_started = False

    def engine_of(jobs) -> str:
        nonlocal spark_started
        engine = forecasting.fit_engine(jobs, settings, runs=len(times) - i, started=spark_started)
        spark_started = spark_started or engine == "spark"
        return engine

    try:
        for i, t in enumerate(times):
            params = forecasting.run_params(settings, at=t, window=window, model=model,
                                            size_threshold=size_threshold, write_threshold=write_threshold)
            # Gathered batch by batch, as a live run is: memory follows a batch, not the table.
            runs = forecasting.gather_batched(settings, params, lineage=lineage)
            preds = forecasting.predict(settings, at=t, window=window, model=model, size_threshold=size_threshold,
                                        write_threshold=write_threshold, write=False, pool=pool,
                                        lineage=lineage, run_input=runs, calibration=calibration,
                                        engine_of=engine_of)
            if write_predictions:
                if check is not None:
                    check(preds, t)  # before anything is written
                runs_preds.append(preds)
            base = [row for run in runs for row in baseline_rows(run, near_fraction)]
            run_rows: list[dict] = []
            for r in preds.to_pylist() + base:
                if r["window_end"] > known_until:  # outcome unknown yet, split seen or not
                    censored[r["model"]] += 1
                    continue
                hit, s = window_split(split_of, r["partition_id"], t, r["window_end"])
                if hit is None:  # an operator's split: no outcome
                    excluded_manual[r["model"]] += 1
                    continue
                if hit and r["model"] == model and r["probability"] >= params.confidence_threshold:
                    lead.setdefault(r["partition_id"], t)
                err = None
                if hit and r["predicted_split_ts"] is not None:
                    err = (r["predicted_split_ts"] - s["split_ts"]).total_seconds()
                run_rows.append({"backtest_id": bid, "prediction_id": r["prediction_id"], "run_ts": t,
                                 "partition_id": r["partition_id"], "model": r["model"],
                                 "probability": float(r["probability"]), "predicted_split_ts": r["predicted_split_ts"],
                                 "actual_split": bool(hit), "actual_split_ts": s["split_ts"] if hit else None,
                                 "actual_split_key": s["split_key"] if hit else None, "timing_error_s": err,
                                 "probability_raw": r.get("probability_raw")})
            scored.append(pa.Table.from_pylist(run_rows, schema=schema))
            if progress:
                progress(i + 1, len(times))
    finally:
        if pool_cm:
            pool_cm.__exit__(None, None, None)

    backfill = _backfill(settings, runs_preds, start, end) if write_predictions else None
    rows = pa.concat_tables(scored) if scored else schema.empty_table()
    storage.merge(storage.uri_for(settings, storage.BACKTEST_RESULTS), storage.BACKTEST_RESULTS,
                  rows.drop_columns(["probability_raw"]), keys=["backtest_id", "prediction_id"])
    threshold = params0.confidence_threshold
    scores = {m: asdict(score(rows, threshold, m)) for m in (model, *BASELINES)}
    split_rows = [{"parent_id": s["parent_id"], "split_ts": s["split_ts"], "reason": s["reason"],
                   "scored": s["reason"] not in UNPREDICTABLE_REASONS,
                   "split_key": s["split_key"], "first_confident_run": lead.get(s["parent_id"]),
                   "lead_time_h": ((s["split_ts"] - lead[s["parent_id"]]).total_seconds() / 3600.0)
                   if s["parent_id"] in lead else None}
                  for s in split_of.values() if start < s["split_ts"] <= end + params0.window]
    summary = {
        "backtest_id": bid, "model": model, "start": start, "end": end, "every": format_duration(every),
        "window": format_duration(params0.window), "runs": len(times), "confidence_threshold": threshold,
        "size_threshold_bytes": params0.size_threshold, "write_threshold_per_s": params0.write_threshold,
        "near_fraction": near_fraction, "known_until": known_until, "rows_scored": rows.num_rows,
        "censored": censored, "excluded_manual": excluded_manual, "scores": scores, "splits": split_rows, "backfill": backfill,
        "calibration": _calibration_summary(settings, model, times[-1], calibration),
    }
    out = _out_dir(settings, bid, out_dir)
    with objstore.folder(out, storage.options(out)) as folder:  # an s3:// report is uploaded when complete
        summary["report"] = {k: folder.uri_of(v) for k, v in render_report(summary, rows, folder.path).items()}
    return summary


def _backfill(settings, runs: list[pa.Table], start: datetime, end: datetime) -> dict:
    """Insert the runs' predictions that `predictions` does not hold yet (one MERGE; a published row is
    never replaced). Counts what was inserted, what was already there as recomputed, and what was
    published differently (other parameters, or a live run that does not reproduce)."""
    fresh = pa.concat_tables(runs) if runs else None
    if fresh is None or not fresh.num_rows:
        return {"inserted": 0, "already_published": 0, "published_differs": 0}
    uri = storage.uri_for(settings, storage.PREDICTIONS)
    published = storage.read(uri, storage.PREDICTIONS, missing_ok=True,
                             filters=[("run_ts", ">=", pa.scalar(start, storage.TS)),
                                      ("run_ts", "<", pa.scalar(end, storage.TS))])
    cols = [c for c in fresh.column_names if c in published.column_names]
    have = {r["prediction_id"]: r for r in published.select(cols).to_pylist()} if published.num_rows else {}
    mine = fresh.select(cols).to_pylist()
    new = pa.array([r["prediction_id"] not in have for r in mine], pa.bool_())
    differs = sum(1 for r in mine if r["prediction_id"] in have and have[r["prediction_id"]] != r)
    rows = fresh.filter(new)
    if rows.num_rows:
        storage.merge(uri, storage.PREDICTIONS, rows, keys=["prediction_id"])
    return {"inserted": rows.num_rows, "already_published": fresh.num_rows - rows.num_rows, "published_differs": differs}


def _calibration_summary(settings, model: str, at: datetime, method: str | None) -> dict:
    """The calibration map the last run applied (refitted without storing: same history, same map)."""
    from weaver.predict import calibration as cal

    cm = cal.map_for_run(settings, model, at, method or cal.DEFAULT_METHOD, store=False)
    return {"method": cm.method, "version": cm.version, "rows": cm.rows, "positives": cm.positives, "note": cm.note,
            "params": cm.params, "cutoff": cm.cutoff, "curve": [float(v) for v in cm.apply(np.linspace(0, 1, 101))]}


def _out_dir(settings, bid: str, out_dir) -> str:
    """The report folder: `out_dir` (a path or an s3:// prefix), else ``<lake>/_weaver/backtests/<id>``."""
    return str(out_dir) if out_dir is not None else objstore.lake_file(settings.lake, "backtests", bid)


# --- report --------------------------------------------------------------------------------------
def read_results(settings, backtest_id: str | None = None) -> pa.Table:
    """Stored backtest rows (optionally of one backtest)."""
    t = storage.read(storage.uri_for(settings, storage.BACKTEST_RESULTS), storage.BACKTEST_RESULTS, missing_ok=True)
    if backtest_id is not None:
        t = t.filter(pc.equal(t.column("backtest_id"), backtest_id))
    return t
