"""CLI commands: predict, backtest."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import typer

from weaver.checks import check_predictions
from weaver.cli._app import JsonOpt, LakeOpt, app, console, emit, reported, settings_for, timepoint
from weaver.core import faults, storage
from weaver.log import Lineage
from weaver.pipeline import checked_backtest as run_backtest
from weaver.pipeline import gate_predictions
from weaver.predict import predict as run_predict

# Options `predict` and `backtest` share (one definition: the backtest replays what `predict` runs).
SizeThresholdOpt = typer.Option(None, "--size-threshold", help="Split size threshold in bytes.")
WriteThresholdOpt = typer.Option(None, "--write-threshold", help="Split write threshold, writes/s.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Fit processes, at least 1 (default: one per core).")
SamplesOpt = typer.Option(None, "--samples", help="Predictive sample paths per series.")
CalibrationOpt = typer.Option(None, "--calibration",
                              help="auto | none | prior | platt | isotonic | beta (default auto: of the prior map, the "
                                   "identity and the lake's own isotonic map, the one scoring best on the last 24 h of "
                                   "closed windows; below 200 scored rows of the last 7 days the lake-own methods use "
                                   "the model's prior map, if it has one, else the identity).")


@contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator:
    """A Rich progress bar on stderr; yields a callback(done, total)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if not enabled:
        yield None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


EngineOpt = typer.Option(None, "--engine",
                         help="Where fits run: auto | process | spark (default $WEAVER_FORECAST_ENGINE or auto: "
                              "Spark only on a spark:// master, for a run of many slow fits).")


def _overrides(confidence: Optional[float], workers: Optional[int], samples: Optional[int],
               engine: Optional[str] = None) -> dict:
    return {"confidence_threshold": confidence, "forecast_workers": workers, "forecast_samples": samples,
            "forecast_engine": engine}


