"""The completeness sensor of `temporal_weaver`: waits (bounded, rescheduling) for the source's watermark.

Kept light to import (Airflow parses the DAG file often): the weaver work happens in `poke`.
"""

from __future__ import annotations

from airflow.sdk import BaseSensorOperator, PokeReturnValue


class SourceCompleteSensor(BaseSensorOperator):
    """Done at once when no source is configured; else pokes weaver.ingest.completeness.poke_watermark.

    `ingest_task_id` names the task whose XCom carries the ingest result (its `source`). The wait is
    bounded twice: by the run's ``data_interval_end + params['source_grace']`` (then the task fails
    with WatermarkBehindError naming the lag) and by the sensor's own `timeout`.
    """

    def __init__(self, *, ingest_task_id: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.ingest_task_id = ingest_task_id

    def poke(self, context) -> PokeReturnValue:
        result = context["ti"].xcom_pull(task_ids=self.ingest_task_id) or {}
        if not result.get("configured"):
            return PokeReturnValue(is_done=True, xcom_value={"configured": False})
        from weaver.ingest.completeness import poke_watermark
        from weaver.core.time import parse_duration
        from weaver.core.settings import settings_from_params

        params = context["params"]
        done = poke_watermark(settings_from_params(params), result["source"], context["data_interval_end"],
                              parse_duration(params.get("source_grace") or "2h"))
        return PokeReturnValue(is_done=done, xcom_value={"source": result["source"], "complete": done})
