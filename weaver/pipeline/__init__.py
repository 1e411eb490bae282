"""The `temporal_weaver` loop's own steps (extract, account, publish), its Assets, and the in-process
Airflow runner (``weaver.pipeline.demo``).

DAG tasks call one function each from here or from a stage package. Names load on first use: DAG
files import ``weaver.pipeline.assets`` at parse time, which must not pull in the data stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {name: "weaver.pipeline.tasks" for name in (
    "account_metrics", "check_interval", "extract", "job_target", "resume_point", "run_summary", "staging_path", "validate_run",
    "write_run_record")}
_EXPORTS |= {name: "weaver.pipeline.gate" for name in (
    "checked_backtest", "clear_quarantine", "gate_changelog", "gate_predictions", "gate_weaves", "list_quarantine", "staged_predictions")}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'weaver.pipeline' has no attribute {name!r}")