@app.command()
def predict(
    at: str = typer.Option(..., "--at", help="Run instant (ISO-8601 with timezone); only data with ts <= it is used."),
    window: Optional[str] = typer.Option(None, "--window", help="Prediction window, e.g. 24h (default settings.window)."),
    model: str = typer.Option("path", "--model", help="path | prophet | arima | statsforecast"),
    size_threshold: Optional[int] = SizeThresholdOpt,
    write_threshold: Optional[float] = WriteThresholdOpt,
    confidence_threshold: Optional[float] = typer.Option(None, "--confidence-threshold",
                                                         help="Recorded as `threshold` (what gets woven)."),
    workers: Optional[int] = WorkersOpt,
    samples: Optional[int] = SamplesOpt,
    engine: Optional[str] = EngineOpt,
    calibration: Optional[str] = CalibrationOpt,
    write: bool = typer.Option(True, "--write/--no-write", help="Stage the rows, check them, publish them into `predictions`."),
    check: bool = typer.Option(True, "--check/--no-check", help="Run the `predictions` expectation suite."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Forecast which partitions split within the window (one row per active partition)."""
    with reported(as_json):
        t = timepoint(at)
        s = settings_for(lake, **_overrides(confidence_threshold, workers, samples, engine))
        staged = write and check
        with _progress(f"fitting {model}", not as_json) as cb:
            table = run_predict(s, at=t, window=window, model=model, size_threshold=size_threshold,
                                write_threshold=write_threshold, write=staged, stage=True, progress=cb,
                                calibration=calibration, store_map=write)  # --no-write writes nothing at all
        if staged:
            # Write-audit-publish: staged rows are checked, and only a pass publishes them.
            faults.point("predict.staged")
            checked = gate_predictions(s, at=t)
        else:
            checked = check_predictions(table, Lineage.load(s), at=t, context=f"run {t.isoformat()}") if check else None
            if write:  # --no-check: the operator publishes unchecked rows on purpose
                storage.merge(storage.uri_for(s, storage.PREDICTIONS), storage.PREDICTIONS, table,
                              keys=["prediction_id"])
    rows = table.to_pylist()
    thr = s.confidence_threshold
    obj = {"at": t, "model": model, "rows": rows, "written": write, "check": checked,
           "above_threshold": sum(1 for r in rows if r["probability"] >= thr)}
    emit(obj, as_json, _table(rows, thr, t, model))


def _table(rows: list[dict], thr: float, at, model: str):
    from rich.table import Table

    tab = Table(title=f"{model} predictions at {at.isoformat()} (confidence threshold {thr:.2f})")
    for c in ("partition", "probability", "reason", "predicted split (p10 .. p90)", "split key", "skipped because"):
        tab.add_column(c)
    for r in rows:
        when = "-"
        if r["predicted_split_ts"] is not None:
            when = (f"{r['predicted_split_ts']:%Y-%m-%d %H:%M} ({r['split_ts_p10']:%H:%M} .. "
                    f"{r['split_ts_p90']:%m-%d %H:%M})")
        prob = f"{r['probability']:.2f}"
        tab.add_row(r["partition_id"], f"[bold]{prob}[/]" if r["probability"] >= thr else prob, r["reason"] or "-",
                    when, r["split_key"] or "-", r["skip_reason"] or "")
    return tab


@app.command()
def backtest(
    start: str = typer.Option(..., "--from", help="First run instant (ISO-8601 with timezone)."),
    end: str = typer.Option(..., "--to", help="Runs happen strictly before this instant."),
    every: Optional[str] = typer.Option(None, "--every", help="Run spacing, e.g. 1h (default: one metrics bucket)."),
    window: Optional[str] = typer.Option(None, "--window", help="Prediction window, e.g. 24h."),
    model: str = typer.Option("path", "--model", help="path | prophet | arima | statsforecast"),
    size_threshold: Optional[int] = SizeThresholdOpt,
    write_threshold: Optional[float] = WriteThresholdOpt,
    confidence_threshold: Optional[float] = typer.Option(None, "--confidence-threshold",
                                                         help="Probability at which a prediction counts as positive."),
    near: float = typer.Option(0.10, "--near", help="The 'within X of the threshold' baseline's X (a fraction)."),
    workers: Optional[int] = WorkersOpt,
    samples: Optional[int] = SamplesOpt,
    engine: Optional[str] = EngineOpt,
    calibration: Optional[str] = CalibrationOpt,
    out: Optional[str] = typer.Option(None, "--out", help="Report folder (default <lake>/_weaver/backtests/<id>)."),
    lake: Optional[str] = LakeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Replay prediction runs over [--from, --to), score them against real splits, write a report."""
    with reported(as_json):
        t0, t1 = timepoint(start, "--from"), timepoint(end, "--to")
        s = settings_for(lake, **_overrides(confidence_threshold, workers, samples, engine))
        with _progress(f"backtesting {model}", not as_json) as cb:
            r = run_backtest(s, start=t0, end=t1, model=model, out_dir=out, every=every, window=window,
                    size_threshold=size_threshold, write_threshold=write_threshold, near_fraction=near, progress=cb,
                    calibration=calibration)
    emit(r, as_json, _scores(r))


def _scores(r: dict):
    from rich.console import Group
    from rich.table import Table

    tab = Table(title=f"backtest {r['backtest_id']}: {r['runs']} runs every {r['every']}, window {r['window']}, "
                      f"positive at p >= {r['confidence_threshold']:.2f}")
    for c in ("model", "scored", "splits", "predicted", "precision", "recall", "Brier", "median |timing err| h",
              "censored", "manual splits"):
        tab.add_column(c)

    def f(v, pct=False):
        return "-" if v is None else (f"{v:.0%}" if pct else f"{v:.3f}")

    for m, sc in r["scores"].items():
        tab.add_row(m, str(sc["rows"]), str(sc["actual_splits"]), str(sc["predicted_splits"]), f(sc["precision"], True),
                    f(sc["recall"], True), f(sc["brier"]), f(sc["median_abs_timing_error_h"]), str(r["censored"][m]),
                    str(r["excluded_manual"][m]))
    b = r.get("backfill")
    note = (f"predictions backfilled: {b['inserted']} inserted, {b['already_published']} already published"
            + (f" ({b['published_differs']} published with other values, left as they were)" if b["published_differs"] else "")
            if b else "predictions: not written")
    return Group(tab, note, f"report: {r['report']['html']}")
