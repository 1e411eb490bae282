"""temporal_weaver: the background loop of Temporal Weaver (DESIGN §6).

[ingest -> check (GX) -> source complete (sensor), when a source is configured] ->
extract -> check (GX) -> metrics -> forecast -> check (GX) -> weave -> check (GX)
-> publish/reconcile (beside weaving, `advise` turns the checked predictions into pre-split advice),
which emits the `weaver_predictions` and `weaver_woven_tier` Assets (only a
run whose every check passed reaches it, so consumers never see unchecked data). Write-audit-publish:
forecast and weave write staged rows; each check task validates exactly those and publishes them only
on a pass (else quarantines them and fails). The weave step branches on the run's planned size
(`weaver.weave.planned_engine`): spark-submit for a run big enough for Spark, else the Arrow engine
inside the task (no JVM); the `weave_engine` param forces one. Wiring only: each task calls one function of the
`weaver` package, heavy imports stay inside the tasks, and each task works on the run's data interval, so a rerun of the
same interval writes the same rows once.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

# Light at parse time (no pyarrow, no lake access): tests/test_layers.py holds it.
from weaver.core.settings import dag_common, settings_from_params, source_wait_max
from weaver.ingest.sensor import SourceCompleteSensor
from weaver.pipeline.assets import PREDICTIONS, WOVEN
from weaver.pipeline.spark_submit import WeaverSparkSubmitOperator

PROJECT = Path(__file__).resolve().parent.parent
WEAVE_JOB = str(PROJECT / "spark_jobs" / "weave.py")

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "window": Param("24h", type="string", pattern=r"^[1-9][0-9]*[mhdw]$", description="Prediction window"),
    "confidence_threshold": Param(0.75, type="number", minimum=0, maximum=1,
                                  description="Only predictions at or above this are woven"),
    "model": Param("path", type="string", enum=["path", "prophet", "arima", "statsforecast"]),
    "size_threshold": Param(None, type=["null", "integer"], minimum=1, description="Split size threshold (bytes)"),
    "write_threshold": Param(None, type=["null", "number"], exclusiveMinimum=0,
                             description="Split write threshold (writes/s)"),
    "ingest_source": Param(None, type=["null", "object", "string"],
                           description="Source to ingest first (JSON spec or path, see docs/ingestion.md); "
                                       "default $WEAVER_INGEST_SOURCE, none = the lake is written by someone else"),
    "weave_engine": Param(None, type=["null", "string"], enum=[None, "auto", "arrow", "spark"],
                          description="Weaving engine; default $WEAVER_WEAVE_ENGINE or auto (by the run's size)"),
    "forecast_engine": Param(None, type=["null", "string"], enum=[None, "auto", "process", "spark"],
                             description="Where forecast fits run; default $WEAVER_FORECAST_ENGINE or auto "
                                         "(Spark only on a spark:// master, for a run of many slow fits)"),
    "source_grace": Param("2h", type="string", pattern=r"^[0-9]+[mhdw]$",
                          description="How long past the interval's end to wait for the source's watermark"),
}
# Hard bound of the completeness sensor, whatever `source_grace` says.
SOURCE_WAIT_MAX = source_wait_max()


@dag(
    dag_id="temporal_weaver",
    # Hourly data intervals [t - 1h, t): a run (and a manual `dags test` run) works on a real slice
    # of the change log, not on Airflow 3's zero-length trigger interval.
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    params=PARAMS,
    render_template_as_native_obj=True,
    doc_md=__doc__,
    **dag_common(scheduled=True),
)
def temporal_weaver():
    @task
    def ingest(params=None, data_interval_start=None, data_interval_end=None) -> dict:
        from weaver.ingest.sources import ingest_configured
        from weaver.pipeline import validate_run

        s = settings_from_params(params)
        # The first task: the interval, window and model are refused here, before any stage writes.
        validate_run(s, start=data_interval_start, end=data_interval_end, window=params["window"],
                     model=params["model"])
        return ingest_configured(s, params.get("ingest_source"))

    @task
    def check_ingest(result: dict, params=None) -> dict:
        from weaver.checks import check_ingested

        return {**result, "check": check_ingested(settings_from_params(params), result)} if result.get("configured") else result

    source_complete = SourceCompleteSensor(task_id="source_complete", ingest_task_id="check_ingest",
                                           poke_interval=60, timeout=SOURCE_WAIT_MAX.total_seconds())

    @task
    def extract(params=None, data_interval_start=None, data_interval_end=None) -> dict:
        from weaver.pipeline import extract as run

        return run(settings_from_params(params), start=data_interval_start, end=data_interval_end)

    @task
    def check_changelog(manifest: dict, params=None) -> dict:
        from weaver.pipeline import gate_changelog

        gate_changelog(settings_from_params(params), manifest)
        return manifest

    @task
    def metrics(manifest: dict, params=None) -> dict:
        from weaver.predict import build_metrics
        from weaver.pipeline import account_metrics, resume_point

        s = settings_from_params(params)
        end = datetime.fromisoformat(manifest["end"])
        built = build_metrics(s, start=resume_point(s, end), end=end)
        return {"manifest": manifest, "metrics": built, "accounting": account_metrics(s, manifest)}

    @task
    def forecast(state: dict, params=None) -> dict:
        from weaver.predict import predict

        s = settings_from_params(params)
        at = datetime.fromisoformat(state["manifest"]["end"])
        preds = predict(s, at=at, model=params["model"], stage=True)  # published by check_predictions
        return {"at": at.isoformat(), "predictions": preds.num_rows}

    @task
    def check_predictions(run: dict, params=None) -> dict:
        from weaver.pipeline import gate_predictions, job_target

        s = settings_from_params(params)
        run["check"] = gate_predictions(s, at=datetime.fromisoformat(run["at"]))
        return {**run, **job_target(s)}

    @task.branch
    def weave_engine(run: dict, params=None) -> str:
        from weaver.weave import planned_engine

        plan = planned_engine(settings_from_params(params), at=datetime.fromisoformat(run["at"]),
                              confidence_threshold=params["confidence_threshold"], model=params["model"])
        print(f"weave plan: {plan}")
        return "weave" if plan["engine"] == "spark" else "weave_arrow"

    @task
    def weave_arrow(run: dict, params=None) -> dict:
        from dataclasses import replace

        from weaver.weave import weave as run_weave

        s = replace(settings_from_params(params), weave_engine="arrow")  # the branch chose it
        r = run_weave(None, s, at=datetime.fromisoformat(run["at"]),
                      confidence_threshold=params["confidence_threshold"], model=params["model"], stage=True)
        return {k: r[k] for k in ("sequences", "new_sequences", "timepoints_written", "rows_written", "engine",
                                  "committed", "version")}

    # spark-submit whose driver JVM spills into a scratch folder of the task (gone when it ends).
    weave = WeaverSparkSubmitOperator(
        task_id="weave",
        conn_id="spark_default",
        application=WEAVE_JOB,
        name="temporal-weaver-weave",
        conf="{{ ti.xcom_pull(task_ids='check_predictions')['spark_conf'] }}",
        # `--opt=value` keeps each argument a string under native template rendering.
        application_args=[
            "--at={{ ti.xcom_pull(task_ids='check_predictions')['at'] }}",
            "--confidence-threshold={{ params.confidence_threshold }}",
            "--model={{ params.model }}",  # the forecast task's model: weave its predictions only
            "--lake={{ ti.xcom_pull(task_ids='check_predictions')['lake'] }}",
            "--woven-root={{ ti.xcom_pull(task_ids='check_predictions')['woven'] }}",
            "--engine=spark",  # the branch chose it
        ],
        env_vars="{{ ti.xcom_pull(task_ids='check_predictions')['spark_env'] }}",
    )

    @task(trigger_rule="none_failed_min_one_success")  # after whichever weave branch ran
    def check_woven(params=None) -> dict:
        from weaver.pipeline import gate_weaves

        return gate_weaves(settings_from_params(params))

    @task
    def advise(run: dict, params=None) -> dict:
        from weaver.whatif import advise as run_advice

        # Proactive advice on this run's published predictions (MERGEd into `advice` on
        # deterministic ids; earlier advice whose window closed is scored). Reads only checked rows.
        actions = run_advice(settings_from_params(params), at=datetime.fromisoformat(run["at"]),
                             confidence_threshold=params["confidence_threshold"]).column("action").to_pylist()
        return {a: actions.count(a) for a in sorted(set(actions))}

    @task(outlets=[PREDICTIONS, WOVEN])
    def publish(run: dict, check: dict, advice: dict, params=None, run_id=None, outlet_events=None) -> dict:
        from weaver.pipeline import run_summary, write_run_record
        from weaver.weave import reconcile

        s = settings_from_params(params)
        at = datetime.fromisoformat(run["at"])
        lifecycle = reconcile(s, at=at)
        summary = {**run_summary(s, at=at, model=params["model"]), "lifecycle": lifecycle, "woven_check": check, "advice": advice}
        write_run_record(s, run_id, summary)
        for asset in (PREDICTIONS, WOVEN):
            # weaver_backtest scores this run's settings (dags/weaver_backtest.py RUN_KEYS).
            outlet_events[asset].extra = {"run_ts": run["at"], "lake": run["lake"], "model": params["model"],
                                          "window": params["window"], "size_threshold": params["size_threshold"],
                                          "write_threshold": params["write_threshold"]}
        return summary

    extracted = extract()
    check_ingest(ingest()) >> source_complete >> extracted
    checked = check_predictions(forecast(metrics(check_changelog(extracted))))
    woven_ok = check_woven()
    weave_engine(checked) >> [weave, weave_arrow(checked)] >> woven_ok
    publish(checked, woven_ok, advise(checked))


temporal_weaver()
