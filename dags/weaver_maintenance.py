"""weaver_maintenance: retention and housekeeping of both tiers, daily (issue 14).

snapshot vacuum (inside the recovery window) -> woven vacuum (expired/refuted sequences past the
woven retention) -> compaction + checkpoints of the MERGE-written tables -> stored calibration maps
older than the calibration retention deleted. Wiring only: each task
calls one function of `weaver`; every step is idempotent, and none changes a restore or recovery
result (tests/test_maintenance.py). Retention is measured to the data interval's end (or `now`).
"""

from __future__ import annotations

from datetime import datetime

from weaver.core.settings import dag_common, settings_from_params  # light: no pyarrow, no lake access
from airflow.sdk import Param, dag, task

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "now": Param(None, type=["null", "string"], format="date-time",
                 description="Instant retention is measured to (ISO-8601 with timezone); default: the interval's end"),
}


def _now(params: dict, data_interval_end):
    from weaver.core.time import parse_timepoint

    raw = (params or {}).get("now") or data_interval_end
    return parse_timepoint(raw if isinstance(raw, datetime) else str(raw))


@dag(
    dag_id="weaver_maintenance",
    schedule="@daily",
    params=PARAMS,
    doc_md=__doc__,
    **dag_common(scheduled=False),
)
def weaver_maintenance():
    @task
    def snapshot_vacuum(params=None, data_interval_end=None) -> dict:
        from weaver.pitr import vacuum

        r = vacuum(settings_from_params(params), _now(params, data_interval_end))
        return {k: r[k] for k in ("now", "window_start", "snapshots_expired", "snapshots_kept", "log_rows_deleted")}

    @task
    def woven_vacuum(done: dict, params=None, data_interval_end=None) -> dict:
        from weaver.weave import vacuum_woven

        return vacuum_woven(settings_from_params(params), now=_now(params, data_interval_end))

    @task
    def compact(done: dict, params=None) -> dict:
        from weaver.maintain import compact_tables

        return compact_tables(settings_from_params(params))

    @task
    def prune_calibration(done: dict, params=None, data_interval_end=None) -> dict:
        from weaver.predict.calibration import prune

        return prune(settings_from_params(params), _now(params, data_interval_end))

    prune_calibration(compact(woven_vacuum(snapshot_vacuum())))


weaver_maintenance()
