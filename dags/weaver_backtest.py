"""weaver_backtest: replay prediction runs over a past span and score them (DESIGN §5, §6).

validate params -> backtest (predictions at every interval, data cut at each run time, matched
to the real `splits`, `backtest_results` MERGEd, HTML + PNG report) -> summary. Wiring only:
each task calls `weaver`; heavy imports stay inside the tasks. Triggered by hand with params.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from weaver.core.settings import dag_default_args  # light: no pyarrow, no lake access
from airflow.sdk import Param, dag, task

ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"
DURATION = r"^[0-9]+[mhdw]$"

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "start": Param("2026-01-03T00:00:00Z", type="string", pattern=ISO, description="First run instant (with timezone)"),
    "end": Param("2026-01-04T00:00:00Z", type="string", pattern=ISO, description="Runs happen strictly before this"),
    "every": Param(None, type=["null", "string"], pattern=DURATION, description="Run spacing (default: one bucket)"),
    "window": Param("24h", type="string", pattern=DURATION, description="Prediction window"),
    "model": Param("path", type="string", enum=["path", "prophet", "arima"]),
    "confidence_threshold": Param(0.75, type="number", minimum=0, maximum=1,
                                  description="Probability at which a prediction counts as positive"),
    "size_threshold": Param(None, type=["null", "integer"], minimum=1, description="Split size threshold (bytes)"),
    "write_threshold": Param(None, type=["null", "number"], exclusiveMinimum=0,
                             description="Split write threshold (writes/s)"),
    "near": Param(0.10, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                  description="The 'within X of the threshold' baseline's X"),
    "out_dir": Param(None, type=["null", "string"], description="Report folder (default <lake>/_weaver/backtests/<id>)"),
}


def _settings(params: dict):
    from weaver.core.settings import settings_from_params

    return settings_from_params(params)


@dag(
    dag_id="weaver_backtest",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["weaver"],
    default_args=dag_default_args(),
    doc_md=__doc__,
)
def weaver_backtest():
    @task
    def validate(params=None) -> dict:
        """Check the span and model parameters (named errors) before any work or write."""
        from weaver.predict import run_params
        from weaver.core.time import parse_duration, parse_timepoint

        s = _settings(params)
        start, end = parse_timepoint(params["start"]), parse_timepoint(params["end"])
        if start >= end:
            from weaver.core.errors import InvalidParameterError

            raise InvalidParameterError(f"start {start.isoformat()} must be before end {end.isoformat()}")
        run_params(s, at=start, window=params["window"], model=params["model"])
        every = parse_duration(params["every"]) if params.get("every") else s.bucket
        return {"start": start.isoformat(), "end": end.isoformat(), "every_s": every.total_seconds()}

    @task
    def run_backtest(span: dict, params=None) -> dict:
        from weaver.predict import backtest

        s = _settings(params)
        r = backtest(s, start=datetime.fromisoformat(span["start"]), end=datetime.fromisoformat(span["end"]),
                     model=params["model"], out_dir=params.get("out_dir"),
                     every=timedelta(seconds=span["every_s"]), near_fraction=params["near"])
        return {"backtest_id": r["backtest_id"], "runs": r["runs"], "rows_scored": r["rows_scored"],
                "censored": r["censored"], "scores": r["scores"], "report": r["report"]}

    @task
    def summary(result: dict) -> dict:
        """One line per model in the task log; the report paths in XCom."""
        for m, sc in result["scores"].items():
            print(f"{m}: precision={sc['precision']} recall={sc['recall']} brier={sc['brier']} "
                  f"timing_h={sc['median_abs_timing_error_h']}")
        return result

    summary(run_backtest(validate()))


weaver_backtest()
