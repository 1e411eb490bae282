"""weaver_snapshots: the PITR framework's daily base snapshots (DESIGN §6).

validate the change-log segment the run depends on -> take log-applied snapshots with Spark -> report.
Wiring only: each task calls one function of `weaver`; heavy imports stay inside the tasks. The
snapshot instant is the run's data-interval end (or the `at` param), and snapshot ids are
deterministic (`{partition}@{seq}`), so a rerun of the same interval writes nothing new.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

# Light at parse time (no pyarrow, no lake access): tests/test_layers.py holds it.
from weaver.core.settings import dag_common, settings_from_params

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "at": Param(None, type=["null", "string"], format="date-time",
                description="Snapshot instant (ISO-8601 with timezone); default: the data interval's end"),
}


def _at(params: dict, data_interval_end) -> str:
    from weaver.core.time import parse_timepoint

    raw = (params or {}).get("at") or data_interval_end
    return parse_timepoint(raw if isinstance(raw, datetime) else str(raw)).isoformat()


@dag(
    dag_id="weaver_snapshots",
    # A data-interval timetable, as temporal_weaver: the run for [D-1, D) starts at D and snapshots at D;
    # with catchup off the latest complete day is still scheduled (a trigger timetable would wait for
    # the next midnight, and skip it if end_date falls before).
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    params=PARAMS,
    doc_md=__doc__,
    **dag_common(scheduled=True),
)
def weaver_snapshots():
    @task
    def validate_changelog(params=None, data_interval_end=None) -> dict:
        from weaver.core.time import parse_timepoint
        from weaver.pitr import validate_for_snapshot

        at = _at(params, data_interval_end)
        return validate_for_snapshot(settings_from_params(params), parse_timepoint(at)) | {"at": at}

    @task
    def take_snapshots(checked: dict, params=None) -> dict:
        from weaver.core.time import parse_timepoint
        from weaver.pitr import take_snapshots as run
        from weaver.core.spark import get_spark

        s = settings_from_params(params)
        return run(get_spark(s, "weaver-snapshots-dag"), s, parse_timepoint(checked["at"]))

    @task
    def report(summary: dict) -> dict:
        import logging

        logging.getLogger("weaver").info(
            "as_of_seq %s: took %d snapshot(s), %d rows, %d bytes; %d already present",
            summary["as_of_seq"], len(summary["taken"]), summary["rows"], summary["bytes"], len(summary["skipped"]))
        return {k: summary[k] for k in ("at", "as_of_seq", "taken", "skipped", "rows", "bytes")}

    report(take_snapshots(validate_changelog()))


weaver_snapshots()
