"""weaver_backtest: replay prediction runs over a past span and score them (DESIGN §5, §6).

validate params -> backtest (predictions at every interval, data cut at each run time, matched
to the real `splits`, `backtest_results` MERGEd, missing predictions backfilled after the
`predictions` suite passed, HTML + PNG report) -> summary. Wiring only: each task calls
`weaver`; heavy imports stay inside the tasks. Scheduled on the Assets `temporal_weaver` emits, or
triggered by hand with `start`/`end`.

An asset-triggered run scores the run instant whose window has just closed: `run_ts - window` of
the latest triggering event, on that run's lake, model, window and thresholds (the event's
`extra`), with the change log known complete up to `run_ts` (that run's extract and checks
passed). A `lake` param that names another lake is refused.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

# Light at parse time (no pyarrow, no lake access): tests/test_layers.py holds it.
from weaver.core.settings import dag_common, settings_from_params
from weaver.pipeline.assets import PREDICTIONS, WOVEN


ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
DURATION = r"^[1-9][0-9]*[mhdw]$"

# What a `temporal_weaver` run puts in its Asset events' extra beside `run_ts` (weaver.pipeline.assets).
RUN_KEYS = ("lake", "model", "window", "size_threshold", "write_threshold")

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "start": Param(None, type=["null", "string"], pattern=ISO,
                   description="First run instant (with timezone); default: the triggering run's instant"),
    "end": Param(None, type=["null", "string"], pattern=ISO,
                 description="Runs happen strictly before this; default: start + one run spacing"),
    "every": Param(None, type=["null", "string"], pattern=DURATION, description="Run spacing (default: one bucket)"),
    "window": Param("24h", type="string", pattern=DURATION, description="Prediction window"),
    "model": Param("path", type="string", enum=["path", "prophet", "arima", "statsforecast"]),
    "confidence_threshold": Param(0.75, type="number", minimum=0, maximum=1,
                                  description="Probability at which a prediction counts as positive"),
    "size_threshold": Param(None, type=["null", "integer"], minimum=1, description="Split size threshold (bytes)"),
    "write_threshold": Param(None, type=["null", "number"], exclusiveMinimum=0,
                             description="Split write threshold (writes/s)"),
    "near": Param(0.10, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                  description="The 'within X of the threshold' baseline's X"),
    "out_dir": Param(None, type=["null", "string"], description="Report folder (default <lake>/_weaver/backtests/<id>)"),
    "forecast_engine": Param(None, type=["null", "string"], enum=[None, "auto", "process", "spark"],
                             description="Where the runs' fits go; default $WEAVER_FORECAST_ENGINE or auto (Spark "
                                         "only on a spark:// master, one application for the backtest's runs)"),
}


@dag(
    dag_id="weaver_backtest",
    # Both assets: temporal_weaver emits them together once a run's checks all passed.
    schedule=[PREDICTIONS, WOVEN],
    params=PARAMS,
    doc_md=__doc__,
    **dag_common(scheduled=False),
)
def weaver_backtest():
    @task
    def validate(params=None, triggering_asset_events=None) -> dict:
        """Check the span and model parameters (named errors) before any work or write."""
        from weaver.core.errors import InvalidParameterError
        from weaver.core.time import parse_duration, parse_timepoint
        from weaver.predict import run_params

        p = dict(params)
        known_until = None
        if not p.get("start"):
            events = [e.extra for evs in (triggering_asset_events or {}).values() for e in evs
                      if (e.extra or {}).get("run_ts")]
            if not events:
                raise InvalidParameterError("give `start` (and `end`) when triggering weaver_backtest by hand")
            run = max(events, key=lambda x: parse_timepoint(x["run_ts"]))
            if p.get("lake") and run.get("lake") and p["lake"] != run["lake"]:
                raise InvalidParameterError(f"the triggering run wrote lake {run['lake']!r}, not the `lake` param "
                                            f"{p['lake']!r}")
            p.update({k: run[k] for k in RUN_KEYS if k in run})
            known_until = parse_timepoint(run["run_ts"])
        s = settings_from_params(p)
        every = parse_duration(p["every"]) if p.get("every") else s.bucket
        if known_until is not None:
            start = known_until - parse_duration(p["window"])  # its window closed at the triggering run
            end = start + every
        else:
            start = parse_timepoint(p["start"])
            end = parse_timepoint(p["end"]) if p.get("end") else start + every
        if start >= end:
            raise InvalidParameterError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        run_params(s, at=start, window=p["window"], model=p["model"])
        return {"start": start.isoformat(), "end": end.isoformat(), "every_s": every.total_seconds(),
                "known_until": known_until.isoformat() if known_until else None,
                "params": {k: p.get(k) for k in ("lake", *RUN_KEYS)}}

    @task
    def run_backtest(span: dict, params=None) -> dict:
        from weaver.pipeline import checked_backtest

        p = {**params, **span["params"]}
        s = settings_from_params(p)
        r = checked_backtest(s, start=datetime.fromisoformat(span["start"]), end=datetime.fromisoformat(span["end"]),
                             model=p["model"], out_dir=p.get("out_dir"), every=timedelta(seconds=span["every_s"]),
                             near_fraction=p["near"],
                             known_until=datetime.fromisoformat(span["known_until"]) if span["known_until"] else None)
        return {"backtest_id": r["backtest_id"], "runs": r["runs"], "rows_scored": r["rows_scored"],
                "censored": r["censored"], "excluded_manual": r["excluded_manual"], "scores": r["scores"], "backfill": r["backfill"], "report": r["report"]}

    @task
    def summary(result: dict) -> dict:
        """One line per model in the task log; the report paths in XCom."""
        for m, sc in result["scores"].items():
            print(f"{m}: precision={sc['precision']} recall={sc['recall']} brier={sc['brier']} "
                  f"timing_h={sc['median_abs_timing_error_h']} censored={result['censored'][m]} "
                  f"manual_split_windows_excluded={result['excluded_manual'][m]}")
        return result

    summary(run_backtest(validate()))


weaver_backtest()
