"""The `temporal_weaver` loop's own steps (extract, account, publish) and the in-process Airflow runner.

DAG tasks call one function each from here or from a stage package; ``weaver.pipeline.demo``
runs the real DAGs with ``airflow dags test``.
"""

from weaver.pipeline.gate import (
    clear_quarantine,
    gate_changelog,
    gate_predictions,
    gate_weaves,
    list_quarantine,
    staged_predictions,
)
from weaver.pipeline.tasks import (
    account_metrics,
    extract,
    job_target,
    resume_point,
    run_summary,
    staging_path,
    write_run_record,
)

__all__ = ["account_metrics", "clear_quarantine", "extract", "gate_changelog", "gate_predictions", "gate_weaves",
           "list_quarantine", "staged_predictions", "job_target", "resume_point", "run_summary", "staging_path",
           "write_run_record"]
