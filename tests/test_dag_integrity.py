"""DAG integrity: every DAG file imports cleanly, follows the house policies, and stays light at
parse time (no Spark, Prophet or pandas work when the scheduler parses it)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parent.parent / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
EXPECTED = {"temporal_weaver", "weaver_snapshots", "weaver_backtest", "weaver_whatif", "weaver_maintenance"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_expected_dags_exist():
    assert EXPECTED <= {p.stem for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_import_errors(dagbag, path):
    errors = {Path(k).name: v for k, v in dagbag.import_errors.items()}
    assert path.name not in errors, errors.get(path.name)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_policies(dagbag, dag_id):
    dag = dagbag.dags.get(dag_id)
    assert dag is not None, f"{dag_id} not parsed: {dagbag.import_errors}"
    assert "weaver" in dag.tags
    assert dag.catchup is False
    assert dag.max_active_runs is None or dag.max_active_runs >= 1
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
    assert dag.params is not None


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_imports_stay_light(path, tmp_path):
    """Importing a DAG file must not import pyspark.sql, prophet, great_expectations or pandas."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "heavy = [n for n in ('pyspark.sql', 'prophet', 'great_expectations', 'weaver.forecasting', 'statsmodels') if n in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1:] in ([""], []), f"heavy imports at parse time: {proc.stdout}"


def test_temporal_weaver_shape(dagbag):
    dag = dagbag.dags["temporal_weaver"]
    order = ["extract", "check_changelog", "metrics", "forecast", "check_predictions", "weave_engine", "weave",
             "check_woven", "publish"]
    for up, down in zip(order, order[1:]):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down} missing"
    # The engine branch: spark-submit or the Arrow engine in the task; the check runs after either.
    assert dag.get_task("weave_engine").downstream_task_ids == {"weave", "weave_arrow"}
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    # spark-submit with the driver's spill folder in a scratch folder of the task (test_spark_submit_scratch)
    assert dag.get_task("weave").task_type == "WeaverSparkSubmitOperator"
    assert isinstance(dag.get_task("weave"), SparkSubmitOperator)
    assert "--engine=spark" in dag.get_task("weave").application_args
    assert dag.get_task("weave_arrow").downstream_task_ids == {"check_woven"}
    assert dag.get_task("check_woven").trigger_rule == "none_failed_min_one_success"
    # Advice reads only checked predictions and the run publishes only after it.
    assert dag.get_task("check_predictions").downstream_task_ids >= {"weave_engine", "weave_arrow", "advise"}
    assert "publish" in dag.get_task("advise").downstream_task_ids
    head = ["ingest", "check_ingest", "source_complete", "extract"]
    for up, down in zip(head, head[1:]):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down} missing"
    sensor = dag.get_task("source_complete")
    assert sensor.mode == "reschedule" and 0 < sensor.timeout <= 24 * 3600  # bounded, frees its slot
    p = dag.params
    assert p["confidence_threshold"] == 0.75 and p["window"] == "24h"


@pytest.mark.parametrize("bad", [{"confidence_threshold": 1.5}, {"confidence_threshold": -0.1},
                                 {"window": "tomorrow"}, {"window": "0h"}, {"model": "lstm"},
                                 {"forecast_engine": "gpu"}, {"weave_engine": "process"}])
def test_temporal_weaver_params_validate(dagbag, bad):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["temporal_weaver"]
    params = copy.deepcopy(dag.params)
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError):
        for k, v in bad.items():
            params[k] = v
        params.validate()


@pytest.mark.parametrize("bad", [{"at": "2026-01-02T12:00:00"}, {"partition": "p0~0123abcd~L"},
                                 {"key_by": "median"}, {"until": "tomorrow"}, {"model": "lstm"}])
def test_weaver_whatif_params_validate(dagbag, bad):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["weaver_whatif"]
    assert [t.task_id for t in dag.topological_sort()] == ["validate", "weave", "impact", "report"]
    params = copy.deepcopy(dag.params)
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError):
        for k, v in bad.items():
            params[k] = v
        params.validate()


@pytest.mark.parametrize("bad", [{"model": "lstm"}, {"every": "0h"}, {"near": 1.0}, {"forecast_engine": "gpu"}])
def test_weaver_backtest_params_validate(dagbag, bad):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    from weaver.core.settings import settings_from_params

    dag = dagbag.dags["weaver_backtest"]
    params = copy.deepcopy(dag.params)
    params.validate()  # the defaults are valid
    # The engine param reaches the run's settings (run_backtest builds them from its params).
    assert settings_from_params({"forecast_engine": "spark"}).forecast_engine == "spark"
    with pytest.raises(ParamValidationError):
        for k, v in bad.items():
            params[k] = v
        params.validate()


