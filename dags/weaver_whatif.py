"""weaver_whatif: "what if partition P had split at key K at T?" on demand (issue 13).

validate (named errors, nothing written) -> weave (the same weaving run as predicted splits,
origin 'manual') -> impact (children, balance, forecasts, largest partition, costs) -> report
(advice on the latest prediction run <= T + static HTML with plots). Wiring only: each task calls
`weaver.whatif`; heavy imports stay inside the tasks. Triggered by hand with params.
"""

from __future__ import annotations


from weaver.core.settings import dag_common, settings_from_params  # light: no pyarrow, no lake access
from airflow.sdk import Param, dag, task

ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$"

PARAMS = {
    "lake": Param(None, type=["null", "string"], description="Lake root; default $WEAVER_LAKE or ./lake"),
    "partition": Param("p0000", type="string", pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
                       description="Real partition to split hypothetically"),
    "at": Param("2026-01-02T12:00:00Z", type="string", pattern=ISO, description="Split instant T (with timezone)"),
    "split_key": Param(None, type=["null", "string"], maxLength=1024,
                       description="Left child holds keys < it; default: size median or load-balancing key at T"),
    "until": Param(None, type=["null", "string"], pattern=ISO, description="Last timepoint; default T + window"),
    "key_by": Param("auto", type="string", enum=["auto", "size", "load"]),
    "model": Param("path", type="string", enum=["path", "prophet", "arima", "statsforecast"],
                   description="Model of the children's forecasts and the report's fans"),
}


@dag(
    dag_id="weaver_whatif",
    schedule=None,
    params=PARAMS,
    doc_md=__doc__,
    **dag_common(scheduled=False),
)
def weaver_whatif():
    @task
    def validate(params=None) -> dict:
        """The what-if's named errors (partition, key, T, until) before any weaving or write."""
        from weaver.whatif import plan_whatif

        w = plan_whatif(settings_from_params(params), params["partition"], params["at"], split_key=params.get("split_key"),
                        until=params.get("until"), key_by=params["key_by"])
        return {"weave_id": w.sequence.weave_id, "split_key": w.sequence.split_key}

    @task
    def weave(plan: dict, params=None) -> dict:
        from weaver.pipeline import gate_weaves
        from weaver.whatif import whatif_weave

        s = settings_from_params(params)
        # No session: the run's size picks Arrow (in this task) or Spark (weaver.weave.engine).
        r = whatif_weave(None, s, params["partition"], params["at"],
                         split_key=plan["split_key"], until=params.get("until"), key_by=params["key_by"], stage=True)
        gate_weaves(s)  # write-audit-publish: publishes the staged weave, or quarantines it and fails
        return {k: r[k] for k in ("weave_id", "split_key", "timepoints_written", "rows_written", "version")}

    @task
    def impact(woven: dict, params=None) -> dict:
        import json

        from weaver.whatif import impact as run

        r = run(settings_from_params(params), woven["weave_id"], model=params["model"])
        return json.loads(json.dumps(r, default=str))

    @task
    def report(effect: dict, params=None) -> dict:
        from weaver.whatif import render_report

        r = render_report(settings_from_params(params), at=params["at"], model=params["model"])
        print(f"weave {effect['weave_id']}: largest partition {effect['largest_partition']['before_bytes']} B -> "
              f"{effect['largest_partition']['after_bytes']} B; report {r['html']}")
        return r

    report(impact(weave(validate())))


weaver_whatif()