@pytest.mark.parametrize("dag_id,period", [("weaver_snapshots", timedelta(days=1)), ("temporal_weaver", timedelta(hours=1))])
def test_scheduled_dags_run_their_latest_complete_interval_right_after_midnight(dagbag, monkeypatch, dag_id, period):
    """catchup=False and an end_date (WEAVER_SCHEDULE_END) just before midnight: the latest complete
    interval must still be scheduled. A cron *trigger* timetable (Airflow 3's default for a cron
    string) would wait for the next midnight instead, past end_date, and never run (CI hit that at 00:20)."""
    import airflow.timetables.interval as interval
    from airflow.timetables.base import TimeRestriction

    now = interval.coerce_datetime(datetime(2026, 12, 2, 0, 20, tzinfo=timezone.utc))
    monkeypatch.setattr(interval, "utcnow", lambda: now)
    tt = dagbag.dags[dag_id].timetable
    assert isinstance(tt, interval.CronDataIntervalTimetable)
    info = tt.next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(
        earliest=interval.coerce_datetime(datetime(2026, 1, 1, tzinfo=timezone.utc)), latest=now - timedelta(minutes=50),
        catchup=False))
    assert info is not None
    latest_end = now.replace(minute=0) if period == timedelta(hours=1) else now.replace(hour=0, minute=0)
    assert (info.data_interval.start, info.data_interval.end) == (latest_end - period, latest_end)


# --- weaver_backtest, asset-triggered --------------------------------------------------------------
def _validate_backtest(dagbag, params: dict, *extras: dict) -> dict:
    from types import SimpleNamespace

    dag = dagbag.dags["weaver_backtest"]
    p = {k: dag.params[k] for k in dag.params} | params
    events = {"weaver_predictions": [SimpleNamespace(extra=e) for e in extras]}
    return dag.get_task("validate").python_callable(params=p, triggering_asset_events=events)


def test_asset_triggered_backtest_scores_the_window_that_just_closed_on_the_runs_lake(dagbag, tmp_path, monkeypatch):
    """The latest triggering run at 12:00 with a 12 h window: the backtest scores the run at 00:00
    (its window closed at 12:00), on the event's lake and settings, the log known complete to 12:00."""
    monkeypatch.setenv("WEAVER_LAKE", str(tmp_path / "elsewhere"))
    lake = str(tmp_path / "lake")
    old = {"run_ts": "2026-01-04T11:00:00+00:00", "lake": lake, "model": "path", "window": "12h"}
    new = {**old, "run_ts": "2026-01-04T12:00:00+00:00", "model": "arima", "size_threshold": 5000,
           "write_threshold": None}
    span = _validate_backtest(dagbag, {}, old, new)
    assert (span["start"], span["end"], span["known_until"]) == (
        "2026-01-04T00:00:00+00:00", "2026-01-04T01:00:00+00:00", "2026-01-04T12:00:00+00:00")
    assert span["params"] == {"lake": lake, "model": "arima", "window": "12h", "size_threshold": 5000,
                              "write_threshold": None}


def test_asset_triggered_backtest_refuses_another_lake(dagbag, tmp_path):
    from weaver.core.errors import InvalidParameterError

    event = {"run_ts": "2026-01-04T12:00:00+00:00", "lake": str(tmp_path / "lake")}
    with pytest.raises(InvalidParameterError, match="lake"):
        _validate_backtest(dagbag, {"lake": str(tmp_path / "other")}, event)
    with pytest.raises(InvalidParameterError, match="start"):
        _validate_backtest(dagbag, {"lake": str(tmp_path / "lake")})


def test_manual_backtest_takes_its_params(dagbag, tmp_path):
    span = _validate_backtest(dagbag, {"lake": str(tmp_path / "lake"), "start": "2026-01-02T00:00:00Z",
                                       "end": "2026-01-02T06:00:00Z", "every": "2h"})
    assert (span["start"], span["end"], span["every_s"], span["known_until"]) == (
        "2026-01-02T00:00:00+00:00", "2026-01-02T06:00:00+00:00", 7200.0, None)
